//! Routes only dev serves: the page's demo session and a queue view (the
//! coordinator's operator API needs a token the browser lacks).
//!
//! `/v1/dev/session` hands out the demo creator's token, so it exists only
//! under `vodfarm dev`, which listens on localhost, and answers only when
//! the request's `Host` is a loopback name or address: a page on another
//! site whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own
//! name in `Host`, and gets 403. These routes never answer with CORS
//! headers (`crate::api` adds them after its CORS layer), and a request
//! whose `Origin` is not a loopback page is refused too, so another site
//! cannot read them through the user's browser.

use super::demo::DemoSession;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::OnceCell;
use vodfarm_core::http::ApiError;

/// The dev routes. `session` is filled once the demo creator exists (the
/// api must run before the session can be made).
pub(crate) fn dev_routes(
    session: Arc<OnceCell<DemoSession>>,
    coordinator: String,
    token: String,
) -> axum::Router {
    let http = reqwest::Client::new();
    axum::Router::new()
        .route(
            "/v1/dev/session",
            get(move || {
                let session = session.get().cloned();
                async move {
                    match session {
                        Some(s) => axum::Json(s).into_response(),
                        None => ApiError::not_found("no demo session (--no-demo)").into_response(),
                    }
                }
            }),
        )
        .route(
            "/v1/dev/queue",
            get(move || {
                let (http, url, token) = (
                    http.clone(),
                    format!("{coordinator}/v1/queue/stats"),
                    token.clone(),
                );
                async move {
                    match http.get(url).bearer_auth(token).send().await {
                        Ok(r) => match r.json::<serde_json::Value>().await {
                            Ok(v) => axum::Json(v).into_response(),
                            Err(e) => ApiError::internal(&e).into_response(),
                        },
                        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
                    }
                }
            }),
        )
        .route_layer(middleware::from_fn(loopback_host_only))
}

/// 403 unless the request names a loopback host (`Host`, or the
/// authority of an HTTP/2 request) and, when it says where it comes from
/// (`Origin`), comes from a loopback page.
async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| {
            req.uri()
                .authority()
                .map(axum::http::uri::Authority::as_str)
        });
    let origin_ok = match req.headers().get(header::ORIGIN) {
        None => true,
        Some(o) => o
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && is_loopback_host(host)
            }),
    };
    if origin_ok && host.is_some_and(is_loopback_host) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "dev routes answer only on a loopback host (localhost, 127.0.0.1, [::1])",
        )
        .into_response()
    }
}

/// `localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, with or without a
/// port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "0.0.0.0",
            "",
            "localhost:80x",
            "[::1]x",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
