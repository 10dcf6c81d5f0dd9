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

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use std::time::Duration;
use uuid::Uuid;
use vodfarm_core::jobs::{
    CompleteResponse, EncodingOutput, FailResponse, JobCount, JobOutputs, JobStatus, JobType,
    JobView, LeasedJob, QueueStats, ThumbnailOutput, WorkerSeen,
};
use vodfarm_core::layout;

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

/// Which jobs a worker may lease: its job types (empty: all) and its
/// capabilities (a job is leasable when it requires a subset of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseFilter {
    job_types: Vec<String>,
    capabilities: Vec<String>,
}

impl LeaseFilter {
    /// A filter; order and duplicates do not matter.
    pub fn new(job_types: &[JobType], capabilities: &[String]) -> Self {
        let mut job_types: Vec<String> = job_types.iter().map(|t| t.as_str().to_owned()).collect();
        job_types.sort();
        job_types.dedup();
        let mut capabilities = capabilities.to_vec();
        capabilities.sort();
        capabilities.dedup();
        LeaseFilter {
            job_types,
            capabilities,
        }
    }

    /// Every job type, no capabilities.
    pub fn any() -> Self {
        Self::new(&[], &[])
    }
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What it does.
    pub job_type: JobType,
    /// Input object key.
    pub input_path: String,
    /// Output object key prefix.
    pub output_path: Option<String>,
    /// Parameters for the worker.
    pub parameters: serde_json::Value,
    /// Higher first.
    pub priority: i32,
    /// Leases before it fails for good.
    pub max_attempts: i32,
    /// Indexes (into the same batch) of the jobs that must complete first.
    pub depends_on: Vec<usize>,
    /// Capabilities a worker needs.
    pub required_capabilities: Vec<String>,
}

/// What a reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases returned to `pending`.
    pub returned: Vec<(i64, JobType)>,
    /// Expired leases that used up `max_attempts`.
    pub failed: Vec<(i64, JobType)>,
}

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

/// Lease, heartbeat, complete, fail, reap, retry, cancel and inspect jobs.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
    settings: QueueSettings,
}

/// The claim statement: due, dependency-free pending rows in priority then
/// age order, locked with SKIP LOCKED so concurrent claims never wait on
/// or return each other's rows, and leased in the same statement.
///
/// The `= '{}' OR` guards are for the planner, not for logic: with a bare
/// `<@` and anti-join it estimates ~1 matching row and sorts the whole
/// pending set on every claim (250 ms at 20,000 pending jobs); with them
/// it walks `idx_jobs_pending` in order and stops at the first free row.
const CLAIM_SQL: &str = r#"
WITH picked AS (
    SELECT j.id FROM processing_jobs j
    WHERE j.status = 'pending'
      AND j.run_after <= now()
      AND (cardinality($1::text[]) = 0 OR j.job_type = ANY($1::text[]))
      AND (j.required_capabilities = '{}' OR j.required_capabilities <@ $2::text[])
      AND (j.depends_on = '{}' OR NOT EXISTS (
          SELECT 1 FROM processing_jobs d
          WHERE d.id = ANY(j.depends_on) AND d.status <> 'completed'))
    ORDER BY j.priority DESC, j.created_at ASC, j.id ASC
    LIMIT $3
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE processing_jobs j
SET status = 'processing',
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $4),
    worker_id = $5,
    attempts = j.attempts + 1,
    started_at = now(),
    completed_at = NULL,
    progress = 0,
    updated_at = now()
FROM picked, videos v
WHERE j.id = picked.id AND v.id = j.video_id
RETURNING j.id, v.video_id AS public_video_id, j.job_type, j.input_path, j.output_path,
          j.parameters, j.lease_token, j.lease_expires_at, j.attempts, j.priority, j.created_at
"#;

/// The columns of a [`JobView`], joined with the video's public id.
const JOB_VIEW_SELECT: &str = r#"
SELECT j.id, v.video_id AS public_video_id, j.job_type, j.status, j.progress, j.error_message,
       j.worker_id, j.attempts, j.max_attempts, j.priority, j.depends_on,
       j.required_capabilities, j.input_path, j.output_path, j.parameters, j.run_after,
       j.lease_expires_at, j.created_at, j.started_at, j.completed_at
