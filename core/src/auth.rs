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
    /// `api_tokens.id` of the token the request carried (logout and
    /// password changes act on it or spare it).
    pub token: i64,
}

/// `last_used_at` is written at most this often per token, so reads do
/// not each become a write.
const LAST_USED_PRECISION_SECS: f64 = 60.0;

/// The user whose valid token is `token`, if any. Notes the token's use
/// (to the minute).
pub async fn user_for_token(pool: &PgPool, token: &str) -> Result<Option<AuthUser>, sqlx::Error> {
    let digest = crate::ids::token_digest(token);
    let row = sqlx::query(
        "SELECT u.id, u.user_id, t.id AS token,
                (t.last_used_at IS NULL
                 OR t.last_used_at < now() - make_interval(secs => $2)) AS stale
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL
           AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(&digest[..])
    .bind(LAST_USED_PRECISION_SECS)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let user = AuthUser {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        token: r.try_get("token")?,
    };
    if r.try_get::<bool, _>("stale")? {
        sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(user.token)
            .execute(pool)
            .await?;
    }
    Ok(Some(user))
}

/// Most live tokens one user keeps; issuing one more revokes the oldest.
pub const MAX_LIVE_TOKENS: i64 = 100;

/// A token just issued (the secret is shown once).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The bearer secret.
    pub token: String,
    /// Its public id (`t_…`), for listing and revoking.
    pub token_id: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Stores a new token for user `user` (row id), valid for `ttl`, and
/// returns it; only its digest is kept. Past [`MAX_LIVE_TOKENS`] live
/// tokens, the user's oldest are revoked.
pub async fn issue_token(
    conn: &mut sqlx::PgConnection,
    user: i64,
    name: Option<&str>,
    ttl: std::time::Duration,
) -> Result<IssuedToken, sqlx::Error> {
    let token = crate::ids::new_secret_token();
    let digest = crate::ids::token_digest(&token);
    let token_id = crate::ids::new_public_id(crate::ids::IdKind::Token);
    let expires_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, token_hash, name, token_id, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
    )
    .bind(user)
    .bind(&digest[..])
    .bind(name)
    .bind(&token_id)
    .bind(ttl.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE id IN (
             SELECT id FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
             ORDER BY created_at DESC, id DESC OFFSET $2)",
    )
    .bind(user)
    .bind(MAX_LIVE_TOKENS)
    .execute(&mut *conn)
    .await?;
    Ok(IssuedToken {
        token,
        token_id,
        expires_at,
    })
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
