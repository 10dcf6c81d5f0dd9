//! The Scylla/Cassandra watch store (`SCYLLA_NODES`): the seed's CQL
//! tables exactly (`watch_history` clustered by `watched_at DESC`,
//! `watch_progress`), prepared statements, and writes stamped `USING
//! TIMESTAMP` with the event's time (plus its place in the batch, in
//! microseconds) so the newest event wins whatever the order of arrival.

use super::{is_finished, HistoryEntry, Progress, WatchError, WatchRecord, WatchStore};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;

/// History and progress in Scylla/Cassandra.
pub struct ScyllaWatchStore {
    session: Session,
    insert_history: PreparedStatement,
    insert_progress: PreparedStatement,
    select_history: PreparedStatement,
    select_history_before: PreparedStatement,
    select_progress: PreparedStatement,
    delete_history: PreparedStatement,
    delete_progress: PreparedStatement,
    scan_history: PreparedStatement,
}

impl std::fmt::Debug for ScyllaWatchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaWatchStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> WatchError {
    WatchError::Scylla(e.to_string())
}

/// The seed's tables (keyspace chosen at connect).
const TABLES: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS watch_history (
        user_id TEXT,
        watched_at TIMESTAMP,
        video_id TEXT,
        watch_duration_seconds INT,
        completed BOOLEAN,
        last_position_seconds INT,
        PRIMARY KEY (user_id, watched_at, video_id)
    ) WITH CLUSTERING ORDER BY (watched_at DESC, video_id ASC)",
    "CREATE TABLE IF NOT EXISTS watch_progress (
        user_id TEXT,
        video_id TEXT,
        position_seconds INT,
        duration_seconds INT,
        updated_at TIMESTAMP,
        PRIMARY KEY (user_id, video_id)
    )",
];

impl ScyllaWatchStore {
    /// Connects to `nodes` (`host:port`), creates keyspace `keyspace`
    /// (SimpleStrategy, `replication` copies) and the tables if missing,
    /// and prepares every statement.
    pub async fn connect(
        nodes: &[String],
        keyspace: &str,
        replication: u32,
    ) -> Result<Self, WatchError> {
        if keyspace.is_empty()
            || !keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(WatchError::Scylla(format!(
                "keyspace {keyspace:?}: letters, digits and _ only"
            )));
        }
        let session = SessionBuilder::new()
            .known_nodes(nodes)
            .build()
            .await
            .map_err(err)?;
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                    replication.max(1)
                ),
                &[],
            )
            .await
            .map_err(err)?;
        session.use_keyspace(keyspace, false).await.map_err(err)?;
        for t in TABLES {
            session.query_unpaged(t, &[]).await.map_err(err)?;
        }
        let prepare = |q: &'static str| {
            let s = &session;
            async move { s.prepare(q).await.map_err(err) }
        };
        Ok(ScyllaWatchStore {
            insert_history: prepare(
                "INSERT INTO watch_history (user_id, watched_at, video_id, watch_duration_seconds,
                 completed, last_position_seconds) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            insert_progress: prepare(
                "INSERT INTO watch_progress (user_id, video_id, position_seconds, duration_seconds,
                 updated_at) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            select_history: prepare(
                "SELECT video_id, watched_at, watch_duration_seconds, completed, last_position_seconds
                 FROM watch_history WHERE user_id = ? LIMIT ?",
            )
            .await?,
            select_history_before: prepare(
                "SELECT video_id, watched_at, watch_duration_seconds, completed, last_position_seconds
                 FROM watch_history WHERE user_id = ? AND watched_at <= ? LIMIT ?",
            )
            .await?,
            select_progress: prepare(
                "SELECT video_id, position_seconds, duration_seconds, updated_at
                 FROM watch_progress WHERE user_id = ?",
            )
            .await?,
            delete_history: prepare("DELETE FROM watch_history WHERE user_id = ?").await?,
            delete_progress: prepare("DELETE FROM watch_progress WHERE user_id = ?").await?,
            scan_history: prepare("SELECT user_id, video_id, watched_at FROM watch_history").await?,
            session,
        })
    }
}

