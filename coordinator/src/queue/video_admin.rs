//! A video as an operator sees it (state, renditions, every job), and
//! retrying a video's failed jobs by its public id.

use super::rows::{job_view_from_row, JOB_VIEW_SELECT};
use super::{JobQueue, QueueError};
use sqlx::Row;
use vodfarm_core::jobs::{EncodingView, JobView, VideoOpsView};

impl JobQueue {
    /// The video with public id `video_id`, its renditions and its jobs
    /// (oldest first). `None` when no such video exists.
    pub async fn video_view(&self, video_id: &str) -> Result<Option<VideoOpsView>, QueueError> {
        let Some(row) = sqlx::query(
            "SELECT v.id, v.video_id, v.title, c.channel_id, v.status, v.privacy,
                    v.processing_progress, v.processing_error, v.duration_seconds,
                    v.original_size_bytes, v.uploaded_at
             FROM videos v JOIN channels c ON c.id = v.channel_id
             WHERE v.video_id = $1",
        )
        .bind(video_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let encodings = sqlx::query(
            "SELECT resolution, bitrate, width, height, segment_count, file_size_bytes,
                    manifest_path
             FROM video_encodings WHERE video_id = $1 ORDER BY height NULLS LAST, resolution",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(EncodingView {
                resolution: r.try_get("resolution")?,
                bitrate: r.try_get("bitrate")?,
                width: r.try_get("width")?,
                height: r.try_get("height")?,
                segment_count: r.try_get("segment_count")?,
                file_size_bytes: r.try_get("file_size_bytes")?,
                manifest_path: r.try_get("manifest_path")?,
            })
        })
        .collect::<Result<Vec<_>, QueueError>>()?;
        Ok(Some(VideoOpsView {
            video_id: row.try_get("video_id")?,
            title: row.try_get("title")?,
            channel_id: row.try_get("channel_id")?,
            status: row
                .try_get::<Option<String>, _>("status")?
                .unwrap_or_default(),
            privacy: row
                .try_get::<Option<String>, _>("privacy")?
                .unwrap_or_default(),
            processing_progress: row
                .try_get::<Option<i32>, _>("processing_progress")?
                .unwrap_or(0),
            processing_error: row.try_get("processing_error")?,
            duration_seconds: row.try_get("duration_seconds")?,
            original_size_bytes: row.try_get("original_size_bytes")?,
            uploaded_at: row.try_get("uploaded_at")?,
            encodings,
            jobs: self.video_jobs(id).await?,
        }))
    }

    /// Every job of the video with internal id `id`, oldest first.
    async fn video_jobs(&self, id: i64) -> Result<Vec<JobView>, QueueError> {
        let sql = format!("{JOB_VIEW_SELECT} WHERE j.video_id = $1 ORDER BY j.id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(job_view_from_row)
            .collect()
    }

    /// Reopens every failed or cancelled job of the video (as
    /// [`JobQueue::retry`] does for one of them) and answers all its jobs.
    /// `Ok(None)`: no such video; an error when nothing can be retried.
    pub async fn retry_video(&self, video_id: &str) -> Result<Option<Vec<JobView>>, QueueError> {
        let Some(row) = sqlx::query(
            "SELECT j.id, v.id AS video FROM videos v
             LEFT JOIN processing_jobs j
               ON j.video_id = v.id AND j.status IN ('failed', 'cancelled')
             WHERE v.video_id = $1
             ORDER BY j.id LIMIT 1",
        )
        .bind(video_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let video: i64 = row.try_get("video")?;
        match row.try_get::<Option<i64>, _>("id")? {
            // One job's retry reopens all of the video's failed and
            // cancelled jobs in one transaction, with the video row locked.
            Some(job) => {
                self.retry(job).await?;
            }
            None => {
                return Err(QueueError::NothingToRetry(video_id.to_owned()));
            }
        }
        Ok(Some(self.video_jobs(video).await?))
    }
}
