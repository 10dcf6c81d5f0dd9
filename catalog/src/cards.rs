//! Video cards: the short form of a video that lists of recommendations,
//! related videos, history and subscriptions show, and the one query that
//! decides which videos such a list may show at all.

use crate::state::CatalogState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use vodfarm_core::auth::db_error;
use vodfarm_core::http::ApiError;

/// A video in a list.
#[derive(Debug, Clone, Serialize)]
pub struct VideoCard {
    /// Public id.
    pub video_id: String,
    /// Its channel's public id.
    pub channel_id: String,
    /// Its channel's name.
    pub channel_name: String,
    /// Title.
    pub title: String,
    /// Seconds.
    pub duration_seconds: i32,
    /// Views (flushed).
    pub view_count: i64,
    /// Likes.
    pub like_count: i32,
    /// The poster image.
    pub thumbnail_url: String,
    /// Publication time.
    pub published_at: Option<DateTime<Utc>>,
}

type CardRow = (
    String,
    String,
    String,
    String,
    i32,
    Option<i64>,
    Option<i32>,
    Option<DateTime<Utc>>,
);

const CARD_COLUMNS: &str = "v.video_id, c.channel_id, c.name, v.title, v.duration_seconds,
    v.view_count, v.like_count, v.published_at";

pub(crate) fn card(s: &CatalogState, r: CardRow) -> VideoCard {
    let origin = s.settings.public_origin_url.trim_end_matches('/');
    VideoCard {
        thumbnail_url: format!("{origin}/t/{}/default.jpg", r.0),
        video_id: r.0,
        channel_id: r.1,
        channel_name: r.2,
        title: r.3,
        duration_seconds: r.4,
        view_count: r.5.unwrap_or(0),
        like_count: r.6.unwrap_or(0),
        published_at: r.7,
    }
}

/// The cards of `ids` that anyone may see in a list (ready and public),
/// in the order of `ids`; the others are left out whatever asked for
/// them (a recommendation list in Redis, an old history row).
pub(crate) async fn public_cards(
    s: &CatalogState,
    ids: &[String],
) -> Result<Vec<VideoCard>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<CardRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CARD_COLUMNS} FROM videos v JOIN channels c ON c.id = v.channel_id
         WHERE v.video_id = ANY($1) AND v.status = 'ready' AND v.privacy = 'public'"
    )))
    .bind(ids)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let mut by_id: HashMap<String, VideoCard> = rows
        .into_iter()
        .map(|r| (r.0.clone(), card(s, r)))
        .collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// The cards of `ids` that `viewer` may watch (ready; public, unlisted,
/// or their own private ones), in the order of `ids`.
pub(crate) async fn watchable_cards(
    s: &CatalogState,
    ids: &[String],
    viewer: i64,
) -> Result<Vec<VideoCard>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<CardRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CARD_COLUMNS} FROM videos v JOIN channels c ON c.id = v.channel_id
         WHERE v.video_id = ANY($1) AND v.status = 'ready'
           AND (v.privacy <> 'private' OR c.user_id = $2)"
    )))
    .bind(ids)
    .bind(viewer)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let mut by_id: HashMap<String, VideoCard> = rows
        .into_iter()
        .map(|r| (r.0.clone(), card(s, r)))
        .collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// The most viewed public ready videos, of `channel` when given, leaving
/// out `except`.
pub(crate) async fn popular(
    s: &CatalogState,
    channel: Option<i64>,
    except: &[String],
    limit: i64,
) -> Result<Vec<VideoCard>, ApiError> {
    let rows: Vec<CardRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CARD_COLUMNS} FROM videos v JOIN channels c ON c.id = v.channel_id
         WHERE v.status = 'ready' AND v.privacy = 'public'
           AND ($1::bigint IS NULL OR v.channel_id = $1)
           AND NOT (v.video_id = ANY($2))
         ORDER BY v.view_count DESC NULLS LAST, v.id DESC LIMIT $3"
    )))
    .bind(channel)
    .bind(except)
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    Ok(rows.into_iter().map(|r| card(s, r)).collect())
}
