//! The ranged plan of an MP4/MOV original, and a ranged chunk's input.
//!
//! The plan fetches the original's boxes but the media data (its `moov`
//! index) and the first [`PLAN_HEAD_BYTES`] of the media data into a
//! sparse scratch file, reads the keyframe index from it and completes
//! at once with the chunk jobs: no download of the whole original, no
//! remux, no chunk files to upload. Each chunk job then fetches the same
//! boxes and the byte span its packets lie in, and extracts its packets
//! locally by the plan-time remux's rule. Any other source (or a plan
//! the sparse copy cannot make) is planned from the whole original, as
//! before (`super::transcode`).

use crate::media::chunks::{extract_chunk, merge_ranges, plan_ranged, ChunkSettings, ChunkSpec};
use crate::media::probe::SourceInfo;
use crate::worker::failure::{layout_error, media_blocking_error, JobFailure};
use crate::worker::ranged::RangedOriginal;
use crate::worker::scratch::Scratch;
use crate::worker::Worker;
use std::path::PathBuf;
use std::sync::Arc;
use vodfarm_core::jobs::{ChunkJob, JobOutputs, LeasedJob, SourceMetadata};
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;

/// Bytes of the media data the plan fetches: the probe's and the first
/// picture's packets (checked: a plan that needed more falls back).
const PLAN_HEAD_BYTES: u64 = 4 << 20;

/// A chunk job's parameters: the plan's ladder and segment duration,
/// MPEG-TS, and the chunk.
pub(super) fn chunk_parameters(
    ladder: &Option<RenditionLadder>,
    segment_duration: u32,
    spec: &ChunkSpec,
) -> serde_json::Value {
    serde_json::json!({
        "ladder": ladder,
        "segment_duration": segment_duration,
        "packaging": Packaging::Ts,
        "chunk": spec,
    })
}

/// The video row's metadata from the plan's probe.
pub(super) fn plan_metadata(info: &SourceInfo) -> SourceMetadata {
    SourceMetadata {
        duration_seconds: Some(info.duration),
        width: Some(info.display_width as i32),
        height: Some(info.display_height as i32),
        fps: Some(info.source_fps).filter(|f| *f > 0.0),
        codec: Some(info.codec.clone()),
    }
}

/// Plans the job's original by ranged reads. `None` when it is not a
/// plain MP4/MOV, stays one job, or the sparse copy was not enough: the
/// caller then downloads the whole original.
pub(super) async fn ranged_plan(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    scratch: &Scratch,
    settings: ChunkSettings,
    ladder: &Option<RenditionLadder>,
) -> Result<Option<JobOutputs>, JobFailure> {
    let mut original = RangedOriginal::open(worker, job).await?;
    let Some(boxes) = original.boxes().await? else {
        return Ok(None);
    };
    let head = [
        boxes.media[0],
        boxes.media[1].min(boxes.media[0] + PLAN_HEAD_BYTES),
    ];
    let fetched = merge_ranges(boxes.header.iter().copied().chain([head]).collect());
    let sparse = scratch.path().join("original.sparse");
    original.fetch(&fetched, &sparse).await?;
    let (size, limits, header) = (original.size, worker.limits, boxes.header.clone());
    let planned = tokio::task::spawn_blocking(move || {
        plan_ranged(&sparse, size, &header, &fetched, settings, &limits)
    })
    .await
    .map_err(media_blocking_error)?;
    let (info, specs) = match planned {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "ranged plan failed; planning from the whole original");
            return Ok(None);
        }
    };
    let chunks: Vec<ChunkJob> = specs
        .iter()
        .map(|spec| ChunkJob {
            input_path: job.input_path.clone(),
            parameters: chunk_parameters(ladder, settings.segment_seconds, spec),
        })
        .collect();
    let chunk_bytes: u64 = specs
        .iter()
        .filter_map(|s| s.source_read.as_ref())
        .map(crate::media::chunks::SourceRead::bytes)
        .sum();
    tracing::info!(
        chunks = chunks.len(),
        duration = info.duration,
        bytes_read = original.bytes_read,
        original_bytes = original.size,
        chunk_bytes,
        "source planned into chunks by ranged reads"
    );
    Ok(Some(JobOutputs {
        chunks,
        source_bytes: i64::try_from(original.bytes_read).ok(),
        video: Some(plan_metadata(&info)),
        ..JobOutputs::default()
    }))
}

/// A chunk job's input file in `scratch` and the bytes it read: its
/// ranges of the original extracted locally when the plan was ranged,
/// else the chunk file the plan uploaded.
pub(super) async fn chunk_input(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    scratch: &Scratch,
    spec: &ChunkSpec,
) -> Result<(PathBuf, u64), JobFailure> {
    let vid = job.video_id.as_str();
    let Some(read) = spec.source_read.clone() else {
        let prefix = layout::chunk_sources_prefix(vid).map_err(layout_error)?;
        if !job.input_path.starts_with(prefix.as_str()) {
            return Err(JobFailure::BadParameters(format!(
                "chunk input {:?} is not one of this video's chunk files",
                job.input_path
            )));
        }
        let source = scratch.path().join("chunk.nut");
        let bytes = crate::worker::scratch::download(worker, job, &source).await?;
        return Ok((source, bytes));
    };
    let originals = layout::originals_prefix(vid).map_err(layout_error)?;
    if !job.input_path.starts_with(originals.as_str()) || job.input_path.contains("/chunks/") {
        return Err(JobFailure::BadParameters(format!(
            "chunk input {:?} is not this video's original",
            job.input_path
        )));
    }
    let mut original = RangedOriginal::open(worker, job).await?;
    if original.size != read.size {
        return Err(JobFailure::BadParameters(format!(
            "the original has {} bytes, the plan read {}",
            original.size, read.size
        )));
    }
    let sparse = scratch.path().join("original.sparse");
    original.fetch(&read.ranges, &sparse).await?;
    tracing::info!(
        chunk = spec.index,
        ranges = ?read.ranges,
        bytes_read = original.bytes_read,
        "chunk ranges of the original fetched"
    );
    let dir = scratch.path().join("input");
    let file = tokio::task::spawn_blocking(move || {
        let file = extract_chunk(&sparse, &dir, &read);
        // Only the fetched bytes use disk, but they are not needed now.
        let _ = std::fs::remove_file(&sparse);
        file
    })
    .await
    .map_err(media_blocking_error)??;
    Ok((file, original.bytes_read))
}
