//! A user's tokens: `GET /v1/tokens` (the caller's live tokens, never
//! their secrets), `DELETE /v1/tokens/{token_id}` and `DELETE
//! /v1/tokens/current` (log out). Revocation takes effect at once: every
//! request looks its token up.

use crate::state::CatalogState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use vodfarm_core::auth::{db_error, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::is_valid_public_id;

/// One token, as its owner sees it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TokenView {
    /// Public id (`t_…`).
    pub token_id: String,
    /// What made it (`sign-up`, `login`).
    pub name: Option<String>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request (to the minute), if ever.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it is the token of this request.
    pub current: bool,
}

/// `GET /v1/tokens`'s answer.
#[derive(Debug, Serialize)]
pub struct TokenList {
    /// Live tokens (neither revoked nor expired), newest first.
    pub tokens: Vec<TokenView>,
}

pub(crate) async fn list_tokens(
    State(s): State<CatalogState>,
    headers: HeaderMap,
) -> Result<ApiJson<TokenList>, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let tokens = sqlx::query_as::<_, TokenView>(
        "SELECT token_id, name, created_at, last_used_at, expires_at, id = $2 AS current
         FROM api_tokens
         WHERE user_id = $1 AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())
         ORDER BY created_at DESC, id DESC",
    )
    .bind(user.id)
    .bind(user.token)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    Ok(ApiJson(TokenList { tokens }))
}

/// `DELETE /v1/tokens/{token_id}`: 204, or 404 when the caller has no
/// such live token (someone else's token is not revealed).
pub(crate) async fn revoke_token(
    State(s): State<CatalogState>,
    Path(token_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    if !is_valid_public_id(&token_id) {
        return Err(ApiError::not_found("no such token"));
    }
    let revoked = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE token_id = $1 AND user_id = $2 AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(&token_id)
    .bind(user.id)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error(&e))?
    .rows_affected();
    if revoked == 0 {
        return Err(ApiError::not_found("no such token"));
    }
    tracing::info!(user_id = %user.user_id, token_id, "token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/tokens/current`: log out (the request's own token).
pub(crate) async fn log_out(
    State(s): State<CatalogState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(user.token)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user.user_id, "logged out");
    Ok(StatusCode::NO_CONTENT.into_response())
}
