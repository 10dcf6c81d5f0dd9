//! Watch history and progress: the [`WatchStore`] trait and its two
//! implementations, PostgreSQL (`postgres.rs`, the default) and
//! Scylla/Cassandra (`scylla.rs`, when `SCYLLA_NODES` is set) with the
//! seed's CQL tables.
//!
//! `vodfarm counts` feeds it from the bus (signed-in viewers only); the
//! api reads it (`/v1/me/history`, `/v1/me/continue-watching`) and
//! erases it. Erasure is final: [`erasure`] keeps a mark in PostgreSQL,
//! and a write of events older than the mark never lands, whichever
//! store holds the rows.

pub mod erasure;
pub mod postgres;
pub mod scylla;

use chrono::{DateTime, Utc};

/// Why the watch store failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Scylla/Cassandra failed.
    #[error("scylla: {0}")]
    Scylla(String),
}

/// One write: the state of one viewing session after an event.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchRecord {
    /// The viewer's public user id.
    pub user_id: String,
    /// The video's public id.
    pub video_id: String,
    /// When the session started (the history row's key).
    pub watched_at: DateTime<Utc>,
    /// When the api accepted the event (the last write wins).
    pub updated_at: DateTime<Utc>,
    /// Seconds watched in the session.
    pub watch_duration_seconds: i32,
    /// Where the player was.
    pub position_seconds: i32,
    /// The video's duration.
    pub duration_seconds: i32,
    /// The session reached the end.
    pub completed: bool,
}

/// A line of `GET /v1/me/history`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    /// The video's public id.
    pub video_id: String,
    /// When the session started.
    pub watched_at: DateTime<Utc>,
    /// Seconds watched.
    pub watch_duration_seconds: i32,
    /// Whether it reached the end.
    pub completed: bool,
    /// The last position, in seconds.
    pub last_position_seconds: i32,
}

/// A line of `GET /v1/me/continue-watching`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    /// The video's public id.
    pub video_id: String,
    /// Where to resume, in seconds.
    pub position_seconds: i32,
    /// The video's duration.
    pub duration_seconds: i32,
    /// When the viewer last watched it.
    pub updated_at: DateTime<Utc>,
}

/// A position counts as finished from this fraction of the duration on.
pub const FINISHED_FRACTION: f64 = 0.95;

/// Whether a position means "finished" (so not in "continue watching").
pub fn is_finished(position_seconds: i32, duration_seconds: i32) -> bool {
    duration_seconds > 0
        && f64::from(position_seconds) >= f64::from(duration_seconds) * FINISHED_FRACTION
}

/// Where watch history and progress live.
#[async_trait::async_trait]
pub trait WatchStore: Send + Sync + std::fmt::Debug {
    /// `postgres` or `scylla`.
    fn kind(&self) -> &'static str;

    /// Writes `records` (history row per session, progress per video);
    /// the newest `updated_at` wins on each row.
    async fn record(&self, records: &[WatchRecord]) -> Result<(), WatchError>;

    /// The viewer's history, newest first, after the keyset position
    /// `after` (the last line of the previous page).
    async fn history(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, WatchError>;

    /// The viewer's unfinished videos, most recently watched first.
    async fn continue_watching(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Progress>, WatchError>;

    /// Removes every history and progress row of the viewer.
    async fn erase(&self, user_id: &str) -> Result<(), WatchError>;

    /// (user, video) pairs watched since `since` (recs' input).
    async fn watched_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, WatchError>;
}
