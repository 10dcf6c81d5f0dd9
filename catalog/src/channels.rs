//! Channels: create, read, and the keyset-paged list of a channel's
//! videos.

use crate::state::CatalogState;
use crate::validate::check_text;
use crate::videos;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use vodfarm_core::auth::{db_error, optional_user, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::{is_valid_public_id, new_public_id, IdKind};

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

pub(crate) async fn create_channel(
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

pub(crate) async fn get_channel(
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

pub(crate) async fn channel_videos(
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
