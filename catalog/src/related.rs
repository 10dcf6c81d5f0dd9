//! `GET /v1/videos/{video_id}/related` and `GET /v1/me/recommendations`:
//! the lists `vodfarm recs` wrote to Redis, filtered on every read (only
//! ready public videos are ever shown), topped up by fallbacks when there
//! is no signal: the most viewed videos of the channel, then overall.

use crate::cards::{popular, public_cards, VideoCard};
use crate::state::CatalogState;
use crate::videos::visible_video;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use vodfarm_core::auth::{optional_user, require_user};
use vodfarm_core::http::{ApiError, ApiJson};

/// Query of the list routes.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// How many, 1..=50 (default 12).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// A list of videos.
#[derive(Debug, Serialize)]
pub struct VideoList {
    /// Best first.
    pub videos: Vec<VideoCard>,
}

fn limit_of(q: &ListQuery) -> Result<i64, ApiError> {
    let limit = q.limit.unwrap_or(12);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=50"));
    }
    Ok(limit)
}

/// Reads a Redis list; Redis being down is no reason to fail the page
/// (the fallbacks answer).
fn or_empty<E: std::fmt::Display>(r: Result<Vec<String>, E>) -> Vec<String> {
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "recommendations unavailable; falling back");
        Vec::new()
    })
}

/// Fills `list` up to `limit` with popular videos (of `channel` first),
/// never repeating one or showing those in `except`.
async fn top_up(
    s: &CatalogState,
    list: &mut Vec<VideoCard>,
    channel: Option<i64>,
    except: &[String],
    limit: i64,
) -> Result<(), ApiError> {
    let stages = if channel.is_some() {
        vec![channel, None]
    } else {
        vec![None]
    };
    for ch in &stages {
        if list.len() >= limit as usize {
            break;
        }
        let mut skip: Vec<String> = except.to_vec();
        skip.extend(list.iter().map(|c| c.video_id.clone()));
        let more = popular(s, *ch, &skip, limit - list.len() as i64).await?;
        list.extend(more);
    }
    Ok(())
}

/// `GET /v1/videos/{video_id}/related`.
pub async fn related(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<VideoList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = limit_of(&q)?;
    let viewer = optional_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, viewer.as_ref()).await?;
    let ids = or_empty(s.analytics.counters.related(&video_id, 100).await);
    let ids: Vec<String> = ids.into_iter().filter(|i| *i != video_id).collect();
    let mut list = public_cards(&s, &ids).await?;
    list.truncate(limit as usize);
    let channel: Option<i64> = sqlx::query_scalar("SELECT channel_id FROM videos WHERE id = $1")
        .bind(v.id)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| vodfarm_core::auth::db_error(&e))?;
    top_up(
        &s,
        &mut list,
        channel,
        std::slice::from_ref(&video_id),
        limit,
    )
    .await?;
    Ok(ApiJson(VideoList { videos: list }))
}

/// `GET /v1/me/recommendations`.
pub async fn recommendations(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<VideoList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = limit_of(&q)?;
    let user = require_user(&s.pool, &headers).await?;
    let ids = or_empty(s.analytics.counters.recommended(&user.user_id, 100).await);
    let mut list = public_cards(&s, &ids).await?;
    list.truncate(limit as usize);
    top_up(&s, &mut list, None, &[], limit).await?;
    Ok(ApiJson(VideoList { videos: list }))
}
