//! Workers seen polling, flushed to the `workers` table in batches, and
//! the operator's list of them.

use super::{JobQueue, QueueError};
use chrono::{DateTime, Utc};
use sqlx::Row;
use vodfarm_core::jobs::WorkerView;

/// A worker heard from: what it polled with, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSighting {
    /// Its id.
    pub worker_id: String,
    /// Capabilities it advertised.
    pub capabilities: Vec<String>,
    /// Job types it asked for.
    pub job_types: Vec<String>,
    /// When.
    pub last_seen_at: DateTime<Utc>,
}

impl JobQueue {
    /// Records workers seen since the last flush (one statement).
    pub async fn record_workers(&self, seen: &[WorkerSighting]) -> Result<(), QueueError> {
        if seen.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = seen.iter().map(|s| s.worker_id.as_str()).collect();
        // Arrays of arrays must be rectangular in Postgres; send each
        // worker's lists as one comma-joined text and split them there.
        let caps: Vec<String> = seen.iter().map(|s| s.capabilities.join(",")).collect();
        let types: Vec<String> = seen.iter().map(|s| s.job_types.join(",")).collect();
        let at: Vec<DateTime<Utc>> = seen.iter().map(|s| s.last_seen_at).collect();
        sqlx::query(
            "INSERT INTO workers (worker_id, capabilities, job_types, last_seen_at)
             SELECT id, coalesce(string_to_array(nullif(c, ''), ','), '{}'),
                    coalesce(string_to_array(nullif(t, ''), ','), '{}'), at
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(id, c, t, at)
             ON CONFLICT (worker_id) DO UPDATE
             SET capabilities = excluded.capabilities,
                 job_types = excluded.job_types,
                 last_seen_at = greatest(workers.last_seen_at, excluded.last_seen_at)",
        )
        .bind(&ids)
        .bind(&caps)
        .bind(&types)
        .bind(&at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every worker any replica heard from, most recently seen first, with
    /// the jobs each holds a lease on now.
    pub async fn list_workers(&self) -> Result<Vec<WorkerView>, QueueError> {
        let rows = sqlx::query(
            // Leased rows are exactly those with a lease expiry (CHECK
            // lease_iff_processing), which idx_jobs_lease_expiry finds
            // without reading the finished jobs.
            "SELECT w.worker_id, w.capabilities, w.job_types, w.last_seen_at,
                    coalesce(r.running, 0) AS running
             FROM workers w
             LEFT JOIN (SELECT worker_id, count(*) AS running FROM processing_jobs
                        WHERE lease_expires_at IS NOT NULL AND status = 'processing'
                        GROUP BY worker_id) r ON r.worker_id = w.worker_id
             ORDER BY w.last_seen_at DESC, w.worker_id
             LIMIT 10000",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerView {
                    worker_id: r.try_get("worker_id")?,
                    capabilities: r.try_get("capabilities")?,
                    job_types: r.try_get("job_types")?,
                    jobs_running: r.try_get("running")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect()
    }
}
