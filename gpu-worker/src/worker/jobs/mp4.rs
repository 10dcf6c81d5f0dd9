//! The mp4 job: one rung's stored segments (and, for CMAF, the shared
//! audio track's) remuxed by stream copy into
//! `encoded/{id}/{rung}/video.mp4`, a progressive download with `moov`
//! first. It runs after the manifest job, when every rung is complete;
//! a rung the ladder did not make for this source is skipped (nothing
//! to download, not a failure).

use super::manifest::read_bounded;
use crate::media::mp4::remux;
use crate::media::MediaError;
use crate::worker::failure::{layout_error, media_blocking_error, JobFailure};
use crate::worker::scratch::Scratch;
use crate::worker::Worker;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use vodfarm_core::jobs::{DownloadOutput, JobOutputs, LeasedJob};
use vodfarm_core::layout::{self, ObjectKey};
use vodfarm_core::playlists::{Packaging, RenditionSet, RenditionSummary};
use vodfarm_core::store::StoreError;

/// Runs an mp4 job.
pub(super) async fn mp4_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    let rung = job
        .parameters
        .get("rendition")
        .and_then(|v| v.as_str())
        .ok_or_else(|| JobFailure::BadParameters("no rendition named".into()))?;
    let key = layout::download_mp4(vid, rung).map_err(layout_error)?;
    let sidecar = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let Some(bytes) = read_bounded(worker, sidecar.as_str()).await? else {
        return Err(JobFailure::Incomplete(
            "the renditions of this video are not in storage yet".into(),
        ));
    };
    let set: RenditionSet = serde_json::from_slice(&bytes)
        .map_err(|e| JobFailure::Incomplete(format!("renditions record unreadable: {e}")))?;
    let Some(r) = set.renditions.iter().find(|r| r.name == rung) else {
        tracing::info!(
            rendition = rung,
            "this source has no such rung: no download"
        );
        return Ok(JobOutputs::default());
    };
    let scratch = Scratch::create(worker, job).await?;
    let mut inputs: Vec<PathBuf> = Vec::new();
    match set.packaging {
        Packaging::Ts => {
            let path = scratch.path().join("rung.ts");
            concat(worker, &track_keys(vid, r, Packaging::Ts)?, &path).await?;
            inputs.push(path);
        }
        Packaging::Cmaf => {
            let path = scratch.path().join("video.mp4");
            concat(worker, &track_keys(vid, r, Packaging::Cmaf)?, &path).await?;
            inputs.push(path);
            if let Some(audio) = &set.audio {
                let path = scratch.path().join("audio.mp4");
                concat(worker, &track_keys(vid, audio, Packaging::Cmaf)?, &path).await?;
                inputs.push(path);
            }
        }
    }
    let out = scratch.path().join("download.mp4");
    let written = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
            remux(&refs, &out)
        })
        .await
        .map_err(media_blocking_error)??
    };
    let meta = worker.store.put_file(key.as_str(), &out).await?;
    tracing::info!(
        rendition = rung,
        bytes = meta.size,
        duration_ms = written.duration_ms,
        packets = written.packets,
        "MP4 download written"
    );
    Ok(JobOutputs {
        downloads: vec![DownloadOutput {
            rendition: rung.to_owned(),
            storage_key: key.to_string(),
            size_bytes: i64::try_from(meta.size).unwrap_or(i64::MAX),
            duration_ms: Some(written.duration_ms),
        }],
        ..JobOutputs::default()
    })
}

/// The objects of one track, in order: TS segments, or a CMAF track's
/// init segment and fragments.
fn track_keys(
    vid: &str,
    r: &RenditionSummary,
    packaging: Packaging,
) -> Result<Vec<ObjectKey>, JobFailure> {
    let mut keys = Vec::with_capacity(r.segments.len() + 1);
    if packaging == Packaging::Cmaf {
        keys.push(layout::cmaf_init(vid, &r.name).map_err(layout_error)?);
    }
    for n in 0..r.segments.len() {
        let n =
            u32::try_from(n).map_err(|_| JobFailure::BadParameters("too many segments".into()))?;
        keys.push(
            match packaging {
                Packaging::Ts => layout::segment(vid, &r.name, n),
                Packaging::Cmaf => layout::cmaf_segment(vid, &r.name, n),
            }
            .map_err(layout_error)?,
        );
    }
    Ok(keys)
}

/// Streams `keys` one after another into the file `dest`.
async fn concat(worker: &Worker, keys: &[ObjectKey], dest: &Path) -> Result<(), JobFailure> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(MediaError::Io)?;
    for key in keys {
        let object = match worker.store.get(key.as_str(), None).await {
            Ok(o) => o,
            Err(StoreError::NotFound(_)) => {
                return Err(JobFailure::Incomplete(format!("{key} is missing")));
            }
            Err(e) => return Err(e.into()),
        };
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?).await.map_err(MediaError::Io)?;
        }
    }
    file.flush().await.map_err(MediaError::Io)?;
    Ok(())
}
