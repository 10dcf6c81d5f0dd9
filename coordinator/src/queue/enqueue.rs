//! Inserting a video's jobs (the per-upload DAG), inside the caller's
//! transaction.

use super::{JobQueue, QueueError};
use sqlx::PgConnection;
use vodfarm_core::jobs::JobType;

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

impl JobQueue {
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
