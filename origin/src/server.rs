//! The HTTP side: one handler for every request, HTTP semantics (GET,
//! HEAD, OPTIONS, Range, conditional requests, caching headers, CORS) and
//! the access log.

use crate::access::{Access, Denied, Grant};
use crate::cache::{CachedObject, FlightError, Joined, Lookup, ObjectCache};
use crate::metrics::OriginMetrics;
use crate::upstream::{Head, UpstreamError, TIER_HEADER};
use crate::{route, Route};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use vodfarm_core::store::{content_type_for, ByteRange};
use vodfarm_core::telemetry::{render_metrics, METRICS_CONTENT_TYPE};

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Caching headers of the answers.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// `max-age` of playlists (seconds).
    pub playlist_max_age: u64,
    /// `stale-while-revalidate` of playlists (seconds).
    pub playlist_swr: u64,
    /// `stale-if-error` of playlists (seconds).
    pub stale_if_error: u64,
}

/// What the handler needs.
#[derive(Debug)]
pub struct App {
    /// Objects.
    pub cache: Arc<ObjectCache>,
    /// Video state and tokens.
    pub access: Arc<Access>,
    /// Metrics.
    pub metrics: OriginMetrics,
    cc_immutable: HeaderValue,
    cc_playlist: HeaderValue,
    cc_private_immutable: HeaderValue,
    cc_private_playlist: HeaderValue,
}

const SEGMENT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
const EXPOSE: &str = "Content-Length, Content-Range, ETag, Last-Modified, Accept-Ranges";
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

impl App {
    /// Wires the parts together.
    pub fn new(
        cache: Arc<ObjectCache>,
        access: Arc<Access>,
        metrics: OriginMetrics,
        s: &ServeSettings,
    ) -> App {
        let hv = |s: String| {
            HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("no-store"))
        };
        App {
            cache,
            access,
            metrics,
            cc_immutable: HeaderValue::from_static(SEGMENT_CACHE_CONTROL),
            cc_playlist: hv(format!(
                "public, max-age={}, stale-while-revalidate={}, stale-if-error={}",
                s.playlist_max_age, s.playlist_swr, s.stale_if_error
            )),
            cc_private_immutable: HeaderValue::from_static("private, max-age=3600"),
            cc_private_playlist: hv(format!("private, max-age={}", s.playlist_max_age)),
        }
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// The label of a path in `vodfarm_origin_requests_total`.
fn route_label(path: &str) -> &'static str {
    if path.starts_with("/v/") {
        if path.ends_with("/master.m3u8") {
            "master"
        } else if path.ends_with(".m3u8") {
            "playlist"
        } else {
            "segment"
        }
    } else if path.starts_with("/t/") {
        "thumbnail"
    } else if path.starts_with("/s/") {
        "subtitle"
    } else {
        match path {
            "/healthz" => "healthz",
            "/metrics" => "metrics",
            _ => "other",
        }
    }
}

/// The value of query parameter `name` (not percent-decoded: tokens are
/// URL-safe).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request facts the response depends on.
struct Ctx<'a> {
    head_only: bool,
    headers: &'a HeaderMap,
    route: &'a Route,
    grant: Grant,
}

/// Handles one request; never fails (errors are answers).
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    let mut cache_status = "-";
    let resp = serve(&app, &parts, &mut cache_status).await;
    let label = route_label(path);
    let status = resp.status();
    app.metrics
        .requests
        .with_label_values(&[label, status.as_str()])
        .inc();
    // The query (it may hold a token) is never logged.
    tracing::info!(
        target: "vodfarm::access",
        method = %parts.method,
        path,
        status = status.as_u16(),
        route = label,
        cache = cache_status,
        version = ?parts.version,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(resp)
}

