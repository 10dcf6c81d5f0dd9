//! The statements whose columns are decoded here, and the decoding:
//! [`CLAIM_SQL`] returns [`LeasedJob`] rows, [`JOB_VIEW_SELECT`] selects
//! [`JobView`] rows.

use super::QueueError;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use vodfarm_core::jobs::{JobStatus, JobType, JobView, LeasedJob};

/// The claim statement: due, dependency-free pending rows in priority then
/// age order, locked with SKIP LOCKED so concurrent claims never wait on
/// or return each other's rows, and leased in the same statement.
///
/// The `= '{}' OR` guards are for the planner, not for logic: with a bare
/// `<@` and anti-join it estimates ~1 matching row and sorts the whole
/// pending set on every claim (250 ms at 20,000 pending jobs); with them
/// it walks `idx_jobs_pending` in order and stops at the first free row.
pub(super) const CLAIM_SQL: &str = r#"
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
pub(super) const JOB_VIEW_SELECT: &str = r#"
SELECT j.id, v.video_id AS public_video_id, j.job_type, j.status, j.progress, j.error_message,
       j.worker_id, j.attempts, j.max_attempts, j.priority, j.depends_on,
       j.required_capabilities, j.input_path, j.output_path, j.parameters, j.run_after,
       j.lease_expires_at, j.created_at, j.started_at, j.completed_at
FROM processing_jobs j JOIN videos v ON v.id = j.video_id
"#;

pub(super) fn parse_job_type(s: &str) -> Result<JobType, QueueError> {
    s.parse()
        .map_err(|e: vodfarm_core::jobs::UnknownValue| QueueError::InvalidInput(e.to_string()))
}

pub(super) fn parse_job_status(s: &str) -> Result<JobStatus, QueueError> {
    s.parse()
        .map_err(|e: vodfarm_core::jobs::UnknownValue| QueueError::InvalidInput(e.to_string()))
}

/// `parameters` is nullable in the seed's schema; workers get JSON null.
fn parameters_of(row: &PgRow) -> Result<serde_json::Value, QueueError> {
    Ok(row
        .try_get::<Option<serde_json::Value>, _>("parameters")?
        .unwrap_or(serde_json::Value::Null))
}

pub(super) fn leased_job_from_row(row: &PgRow) -> Result<LeasedJob, QueueError> {
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

pub(super) fn job_view_from_row(row: &PgRow) -> Result<JobView, QueueError> {
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
