//! Phase 5, log: every response, early answers included, is counted in
//! `vodfarm_origin_requests_total{route,status}` and logged on the
//! `vodfarm::access` target. The query (it may hold a token) is never
//! logged.

use super::lookup::CacheStatus;
use super::App;
use http::StatusCode;
use std::time::Instant;

/// Counts and logs one answered request.
pub(super) fn log(
    app: &App,
    parts: &http::request::Parts,
    status: StatusCode,
    cache: CacheStatus,
    started: Instant,
) {
    let path = parts.uri.path();
    let label = route_label(path);
    app.metrics
        .requests
        .with_label_values(&[label, status.as_str()])
        .inc();
    tracing::info!(
        target: "vodfarm::access",
        method = %parts.method,
        path,
        status = status.as_u16(),
        route = label,
        cache = cache.as_str(),
        version = ?parts.version,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels() {
        assert_eq!(route_label("/v/x/720p/segment_1.ts"), "segment");
        assert_eq!(route_label("/v/x/master.m3u8"), "master");
        assert_eq!(route_label("/healthz"), "healthz");
        assert_eq!(route_label("/x"), "other");
    }
}
