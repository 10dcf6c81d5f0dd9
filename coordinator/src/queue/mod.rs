//! The job queue: `processing_jobs` rows leased with `FOR UPDATE SKIP LOCKED`.
//!
//! Invariants this module keeps (see ARCHITECTURE.md):
//! - A job is leased by one statement that moves it from `pending` to
//!   `processing` with a fresh `lease_token`; two claims never return the
//!   same row (row locks + SKIP LOCKED).
//! - Every later write names `id AND lease_token`; a write whose token is
//!   not the job's current one changes nothing and is reported as
//!   [`QueueError::LeaseLost`].
//! - Lock order is always job row(s) first, then the video row, so
//!   completions, failures and the reaper cannot deadlock each other.
//!   Completions of one video serialize on the video row, so exactly one
//!   of them sees "all jobs completed" and makes the video `ready`.
//! - A job that permanently fails (or is cancelled) fails its video; the
//!   video's other pending jobs are cancelled; a retry reopens them all.
//!
//! One concern a file, each adding an `impl JobQueue` block:
//! - `lease`: what a worker does with a lease: claim, release,
//!   heartbeat, complete, fail, and the reaper of expired leases.
//! - `outputs`: a completion's outputs, checked and recorded.
//! - `video`: locking and failing the video row (the second lock).
//! - `admin`: operator retry, cancel and inspection.
//! - `workers`: workers seen polling.
//! - `enqueue`: inserting an upload's jobs.
//! - `chunks`: a plan's chunk jobs inserted at its completion (and the
//!   fairness rule between chunks and other videos).
//! - `rows`: the claim and job-view statements and their row decoding.

mod admin;
mod chunks;
mod enqueue;
mod lease;
mod outputs;
mod rows;
mod video;
mod video_admin;
mod workers;

pub use admin::{JobFilter, OpenCounts, TypeCounts};
pub use enqueue::NewJob;
pub use lease::{LeaseFilter, ReapReport};
pub use workers::WorkerSighting;

use sqlx::PgPool;
use std::time::Duration;

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No job has this id.
    #[error("job {0} does not exist")]
    NotFound(i64),
    /// The lease token is not the job's current one: the lease expired and
    /// the job went back to the queue (or to another worker), or it was
    /// cancelled. Nothing was changed.
    #[error("lease lost: job {id} is {status} and this lease token is not its current lease")]
    LeaseLost {
        /// The job.
        id: i64,
        /// Its status now.
        status: String,
    },
    /// The operation does not apply to the job in its current state.
    #[error("job {id} is {status}: {reason}")]
    InvalidState {
        /// The job.
        id: i64,
        /// Its status now.
        status: String,
        /// What would be needed.
        reason: &'static str,
    },
    /// A request's values are out of range or malformed.
    #[error("{0}")]
    InvalidInput(String),
    /// An operator asked to retry a video with no failed or cancelled job.
    #[error("video {0} has no failed or cancelled job to retry")]
    NothingToRetry(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Timing of leases and retries.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Backoff before the first retry; doubles with each attempt.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease_ttl: Duration::from_secs(60),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
        }
    }
}

/// Lease, heartbeat, complete, fail, reap, retry, cancel and inspect jobs.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
    settings: QueueSettings,
}

impl JobQueue {
    /// A queue over `pool`.
    pub fn new(pool: PgPool, settings: QueueSettings) -> Self {
        JobQueue { pool, settings }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lease and retry timing.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }
}