type HistoryRow = (
    String,
    DateTime<Utc>,
    Option<i32>,
    Option<bool>,
    Option<i32>,
);

#[async_trait::async_trait]
impl WatchStore for ScyllaWatchStore {
    fn kind(&self) -> &'static str {
        "scylla"
    }

    async fn record(&self, records: &[WatchRecord]) -> Result<(), WatchError> {
        for (i, r) in records.iter().enumerate() {
            // Records of one millisecond (one beacon request) keep their
            // order on the bus: the later one gets the later write time.
            let ts = r.updated_at.timestamp_micros() + (i as i64).min(999);
            self.session
                .execute_unpaged(
                    &self.insert_history,
                    (
                        &r.user_id,
                        r.watched_at,
                        &r.video_id,
                        r.watch_duration_seconds,
                        r.completed,
                        r.position_seconds,
                        ts,
                    ),
                )
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(
                    &self.insert_progress,
                    (
                        &r.user_id,
                        &r.video_id,
                        r.position_seconds,
                        r.duration_seconds,
                        r.updated_at,
                        ts,
                    ),
                )
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn history(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, WatchError> {
        // Ties on watched_at are rare (one session start per ms): fetch a
        // few more and skip the ones the previous page already had.
        let want = i32::try_from(limit + 64).unwrap_or(i32::MAX);
        let result = match &after {
            None => self
                .session
                .execute_unpaged(&self.select_history, (user_id, want))
                .await
                .map_err(err)?,
            Some((at, _)) => self
                .session
                .execute_unpaged(&self.select_history_before, (user_id, *at, want))
                .await
                .map_err(err)?,
        };
        let rows = result.into_rows_result().map_err(err)?;
        let mut out = Vec::new();
        for row in rows.rows::<HistoryRow>().map_err(err)? {
            let (video_id, watched_at, d, c, p) = row.map_err(err)?;
            if let Some((at, vid)) = &after {
                if watched_at == *at && video_id <= *vid {
                    continue;
                }
            }
            out.push(HistoryEntry {
                video_id,
                watched_at,
                watch_duration_seconds: d.unwrap_or(0),
                completed: c.unwrap_or(false),
                last_position_seconds: p.unwrap_or(0),
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    async fn continue_watching(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Progress>, WatchError> {
        let mut pager = self
            .session
            .execute_iter(self.select_progress.clone(), (user_id,))
            .await
            .map_err(err)?
            .rows_stream::<(String, Option<i32>, Option<i32>, DateTime<Utc>)>()
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some((video_id, p, d, updated_at)) = pager.try_next().await.map_err(err)? {
            let (p, d) = (p.unwrap_or(0), d.unwrap_or(0));
            if p > 0 && !is_finished(p, d) {
                out.push(Progress {
                    video_id,
                    position_seconds: p,
                    duration_seconds: d,
                    updated_at,
                });
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.updated_at));
        out.truncate(limit);
        Ok(out)
    }

    async fn erase(&self, user_id: &str) -> Result<(), WatchError> {
        self.session
            .execute_unpaged(&self.delete_history, (user_id,))
            .await
            .map_err(err)?;
        self.session
            .execute_unpaged(&self.delete_progress, (user_id,))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn watched_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, WatchError> {
        let mut pager = self
            .session
            .execute_iter(self.scan_history.clone(), ())
            .await
            .map_err(err)?
            .rows_stream::<(String, String, DateTime<Utc>)>()
            .map_err(err)?;
        let mut out = std::collections::BTreeSet::new();
        while let Some((user, video, at)) = pager.try_next().await.map_err(err)? {
            if at >= since {
                out.insert((user, video));
            }
        }
        Ok(out.into_iter().collect())
    }
}
