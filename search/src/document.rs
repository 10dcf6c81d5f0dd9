//! What an external index (Elasticsearch) stores about a video, read from
//! `videos` and `channels` with the version of that state. (The
//! PostgreSQL index builds the same document inside one SQL statement.)

use crate::index::{ClaimedVideo, MARK_END, MARK_START};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A searchable video's document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// `videos.id` (the document id).
    pub row: i64,
    /// The version of the state it was built from.
    #[serde(skip)]
    pub version: i64,
    /// Public id.
    pub video_id: String,
    /// Channel public id.
    pub channel_id: String,
    /// Channel name.
    pub channel_name: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Category.
    pub category: Option<String>,
    /// Seconds.
    pub duration_seconds: i32,
    /// Views.
    pub view_count: i64,
    /// Likes.
    pub like_count: i32,
    /// Upload time.
    pub uploaded_at: DateTime<Utc>,
}

/// What the index must do for one video.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Hold this document (unless it holds a newer version).
    Upsert(Document),
    /// Hold no document for `row` (unless it holds a newer version).
    Remove {
        /// `videos.id`.
        row: i64,
        /// The version of the removal.
        version: i64,
    },
}

/// Text without our highlight markers, so a title cannot fake one.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| *c != MARK_START && *c != MARK_END)
        .collect()
}

const SELECT: &str = "
    SELECT v.id, coalesce(v.search_version, 0) AS version,
           vodfarm_searchable(v.status, v.privacy) AS searchable,
           v.video_id, c.channel_id, c.name, v.title, v.description, v.tags, v.category,
           v.duration_seconds, coalesce(v.view_count, 0) AS views,
           coalesce(v.like_count, 0) AS likes,
           coalesce(v.uploaded_at, 'epoch'::timestamptz) AS uploaded_at
    FROM videos v JOIN channels c ON c.id = v.channel_id";

fn document(r: &sqlx::postgres::PgRow) -> Result<Document, sqlx::Error> {
    Ok(Document {
        row: r.try_get("id")?,
        version: r.try_get("version")?,
        video_id: r.try_get("video_id")?,
        channel_id: r.try_get("channel_id")?,
        channel_name: clean(&r.try_get::<String, _>("name")?),
        title: clean(&r.try_get::<String, _>("title")?),
        description: clean(
            &r.try_get::<Option<String>, _>("description")?
                .unwrap_or_default(),
        ),
        tags: r
            .try_get::<Option<Vec<String>>, _>("tags")?
            .unwrap_or_default(),
        category: r.try_get("category")?,
        duration_seconds: r.try_get("duration_seconds")?,
        view_count: r.try_get("views")?,
        like_count: r.try_get("likes")?,
        uploaded_at: r.try_get("uploaded_at")?,
    })
}

/// The changes that make an index hold the current state of `videos`.
pub async fn changes(
    conn: &mut PgConnection,
    videos: &[ClaimedVideo],
) -> Result<Vec<Change>, sqlx::Error> {
    let ids: Vec<i64> = videos.iter().map(|v| v.video_row).collect();
    static Q: OnceLock<String> = OnceLock::new();
    let q = Q.get_or_init(|| format!("{SELECT} WHERE v.id = ANY($1)"));
    let rows = sqlx::query(q.as_str()).bind(&ids).fetch_all(conn).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in &rows {
        let searchable: bool = r.try_get("searchable")?;
        let change = if searchable {
            Change::Upsert(document(r)?)
        } else {
            Change::Remove {
                row: r.try_get("id")?,
                version: r.try_get("version")?,
            }
        };
        found.insert(r.try_get::<i64, _>("id")?, change);
    }
    Ok(videos
        .iter()
        .map(|v| {
            // A row that is gone was hard-deleted: the removal's version
            // is the outbox row its trigger wrote.
            found.remove(&v.video_row).unwrap_or(Change::Remove {
                row: v.video_row,
                version: v.max_seq,
            })
        })
        .collect())
}

/// Every searchable video with a row id in `(after, after + n]`, for a
/// full rebuild.
pub async fn searchable_range(
    conn: &mut PgConnection,
    after: i64,
    n: i64,
) -> Result<Vec<Document>, sqlx::Error> {
    static Q: OnceLock<String> = OnceLock::new();
    let q = Q.get_or_init(|| {
        format!(
            "{SELECT} WHERE v.id > $1 AND v.id <= $2 AND vodfarm_searchable(v.status, v.privacy)
             ORDER BY v.id"
        )
    });
    let rows = sqlx::query(q.as_str())
        .bind(after)
        .bind(after + n)
        .fetch_all(conn)
        .await?;
    rows.iter().map(document).collect()
}
