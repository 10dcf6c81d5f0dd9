//! Phase 4, respond: status, headers and body for the source the lookup
//! found. Headers, conditions and ranges come from [`super::prepare`];
//! bodies stream from memory, a flight, or the upstream.

use super::lookup::Source;
use super::playlist;
use super::prepare::prepare;
use super::{App, Body, BoxError, Ctx};
use crate::cache::CachedObject;
use crate::flight::{Flight, FlightError};
use crate::upstream::{Head, UpstreamError};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::sync::Arc;
use std::time::Instant;
use vodfarm_core::store::ByteRange;

/// The answer for `source`. A body that fails part-way (the upstream, or
/// an abandoned flight) ends the response with an error, which aborts it.
pub(super) async fn respond(app: &App, ctx: &Ctx<'_>, source: Source) -> Response<Body> {
    match source {
        Source::Object(o) => from_cached(app, ctx, &o, ctx.rewrite_token),
        Source::Flight(flight, head) => from_flight(app, ctx, flight, head).await,
        Source::Pass => passthrough(app, ctx).await,
        Source::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such object"),
        Source::Failed(e) => flight_error(&e),
    }
}

pub(super) fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub(super) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A JSON error answer: `{"error": {"code", "message"}}`, never cached.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
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

/// 502 for an upstream failure when nothing is cached.
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

/// 502 for a flight that ended without the object: the upstream failed,
/// or the fetch was abandoned (`upstream_failed`, like other failures).
pub(super) fn flight_error(e: &FlightError) -> Response<Body> {
    match e {
        FlightError::Upstream(e) => upstream_error(e),
        other => error(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            &format!("{other}; nothing is cached"),
        ),
    }
}

/// Streams from a flight; a playlist to rewrite is read whole first.
async fn from_flight(app: &App, ctx: &Ctx<'_>, flight: Arc<Flight>, head: Head) -> Response<Body> {
    if let Some(token) = ctx.rewrite_token {
        let size = head.size;
        let body: Result<Vec<Bytes>, FlightError> = if size == 0 {
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
                from_cached(app, ctx, &o, Some(token))
            }
            Err(e) => flight_error(&e),
        };
    }
    respond_stream(app, ctx, &head, move |a, b| {
        flight.stream(a, b).map_err(BoxError::from).boxed()
    })
}

/// From an object in memory, rewritten for the viewer's token if asked.
fn from_cached(
    app: &App,
    ctx: &Ctx<'_>,
    o: &CachedObject,
    rewrite_token: Option<&str>,
) -> Response<Body> {
    if let Some(token) = rewrite_token {
        if let Some((head, body)) = playlist::for_viewer(o, token) {
            return respond_stream(app, ctx, &head, move |a, b| {
                let piece = body.slice(a as usize..=b as usize);
                futures::stream::once(async move { Ok(piece) }).boxed()
            });
        }
    }
    respond_full(app, ctx, &o.head, o.body.clone())
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
fn respond_stream(
    app: &App,
    ctx: &Ctx<'_>,
    head: &Head,
    make: impl FnOnce(u64, u64) -> BoxStream<'static, Result<Bytes, BoxError>>,
) -> Response<Body> {
    let (mut r, span) = prepare(app, ctx, head);
    if let Some((a, b)) = span {
        *r.body_mut() = counted(app, make(a, b));
    }
    r
}

/// A streamed body whose bytes count in `bytes_out`.
fn counted(
    app: &App,
    stream: impl futures::Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
) -> Body {
    let counter = app.metrics.bytes_out.clone();
    let stream = stream.map(move |r| {
        r.map(|b| {
            counter.inc_by(b.len() as u64);
            Frame::data(b)
        })
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Streams an object over the size limit straight from the upstream,
/// passing the client's range down.
async fn passthrough(app: &App, ctx: &Ctx<'_>) -> Response<Body> {
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
        .fetch(
            ctx.route,
            ctx.path,
            range,
            cache.settings().upstream_timeout,
        )
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
        headers: if ctx.headers.contains_key(header::IF_NONE_MATCH)
            || ctx.headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            ctx.headers
        } else {
            &no_range
        },
        ..*ctx
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
        *r.body_mut() = counted(app, fetched.body.map_err(BoxError::from));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json(r: Response<Body>) -> serde_json::Value {
        let body = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn failed_flights_answer_502_json() {
        let r = flight_error(&FlightError::Abandoned);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let e = json(r).await;
        assert_eq!(e["error"]["code"], "upstream_failed");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("abandoned"),
            "{e}"
        );
        let r = flight_error(&FlightError::Upstream(UpstreamError::Timeout));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json(r).await["error"]["code"], "upstream_timeout");
    }
}
