//! Phase 1, route: what the request asks for.

use super::respond::{empty, error, full};
use super::{App, Body, Step};
use crate::Route;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use vodfarm_core::telemetry::{render_metrics, METRICS_CONTENT_TYPE};

const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// The object a GET or HEAD request names. Answers itself everything
/// else: `/healthz` and `/metrics` (any method), paths that are not one of
/// the seed's routes (404), CORS preflights of a route (204) and other
/// methods (405). Reads no video state.
pub(super) fn route(app: &App, parts: &http::request::Parts) -> Step<Route> {
    let path = parts.uri.path();
    match path {
        "/healthz" => return Step::Answer(healthz(app)),
        "/metrics" => return Step::Answer(metrics(app)),
        _ => {}
    }
    let Some(route) = crate::route(path) else {
        return Step::Answer(error(StatusCode::NOT_FOUND, "not_found", "no such route"));
    };
    if parts.method == Method::OPTIONS {
        return Step::Answer(preflight());
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET or HEAD",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED));
        return Step::Answer(r);
    }
    Step::Next(route)
}

fn healthz(app: &App) -> Response<Body> {
    let body = serde_json::json!({
        "status": "ok",
        "listening": app.access.is_listening(),
        "degraded": app.access.is_degraded(),
    });
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn metrics(app: &App) -> Response<Body> {
    let (bytes, objects) = app.cache.usage();
    app.metrics.cache_bytes.set(bytes as i64);
    app.metrics.cache_objects.set(objects as i64);
    let mut r = Response::new(full(Bytes::from(render_metrics(&app.metrics.registry))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    r
}

fn preflight() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range, If-None-Match, If-Modified-Since, If-Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED));
    r
}
