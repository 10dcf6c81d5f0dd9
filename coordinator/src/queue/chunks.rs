//! A planning transcode job's completion that splits its source: the
//! chunk jobs are inserted, and the video's manifest job is made to wait
//! for them and stitch their outputs, all in the completing transaction.
//!
//! Fairness rule: chunk jobs get the planning job's priority minus one,
//! so at equal upload priority every other job (another creator's
//! whole-video transcode, a plan, a thumbnail, a stitch) is leased before
//! any chunk; among chunks the claim's usual order holds (older plans
//! first, then chunk order). A long video therefore never holds back the
//! short videos uploaded after it, and its own chunks still run on every
//! worker the short ones leave idle.

use super::QueueError;
use sqlx::{Postgres, Transaction};
use vodfarm_core::jobs::{ChunkJob, JobType};
use vodfarm_core::layout;

/// Most chunks one plan may make (a 4-hour source in 1-second chunks).
const MAX_CHUNKS: usize = 14_400;

/// The pending manifest job a plan's chunks feed, locked (job rows are
/// locked before the video row: the queue's lock order). `None` when
/// there is none (the video was deleted or failed meanwhile).
pub(super) async fn lock_stitch(
    tx: &mut Transaction<'_, Postgres>,
    video: i64,
    plan_type: JobType,
) -> Result<Option<i64>, QueueError> {
    if plan_type != JobType::Transcode {
        return Err(QueueError::InvalidInput(
            "only a transcode job may plan chunks".into(),
        ));
    }
    Ok(sqlx::query_scalar(
        "SELECT id FROM processing_jobs
         WHERE video_id = $1 AND job_type = 'manifest' AND status = 'pending'
         ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .bind(video)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Checks the plan's chunks before anything is written: each reads a
/// chunk file of the video, or ranges of the plan's own input (the
/// original).
pub(super) fn check_chunks(
    public_id: &str,
    plan_input: &str,
    chunks: &[ChunkJob],
) -> Result<(), QueueError> {
    let prefix = layout::chunk_sources_prefix(public_id)
        .map_err(|e| QueueError::InvalidInput(e.to_string()))?;
    if chunks.len() > MAX_CHUNKS {
        return Err(QueueError::InvalidInput(format!(
            "{} chunks is over the limit of {MAX_CHUNKS}",
            chunks.len()
        )));
    }
    for c in chunks {
        let key = c.input_path.as_str();
        let chunk_file = key.starts_with(prefix.as_str()) && !key.contains("..");
        if !(chunk_file || key == plan_input) || key.len() > 1024 {
            return Err(QueueError::InvalidInput(format!(
                "chunk input {key:?} is neither under {:?} nor the plan's input",
                prefix.as_str()
            )));
        }
        if !c.parameters.is_object() {
            return Err(QueueError::InvalidInput(
                "chunk parameters must be a JSON object".into(),
            ));
        }
    }
    Ok(())
}

/// Inserts the chunk jobs of plan job `plan` and makes manifest job
/// `stitch` depend on them with `{"stitch": {"chunks": n}}` added to its
/// parameters. Returns the chunk jobs' ids.
pub(super) async fn enqueue_chunks(
    tx: &mut Transaction<'_, Postgres>,
    plan: i64,
    stitch: i64,
    public_id: &str,
    chunks: &[ChunkJob],
) -> Result<Vec<i64>, QueueError> {
    let output = layout::encoded_prefix(public_id)
        .map_err(|e| QueueError::InvalidInput(e.to_string()))?
        .to_string();
    let mut ids = Vec::with_capacity(chunks.len());
    for c in chunks {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO processing_jobs
                (video_id, job_type, input_path, output_path, parameters, priority,
                 max_attempts, required_capabilities)
             SELECT p.video_id, 'transcode', $2, $3, $4,
                    greatest(coalesce(p.priority, 0), -2147483647) - 1,
                    p.max_attempts, p.required_capabilities
             FROM processing_jobs p WHERE p.id = $1
             RETURNING id",
        )
        .bind(plan)
        .bind(&c.input_path)
        .bind(&output)
        .bind(&c.parameters)
        .fetch_one(&mut **tx)
        .await?;
        ids.push(id);
    }
    sqlx::query(
        "UPDATE processing_jobs
         SET depends_on = depends_on || $2::bigint[],
             parameters = coalesce(parameters, '{}'::jsonb)
                 || jsonb_build_object('stitch', jsonb_build_object('chunks', $3::int)),
             updated_at = now()
         WHERE id = $1",
    )
    .bind(stitch)
    .bind(&ids)
    .bind(i32::try_from(ids.len()).unwrap_or(i32::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}
