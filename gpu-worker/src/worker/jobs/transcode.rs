//! The transcode job: download the original, run the ladder, upload each
//! segment while the next ones are encoded, then each rendition's
//! playlist and the renditions sidecar the manifest job reads.
//!
//! With `chunking` in its parameters it first plans: a source longer than
//! `min_seconds` is remuxed into per-chunk files and the job completes
//! with the chunk jobs instead of renditions (`super::chunk` runs them,
//! `super::stitch` joins them). A job with `chunk` is one of those.

use crate::media::chunks::{plan, ChunkPlan, ChunkSettings, ChunkSpec, PlannedChunk};
use crate::media::hls::{RenditionSet, RenditionSummary, SegmentFile, SegmentKind};
use crate::media::transcode::{transcode, TranscodeRequest};
use crate::media::{JobControl, MediaError};
use crate::worker::failure::{layout_error, media_blocking_error, JobFailure};
use crate::worker::scratch::{download, Scratch};
use crate::worker::{Worker, WorkerMetrics};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc::Receiver;
use vodfarm_core::jobs::{ChunkJob, EncodingOutput, JobOutputs, LeasedJob, SourceMetadata};
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;
use vodfarm_core::playlists::{Packaging, AUDIO_TRACK};
use vodfarm_core::store::SharedStore;

fn default_segment_duration() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
struct TranscodeParameters {
    #[serde(default)]
    ladder: Option<RenditionLadder>,
    #[serde(default = "default_segment_duration")]
    segment_duration: u32,
    /// `ts` (default) or `cmaf`.
    #[serde(default)]
    packaging: Packaging,
    /// Plan sources longer than this into chunk jobs (MPEG-TS only).
    #[serde(default)]
    chunking: Option<ChunkingParameters>,
    /// This job is one chunk of a planned source.
    #[serde(default)]
    chunk: Option<ChunkSpec>,
}

/// `chunking` of a transcode job (the api's `--chunk-*` flags).
#[derive(Debug, Clone, Copy, Deserialize)]
struct ChunkingParameters {
    min_seconds: u32,
    chunk_seconds: u32,
}

fn check_ladder(ladder: &RenditionLadder, segment_duration: u32) -> Result<(), JobFailure> {
    if !(1..=60).contains(&segment_duration) {
        return Err(JobFailure::BadParameters(format!(
            "segment_duration {segment_duration} is outside 1..=60 seconds"
        )));
    }
    if ladder.rungs.is_empty() || ladder.rungs.len() > 10 {
        return Err(JobFailure::BadParameters(
            "the ladder needs 1..=10 rungs".into(),
        ));
    }
    for r in &ladder.rungs {
        if !layout::is_valid_rendition(&r.name)
            || !(16..=8192).contains(&r.height)
            || r.video_bitrate < 10_000
        {
            return Err(JobFailure::BadParameters(format!(
                "invalid rung {:?}",
                r.name
            )));
        }
    }
    if !(16_000..=512_000).contains(&ladder.audio_bitrate) {
        return Err(JobFailure::BadParameters(
            "audio_bitrate outside 16..=512 kb/s".into(),
        ));
    }
    Ok(())
}