FROM processing_jobs j JOIN videos v ON v.id = j.video_id
"#;

/// Backoff of the `n`th retry, in SQL: base · 2^(attempts−1), capped, with
/// ±25 % jitter so a fleet-wide failure does not retry in lockstep.
/// `$base` and `$max` are seconds.
macro_rules! backoff_sql {
    ($attempts:literal, $base:literal, $max:literal) => {
        concat!(
            "now() + make_interval(secs => least(",
            $base,
            " * power(2, greatest(",
            $attempts,
            " - 1, 0)), ",
            $max,
            ") * (0.75 + random() * 0.5))"
        )
    };
}

fn parse_job_type(s: &str) -> Result<JobType, QueueError> {
    s.parse()
        .map_err(|e: vodfarm_core::jobs::UnknownValue| QueueError::InvalidInput(e.to_string()))
}

fn parse_job_status(s: &str) -> Result<JobStatus, QueueError> {
    s.parse()
        .map_err(|e: vodfarm_core::jobs::UnknownValue| QueueError::InvalidInput(e.to_string()))
}

/// `parameters` is nullable in the seed's schema; workers get JSON null.
fn parameters_of(row: &PgRow) -> Result<serde_json::Value, QueueError> {
    Ok(row
        .try_get::<Option<serde_json::Value>, _>("parameters")?
        .unwrap_or(serde_json::Value::Null))
}

fn leased_job_from_row(row: &PgRow) -> Result<LeasedJob, QueueError> {
    Ok(LeasedJob {
        id: row.try_get("id")?,
        video_id: row.try_get("public_video_id")?,
        job_type: parse_job_type(row.try_get("job_type")?)?,
        input_path: row.try_get("input_path")?,
        output_path: row.try_get("output_path")?,
        parameters: parameters_of(row)?,
        lease_token: row.try_get("lease_token")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        attempt: row.try_get("attempts")?,
    })
}

