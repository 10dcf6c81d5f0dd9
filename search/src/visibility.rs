//! The last word on what search may show: every candidate an index
//! returns is looked up in `videos` in the same request, and only the
//! ones that are `ready` and `public` *now* are answered. An index that
//! lags (the indexer is stopped, slow, or Elasticsearch is behind) can
//! make a hit arrive late, never make a deleted, private, unlisted or
//! unfinished video appear.
//!
//! The same lookup brings what a hit shows from the source of truth:
//! title, channel, duration, view count, thumbnail.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::collections::HashMap;

/// A searchable video as `videos` has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleVideo {
    /// Public id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// Seconds.
    pub duration_seconds: i32,
    /// Views.
    pub view_count: i64,
    /// Upload time.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Its channel's public id.
    pub channel_id: String,
    /// Its channel's name.
    pub channel_name: String,
    /// Whether it has a default thumbnail.
    pub has_thumbnail: bool,
}

/// The statement; `vodfarm_searchable` is the schema's one definition
/// of "ready and public".
const CHECK: &str = "
    SELECT v.id, v.video_id, v.title, v.duration_seconds, coalesce(v.view_count, 0) AS views,
           v.uploaded_at, c.channel_id, c.name,
           EXISTS (SELECT 1 FROM video_thumbs t
                   WHERE t.video_id = v.id AND t.kind = 'default') AS has_thumbnail
    FROM videos v JOIN channels c ON c.id = v.channel_id
    WHERE v.id = ANY($1) AND vodfarm_searchable(v.status, v.privacy)";

/// The videos among `rows` (`videos.id`) that search may show, by row.
pub async fn visible(
    pool: &PgPool,
    rows: &[i64],
) -> Result<HashMap<i64, VisibleVideo>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let found = sqlx::query(CHECK).bind(rows).fetch_all(pool).await?;
    let mut out = HashMap::with_capacity(found.len());
    for r in found {
        out.insert(
            r.try_get("id")?,
            VisibleVideo {
                video_id: r.try_get("video_id")?,
                title: r.try_get("title")?,
                duration_seconds: r.try_get("duration_seconds")?,
                view_count: r.try_get("views")?,
                uploaded_at: r.try_get("uploaded_at")?,
                channel_id: r.try_get("channel_id")?,
                channel_name: r.try_get("name")?,
                has_thumbnail: r.try_get("has_thumbnail")?,
            },
        );
    }
    Ok(out)
}
