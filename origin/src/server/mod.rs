//! The HTTP side: one handler for every request, run as the same named
//! phases Pingora's `ProxyHttp` uses, each in a file of its own:
//!
//! 1. `route` (`route.rs`): the path names an object ([`Route`]), or the
//!    phase answers itself: `/healthz`, `/metrics`, unknown paths (404),
//!    CORS preflights (204), methods other than GET and HEAD (405).
//! 2. `access` (`access.rs`): the video's state and the request's token
//!    decide whether it may be served (404, 403, or 503 when the state is
//!    unknown); a granted request gets its `Ctx`.
//! 3. `lookup` (`lookup.rs`): where the bytes come from: a cached object,
//!    a flight (joined or started) once its head has come, a stale copy
//!    when the upstream failed, the upstream directly (objects over the
//!    size limit), or nowhere (404, 502). It sets the cache status and
//!    counts hits, misses, coalesced waiters and stale answers; it never
//!    builds a response.
//! 4. `respond` (`respond.rs`): status, headers and body for that source:
//!    caching headers, CORS, conditional requests and ranges
//!    (`prepare.rs`), per-viewer playlist rewriting (`playlist.rs`), and
//!    streaming from memory, a flight, or the upstream.
//!    MP4 downloads get their `Content-Disposition` (`download.rs`).
//! 5. `log` (`log.rs`): metrics and the access log line, for every
//!    response, those answered early included.
//!
//! A phase before `respond` returns a `Step`: go on with its output, or an
//! answer given early, which skips to `log`. Errors are answers: the
//! handler never fails.

mod access;
mod download;
mod log;
mod lookup;
mod playlist;
mod prepare;
mod respond;
mod route;

pub use playlist::rewrite_playlist;

use crate::access::{Access, Grant};
use crate::cache::ObjectCache;
use crate::metrics::OriginMetrics;
use crate::Route;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use lookup::CacheStatus;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

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

/// What the phases after `access` know of a granted request.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    /// The request path (shield mode asks the next tier for the same).
    path: &'a str,
    /// HEAD: headers only.
    head_only: bool,
    /// The request's headers (conditions, range).
    headers: &'a HeaderMap,
    /// The object.
    route: &'a Route,
    /// What access granted.
    grant: Grant,
    /// The viewer's token, to add to every URI of the playlist answered:
    /// set for a private playlist fetched by a viewer (players do not
    /// carry the query string over to relative URIs), never for a tier
    /// (tiers fetch the stored bytes as they are).
    rewrite_token: Option<&'a str>,
}

/// What a phase before `respond` decided.
enum Step<T> {
    /// Go on to the next phase with this.
    Next(T),
    /// The answer, given early.
    Answer(Response<Body>),
}

/// Handles one request; never fails (errors are answers).
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let mut cache = CacheStatus::None;
    let resp = serve(&app, &parts, &mut cache).await;
    log::log(&app, &parts, resp.status(), cache, started);
    Ok(resp)
}

/// The phases from `route` to `respond`; `cache` is the cache status for
/// the log.
async fn serve(
    app: &Arc<App>,
    parts: &http::request::Parts,
    cache: &mut CacheStatus,
) -> Response<Body> {
    let route = match route::route(app, parts) {
        Step::Next(route) => route,
        Step::Answer(answer) => return answer,
    };
    let ctx = match access::access(app, parts, &route).await {
        Step::Next(ctx) => ctx,
        Step::Answer(answer) => return answer,
    };
    let (source, status) = lookup::lookup(app, &ctx).await;
    *cache = status;
    let resp = respond::respond(app, &ctx, source).await;
    if route.is_download {
        return download::name_the_file(app, &route, resp).await;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::lookup::Source;
    use super::*;
    use crate::cache::CacheSettings;
    use crate::flight::{FlightError, Join};
    use crate::upstream::{HttpUpstream, Upstream};
    use http::StatusCode;
    use std::time::Duration;

    /// An app whose upstream and database are never reached.
    fn app() -> App {
        let metrics = OriginMetrics::new().unwrap();
        let upstream = HttpUpstream::new("http://127.0.0.1:9", None).unwrap();
        let cache = ObjectCache::new(
            Upstream::Origin(Box::new(upstream)),
            CacheSettings {
                max_bytes: 1 << 20,
                max_object: 1 << 20,
                upstream_timeout: Duration::from_secs(1),
                playlist_ttl: Duration::from_secs(1),
            },
            metrics.clone(),
        );
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .unwrap();
        let access = Access::new(
            pool,
            None,
            Duration::from_secs(1),
            Duration::from_secs(600),
            metrics.clone(),
        );
        App::new(
            Arc::new(cache),
            Arc::new(access),
            metrics,
            &ServeSettings {
                playlist_max_age: 1,
                playlist_swr: 1,
                stale_if_error: 1,
            },
        )
    }

    #[tokio::test]
    async fn waiters_of_an_abandoned_flight_answer_502() {
        let app = app();
        let path = "/v/v_a/720p/segment_0.ts";
        let route = crate::route(path).unwrap();
        let headers = HeaderMap::new();
        let ctx = Ctx {
            path,
            head_only: false,
            headers: &headers,
            route: &route,
            grant: Grant { private: false },
            rewrite_token: None,
        };
        let Join::Started(owner) = app.cache.flights().join(route.key.as_str(), || None::<()>)
        else {
            panic!("a flight already ran");
        };
        // A request joins the flight; its fetch task dies.
        let (found, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), lookup::lookup(&app, &ctx)),
            async move {
                tokio::task::yield_now().await;
                drop(owner);
            }
        );
        let (source, status) = found.expect("the waiter hangs on the abandoned flight");
        assert_eq!(status, CacheStatus::Coalesced);
        assert!(
            matches!(source, Source::Failed(FlightError::Abandoned)),
            "{source:?}"
        );
        let r = respond::respond(&app, &ctx, source).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
    }
}