async fn serve(
    app: &Arc<App>,
    parts: &http::request::Parts,
    cache_status: &mut &'static str,
) -> Response<Body> {
    let path = parts.uri.path();
    match path {
        "/healthz" => {
            let body = serde_json::json!({
                "status": "ok",
                "listening": app.access.is_listening(),
            });
            let mut r = Response::new(full(Bytes::from(body.to_string())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return r;
        }
        "/metrics" => {
            let (bytes, objects) = app.cache.usage();
            app.metrics.cache_bytes.set(bytes as i64);
            app.metrics.cache_objects.set(objects as i64);
            let mut r = Response::new(full(Bytes::from(render_metrics(&app.metrics.registry))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            return r;
        }
        _ => {}
    }
    let Some(route) = route(path) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    if parts.method == Method::OPTIONS {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Range, If-None-Match, If-Modified-Since, If-Range"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return r;
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET or HEAD",
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return r;
    }
    let token = query_param(parts.uri.query(), "token");
    let grant = match app.access.check(&route.video_id, token).await {
        Ok(g) => g,
        Err(Denied::NotFound) => return error(StatusCode::NOT_FOUND, "not_found", "no such video"),
        Err(e @ Denied::Forbidden) => {
            return error(StatusCode::FORBIDDEN, "forbidden", &e.to_string())
        }
        Err(e @ Denied::Unavailable(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &e.to_string(),
            )
        }
    };
    let ctx = Ctx {
        head_only: parts.method == Method::HEAD,
        headers: &parts.headers,
        route: &route,
        grant,
    };
    // A private playlist fetched by a viewer gets the viewer's token added
    // to every URI in it (players do not carry the query string over to
    // relative URIs). Tiers fetch the stored bytes as they are.
    let rewrite_token = token
        .filter(|_| grant.private && route.is_playlist && !parts.headers.contains_key(TIER_HEADER));
    let key = route.key.as_str();
    if app.cache.is_too_large(key) {
        *cache_status = "pass";
        return passthrough(app, &ctx, path).await;
    }
    let stale = match app.cache.lookup(key) {
        Lookup::Fresh(o) => {
            *cache_status = "hit";
            app.metrics.cache_hits.inc();
            return from_cached(app, &ctx, &o, rewrite_token);
        }
        Lookup::Stale(o) => Some(o),
        Lookup::Miss => None,
    };
    let (flight, leader) = match app.cache.join(&route, path) {
        Joined::Cached(o) => {
            *cache_status = "hit";
            app.metrics.cache_hits.inc();
            return from_cached(app, &ctx, &o, rewrite_token);
        }
        Joined::Flight { flight, leader } => (flight, leader),
    };
    if leader {
        *cache_status = "miss";
        app.metrics.cache_misses.inc();
    } else {
        *cache_status = "coalesced";
        app.metrics.coalesced.inc();
    }
    match flight.head().await {
        Ok(head) => {
            if let Some(token) = rewrite_token {
                let size = head.size;
                let body: Result<Vec<Bytes>, UpstreamError> = if size == 0 {
                    Ok(Vec::new())
                } else {
                    flight.stream(0, size - 1).try_collect().await
                };
                return match body {
                    Ok(chunks) => {
                        let o = CachedObject {
                            head,
                            body: Bytes::from(chunks.concat()),
                            fetched_at: Instant::now(),
                            ttl: None,
                        };
                        from_cached(app, &ctx, &o, Some(token))
                    }
                    Err(e) => upstream_error(&e),
                };
            }
            let f = flight.clone();
            respond(app, &ctx, &head, move |a, b| {
                f.stream(a, b).map_err(BoxError::from).boxed()
            })
        }
        Err(FlightError::TooLarge(_)) => {
            *cache_status = "pass";
            passthrough(app, &ctx, path).await
        }
        Err(FlightError::Upstream(UpstreamError::NotFound)) => {
            app.cache.remove(key);
            error(StatusCode::NOT_FOUND, "not_found", "no such object")
        }
        Err(FlightError::Upstream(e)) => match stale {
            Some(o) => {
                *cache_status = "stale";
                app.metrics.stale_served.inc();
                from_cached(app, &ctx, &o, rewrite_token)
            }
            None => upstream_error(&e),
        },
    }
}

fn upstream_error(e: &UpstreamError) -> Response<Body> {
    match e {
        UpstreamError::Timeout => error(
            StatusCode::BAD_GATEWAY,
            "upstream_timeout",
            "the upstream did not answer in time and nothing is cached",
        ),
        other => error(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            &format!("{other}; nothing is cached"),
        ),
    }
}

/// Adds the viewer's token to every URI of an HLS playlist. `None` when
/// the playlist is not UTF-8 (served as stored).
pub fn rewrite_playlist(body: &[u8], token: &str) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let with_token = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}token={token}")
    };
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        let eol = &line[content.len()..];
        if content.trim().is_empty() {
            out.push_str(content);
        } else if content.starts_with('#') {
            // Tags with a URI attribute (EXT-X-MEDIA, EXT-X-MAP, EXT-X-KEY, …).
            let mut rest = content;
            while let Some(i) = rest.find("URI=\"") {
                let (before, after) = rest.split_at(i + 5);
                out.push_str(before);
                match after.find('"') {
                    Some(j) => {
                        out.push_str(&with_token(&after[..j]));
                        rest = &after[j..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
            out.push_str(rest);
        } else {
            out.push_str(&with_token(content));
        }
        out.push_str(eol);
    }
    Some(Bytes::from(out))
}

fn from_cached(
    app: &App,
    ctx: &Ctx<'_>,
    o: &CachedObject,
    rewrite_token: Option<&str>,
) -> Response<Body> {
    if let Some(token) = rewrite_token {
        if let Some(body) = rewrite_playlist(&o.body, token) {
            // A variant of its own: its own validator.
            let inner = o.head.etag.to_str().unwrap_or("").trim_matches('"');
            let tag = token.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            let head = Head {
                size: body.len() as u64,
                etag: HeaderValue::from_str(&format!("\"{inner}-t{tag:016x}\""))
                    .unwrap_or_else(|_| o.head.etag.clone()),
                last_modified: o.head.last_modified.clone(),
            };
            return respond(app, ctx, &head, move |a, b| {
                let piece = body.slice(a as usize..=b as usize);
                futures::stream::once(async move { Ok(piece) }).boxed()
            });
        }
    }
    let body = o.body.clone();
    let h = &o.head;
    respond_full(app, ctx, h, body)
}

/// The hit path: the body is in memory, no stream needed.
fn respond_full(app: &App, ctx: &Ctx<'_>, head: &Head, body: Bytes) -> Response<Body> {
    let (mut r, span) = prepare(app, ctx, head);
    if let Some((a, b)) = span {
        let piece = body.slice(a as usize..=b as usize);
        app.metrics.bytes_out.inc_by(piece.len() as u64);
        *r.body_mut() = full(piece);
    }
    r
}

/// A response whose body comes from `make(first, last)`.
fn respond(
    app: &App,
    ctx: &Ctx<'_>,
    head: &Head,
    make: impl FnOnce(u64, u64) -> futures::stream::BoxStream<'static, Result<Bytes, BoxError>>,
) -> Response<Body> {
    let (mut r, span) = prepare(app, ctx, head);
    if let Some((a, b)) = span {
        let counter = app.metrics.bytes_out.clone();
        let stream = make(a, b).map(move |r| {
            r.map(|b| {
                counter.inc_by(b.len() as u64);
                Frame::data(b)
            })
        });
        *r.body_mut() = StreamBody::new(stream).boxed_unsync();
    }
    r
}

fn etag_matches(list: &str, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    list.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/").as_bytes() == etag
    })
}

/// Status and headers for `head` under the request's conditions and
/// range; the body span to send (`None`: no body).
fn prepare(app: &App, ctx: &Ctx<'_>, head: &Head) -> (Response<Body>, Option<(u64, u64)>) {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    let cc = match (ctx.grant.private, ctx.route.is_playlist) {
        (false, false) => &app.cc_immutable,
        (false, true) => &app.cc_playlist,
        (true, false) => &app.cc_private_immutable,
        (true, true) => &app.cc_private_playlist,
    };
    h.insert(header::CACHE_CONTROL, cc.clone());
    h.insert(header::ETAG, head.etag.clone());
    if let Some((lm, _)) = &head.last_modified {
        h.insert(header::LAST_MODIFIED, lm.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("video-{}", ctx.route.video_id)) {
        h.insert(SURROGATE_KEY, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    // Conditionals (RFC 9110 §13.2.2): If-None-Match wins over
    // If-Modified-Since.
    let inm = ctx
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let not_modified = match inm {
        Some(list) => etag_matches(list, &head.etag),
        None => match (
            ctx.headers
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok()),
            &head.last_modified,
        ) {
            (Some(since), Some((_, t))) => *t <= since.timestamp(),
            _ => false,
        },
    };
    if not_modified {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return (r, None);
    }
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(ctx.route.key.as_str())),
    );
    let range = ctx
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse_header)
        .filter(|_| match ctx.headers.get(header::IF_RANGE) {
            None => true,
            Some(v) => {
                v.as_bytes() == head.etag.as_bytes()
                    || head
                        .last_modified
                        .as_ref()
                        .is_some_and(|(lm, _)| lm.as_bytes() == v.as_bytes())
            }
        });
    let size = head.size;
    let span = match range {
        Some(wanted) => match wanted.resolve(size) {
            Some((a, b)) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = r.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                Some((a, b))
            }
            None => {
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let h = r.headers_mut();
                h.remove(header::CONTENT_TYPE);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return (r, None);
            }
        },
        None => (size > 0).then(|| (0, size - 1)),
    };
    let len = span.map_or(0, |(a, b)| b - a + 1);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if ctx.head_only {
        return (r, None);
    }
    (r, span)
}