fn job_view_from_row(row: &PgRow) -> Result<JobView, QueueError> {
    let status: String = row.try_get("status")?;
    Ok(JobView {
        id: row.try_get("id")?,
        video_id: row.try_get("public_video_id")?,
        job_type: parse_job_type(row.try_get("job_type")?)?,
        status: parse_job_status(&status)?,
        progress: row.try_get::<Option<i32>, _>("progress")?.unwrap_or(0),
        error_message: row.try_get("error_message")?,
        worker_id: row.try_get("worker_id")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        priority: row.try_get::<Option<i32>, _>("priority")?.unwrap_or(0),
        depends_on: row.try_get("depends_on")?,
        required_capabilities: row.try_get("required_capabilities")?,
        input_path: row.try_get("input_path")?,
        output_path: row.try_get("output_path")?,
        parameters: parameters_of(row)?,
        run_after: row.try_get("run_after")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        created_at: row
            .try_get::<Option<DateTime<Utc>>, _>("created_at")?
            .unwrap_or_default(),
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
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

    /// Leases up to `max_jobs` due jobs matching `filter` to `worker_id`.
    /// Returns them in priority, then age order.
    pub async fn claim(
        &self,
        worker_id: &str,
        filter: &LeaseFilter,
        max_jobs: i64,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let rows = sqlx::query(CLAIM_SQL)
            .bind(&filter.job_types)
            .bind(&filter.capabilities)
            .bind(max_jobs)
            .bind(self.settings.lease_ttl.as_secs_f64())
            .bind(worker_id)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            let priority: Option<i32> = row.try_get("priority")?;
            let created: Option<DateTime<Utc>> = row.try_get("created_at")?;
            jobs.push((priority.unwrap_or(0), created, leased_job_from_row(row)?));
        }
        // RETURNING has no order; restore the claim's.
        jobs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.id.cmp(&b.2.id)));
        Ok(jobs.into_iter().map(|(_, _, j)| j).collect())
    }

    /// Gives leased jobs back without counting the attempt: used when the
    /// long poll they were claimed for has gone away before receiving them.
    pub async fn release(&self, jobs: &[LeasedJob]) -> Result<(), QueueError> {
        for job in jobs {
            match self.release_lease(job.id, job.lease_token, None).await {
                Ok(()) | Err(QueueError::LeaseLost { .. } | QueueError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Returns job `id` to `pending`, due at once, without counting the
    /// attempt: its worker gives it back unworked (it is draining, or the
    /// poll it was leased for went away). `reason` is kept for operators.
    pub async fn release_lease(
        &self,
        id: i64,
        token: Uuid,
        reason: Option<&str>,
    ) -> Result<(), QueueError> {
        let released = sqlx::query(
            "UPDATE processing_jobs
             SET status = 'pending', attempts = greatest(attempts - 1, 0), run_after = now(),
                 lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                 started_at = NULL, error_message = $3, updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'
             RETURNING id",
        )
        .bind(id)
        .bind(token)
        .bind(reason.map(truncate_message))
        .fetch_optional(&self.pool)
        .await?;
        match released {
            Some(_) => Ok(()),
            None => Err(self.diagnose(id).await),
        }
    }

    /// Why a fenced write to job `id` with `token` matched no row.
    async fn diagnose(&self, id: i64) -> QueueError {
        match sqlx::query("SELECT status FROM processing_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
        {
            Ok(None) => QueueError::NotFound(id),
            Ok(Some(row)) => QueueError::LeaseLost {
                id,
                status: row
                    .try_get::<Option<String>, _>("status")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            },
            Err(e) => QueueError::Db(e),
        }
    }

    /// Extends the lease of job `id` and records its progress (0..=100).
    /// Returns the new lease end.
    pub async fn heartbeat(
        &self,
        id: i64,
        token: Uuid,
        progress: i32,
    ) -> Result<DateTime<Utc>, QueueError> {
        if !(0..=100).contains(&progress) {
            return Err(QueueError::InvalidInput(format!(
                "progress must be between 0 and 100, got {progress}"
            )));
        }
        let row = sqlx::query(
            "UPDATE processing_jobs
             SET lease_expires_at = now() + make_interval(secs => $3), progress = $4, updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'
             RETURNING video_id, lease_expires_at",
        )
        .bind(id)
        .bind(token)
        .bind(self.settings.lease_ttl.as_secs_f64())
        .bind(progress)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(self.diagnose(id).await);
        };
        let video: i64 = row.try_get("video_id")?;
        // Advisory, so outside any transaction: a lost update here is fixed
        // by the next heartbeat or the completion.
        sqlx::query(
            "UPDATE videos v SET processing_progress = agg.p, updated_at = now()
             FROM (SELECT coalesce(round(avg(progress)), 0)::int AS p FROM processing_jobs
                   WHERE video_id = $1 AND status <> 'cancelled') agg
             WHERE v.id = $1 AND v.status = 'processing' AND v.processing_progress IS DISTINCT FROM agg.p",
        )
        .bind(video)
        .execute(&self.pool)
        .await?;
        Ok(row.try_get("lease_expires_at")?)
    }

    /// Completes job `id` and records its outputs, in one transaction. The
    /// video becomes `ready` when this was its last open job. A retried
    /// completion by the same lease answers `already_completed` and
    /// records nothing twice.
    pub async fn complete(
        &self,
        id: i64,
        token: Uuid,
        outputs: &JobOutputs,
    ) -> Result<(CompleteResponse, Option<(JobType, f64)>), QueueError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE processing_jobs
             SET status = 'completed', progress = 100, completed_at = now(),
                 lease_expires_at = NULL, error_message = NULL, updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'
             RETURNING video_id, job_type, extract(epoch FROM now() - started_at)::float8 AS secs",
        )
        .bind(id)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return self.already_completed(id, token).await;
        };
        let video: i64 = row.try_get("video_id")?;
        let job_type = parse_job_type(row.try_get("job_type")?)?;
        let secs: Option<f64> = row.try_get("secs")?;
        let (public_id, video_status) = lock_video(&mut tx, video).await?;
        record_outputs(&mut tx, video, &public_id, outputs).await?;
        let updated: Option<String> = sqlx::query_scalar(
            "UPDATE videos v
             SET processing_progress = agg.p,
                 status = CASE WHEN agg.open = 0 THEN 'ready' ELSE v.status END,
                 processing_error = CASE WHEN agg.open = 0 THEN NULL ELSE v.processing_error END,
                 updated_at = now()
             FROM (SELECT count(*) FILTER (WHERE status <> 'completed') AS open,
                          coalesce(round(avg(progress)), 0)::int AS p
                   FROM processing_jobs WHERE video_id = $1) agg
             WHERE v.id = $1 AND v.status = 'processing'
             RETURNING v.status",
        )
        .bind(video)
        .fetch_optional(&mut *tx)
        .await?;
        // A video that is not processing (deleted, failed) keeps its status.
        let video_status = match updated {
            Some(s) => s,
            None => video_status,
        };
        tx.commit().await?;
        Ok((
            CompleteResponse {
                status: JobStatus::Completed,
                already_completed: false,
                video_status,
            },
            secs.map(|s| (job_type, s)),
        ))
    }

    /// A completion that matched no processing row: a retry of a completion
    /// that already happened (same token), or a lost lease.
    async fn already_completed(
        &self,
        id: i64,
        token: Uuid,
    ) -> Result<(CompleteResponse, Option<(JobType, f64)>), QueueError> {
        let row = sqlx::query(
            "SELECT j.status, j.lease_token, v.status AS video_status
             FROM processing_jobs j JOIN videos v ON v.id = j.video_id WHERE j.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(QueueError::NotFound(id));
        };
        let status: Option<String> = row.try_get("status")?;
        let current: Option<Uuid> = row.try_get("lease_token")?;
        if status.as_deref() == Some("completed") && current == Some(token) {
            return Ok((
                CompleteResponse {
                    status: JobStatus::Completed,
                    already_completed: true,
                    video_status: row
                        .try_get::<Option<String>, _>("video_status")?
                        .unwrap_or_default(),
                },
                None,
            ));
        }
        Err(QueueError::LeaseLost {
            id,
            status: status.unwrap_or_default(),
        })
    }

    /// Reports that job `id` failed. A retryable failure with attempts left
    /// goes back to `pending` after a backoff; otherwise the job and its
    /// video are `failed` with `error` as the reason.
    pub async fn fail(
        &self,
        id: i64,
        token: Uuid,
        error: &str,
        retryable: bool,
    ) -> Result<FailResponse, QueueError> {
        let error = truncate_message(error);
        let mut tx = self.pool.begin().await?;
        let sql = concat!(
            "UPDATE processing_jobs
             SET status = CASE WHEN $3 AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
                 run_after = CASE WHEN $3 AND attempts < max_attempts THEN ",
            backoff_sql!("attempts", "$5", "$6"),
            " ELSE run_after END,
                 error_message = $4, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'
             RETURNING video_id, status, run_after, attempts, max_attempts"
        );
        let row = sqlx::query(sql)
            .bind(id)
            .bind(token)
            .bind(retryable)
            .bind(&error)
            .bind(self.settings.retry_base.as_secs_f64())
            .bind(self.settings.retry_max.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.diagnose(id).await);
        };
        let status: String = row.try_get("status")?;
        let video: i64 = row.try_get("video_id")?;
        if status == "failed" {
            let attempts: i32 = row.try_get("attempts")?;
            let max: i32 = row.try_get("max_attempts")?;
            let reason = if retryable && attempts >= max {
                format!("{error} (gave up after {attempts} attempts)")
            } else {
                error.clone()
            };
            fail_video(&mut tx, video, &reason).await?;
        }
        tx.commit().await?;
        Ok(FailResponse {
            status: if status == "failed" {
                JobStatus::Failed
            } else {
                JobStatus::Pending
            },
            run_after: (status == "pending")
                .then(|| row.try_get("run_after"))
                .transpose()?,
        })
    }

    /// Returns expired leases to `pending` with backoff, or fails them (and
    /// their videos) once `max_attempts` is used up. Safe to run on every
    /// replica at once: rows are taken with SKIP LOCKED.
    pub async fn reap(&self) -> Result<ReapReport, QueueError> {
        let mut tx = self.pool.begin().await?;
        let sql = concat!(
            "WITH expired AS (
                 SELECT id FROM processing_jobs
                 WHERE status = 'processing' AND lease_expires_at < now()
                 ORDER BY lease_expires_at LIMIT 500
                 FOR UPDATE SKIP LOCKED)
             UPDATE processing_jobs j
             SET status = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
                 run_after = CASE WHEN j.attempts < j.max_attempts THEN ",
            backoff_sql!("j.attempts", "$1", "$2"),
            " ELSE j.run_after END,
                 error_message = CASE WHEN j.attempts < j.max_attempts
                     THEN format('lease expired: worker %s stopped sending heartbeats (attempt %s of %s)',
                                 coalesce(j.worker_id, '?'), j.attempts, j.max_attempts)
                     ELSE format('processing did not finish: the worker (last %s) stopped sending heartbeats on each of %s attempts',
                                 coalesce(j.worker_id, '?'), j.attempts) END,
                 lease_token = NULL, lease_expires_at = NULL, updated_at = now()
             FROM expired WHERE j.id = expired.id
             RETURNING j.id, j.video_id, j.job_type, j.status, j.error_message"
        );
        let rows = sqlx::query(sql)
            .bind(self.settings.retry_base.as_secs_f64())
            .bind(self.settings.retry_max.as_secs_f64())
            .fetch_all(&mut *tx)
            .await?;
        let mut report = ReapReport::default();
        let mut failed_videos = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let job_type = parse_job_type(row.try_get("job_type")?)?;
            if row.try_get::<String, _>("status")? == "failed" {
                report.failed.push((id, job_type));
                let reason: Option<String> = row.try_get("error_message")?;
                failed_videos.push((
                    row.try_get::<i64, _>("video_id")?,
                    reason.unwrap_or_default(),
                ));
            } else {
                report.returned.push((id, job_type));
            }
        }
        // Lock videos in id order: two replicas reaping at once never wait
        // on each other in a cycle.
        failed_videos.sort();
        failed_videos.dedup_by_key(|(v, _)| *v);
        for (video, reason) in &failed_videos {
            fail_video(&mut tx, *video, reason).await?;
        }
        tx.commit().await?;
        Ok(report)
    }

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

    /// Jobs, newest first, filtered by status and the video's public id;
    /// `before_id` pages (keyset).
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        video_id: Option<&str>,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<JobView>, QueueError> {
        let sql = format!(
            "{JOB_VIEW_SELECT}
             WHERE ($1::text IS NULL OR j.status = $1)
               AND ($2::text IS NULL OR v.video_id = $2)
               AND ($3::bigint IS NULL OR j.id < $3)
             ORDER BY j.id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.map(|s| s.as_str()))
            .bind(video_id)
            .bind(before_id)
            .bind(limit)
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

    /// Pending and processing counts per job type (for the metrics gauges).
    pub async fn open_counts(&self) -> Result<Vec<(JobType, i64, i64)>, QueueError> {
        let rows = sqlx::query(
            "SELECT job_type,
                    count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'processing') AS processing
             FROM processing_jobs WHERE status IN ('pending', 'processing') GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse_job_type(r.try_get("job_type")?)?,
                    r.try_get("pending")?,
                    r.try_get("processing")?,
                ))
            })
            .collect()
    }

    /// When the next pending job whose backoff has not passed becomes due.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT min(run_after) FROM processing_jobs WHERE status = 'pending' AND run_after > now()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

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

    /// Inserts `jobs` for video `video` (the row id) on `conn`, in order, so
    /// that `depends_on` may name earlier jobs of the batch; returns their
    /// ids. Run it inside the transaction that makes the video `processing`
    /// so the jobs exist exactly when the video says they do. The insert
    /// trigger wakes waiting workers at commit.
    pub async fn enqueue(
        conn: &mut PgConnection,
        video: i64,
        jobs: &[NewJob],
    ) -> Result<Vec<i64>, QueueError> {
        let mut ids: Vec<i64> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let deps = job
                .depends_on
                .iter()
                .map(|&d| {
                    ids.get(d).copied().filter(|_| d < i).ok_or_else(|| {
                        QueueError::InvalidInput(format!(
                            "job {i} depends on job {d}, not an earlier one"
                        ))
                    })
                })
                .collect::<Result<Vec<i64>, _>>()?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO processing_jobs
                    (video_id, job_type, input_path, output_path, parameters, priority,
                     max_attempts, depends_on, required_capabilities)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(video)
            .bind(job.job_type.as_str())
            .bind(&job.input_path)
            .bind(&job.output_path)
            .bind(&job.parameters)
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(&deps)
            .bind(&job.required_capabilities)
            .fetch_one(&mut *conn)
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }
}

