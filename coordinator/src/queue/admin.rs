//! Operator actions: retry and cancel a job, and inspect the queue (one
//! job, a page of jobs, stats, open counts for the metrics gauges).

use super::rows::{job_view_from_row, parse_job_status, parse_job_type, JOB_VIEW_SELECT};
use super::video::{fail_video, lock_video};
use super::{JobQueue, QueueError};
use sqlx::Row;
use vodfarm_core::jobs::{JobCount, JobStatus, JobType, JobView, QueueStats, WorkerSeen};

/// The whole queue as the gauges show it ([`JobQueue::open_counts`]).
#[derive(Debug, Clone, Default)]
pub struct OpenCounts {
    /// Per job type with open jobs (types without any are left out).
    pub by_type: Vec<TypeCounts>,
    /// Workers seen by any replica in the last five minutes.
    pub workers_seen: i64,
}

/// Open jobs of one type.
#[derive(Debug, Clone)]
pub struct TypeCounts {
    /// The type.
    pub job_type: JobType,
    /// Waiting to be leased (due or not).
    pub pending: i64,
    /// Leased.
    pub processing: i64,
    /// Age of the oldest due pending job, seconds (0: none due).
    pub oldest_due_seconds: f64,
}

/// Which jobs [`JobQueue::list`] answers (`None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<JobType>,
    /// Only the jobs of this video (public id).
    pub video_id: Option<&'a str>,
}

impl JobQueue {
    /// Puts a failed or cancelled job back to `pending` with fresh
    /// attempts; the video's other failed or cancelled jobs reopen with it
    /// and the video goes back to `processing`.
    pub async fn retry(&self, id: i64) -> Result<JobView, QueueError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT video_id, status FROM processing_jobs WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(QueueError::NotFound(id))?;
        let status: String = row
            .try_get::<Option<String>, _>("status")?
            .unwrap_or_default();
        if status != "failed" && status != "cancelled" {
            return Err(QueueError::InvalidState {
                id,
                status,
                reason: "only failed or cancelled jobs can be retried",
            });
        }
        let video: i64 = row.try_get("video_id")?;
        let (_, video_status) = lock_video(&mut tx, video).await?;
        if video_status == "deleted" {
            return Err(QueueError::InvalidState {
                id,
                status,
                reason: "its video was deleted",
            });
        }
        sqlx::query(
            "UPDATE processing_jobs
             SET status = 'pending', attempts = 0, run_after = now(), progress = 0,
                 lease_token = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE video_id = $1 AND status IN ('failed', 'cancelled')",
        )
        .bind(video)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE videos SET status = 'processing', processing_error = NULL, updated_at = now()
             WHERE id = $1 AND status = 'failed'",
        )
        .bind(video)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get(id).await
    }

    /// Cancels a pending or processing job (a running worker's next write
    /// gets "lease lost"); its video fails, as it can no longer complete.
    pub async fn cancel(&self, id: i64) -> Result<JobView, QueueError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE processing_jobs
             SET status = 'cancelled', error_message = 'cancelled by an operator',
                 lease_token = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE id = $1 AND status IN ('pending', 'processing')
             RETURNING video_id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            let view = self.get(id).await?;
            return Err(QueueError::InvalidState {
                id,
                status: view.status.to_string(),
                reason: "only pending or processing jobs can be cancelled",
            });
        };
        let video: i64 = row.try_get("video_id")?;
        fail_video(
            &mut tx,
            video,
            &format!("processing was cancelled by an operator (job {id})"),
        )
        .await?;
        tx.commit().await?;
        self.get(id).await
    }

    /// One job.
    pub async fn get(&self, id: i64) -> Result<JobView, QueueError> {
        let sql = format!("{JOB_VIEW_SELECT} WHERE j.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(QueueError::NotFound(id))?;
        job_view_from_row(&row)
    }

    /// Jobs, newest first, filtered by status, type and the video's
    /// public id; `before_id` pages (keyset).
    pub async fn list(
        &self,
        filter: &JobFilter<'_>,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<JobView>, QueueError> {
        let sql = format!(
            "{JOB_VIEW_SELECT}
             WHERE ($1::text IS NULL OR j.status = $1)
               AND ($2::text IS NULL OR v.video_id = $2)
               AND ($3::bigint IS NULL OR j.id < $3)
               AND ($5::text IS NULL OR j.job_type = $5)
             ORDER BY j.id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.video_id)
            .bind(before_id)
            .bind(limit)
            .bind(filter.job_type.map(JobType::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_view_from_row).collect()
    }

    /// Counts by type and status, age of the oldest due job, workers seen.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let rows = sqlx::query(
            "SELECT job_type, status, count(*) AS n FROM processing_jobs GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let status: String = row
                .try_get::<Option<String>, _>("status")?
                .unwrap_or_default();
            counts.push(JobCount {
                job_type: parse_job_type(row.try_get("job_type")?)?,
                status: parse_job_status(&status)?,
                count: row.try_get("n")?,
            });
        }
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(greatest(created_at, run_after)))::float8
             FROM processing_jobs WHERE status = 'pending' AND run_after <= now()",
        )
        .fetch_one(&self.pool)
        .await?;
        let completed_last_minute: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM processing_jobs
             WHERE status = 'completed' AND completed_at > now() - interval '1 minute'",
        )
        .fetch_one(&self.pool)
        .await?;
        let worker_rows = sqlx::query(
            "SELECT worker_id, capabilities, last_seen_at FROM workers
             WHERE last_seen_at > now() - interval '5 minutes' ORDER BY worker_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let workers = worker_rows
            .iter()
            .map(|r| {
                Ok(WorkerSeen {
                    worker_id: r.try_get("worker_id")?,
                    capabilities: r.try_get("capabilities")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        Ok(QueueStats {
            counts,
            oldest_pending_age_seconds: oldest.map(|s| s.max(0.0)),
            completed_last_minute,
            workers_seen: workers.len() as i64,
            workers,
        })
    }

    /// What the whole-queue gauges show, read at scrape time: per job
    /// type the pending and leased counts and the age of the oldest due
    /// pending job, and the workers seen in the last five minutes.
    pub async fn open_counts(&self) -> Result<OpenCounts, QueueError> {
        let rows = sqlx::query(
            "SELECT job_type,
                    count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'processing') AS processing,
                    coalesce(extract(epoch FROM now() - min(greatest(created_at, run_after))
                        FILTER (WHERE status = 'pending' AND run_after <= now())), 0)::float8
                        AS oldest_due
             FROM processing_jobs WHERE status IN ('pending', 'processing') GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        let by_type = rows
            .iter()
            .map(|r| {
                Ok(TypeCounts {
                    job_type: parse_job_type(r.try_get("job_type")?)?,
                    pending: r.try_get("pending")?,
                    processing: r.try_get("processing")?,
                    oldest_due_seconds: r.try_get::<f64, _>("oldest_due")?.max(0.0),
                })
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        let workers_seen: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workers WHERE last_seen_at > now() - interval '5 minutes'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OpenCounts {
            by_type,
            workers_seen,
        })
    }
}
