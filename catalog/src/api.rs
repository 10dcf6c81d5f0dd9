//! The catalog's HTTP routes: accounts, tokens, channels, and a video's
//! metadata (read, edit, delete). Uploads live in the coordinator crate.

use crate::videos;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::auth::{db_error, issue_token, optional_user, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::{is_valid_public_id, new_public_id, IdKind};
use vodfarm_core::store::SharedStore;

/// How the catalog answers.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Base URL of the origin/CDN that playback URLs point at.
    pub public_origin_url: String,
    /// Secret shared with the origin for private videos' playback tokens.
    pub signing_secret: Arc<[u8]>,
    /// How long a private video's playback token lasts.
    pub playback_token_ttl: Duration,
}

/// Shared state of the catalog handlers.
#[derive(Debug, Clone)]
pub struct CatalogState {
    /// The database.
    pub pool: PgPool,
    /// The object store (deleted videos' objects are removed from it).
    pub store: SharedStore,
    /// Settings.
    pub settings: Arc<CatalogSettings>,
}

/// The routes: `/v1/users`, `/v1/tokens`, `/v1/channels…`,
/// `GET|PATCH|DELETE /v1/videos/{video_id}`.
pub fn router(state: CatalogState) -> Router {
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/tokens", post(create_token))
        .route("/v1/channels", post(create_channel))
        .route("/v1/channels/{channel_id}", get(get_channel))
        .route("/v1/channels/{channel_id}/videos", get(channel_videos))
        .route(
            "/v1/videos/{video_id}",
            get(videos::get_video)
                .patch(videos::patch_video)
                .delete(videos::delete_video),
        )
        .with_state(state)
}

pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        message.into(),
    )
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3..=50 of `A-Z a-z 0-9 _ . -`, unique ignoring case.
    pub username: String,
    /// Unique ignoring case.
    pub email: String,
    /// 8..=1024 bytes.
    pub password: String,
}

/// A new account.
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    /// Public id.
    pub user_id: String,
    /// A user token (shown once).
    pub token: String,
}

fn valid_username(s: &str) -> bool {
    (3..=50).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_email(s: &str) -> bool {
    s.len() <= 255
        && s.find('@').is_some_and(|at| at > 0 && at + 1 < s.len())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))
}

async fn verify_password(password: String, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| ApiError::internal(&e))
}

async fn create_user(
    State(s): State<CatalogState>,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    if !valid_username(&req.username) {
        return Err(unprocessable(
            "username must be 3..=50 letters, digits, `_`, `.` or `-`",
        ));
    }
    if !valid_email(&req.email) {
        return Err(unprocessable("email is not an address"));
    }
    if !(8..=1024).contains(&req.password.len()) {
        return Err(unprocessable("password must be 8..=1024 bytes"));
    }
    let phc = hash_password(req.password).await?;
    let user_id = new_public_id(IdKind::User);
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (user_id, email, username, password_hash) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(&user_id)
    .bind(&req.email)
    .bind(&req.username)
    .bind(&phc)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("idx_users_username") => {
            ApiError::conflict("username_taken", "that username is taken")
        }
        sqlx::Error::Database(d) if d.constraint() == Some("idx_users_email") => {
            ApiError::conflict("email_taken", "an account with that email exists")
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
            unprocessable("username or email is not acceptable")
        }
        _ => db_error(&e),
    })?;
    let token = issue_token(&mut tx, id, Some("sign-up"))
        .await
        .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user_id, "user created");
    Ok((StatusCode::CREATED, ApiJson(CreatedUser { user_id, token })).into_response())
}

/// `POST /v1/tokens`: log in with a username (or email) and password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Username or email.
    #[serde(default)]
    pub username: Option<String>,
    /// Email (instead of `username`).
    #[serde(default)]
    pub email: Option<String>,
    /// Password.
    pub password: String,
}

/// A new user token.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    /// The token (shown once).
    pub token: String,
    /// Its owner's public id.
    pub user_id: String,
}

/// A PHC string of a throwaway password, verified when the account does
/// not exist so that a login takes as long either way.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1yJ4yW9ETDgWQzyg3WJLK4ytl2yZJTk6d8AVRmyZ9l0";

async fn create_token(
    State(s): State<CatalogState>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let login = req
        .username
        .or(req.email)
        .ok_or_else(|| unprocessable("username (or email) is required"))?;
    if login.len() > 255 || login.contains('\0') || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let row = sqlx::query(
        "SELECT id, user_id, password_hash FROM users
         WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1",
    )
    .bind(&login)
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let (id, user_id, phc) = match &row {
        Some(r) => (
            r.try_get::<i64, _>("id").map_err(|e| db_error(&e))?,
            r.try_get::<String, _>("user_id")
                .map_err(|e| db_error(&e))?,
            r.try_get::<String, _>("password_hash")
                .map_err(|e| db_error(&e))?,
        ),
        None => (0, String::new(), DUMMY_PHC.to_owned()),
    };
    let ok = verify_password(req.password, phc).await?;
    if !ok || row.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        ));
    }
    let mut conn = s.pool.acquire().await.map_err(|e| db_error(&e))?;
    let token = issue_token(&mut conn, id, Some("login"))
        .await
        .map_err(|e| db_error(&e))?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken { token, user_id }),
    )
        .into_response())
}

