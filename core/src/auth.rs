//! Bearer user-token authentication, shared by every crate that serves
//! creators (the catalog and the upload API), so there is one
//! implementation of "who is calling".
//!
//! A user token is a 256-bit random string ([`crate::ids::new_secret_token`]);
//! `api_tokens` stores only its SHA-256 ([`crate::ids::token_digest`]).
//! A token is valid while it is neither revoked nor past `expires_at`.

use crate::http::{bearer_token, ApiError};
use axum::http::HeaderMap;
use sqlx::{PgPool, Row};

/// The caller a valid user token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// `users.id` (the row id, for joins).
    pub id: i64,
    /// `users.user_id` (the public id).
    pub user_id: String,
}

/// The user whose valid token is `token`, if any.
pub async fn user_for_token(pool: &PgPool, token: &str) -> Result<Option<AuthUser>, sqlx::Error> {
    let digest = crate::ids::token_digest(token);
    let row = sqlx::query(
        "SELECT u.id, u.user_id FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL
           AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(&digest[..])
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(AuthUser {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
        })
    })
    .transpose()
}

/// Stores a new token for user `user` (row id) and returns it; only its
/// digest is kept.
pub async fn issue_token(
    conn: &mut sqlx::PgConnection,
    user: i64,
    name: Option<&str>,
) -> Result<String, sqlx::Error> {
    let token = crate::ids::new_secret_token();
    let digest = crate::ids::token_digest(&token);
    sqlx::query("INSERT INTO api_tokens (user_id, token_hash, name) VALUES ($1, $2, $3)")
        .bind(user)
        .bind(&digest[..])
        .bind(name)
        .execute(conn)
        .await?;
    Ok(token)
}

/// Maps a database error to an answer: 503 when the database is
/// unreachable, 500 otherwise (the cause is logged, not shown).
pub fn db_error(e: &sqlx::Error) -> ApiError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::unavailable("database unavailable, retry shortly")
        }
        _ => ApiError::internal(e),
    }
}

/// The caller of a request that must carry a user token: 401 without a
/// bearer token or with one that is unknown, revoked or expired.
pub async fn require_user(pool: &PgPool, headers: &HeaderMap) -> Result<AuthUser, ApiError> {
    match optional_user(pool, headers).await? {
        Some(u) => Ok(u),
        None if headers.contains_key(axum::http::header::AUTHORIZATION) => {
            Err(ApiError::unauthorized("invalid or expired token"))
        }
        None => Err(ApiError::unauthorized(
            "missing Authorization: Bearer token",
        )),
    }
}

/// The caller of a request where a token is optional (public reads):
/// `None` without a token, 401 with an invalid one (a client that sends a
/// token expects it to count, so a bad one is an error, not anonymity).
pub async fn optional_user(
    pool: &PgPool,
    headers: &HeaderMap,
) -> Result<Option<AuthUser>, ApiError> {
    let Some(raw) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some(token) = bearer_token(Some(raw)) else {
        return Err(ApiError::unauthorized(
            "Authorization must be `Bearer <token>`",
        ));
    };
    match user_for_token(pool, token)
        .await
        .map_err(|e| db_error(&e))?
    {
        Some(u) => Ok(Some(u)),
        None => Err(ApiError::unauthorized("invalid or expired token")),
    }
}
