//! The thumbnail job: frames every `interval_seconds`, the poster, the
//! sprite sheet and its WebVTT storyboard, uploaded under the video's
//! thumbnails prefix.

use crate::media::thumbs::{thumbnails, ThumbnailRequest, ThumbnailSet};
use crate::media::JobControl;
use crate::worker::failure::{layout_error, media_blocking_error, JobFailure};
use crate::worker::scratch::{download, Scratch};
use crate::worker::Worker;
use serde::Deserialize;
use std::sync::Arc;
use vodfarm_core::jobs::{JobOutputs, LeasedJob, ThumbKind, ThumbnailOutput};
use vodfarm_core::layout::{self, ThumbFile};

#[derive(Debug, Deserialize)]
struct ThumbnailParameters {
    #[serde(default = "default_interval")]
    interval_seconds: u32,
    #[serde(default = "default_columns")]
    sprite_columns: u32,
    #[serde(default = "default_tile_width")]
    sprite_tile_width: u32,
}

fn default_interval() -> u32 {
    10
}

fn default_columns() -> u32 {
    10
}

fn default_tile_width() -> u32 {
    160
}

fn thumb_output(
    key: layout::ObjectKey,
    kind: ThumbKind,
    timestamp: f64,
    size: u64,
    w: u32,
    h: u32,
) -> ThumbnailOutput {
    ThumbnailOutput {
        timestamp_sec: timestamp.floor() as i32,
        url: key.into(),
        size: i32::try_from(size).unwrap_or(i32::MAX),
        kind,
        width: Some(w as i32),
        height: Some(h as i32),
    }
}

/// Runs a thumbnail job: frames, poster, sprite and storyboard uploaded.
pub(super) async fn thumbnail_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
) -> Result<JobOutputs, JobFailure> {
    let params: ThumbnailParameters = serde_json::from_value(job.parameters.clone())
        .map_err(|e| JobFailure::BadParameters(format!("thumbnail parameters: {e}")))?;
    if !(1..=3600).contains(&params.interval_seconds)
        || !(1..=100).contains(&params.sprite_columns)
        || !(16..=1920).contains(&params.sprite_tile_width)
    {
        return Err(JobFailure::BadParameters(
            "thumbnail parameters out of range".into(),
        ));
    }
    let vid = job.video_id.as_str();
    layout::thumbnails_prefix(vid).map_err(layout_error)?;
    let scratch = Scratch::create(worker, job).await?;
    let source = scratch.path().join("original");
    let source_bytes = download(worker, job, &source).await?;
    let request = ThumbnailRequest {
        source,
        work_dir: scratch.path().join("thumbs"),
        interval_seconds: params.interval_seconds,
        sprite_columns: params.sprite_columns,
        sprite_tile_width: params.sprite_tile_width,
        limits: worker.limits,
    };
    let control_for_media = control.clone();
    let set: ThumbnailSet =
        tokio::task::spawn_blocking(move || thumbnails(&request, &control_for_media))
            .await
            .map_err(media_blocking_error)??;
    let mut outputs = Vec::new();
    for (n, f) in set.frames.iter().enumerate() {
        let key = layout::thumbnail(vid, n as u32).map_err(layout_error)?;
        let meta = worker.store.put_file(key.as_str(), &f.path).await?;
        outputs.push(thumb_output(
            key,
            ThumbKind::Frame,
            f.timestamp,
            meta.size,
            f.width,
            f.height,
        ));
    }
    let prefix = layout::thumbnails_prefix(vid).map_err(layout_error)?;
    for o in worker.store.list(prefix.as_str()).await? {
        let n = o
            .key
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix("thumb_"))
            .and_then(|f| f.strip_suffix(".jpg"))
            .and_then(|n| n.parse::<usize>().ok());
        if n.is_some_and(|n| n >= set.frames.len()) {
            worker.store.delete(&o.key).await?;
        }
    }
    let files = [
        (
            ThumbFile::Default,
            ThumbKind::Default,
            &set.poster.path,
            set.poster.timestamp,
            set.poster.width,
            set.poster.height,
        ),
        (
            ThumbFile::Sprite,
            ThumbKind::Sprite,
            &set.sprite.path,
            0.0,
            set.sprite.width,
            set.sprite.height,
        ),
        (
            ThumbFile::Storyboard,
            ThumbKind::Storyboard,
            &set.storyboard,
            0.0,
            set.sprite.width,
            set.sprite.height,
        ),
    ];
    for (file, kind, path, ts, w, h) in files {
        let key = layout::thumb_file(vid, file).map_err(layout_error)?;
        let meta = worker.store.put_file(key.as_str(), path).await?;
        outputs.push(thumb_output(key, kind, ts, meta.size, w, h));
    }
    tracing::info!(thumbnails = set.frames.len(), "thumbnails done");
    Ok(JobOutputs {
        thumbnails: outputs,
        source_bytes: i64::try_from(source_bytes).ok(),
        ..JobOutputs::default()
    })
}
