//! Checks every catalog route applies to what a client sends.

use axum::http::StatusCode;
use vodfarm_core::http::ApiError;

/// A 422 `invalid_request` with `message`.
pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        message.into(),
    )
}

/// `name` holds 1..=`max` characters (0 allowed when `allow_empty`)
/// and no NUL.
pub(crate) fn check_text(
    name: &str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ApiError> {
    if (!allow_empty && v.trim().is_empty()) || v.chars().count() > max || v.contains('\0') {
        return Err(unprocessable(format!(
            "{name} must be 1..={max} characters"
        )));
    }
    Ok(())
}