/// Streams an object over the size limit straight from the upstream,
/// passing the client's range down.
async fn passthrough(app: &App, ctx: &Ctx<'_>, path: &str) -> Response<Body> {
    app.metrics.passthrough.inc();
    let range = ctx
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse_header);
    let cache = &app.cache;
    let started = Instant::now();
    let got = cache
        .upstream()
        .fetch(ctx.route, path, range, cache.settings().upstream_timeout)
        .await;
    app.metrics
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .upstream_fetches
        .with_label_values(&[if got.is_ok() { "ok" } else { "error" }])
        .inc();
    let fetched = match got {
        Ok(f) => f,
        Err(UpstreamError::NotFound) => {
            return error(StatusCode::NOT_FOUND, "not_found", "no such object")
        }
        Err(UpstreamError::RangeNotSatisfiable { size }) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "range not satisfiable",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Err(e) => return upstream_error(&e),
    };
    // Answer as if for the whole object, then narrow to what came back:
    // the upstream already applied the range.
    let no_range = HeaderMap::new();
    let plain = Ctx {
        head_only: ctx.head_only,
        headers: if ctx.headers.contains_key(header::IF_NONE_MATCH)
            || ctx.headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            ctx.headers
        } else {
            &no_range
        },
        route: ctx.route,
        grant: ctx.grant,
    };
    let (mut r, span) = prepare(app, &plain, &fetched.head);
    if r.status() == StatusCode::NOT_MODIFIED {
        return r;
    }
    let size = fetched.head.size;
    if let (Some(_), Some((a, b))) = (range, fetched.range) {
        if (a, b) != (0, size.saturating_sub(1)) || size == 0 {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(b - a + 1));
    }
    if span.is_some() {
        let counter = app.metrics.bytes_out.clone();
        let stream = fetched.body.map(move |r| {
            r.map(|b| {
                counter.inc_by(b.len() as u64);
                Frame::data(b)
            })
            .map_err(BoxError::from)
        });
        *r.body_mut() = StreamBody::new(stream).boxed_unsync();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_get_the_token_on_every_uri() {
        let src = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8\r\n\nsegment_0.ts?x=1\n";
        let out = rewrite_playlist(src.as_bytes(), "9.abc").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8?token=9.abc\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8?token=9.abc\r\n\nsegment_0.ts?x=1&token=9.abc\n"
        );
    }

    #[test]
    fn query_and_etag_helpers() {
        assert_eq!(query_param(Some("a=1&token=x.y"), "token"), Some("x.y"));
        assert_eq!(query_param(Some("tokens=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
        let e = HeaderValue::from_static("\"abc\"");
        assert!(etag_matches("\"x\", W/\"abc\"", &e));
        assert!(etag_matches("*", &e));
        assert!(!etag_matches("\"abcd\"", &e));
        assert_eq!(route_label("/v/x/720p/segment_1.ts"), "segment");
        assert_eq!(route_label("/v/x/master.m3u8"), "master");
    }
}