/// Runs a transcode job: every rung of its ladder, uploaded as HLS.
pub(super) async fn transcode_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
) -> Result<JobOutputs, JobFailure> {
    let params: TranscodeParameters = serde_json::from_value(job.parameters.clone())
        .map_err(|e| JobFailure::BadParameters(format!("transcode parameters: {e}")))?;
    let ladder = params.ladder.clone().unwrap_or_default();
    check_ladder(&ladder, params.segment_duration)?;
    let vid = job.video_id.as_str();
    layout::encoded_prefix(vid).map_err(layout_error)?;
    if let Some(chunk) = params.chunk.clone() {
        if params.packaging != Packaging::Ts {
            return Err(JobFailure::BadParameters(
                "chunk jobs are MPEG-TS only".into(),
            ));
        }
        return super::chunk::chunk_job(
            worker,
            job,
            control,
            ladder,
            params.segment_duration,
            chunk,
        )
        .await;
    }
    let scratch = Scratch::create(worker, job).await?;
    let settings = params.chunking.map(|chunking| ChunkSettings {
        segment_seconds: params.segment_duration,
        chunk_seconds: chunking.chunk_seconds.max(1),
        min_seconds: chunking.min_seconds,
    });
    if let (Some(settings), Packaging::Ts) = (settings, params.packaging) {
        let ranged = super::plan::ranged_plan(worker, job, &scratch, settings, &params.ladder);
        if let Some(outputs) = ranged.await? {
            return Ok(outputs);
        }
    }
    let source = scratch.path().join("original");
    let source_bytes = download(worker, job, &source).await?;
    if let (Some(settings), Packaging::Ts) = (settings, params.packaging) {
        let dir = scratch.path().join("chunks");
        let path = source.clone();
        let limits = worker.limits;
        let planned = tokio::task::spawn_blocking(move || plan(&path, &dir, settings, &limits))
            .await
            .map_err(media_blocking_error)?;
        match planned {
            Ok(Some(plan)) => return plan_outputs(worker, job, &params, plan, source_bytes).await,
            Ok(None) => {}
            Err(e) if e.is_bad_input() => return Err(e.into()),
            // A source the chunk remux cannot handle is still transcoded,
            // in one job.
            Err(e) => tracing::warn!(error = %e, "chunk plan failed; transcoding in one job"),
        }
    }

    // Segments go up while the next ones are encoded; the channel's bound
    // holds the encoder back when uploads fall behind (bounded disk).
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
        segment_seconds: params.segment_duration,
        preset: worker.preset.clone(),
        stages: worker.stages,
        limits: worker.limits,
        packaging: params.packaging,
        chunk: None,
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
    // The heartbeat counted most frames as they were encoded; the rest now.
    worker.metrics.encoded(control.take_frames());

    let mut encodings = Vec::new();
    for r in output.renditions.iter().chain(output.audio.iter()) {
        let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
        let body = r.media_playlist_for(params.packaging);
        worker.store.put(playlist.as_str(), body.into()).await?;
        // A re-run never leaves segments past the new end behind, nor
        // segments of the other packaging.
        delete_segments_past(worker, vid, &r.name, params.packaging, r.segments.len()).await?;
        if r.name == AUDIO_TRACK {
            continue;
        }
        encodings.push(encoding_output(
            vid,
            r,
            params.packaging,
            params.segment_duration,
        )?);
    }
    let sidecar = RenditionSet {
        renditions: output.renditions.clone(),
        packaging: params.packaging,
        audio: output.audio.clone(),
    };
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let json = serde_json::to_vec(&sidecar)
        .map_err(|e| JobFailure::Media(MediaError::internal("sidecar", e)))?;
    worker.store.put(sidecar_key.as_str(), json.into()).await?;
    tracing::info!(
        renditions = output.renditions.len(),
        frames = output.frames,
        decoder = %output.decoder,
        stage_plan = %output.plan.summary(),
        "transcode done"
    );
    let fps = f64::from(output.source.output_fps);
    Ok(JobOutputs {
        encodings,
        thumbnails: Vec::new(),
        chunks: Vec::new(),
        source_bytes: i64::try_from(source_bytes).ok(),
        downloads: Vec::new(),
        video: Some(SourceMetadata {
            duration_seconds: Some(if fps > 0.0 {
                output.frames as f64 / fps
            } else {
                output.source.duration
            }),
            width: Some(output.source.display_width as i32),
            height: Some(output.source.display_height as i32),
            fps: Some(output.source.source_fps).filter(|f| *f > 0.0),
            codec: Some(output.source.codec.clone()),
        }),
    })
}

/// The `video_encodings` row of a finished rendition.
pub(super) fn encoding_output(
    vid: &str,
    r: &RenditionSummary,
    packaging: Packaging,
    segment_duration: u32,
) -> Result<EncodingOutput, JobFailure> {
    let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
    let prefix = layout::rendition_prefix(vid, &r.name).map_err(layout_error)?;
    Ok(EncodingOutput {
        resolution: r.name.clone(),
        codec: "h264".into(),
        container: match packaging {
            Packaging::Ts => "ts".into(),
            Packaging::Cmaf => "cmaf".into(),
        },
        bitrate: i32::try_from(r.average_bandwidth()).unwrap_or(i32::MAX),
        peak_bitrate: Some(i32::try_from(r.peak_bandwidth()).unwrap_or(i32::MAX)),
        width: Some(r.width as i32),
        height: Some(r.height as i32),
        storage_path: prefix.to_string(),
        file_size_bytes: i64::try_from(r.bytes()).unwrap_or(i64::MAX),
        manifest_path: Some(playlist.to_string()),
        segment_duration: segment_duration as i32,
        segment_count: Some(r.segments.len() as i32),
    })
}