/// Caps an error message at 2,000 characters (on a char boundary).
fn truncate_message(s: &str) -> String {
    const MAX: usize = 2000;
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Locks the video row; returns its public id and status.
async fn lock_video(
    tx: &mut Transaction<'_, Postgres>,
    video: i64,
) -> Result<(String, String), QueueError> {
    let row = sqlx::query("SELECT video_id, status FROM videos WHERE id = $1 FOR UPDATE")
        .bind(video)
        .fetch_one(&mut **tx)
        .await?;
    Ok((
        row.try_get("video_id")?,
        row.try_get::<Option<String>, _>("status")?
            .unwrap_or_default(),
    ))
}

/// Marks a processing video `failed` with `reason`, and cancels its other
/// pending jobs (they cannot lead to a ready video any more).
async fn fail_video(
    tx: &mut Transaction<'_, Postgres>,
    video: i64,
    reason: &str,
) -> Result<(), QueueError> {
    let (_, status) = lock_video(tx, video).await?;
    if status != "processing" {
        return Ok(());
    }
    sqlx::query(
        "UPDATE videos SET status = 'failed', processing_error = $2, updated_at = now() WHERE id = $1",
    )
    .bind(video)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE processing_jobs
         SET status = 'cancelled', error_message = 'cancelled: another job of this video failed',
             updated_at = now()
         WHERE video_id = $1 AND status = 'pending'",
    )
    .bind(video)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn check_key(key: &str, prefix: &str, what: &str) -> Result<(), QueueError> {
    if key.starts_with(prefix) && !key.contains("..") && !key.contains('\0') && key.len() <= 1024 {
        Ok(())
    } else {
        Err(QueueError::InvalidInput(format!(
            "{what} {key:?} is not under {prefix:?}"
        )))
    }
}

fn check_encoding(e: &EncodingOutput, encoded: &str) -> Result<(), QueueError> {
    if !layout::is_valid_rendition(&e.resolution) {
        return Err(QueueError::InvalidInput(format!(
            "invalid rendition {:?}",
            e.resolution
        )));
    }
    if e.bitrate <= 0 || e.file_size_bytes < 0 || e.segment_duration <= 0 {
        return Err(QueueError::InvalidInput(format!(
            "rendition {}: bitrate, size and segment duration must be positive",
            e.resolution
        )));
    }
    for field in [&e.codec, &e.container] {
        if field.is_empty() || field.len() > 20 {
            return Err(QueueError::InvalidInput(
                "codec and container are 1..=20 characters".into(),
            ));
        }
    }
    check_key(&e.storage_path, encoded, "storage_path")?;
    if let Some(m) = &e.manifest_path {
        check_key(m, encoded, "manifest_path")?;
    }
    Ok(())
}

fn check_thumbnail(t: &ThumbnailOutput, prefix: &str) -> Result<(), QueueError> {
    if t.timestamp_sec < 0 || t.size < 0 {
        return Err(QueueError::InvalidInput(
            "thumbnail timestamp and size must be >= 0".into(),
        ));
    }
    check_key(&t.url, prefix, "thumbnail url")
}

/// Upserts a job's outputs: a re-run writes the same rows, never more.
async fn record_outputs(
    tx: &mut Transaction<'_, Postgres>,
    video: i64,
    public_id: &str,
    outputs: &JobOutputs,
) -> Result<(), QueueError> {
    let encoded =
        layout::encoded_prefix(public_id).map_err(|e| QueueError::InvalidInput(e.to_string()))?;
    let thumbs = layout::thumbnails_prefix(public_id)
        .map_err(|e| QueueError::InvalidInput(e.to_string()))?;
    for e in &outputs.encodings {
        check_encoding(e, encoded.as_str())?;
        sqlx::query(
            "INSERT INTO video_encodings
                (video_id, resolution, codec, container, bitrate, storage_path, file_size_bytes,
                 manifest_path, segment_duration, status, width, height, peak_bitrate, segment_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'ready', $10, $11, $12, $13)
             ON CONFLICT (video_id, resolution, codec) DO UPDATE SET
                container = excluded.container, bitrate = excluded.bitrate,
                storage_path = excluded.storage_path, file_size_bytes = excluded.file_size_bytes,
                manifest_path = excluded.manifest_path, segment_duration = excluded.segment_duration,
                status = 'ready', width = excluded.width, height = excluded.height,
                peak_bitrate = excluded.peak_bitrate, segment_count = excluded.segment_count",
        )
        .bind(video)
        .bind(&e.resolution)
        .bind(&e.codec)
        .bind(&e.container)
        .bind(e.bitrate)
        .bind(&e.storage_path)
        .bind(e.file_size_bytes)
        .bind(&e.manifest_path)
        .bind(e.segment_duration)
        .bind(e.width)
        .bind(e.height)
        .bind(e.peak_bitrate)
        .bind(e.segment_count)
        .execute(&mut **tx)
        .await?;
    }
    for t in &outputs.thumbnails {
        check_thumbnail(t, thumbs.as_str())?;
        sqlx::query(
            "INSERT INTO video_thumbs (video_id, timestamp_sec, url, size, kind, width, height)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (video_id, url) DO UPDATE SET
                timestamp_sec = excluded.timestamp_sec, size = excluded.size,
                kind = excluded.kind, width = excluded.width, height = excluded.height",
        )
        .bind(video)
        .bind(t.timestamp_sec)
        .bind(&t.url)
        .bind(t.size)
        .bind(t.kind.as_str())
        .bind(t.width)
        .bind(t.height)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(m) = &outputs.video {
        let duration = m.duration_seconds.filter(|d| d.is_finite() && *d >= 0.0);
        sqlx::query(
            "UPDATE videos SET
                duration_seconds = coalesce(round($2::float8)::int, duration_seconds),
                source_width = coalesce($3, source_width),
                source_height = coalesce($4, source_height),
                source_fps = coalesce($5, source_fps),
                source_codec = coalesce($6, source_codec),
                updated_at = now()
             WHERE id = $1",
        )
        .bind(video)
        .bind(duration)
        .bind(m.width)
        .bind(m.height)
        .bind(m.fps.filter(|f| f.is_finite()))
        .bind(m.codec.as_deref().map(|c| &c[..c.len().min(50)]))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_normalised() {
        let a = LeaseFilter::new(
            &[JobType::Manifest, JobType::Transcode],
            &["b".into(), "a".into()],
        );
        let b = LeaseFilter::new(
            &[JobType::Transcode, JobType::Manifest, JobType::Transcode],
            &["a".into(), "b".into()],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn messages_are_capped_on_char_boundaries() {
        let long = "é".repeat(1500);
        let t = truncate_message(&long);
        assert!(t.len() <= 2004);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_message("  short "), "short");
    }

    #[test]
    fn backoff_sql_mentions_both_bounds() {
        let s = backoff_sql!("attempts", "$5", "$6");
        assert!(s.contains("least($5 * power(2, greatest(attempts - 1, 0)), $6)"));
    }
}
