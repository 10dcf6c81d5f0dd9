//! A completion's outputs: every key checked to lie under the video's
//! prefixes, then upserted (encodings, thumbnails, source metadata) so a
//! re-run writes the same rows, never more.

use super::QueueError;
use sqlx::{Postgres, Transaction};
use vodfarm_core::jobs::{EncodingOutput, JobOutputs, ThumbnailOutput};
use vodfarm_core::layout;

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
pub(super) async fn record_outputs(
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
    for d in &outputs.downloads {
        let want = layout::download_mp4(public_id, &d.rendition)
            .map_err(|e| QueueError::InvalidInput(format!("download {:?}: {e}", d.rendition)))?;
        if d.storage_key != want.as_str() || d.size_bytes < 0 {
            return Err(QueueError::InvalidInput(format!(
                "download {}: key must be {want} and size >= 0",
                d.rendition
            )));
        }
        sqlx::query(
            "INSERT INTO video_downloads (video_id, rendition, storage_key, size_bytes, duration_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (video_id, rendition) DO UPDATE SET
                storage_key = excluded.storage_key, size_bytes = excluded.size_bytes,
                duration_ms = excluded.duration_ms, created_at = now()",
        )
        .bind(video)
        .bind(&d.rendition)
        .bind(&d.storage_key)
        .bind(d.size_bytes)
        .bind(d.duration_ms)
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
