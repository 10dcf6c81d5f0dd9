//! A viewer's watch history: `GET /v1/me/history` (keyset pages, newest
//! first), `GET /v1/me/continue-watching` (unfinished videos with their
//! position), `DELETE /v1/me/history` (erased everywhere: the watch
//! store's rows, the viewer's recommendations in Redis, and a mark that
//! keeps events still on the bus from writing it again).

use crate::cards::{watchable_cards, VideoCard};
use crate::state::CatalogState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use vodfarm_analytics::watch::erasure;
use vodfarm_core::auth::require_user;
use vodfarm_core::http::{ApiError, ApiJson};

fn store_error(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "watch store unavailable");
    ApiError::unavailable("watch history is unavailable, retry shortly")
}

/// Query of the history routes.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Page size, 1..=100 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A line of the history.
#[derive(Debug, Serialize)]
pub struct HistoryItem {
    /// When the viewing started.
    pub watched_at: DateTime<Utc>,
    /// Seconds watched.
    pub watch_duration_seconds: i32,
    /// Reached the end.
    pub completed: bool,
    /// Where it stopped (seconds).
    pub last_position_seconds: i32,
    /// The video (still watchable ones only).
    pub video: VideoCard,
}

/// A page of the history.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    /// Newest first.
    pub items: Vec<HistoryItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn limit_of(q: &HistoryQuery) -> Result<usize, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=100"));
    }
    Ok(limit as usize)
}

/// `{micros}.{video_id}` ↔ the keyset position.
fn parse_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, video) = c.split_once('.')?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
    vodfarm_core::ids::is_valid_public_id(video).then(|| (at, video.to_owned()))
}

/// `GET /v1/me/history`.
pub async fn history(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<HistoryPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user = require_user(&s.pool, &headers).await?;
    let limit = limit_of(&q)?;
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| ApiError::bad_request("invalid cursor"))?),
    };
    let rows = s
        .analytics
        .watch
        .history(&user.user_id, after, limit + 1)
        .await
        .map_err(|e| store_error(&e))?;
    let more = rows.len() > limit;
    let rows: Vec<_> = rows.into_iter().take(limit).collect();
    let next_cursor = if more {
        rows.last()
            .map(|r| format!("{}.{}", r.watched_at.timestamp_micros(), r.video_id))
    } else {
        None
    };
    let ids: Vec<String> = rows.iter().map(|r| r.video_id.clone()).collect();
    let cards: HashMap<String, VideoCard> = watchable_cards(&s, &ids, user.id)
        .await?
        .into_iter()
        .map(|c| (c.video_id.clone(), c))
        .collect();
    let items = rows
        .into_iter()
        .filter_map(|r| {
            let video = cards.get(&r.video_id)?.clone();
            Some(HistoryItem {
                watched_at: r.watched_at,
                watch_duration_seconds: r.watch_duration_seconds,
                completed: r.completed,
                last_position_seconds: r.last_position_seconds,
                video,
            })
        })
        .collect();
    Ok(ApiJson(HistoryPage { items, next_cursor }))
}

/// A video to resume.
#[derive(Debug, Serialize)]
pub struct ContinueItem {
    /// Where to resume (seconds).
    pub position_seconds: i32,
    /// The video's duration.
    pub duration_seconds: i32,
    /// When it was last watched.
    pub updated_at: DateTime<Utc>,
    /// The video.
    pub video: VideoCard,
}

/// `GET /v1/me/continue-watching`.
#[derive(Debug, Serialize)]
pub struct ContinueList {
    /// Most recently watched first.
    pub items: Vec<ContinueItem>,
}

/// `GET /v1/me/continue-watching`.
pub async fn continue_watching(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<ContinueList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user = require_user(&s.pool, &headers).await?;
    let limit = limit_of(&q)?;
    let rows = s
        .analytics
        .watch
        .continue_watching(&user.user_id, limit)
        .await
        .map_err(|e| store_error(&e))?;
    let ids: Vec<String> = rows.iter().map(|r| r.video_id.clone()).collect();
    let cards: HashMap<String, VideoCard> = watchable_cards(&s, &ids, user.id)
        .await?
        .into_iter()
        .map(|c| (c.video_id.clone(), c))
        .collect();
    let items = rows
        .into_iter()
        .filter_map(|r| {
            Some(ContinueItem {
                video: cards.get(&r.video_id)?.clone(),
                position_seconds: r.position_seconds,
                duration_seconds: r.duration_seconds,
                updated_at: r.updated_at,
            })
        })
        .collect();
    Ok(ApiJson(ContinueList { items }))
}

/// `DELETE /v1/me/history`.
pub async fn erase_history(
    State(s): State<CatalogState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    erasure::erase(&s.pool, s.analytics.watch.as_ref(), &user.user_id)
        .await
        .map_err(|e| store_error(&e))?;
    s.analytics
        .counters
        .forget_user(&user.user_id)
        .await
        .map_err(|e| store_error(&e))?;
    tracing::info!(user_id = %user.user_id, "watch history erased");
    Ok(StatusCode::NO_CONTENT.into_response())
}
