//! Checks every catalog route applies to what a client sends.

use axum::http::StatusCode;
use vodfarm_core::http::ApiError;
use vodfarm_core::text::Lines;

/// A 422 `invalid_request` with `message`.
pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        message.into(),
    )
}

/// `name` holds 1..=`max` characters (0 allowed when `allow_empty`), no
/// control characters and no bidi overrides (`core::text`); only
/// descriptions may hold line breaks.
pub(crate) fn check_text(
    name: &str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ApiError> {
    let lines = if name == "description" {
        Lines::Multi
    } else {
        Lines::Single
    };
    vodfarm_core::text::check(name, v, max, allow_empty, lines)
}
