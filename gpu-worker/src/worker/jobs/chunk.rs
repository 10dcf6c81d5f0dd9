//! A chunk job: read only the chunk's part of the original (its byte
//! ranges, or the chunk file the plan remuxed), encode exactly its output frames into every rung (segments
//! numbered from its first), upload them, and record what it made in its
//! sidecar for the stitch. Its keys are a function of the chunk alone, so
//! a retry overwrites the same objects.

use super::transcode::upload_segments;
use crate::media::chunks::ChunkSpec;
use crate::media::hls::{RenditionSummary, SegmentFile};
use crate::media::transcode::{transcode, TranscodeRequest};
use crate::media::{JobControl, MediaError};
use crate::worker::failure::{layout_error, media_blocking_error, JobFailure};
use crate::worker::scratch::Scratch;
use crate::worker::Worker;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use vodfarm_core::jobs::{JobOutputs, LeasedJob};
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;

/// `encoded/{id}/chunks/chunk_{k}.json`: what one chunk made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChunkRecord {
    /// The chunk's number.
    pub(super) index: u32,
    /// How many chunks the video has.
    pub(super) count: u32,
    /// Its first segment's number.
    pub(super) first_segment: u32,
    /// Its first output frame.
    pub(super) start_frame: i64,
    /// The frame after its last.
    pub(super) end_frame: i64,
    /// Its segments, per rung (lowest first).
    pub(super) renditions: Vec<RenditionSummary>,
    /// Bytes of the original it read (its chunk file).
    pub(super) source_bytes: u64,
    /// Wall time of the encode, seconds (the bench's projection).
    pub(super) encode_seconds: f64,
}

/// Runs chunk job `spec`.
pub(super) async fn chunk_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
    ladder: RenditionLadder,
    segment_seconds: u32,
    spec: ChunkSpec,
) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    spec.check()
        .map_err(|e| JobFailure::BadParameters(format!("chunk parameters: {e}")))?;
    let sidecar = layout::chunk_sidecar(vid, spec.index).map_err(layout_error)?;
    let scratch = Scratch::create(worker, job).await?;
    let (source, source_bytes) = super::plan::chunk_input(worker, job, &scratch, &spec).await?;
    let started = Instant::now();

    let (tx, rx) = tokio::sync::mpsc::channel::<SegmentFile>(8);
    let uploader = tokio::spawn(upload_segments(
        worker.store.clone(),
        worker.metrics.clone(),
        job.video_id.clone(),
        rx,
    ));
    let request = TranscodeRequest {
        source,
        work_dir: scratch.path().join("out"),
        ladder,
        segment_seconds,
        preset: worker.preset.clone(),
        stages: worker.stages,
        limits: worker.limits,
        packaging: Packaging::Ts,
        chunk: Some(spec.clone()),
        // The same per-stage choice as a whole-video transcode.
        gpu: Some(worker.gpu.clone()),
    };
    let control_for_media = control.clone();
    let media = tokio::task::spawn_blocking(move || {
        transcode(&request, &control_for_media, move |seg| {
            tx.blocking_send(seg).map_err(|_| MediaError::Cancelled)
        })
    })
    .await
    .map_err(media_blocking_error)?;
    let uploaded = uploader.await.map_err(media_blocking_error)?;
    let output = media?;
    uploaded?;
    worker.metrics.encoded(control.take_frames());

    let record = ChunkRecord {
        index: spec.index,
        count: spec.count,
        first_segment: spec.first_segment,
        start_frame: spec.start_frame,
        end_frame: output.frames,
        renditions: output.renditions,
        source_bytes,
        encode_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec(&record)
        .map_err(|e| JobFailure::Media(MediaError::internal("chunk sidecar", e)))?;
    worker.store.put(sidecar.as_str(), json.into()).await?;
    tracing::info!(
        chunk = spec.index,
        chunks = spec.count,
        first_segment = spec.first_segment,
        frames = record.end_frame - record.start_frame,
        source_bytes,
        encode_seconds = record.encode_seconds,
        "chunk done"
    );
    Ok(JobOutputs {
        source_bytes: i64::try_from(source_bytes).ok(),
        ..JobOutputs::default()
    })
}
