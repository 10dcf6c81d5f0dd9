//! Likes and subscriptions (strongly consistent, as the seed asks): the
//! row (`video_likes`, `subscriptions`, unique per user) and its counter
//! (`videos.like_count`, `channels.subscriber_count`) change in one
//! transaction, and the counter moves only when the row was really
//! inserted or deleted, so concurrent clicks leave it exact.
//!
//! `PUT|DELETE /v1/videos/{id}/like`, `PUT|DELETE
//! /v1/channels/{id}/subscription`, `GET /v1/me/subscriptions/videos`.

use crate::cards::{card, VideoCard};
use crate::state::CatalogState;
use crate::videos::visible_video;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use vodfarm_core::auth::{db_error, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::is_valid_public_id;

/// A like's state after the request.
#[derive(Debug, Serialize)]
pub struct LikeState {
    /// The caller likes the video.
    pub liked: bool,
    /// The video's likes.
    pub like_count: i64,
}

/// A subscription's state after the request.
#[derive(Debug, Serialize)]
pub struct SubscriptionState {
    /// The caller is subscribed.
    pub subscribed: bool,
    /// The channel's subscribers.
    pub subscriber_count: i64,
}

async fn set_like(
    s: &CatalogState,
    video_id: &str,
    headers: &HeaderMap,
    like: bool,
) -> Result<ApiJson<LikeState>, ApiError> {
    let user = require_user(&s.pool, headers).await?;
    let v = visible_video(s, video_id, Some(&user)).await?;
    if v.view.status != "ready" {
        return Err(ApiError::not_found("no such video"));
    }
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    let changed = if like {
        sqlx::query(
            "INSERT INTO video_likes (user_id, video_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
    } else {
        sqlx::query("DELETE FROM video_likes WHERE user_id = $1 AND video_id = $2")
    }
    .bind(user.id)
    .bind(v.id)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?
    .rows_affected();
    let count: i64 = sqlx::query_scalar(
        "UPDATE videos SET like_count = greatest(coalesce(like_count, 0) + $2, 0)
         WHERE id = $1 RETURNING like_count::bigint",
    )
    .bind(v.id)
    .bind(counter_step(changed, like))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    Ok(ApiJson(LikeState {
        liked: like,
        like_count: count,
    }))
}

/// How far a like or subscriber counter moves after the toggle's
/// `INSERT … ON CONFLICT DO NOTHING` / `DELETE` touched `changed` rows:
/// not at all when the row already was (or was not) there, so concurrent
/// clicks keep the counter equal to the number of rows.
fn counter_step(changed: u64, on: bool) -> i64 {
    match (changed, on) {
        (0, _) => 0,
        (_, true) => 1,
        (_, false) => -1,
    }
}

/// `PUT /v1/videos/{video_id}/like`.
pub async fn like(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<LikeState>, ApiError> {
    set_like(&s, &video_id, &headers, true).await
}

/// `DELETE /v1/videos/{video_id}/like`.
pub async fn unlike(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<LikeState>, ApiError> {
    set_like(&s, &video_id, &headers, false).await
}

async fn set_subscription(
    s: &CatalogState,
    channel_id: &str,
    headers: &HeaderMap,
    subscribe: bool,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
    let user = require_user(&s.pool, headers).await?;
    let not_found = || ApiError::not_found("no such channel");
    if !is_valid_public_id(channel_id) {
        return Err(not_found());
    }
    let channel: i64 = sqlx::query_scalar("SELECT id FROM channels WHERE channel_id = $1")
        .bind(channel_id)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error(&e))?
        .ok_or_else(not_found)?;
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    let changed = if subscribe {
        sqlx::query("INSERT INTO subscriptions (user_id, channel_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
    } else {
        sqlx::query("DELETE FROM subscriptions WHERE user_id = $1 AND channel_id = $2")
    }
    .bind(user.id)
    .bind(channel)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?
    .rows_affected();
    let count: i64 = sqlx::query_scalar(
        "UPDATE channels SET subscriber_count = greatest(coalesce(subscriber_count, 0) + $2, 0)
         WHERE id = $1 RETURNING subscriber_count",
    )
    .bind(channel)
    .bind(counter_step(changed, subscribe))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    Ok(ApiJson(SubscriptionState {
        subscribed: subscribe,
        subscriber_count: count,
    }))
}

/// `PUT /v1/channels/{channel_id}/subscription`.
pub async fn subscribe(
    State(s): State<CatalogState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
    set_subscription(&s, &channel_id, &headers, true).await
}

/// `DELETE /v1/channels/{channel_id}/subscription`.
pub async fn unsubscribe(
    State(s): State<CatalogState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
    set_subscription(&s, &channel_id, &headers, false).await
}

/// Query of `GET /v1/me/subscriptions/videos`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Page size, 1..=100 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A page of the subscriptions feed.
#[derive(Debug, Serialize)]
pub struct FeedPage {
    /// Newest first.
    pub videos: Vec<VideoCard>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/me/subscriptions/videos`: the newest ready public videos of
/// the channels the caller subscribes to.
pub async fn subscription_videos(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<FeedPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user = require_user(&s.pool, &headers).await?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=100"));
    }
    let before: Option<i64> = match &q.cursor {
        None => None,
        Some(c) => {
            let id = if is_valid_public_id(c) {
                sqlx::query_scalar("SELECT id FROM videos WHERE video_id = $1")
                    .bind(c)
                    .fetch_optional(&s.pool)
                    .await
                    .map_err(|e| db_error(&e))?
            } else {
                None
            };
            Some(id.ok_or_else(|| ApiError::bad_request("invalid cursor"))?)
        }
    };
    let rows = sqlx::query_as(
        "SELECT v.video_id, c.channel_id, c.name, v.title, v.duration_seconds,
                v.view_count, v.like_count, v.published_at
         FROM subscriptions s
         JOIN channels c ON c.id = s.channel_id
         JOIN videos v ON v.channel_id = c.id
         WHERE s.user_id = $1 AND v.status = 'ready' AND v.privacy = 'public'
           AND ($2::bigint IS NULL OR v.id < $2)
         ORDER BY v.id DESC LIMIT $3",
    )
    .bind(user.id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let more = rows.len() as i64 > limit;
    let videos: Vec<VideoCard> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| card(&s, r))
        .collect();
    let next_cursor = if more {
        videos.last().map(|v| v.video_id.clone())
    } else {
        None
    };
    Ok(ApiJson(FeedPage {
        videos,
        next_cursor,
    }))
}