/// Deletes a rendition's segments numbered `count` and above (a re-run
/// that made fewer), and a TS rendition's stale CMAF init.
pub(super) async fn delete_segments_past(
    worker: &Arc<Worker>,
    vid: &str,
    rendition: &str,
    packaging: Packaging,
    count: usize,
) -> Result<(), JobFailure> {
    let ext = match packaging {
        Packaging::Ts => ".ts",
        Packaging::Cmaf => ".m4s",
    };
    let prefix = layout::rendition_prefix(vid, rendition).map_err(layout_error)?;
    for o in worker.store.list(prefix.as_str()).await? {
        let Some(file) = o.key.rsplit('/').next() else {
            continue;
        };
        let Some(n) = file.strip_prefix("segment_") else {
            if file == "init.mp4" && packaging == Packaging::Ts {
                worker.store.delete(&o.key).await?;
            }
            continue;
        };
        let keep = n
            .strip_suffix(ext)
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < count);
        if !keep {
            worker.store.delete(&o.key).await?;
        }
    }
    Ok(())
}

/// A planned source: uploads each chunk's file and completes with the
/// chunk jobs (their parameters: this job's ladder and segment duration,
/// and the chunk).
async fn plan_outputs(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    params: &TranscodeParameters,
    plan: ChunkPlan,
    source_bytes: u64,
) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    // Four uploads at a time; the chunk jobs keep the plan's order.
    let uploads: Vec<_> = plan
        .chunks
        .iter()
        .map(|c| upload_chunk(worker, vid, params, c))
        .collect();
    let chunks: Vec<ChunkJob> = futures::stream::iter(uploads)
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    tracing::info!(
        chunks = chunks.len(),
        duration = plan.info.duration,
        bytes_read = plan.bytes_read,
        "source planned into chunks"
    );
    Ok(JobOutputs {
        chunks,
        source_bytes: i64::try_from(source_bytes).ok(),
        video: Some(super::plan::plan_metadata(&plan.info)),
        ..JobOutputs::default()
    })
}

/// Uploads one planned chunk's file; its chunk job.
async fn upload_chunk(
    worker: &Arc<Worker>,
    vid: &str,
    params: &TranscodeParameters,
    c: &PlannedChunk,
) -> Result<ChunkJob, JobFailure> {
    let key = layout::chunk_source(vid, c.spec.index).map_err(layout_error)?;
    worker.store.put_file(key.as_str(), &c.file).await?;
    let _ = tokio::fs::remove_file(&c.file).await;
    Ok(ChunkJob {
        input_path: key.to_string(),
        parameters: super::plan::chunk_parameters(&params.ladder, params.segment_duration, &c.spec),
    })
}

/// Uploads each segment `rx` brings (four at a time), deleting its file
/// once it is up; when the channel closes and all are done, returns the
/// first error.
pub(super) async fn upload_segments(
    store: SharedStore,
    metrics: WorkerMetrics,
    video_id: String,
    mut rx: Receiver<SegmentFile>,
) -> Result<(), JobFailure> {
    let mut first_error: Option<JobFailure> = None;
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            seg = rx.recv() => seg,
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok(Err(e)) = done { first_error.get_or_insert(e); }
                continue;
            }
        };
        let Some(seg) = next else { break };
        while inflight.len() >= 4 {
            if let Some(Ok(Err(e))) = inflight.join_next().await {
                first_error.get_or_insert(e);
            }
        }
        let store = store.clone();
        let metrics = metrics.clone();
        let video_id = video_id.clone();
        inflight.spawn(async move {
            let key = match seg.kind {
                SegmentKind::Ts => layout::segment(&video_id, &seg.rendition, seg.index),
                SegmentKind::CmafInit => layout::cmaf_init(&video_id, &seg.rendition),
                SegmentKind::Cmaf => layout::cmaf_segment(&video_id, &seg.rendition, seg.index),
            }
            .map_err(layout_error)?;
            let result = store.put_file(key.as_str(), &seg.path).await;
            let _ = tokio::fs::remove_file(&seg.path).await;
            result?;
            metrics.segments.inc();
            metrics.uploaded_bytes.inc_by(seg.bytes);
            Ok::<(), JobFailure>(())
        });
    }
    while let Some(done) = inflight.join_next().await {
        if let Ok(Err(e)) = done {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_are_checked() {
        check_ladder(&RenditionLadder::default(), 6).unwrap();
        assert!(check_ladder(&RenditionLadder::default(), 0).is_err());
        let mut bad = RenditionLadder::default();
        bad.rungs[0].name = "../x".into();
        assert!(check_ladder(&bad, 6).is_err());
    }
}
