//! What every vodfarm HTTP API shares: the error body
//! `{"error": {"code", "message", "field"?}}` and a JSON extractor whose
//! rejections answer in that shape, in our own words (which field is
//! wrong and how), never with the parser's internals.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
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
    /// The request field the error is about (`title`, `tags[2]`), when it
    /// is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 422 `invalid_request` about one field of the request.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message);
        e.field = Some(field.to_owned());
        e
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

    /// The same error with `Retry-After: secs` (429, 503).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

/// Like [`axum::Json`], but a body that is not JSON, not of the expected
/// shape or not sent as `application/json` gets an [`ApiError`] that says
/// what is wrong in our words: 415 without a JSON content type, 413 past
/// the body limit, 400 `malformed_json` with the line and column of a
/// syntax error, 422 `invalid_request` naming the field that is missing,
/// unknown or of the wrong type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        // A JSON body is small: one that trickles in is a slow client
        // holding a connection (the server's header timeout ends when the
        // headers are in).
        let limit = req
            .extensions()
            .get::<crate::serve::BodyTimeout>()
            .map_or(JSON_BODY_TIMEOUT, |t| t.0);
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state));
        let bytes = read.await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {limit:?}"),
            )
        })?;
        let bytes = bytes.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the body is larger than this route accepts",
                )
            } else {
                ApiError::bad_request("the body could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Longest wait for a whole JSON body (408 after it) when the server did
/// not say (`--http-body-timeout` does).
pub const JSON_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `application/json` or `application/<anything>+json`, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decodes a JSON body into `T`, describing what is wrong if it cannot.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        describe_json_error(&path, e.inner())
    })?;
    de.end().map_err(|e| describe_json_error(".", &e))?;
    Ok(value)
}

/// Our words for a JSON decoding error at `path` (serde_path_to_error's
/// notation, `.` for the whole body).
fn describe_json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        ),
        Category::Eof => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body ends before its JSON does",
        ),
        Category::Data => describe_data_error(path, &e.to_string()),
    }
}

/// A shape error, from serde's message (whose forms serde fixes: "missing
/// field `x`", "unknown field `x`, …", "invalid type: …, expected …",
/// "invalid value: …, expected …", "unknown variant `x`, …", "invalid
/// length …"). Only the field name and our wording reach the client.
fn describe_data_error(path: &str, serde_message: &str) -> ApiError {
    let quoted = serde_message
        .split('`')
        .nth(1)
        .filter(|name| name.len() <= 100);
    // An unknown field's path already ends with it; a missing one's is
    // the object that lacks it.
    let join = |name: &str| {
        if path == "." || path == name {
            name.to_owned()
        } else if path.ends_with(&format!(".{name}")) {
            path.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    let at = if path == "." {
        None
    } else {
        Some(path.to_owned())
    };
    if let (true, Some(name)) = (serde_message.starts_with("missing field"), quoted) {
        let field = join(name);
        return ApiError::invalid_field(&field, format!("`{field}` is required"));
    }
    if let (true, Some(name)) = (serde_message.starts_with("unknown field"), quoted) {
        let field = join(name);
        return ApiError::invalid_field(
            &field,
            format!("`{field}` is not a field of this request"),
        );
    }
    let Some(field) = at else {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the body must be a JSON object with this request's fields",
        );
    };
    let expected = serde_message
        .split_once(", expected ")
        .map(|(_, rest)| rest.split(" at line ").next().unwrap_or(rest))
        .map(expectation);
    let message = if serde_message.starts_with("unknown variant") {
        format!("`{field}` is not one of the accepted values")
    } else if serde_message.starts_with("invalid length") {
        format!("`{field}` has the wrong number of items")
    } else {
        match expected {
            Some(what) => format!("`{field}` must be {what}"),
            None => format!("`{field}` is not acceptable"),
        }
    };
    ApiError::invalid_field(&field, message)
}

/// What a serde expectation means to a client.
fn expectation(serde_expected: &str) -> &'static str {
    let e = serde_expected.trim();
    match e {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a sequence" => "a list",
        _ if e.starts_with("struct ") || e == "a map" => "an object",
        _ if e.contains("UUID") || e.contains("uuid") => "a UUID",
        _ if e.starts_with("RFC 3339") || e.contains("datetime") => "a date-time",
        _ => "of another type",
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

/// The answer of `GET /readyz` for a role that is ready when its database
/// answered: `{"status": "ready"}`, or 503 `unavailable` saying so.
pub fn database_readiness(answered: bool) -> Response {
    if answered {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database cannot be reached",
        )
        .into_response()
    }
}

/// Answers an unknown route with a JSON 404.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
        size: u64,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    fn refusal(body: &str) -> ApiError {
        parse_json::<Shape>(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn json_errors_name_the_field_in_our_words() {
        let cases = [
            (r#"{"size": 1}"#, Some("name"), "`name` is required"),
            (
                r#"{"name": "a", "size": 1, "nmae": 2}"#,
                Some("nmae"),
                "`nmae` is not a field of this request",
            ),
            (
                r#"{"name": 5, "size": 1}"#,
                Some("name"),
                "`name` must be a string",
            ),
            (
                r#"{"name": "a", "size": -1}"#,
                Some("size"),
                "`size` must be a whole number, 0 or more",
            ),
            (
                r#"{"name": "a", "size": 1, "tags": ["x", 3]}"#,
                Some("tags[1]"),
                "`tags[1]` must be a string",
            ),
            (
                r#"{"name": "a", "size": 1, "inner": {}}"#,
                Some("inner.flag"),
                "`inner.flag` is required",
            ),
            (
                r#"{"name": "a", "size": 1, "inner": {"flag": "yes"}}"#,
                Some("inner.flag"),
                "`inner.flag` must be true or false",
            ),
            (
                "[]",
                None,
                "the body must be a JSON object with this request's fields",
            ),
        ];
        for (body, field, message) in cases {
            let e = refusal(body);
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(e.field.as_deref(), field, "{body}");
            assert_eq!(e.message, message, "{body}");
        }
    }

    #[test]
    fn syntax_errors_say_where_without_internals() {
        for body in ["{", r#"{"name": "a", "size": 1} trailing"#, "not json", ""] {
            let e = refusal(body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.code, "malformed_json");
            assert!(
                !e.message.contains("serde") && !e.message.contains("Shape"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_json(&h), ok, "{v}");
        }
    }

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
