//! Routes only dev serves: the page's demo session and a queue view (the
//! coordinator's operator API needs a token the browser lacks).
//!
//! `/v1/dev/session` hands out the demo creator's token, so it exists only
//! under `vodfarm dev`, which listens on localhost.

use super::demo::DemoSession;
use axum::response::IntoResponse;
use axum::routing::get;
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
}
