//! The PostgreSQL watch store (the default): tables `watch_history` and
//! `watch_progress` of migration `…000100_analytics`, the seed's CQL
//! tables in SQL.

use super::{HistoryEntry, Progress, WatchError, WatchRecord, WatchStore, FINISHED_FRACTION};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// History and progress in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgWatchStore {
    pool: PgPool,
}

impl PgWatchStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        PgWatchStore { pool }
    }
}

#[async_trait::async_trait]
impl WatchStore for PgWatchStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn record(&self, records: &[WatchRecord]) -> Result<(), WatchError> {
        if records.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&WatchRecord) -> String| records.iter().map(f).collect::<Vec<_>>();
        let users = col(|r| r.user_id.clone());
        let videos = col(|r| r.video_id.clone());
        let watched_at: Vec<DateTime<Utc>> = records.iter().map(|r| r.watched_at).collect();
        let updated_at: Vec<DateTime<Utc>> = records.iter().map(|r| r.updated_at).collect();
        let durations: Vec<i32> = records.iter().map(|r| r.watch_duration_seconds).collect();
        let positions: Vec<i32> = records.iter().map(|r| r.position_seconds).collect();
        let lengths: Vec<i32> = records.iter().map(|r| r.duration_seconds).collect();
        let completed: Vec<bool> = records.iter().map(|r| r.completed).collect();
        let mut tx = self.pool.begin().await?;
        // One row per key in each statement (ON CONFLICT cannot touch a
        // row twice): the newest record of each key, the later one in the
        // batch (the bus's order) among records of the same millisecond.
        sqlx::query(
            "INSERT INTO watch_history AS h (user_id, watched_at, video_id, watch_duration_seconds,
                                            completed, last_position_seconds, updated_at)
             SELECT DISTINCT ON (u, w, v) u, w, v, d, c, p, t
             FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::bool[],
                         $6::int[], $7::timestamptz[]) WITH ORDINALITY AS x(u, w, v, d, c, p, t, n)
             ORDER BY u, w, v, t DESC, n DESC
             ON CONFLICT (user_id, watched_at, video_id) DO UPDATE SET
                watch_duration_seconds = greatest(h.watch_duration_seconds, excluded.watch_duration_seconds),
                completed = h.completed OR excluded.completed,
                last_position_seconds = CASE WHEN excluded.updated_at >= h.updated_at
                    THEN excluded.last_position_seconds ELSE h.last_position_seconds END,
                updated_at = greatest(h.updated_at, excluded.updated_at)",
        )
        .bind(&users)
        .bind(&watched_at)
        .bind(&videos)
        .bind(&durations)
        .bind(&completed)
        .bind(&positions)
        .bind(&updated_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO watch_progress AS g (user_id, video_id, position_seconds, duration_seconds, updated_at)
             SELECT DISTINCT ON (u, v) u, v, p, l, t
             FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::timestamptz[])
                  WITH ORDINALITY AS x(u, v, p, l, t, n)
             ORDER BY u, v, t DESC, n DESC
             ON CONFLICT (user_id, video_id) DO UPDATE SET
                position_seconds = excluded.position_seconds,
                duration_seconds = excluded.duration_seconds,
                updated_at = excluded.updated_at
             WHERE excluded.updated_at >= g.updated_at",
        )
        .bind(&users)
        .bind(&videos)
        .bind(&positions)
        .bind(&lengths)
        .bind(&updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn history(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, WatchError> {
        let (at, vid) = after.unzip();
        let rows: Vec<(String, DateTime<Utc>, i32, bool, i32)> = sqlx::query_as(
            "SELECT video_id, watched_at, watch_duration_seconds, completed, last_position_seconds
             FROM watch_history
             WHERE user_id = $1
               AND ($2::timestamptz IS NULL OR ($2, video_id) > (watched_at, $3))
             ORDER BY watched_at DESC, video_id ASC LIMIT $4",
        )
        .bind(user_id)
        .bind(at)
        .bind(vid.unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(video_id, watched_at, d, completed, p)| HistoryEntry {
                video_id,
                watched_at,
                watch_duration_seconds: d,
                completed,
                last_position_seconds: p,
            })
            .collect())
    }

    async fn continue_watching(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Progress>, WatchError> {
        let rows: Vec<(String, i32, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT video_id, position_seconds, duration_seconds, updated_at
             FROM watch_progress
             WHERE user_id = $1 AND position_seconds > 0
               AND (duration_seconds = 0 OR position_seconds < duration_seconds * $2::float8)
             ORDER BY updated_at DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(FINISHED_FRACTION)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(video_id, p, d, t)| Progress {
                video_id,
                position_seconds: p,
                duration_seconds: d,
                updated_at: t,
            })
            .collect())
    }

    async fn erase(&self, user_id: &str) -> Result<(), WatchError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM watch_history WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM watch_progress WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn watched_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, WatchError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT user_id, video_id FROM watch_history WHERE watched_at >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
