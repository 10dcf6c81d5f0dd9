//! A worker's side of a lease: claim, release, heartbeat, complete and
//! fail, each fenced by `id AND lease_token`; and the reaper, which
//! takes back leases whose heartbeats stopped.

use super::chunks::{check_chunks, enqueue_chunks, lock_stitch};
use super::outputs::record_outputs;
use super::rows::{leased_job_from_row, parse_job_type, CLAIM_SQL};
use super::video::{fail_video, lock_video};
use super::{JobQueue, QueueError};
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;
use vodfarm_core::jobs::{
    CompleteResponse, FailResponse, JobOutputs, JobStatus, JobType, LeasedJob,
};

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

/// What a reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases returned to `pending`.
    pub returned: Vec<(i64, JobType)>,
    /// Expired leases that used up `max_attempts`.
    pub failed: Vec<(i64, JobType)>,
}

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

impl JobQueue {
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

    /// When the next pending job whose backoff has not passed becomes due.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT min(run_after) FROM processing_jobs WHERE status = 'pending' AND run_after > now()",
        )
        .fetch_one(&self.pool)
        .await?)
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
                 lease_expires_at = NULL, error_message = NULL, updated_at = now(),
                 source_bytes = $3
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'
             RETURNING video_id, job_type, input_path,
                       extract(epoch FROM now() - started_at)::float8 AS secs",
        )
        .bind(id)
        .bind(token)
        .bind(outputs.source_bytes.filter(|b| *b >= 0))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return self.already_completed(id, token).await;
        };
        let video: i64 = row.try_get("video_id")?;
        let job_type = parse_job_type(row.try_get("job_type")?)?;
        let secs: Option<f64> = row.try_get("secs")?;
        // A plan's stitch job is a job row: locked before the video row.
        let stitch = if outputs.chunks.is_empty() {
            None
        } else {
            lock_stitch(&mut tx, video, job_type).await?
        };
        let (public_id, video_status) = lock_video(&mut tx, video).await?;
        record_outputs(&mut tx, video, &public_id, outputs).await?;
        if !outputs.chunks.is_empty() {
            let plan_input: String = row.try_get("input_path")?;
            check_chunks(&public_id, &plan_input, &outputs.chunks)?;
            match stitch {
                Some(stitch) => {
                    enqueue_chunks(&mut tx, id, stitch, &public_id, &outputs.chunks).await?;
                }
                // Deleted or failed while planning: nothing to feed.
                None if video_status != "processing" => {}
                None => {
                    return Err(QueueError::InvalidInput(
                        "no pending manifest job to stitch these chunks".into(),
                    ))
                }
            }
        }
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
