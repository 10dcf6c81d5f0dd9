//! What every vodfarm HTTP API shares: the error body
//! `{"error": {"code", "message"}}` and a JSON extractor whose rejections
//! answer in that shape instead of axum's plain-text ones.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, snake_case, for programs (`lease_lost`, `not_found`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

/// An error answer: status code plus [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 500 `internal`: the cause is logged, not shown to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Like [`axum::Json`], but a body that is not JSON, not of the expected
/// shape or not sent as `application/json` gets an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let (status, code) = match &rejection {
                    JsonRejection::JsonSyntaxError(_) => {
                        (StatusCode::BAD_REQUEST, "malformed_json")
                    }
                    JsonRejection::JsonDataError(_) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
                    }
                    JsonRejection::MissingJsonContentType(_) => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                    }
                    JsonRejection::BytesRejection(_) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                    }
                    _ => (StatusCode::BAD_REQUEST, "invalid_request"),
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(header: Option<&axum::http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(token.trim())
    } else {
        None
    }
}

/// Serves `app` on `listener` (with [`crate::serve`]'s limits) until
/// `stop` is cancelled, which `shutdown` completing does; requests in
/// flight finish first. `stop` is cancelled on return either way, so the
/// role's background tasks end with it.
pub async fn serve_until_shutdown(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    server: (crate::serve::ServerLimits, crate::serve::ConnectionMetrics),
    stop: tokio_util::sync::CancellationToken,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    role: &'static str,
) {
    let stop_serving = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(role, "shutting down: finishing requests");
        stop_serving.cancel();
    });
    let (limits, metrics) = server;
    crate::serve::serve_router(listener, app, limits, metrics, stop.clone()).await;
    stop.cancel();
}

/// Answers an unknown route with a JSON 404.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let h = HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer_token(Some(&h)), Some("abc"));
        let h = HeaderValue::from_static("bearer  abc ");
        assert_eq!(bearer_token(Some(&h)), Some("abc"));
        let h = HeaderValue::from_static("Basic abc");
        assert_eq!(bearer_token(Some(&h)), None);
        let h = HeaderValue::from_static("Bearer ");
        assert_eq!(bearer_token(Some(&h)), None);
        assert_eq!(bearer_token(None), None);
    }
}
