//! Workers seen polling, flushed to the `workers` table in batches.

use super::{JobQueue, QueueError};
use chrono::{DateTime, Utc};

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
}