/// `POST /v1/channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// 1..=100 characters.
    pub name: String,
    /// Up to 5,000 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// A new channel.
#[derive(Debug, Serialize)]
pub struct CreatedChannel {
    /// Public id.
    pub channel_id: String,
}

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

async fn create_channel(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateChannel>,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    check_text("name", &req.name, 100, false)?;
    if let Some(d) = &req.description {
        check_text("description", d, 5000, true)?;
    }
    let channel_id = new_public_id(IdKind::Channel);
    sqlx::query(
        "INSERT INTO channels (channel_id, user_id, name, description) VALUES ($1, $2, $3, $4)",
    )
    .bind(&channel_id)
    .bind(user.id)
    .bind(req.name.trim())
    .bind(&req.description)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    tracing::info!(channel_id = %channel_id, user_id = %user.user_id, "channel created");
    Ok((StatusCode::CREATED, ApiJson(CreatedChannel { channel_id })).into_response())
}

/// A channel as the API shows it.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    /// Public id.
    pub channel_id: String,
    /// The owner's public user id.
    pub owner_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Subscribers.
    pub subscriber_count: i64,
    /// Public, ready videos.
    pub video_count: i64,
    /// Created.
    pub created_at: Option<DateTime<Utc>>,
}

async fn get_channel(
    State(s): State<CatalogState>,
    Path(channel_id): Path<String>,
) -> Result<ApiJson<ChannelView>, ApiError> {
    if !is_valid_public_id(&channel_id) {
        return Err(ApiError::not_found("no such channel"));
    }
    let row = sqlx::query(
        "SELECT c.channel_id, u.user_id AS owner_id, c.name, c.description,
                coalesce(c.subscriber_count, 0) AS subscriber_count, c.created_at,
                (SELECT count(*) FROM videos v WHERE v.channel_id = c.id
                   AND v.status = 'ready' AND v.privacy = 'public') AS video_count
         FROM channels c JOIN users u ON u.id = c.user_id WHERE c.channel_id = $1",
    )
    .bind(&channel_id)
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error(&e))?
    .ok_or_else(|| ApiError::not_found("no such channel"))?;
    let get = |r: &sqlx::postgres::PgRow| -> Result<ChannelView, sqlx::Error> {
        Ok(ChannelView {
            channel_id: r.try_get("channel_id")?,
            owner_id: r.try_get("owner_id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            subscriber_count: r.try_get("subscriber_count")?,
            video_count: r.try_get("video_count")?,
            created_at: r.try_get("created_at")?,
        })
    };
    Ok(ApiJson(get(&row).map_err(|e| db_error(&e))?))
}

/// Query of `GET /v1/channels/{id}/videos`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Page size, 1..=100 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One page of a channel's videos.
#[derive(Debug, Serialize)]
pub struct VideoPage {
    /// Newest first.
    pub videos: Vec<videos::VideoSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

async fn channel_videos(
    State(s): State<CatalogState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<VideoPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let viewer = optional_user(&s.pool, &headers).await?;
    if !is_valid_public_id(&channel_id) {
        return Err(ApiError::not_found("no such channel"));
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=100"));
    }
    let channel: (i64, i64) =
        sqlx::query_as("SELECT id, user_id FROM channels WHERE channel_id = $1")
            .bind(&channel_id)
            .fetch_optional(&s.pool)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
    let owner = viewer.as_ref().is_some_and(|u| u.id == channel.1);
    let before: Option<i64> = match &q.cursor {
        None => None,
        Some(c) => {
            let id = if is_valid_public_id(c) {
                sqlx::query_scalar("SELECT id FROM videos WHERE video_id = $1 AND channel_id = $2")
                    .bind(c)
                    .bind(channel.0)
                    .fetch_optional(&s.pool)
                    .await
                    .map_err(|e| db_error(&e))?
            } else {
                None
            };
            Some(id.ok_or_else(|| ApiError::bad_request("invalid cursor"))?)
        }
    };
    let (videos, more) = videos::list(&s, channel.0, owner, before, limit).await?;
    let next_cursor = if more {
        videos.last().map(|v| v.video_id.clone())
    } else {
        None
    };
    Ok(ApiJson(VideoPage {
        videos,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_emails() {
        assert!(valid_username("alice_01"));
        assert!(!valid_username("al"));
        assert!(!valid_username("al ice"));
        assert!(valid_email("a@b"));
        assert!(!valid_email("@b"));
        assert!(!valid_email("a@"));
        assert!(!valid_email("a b@c"));
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
