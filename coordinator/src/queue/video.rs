//! The video row, locked after the job row(s) (the queue's lock order):
//! read under lock, and failed when one of its jobs fails for good.

use super::QueueError;
use sqlx::{Postgres, Row, Transaction};

/// Locks the video row; returns its public id and status.
pub(super) async fn lock_video(
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
pub(super) async fn fail_video(
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
