//! The manifest job: once every rendition's playlist and segments are in
//! storage, write the master playlist that makes them reachable (with the
//! subtitle tracks the api recorded so far, and their playlists), and the
//! DASH MPD of a CMAF video. A chunked video's manifest job stitches
//! its chunks first (`super::stitch`).

use super::stitch::{remove_chunks, stitch};
use crate::media::hls::RenditionSet;
use crate::worker::failure::{layout_error, JobFailure};
use crate::worker::Worker;
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use vodfarm_core::jobs::{JobOutputs, LeasedJob, SourceMetadata};
use vodfarm_core::layout;
use vodfarm_core::playlists::{Packaging, SubtitleSet};
use vodfarm_core::store::StoreError;

/// The sidecar's size limit: it is ours, but still read with a bound.
const MAX_SIDECAR_BYTES: usize = 4 << 20;

fn default_segment_duration() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
struct ManifestParameters {
    #[serde(default = "default_segment_duration")]
    segment_duration: u32,
    /// Set by the coordinator when the transcode job planned chunks.
    #[serde(default)]
    stitch: Option<StitchParameters>,
}

#[derive(Debug, Deserialize)]
struct StitchParameters {
    chunks: u32,
}

/// Runs a manifest job: stitches a chunked video's chunks, checks the
/// renditions are complete, then writes the master playlist.
pub(super) async fn manifest_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    let params: ManifestParameters = serde_json::from_value(job.parameters.clone())
        .map_err(|e| JobFailure::BadParameters(format!("manifest parameters: {e}")))?;
    let stitched = match &params.stitch {
        Some(s) => Some(stitch(worker, vid, s.chunks, params.segment_duration).await?),
        None => None,
    };
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let Some(bytes) = read_bounded(worker, sidecar_key.as_str()).await? else {
        return Err(JobFailure::Incomplete(
            "the renditions of this video are not in storage yet".into(),
        ));
    };
    let set: RenditionSet = serde_json::from_slice(&bytes)
        .map_err(|e| JobFailure::Incomplete(format!("renditions record unreadable: {e}")))?;
    if set.renditions.is_empty() {
        return Err(JobFailure::Incomplete("no renditions recorded".into()));
    }
    // Every rendition's playlist and every segment it lists must be there
    // before the master playlist makes them reachable.
    for r in set.renditions.iter().chain(set.audio.iter()) {
        let prefix = layout::rendition_prefix(vid, &r.name).map_err(layout_error)?;
        let present: std::collections::HashSet<String> = worker
            .store
            .list(prefix.as_str())
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
        if !present.contains(playlist.as_str()) {
            return Err(JobFailure::Incomplete(format!(
                "{} playlist missing",
                r.name
            )));
        }
        if set.packaging == Packaging::Cmaf {
            let init = layout::cmaf_init(vid, &r.name).map_err(layout_error)?;
            if !present.contains(init.as_str()) {
                return Err(JobFailure::Incomplete(format!("{} init missing", r.name)));
            }
        }
        for n in 0..r.segments.len() {
            let key = match set.packaging {
                Packaging::Ts => layout::segment(vid, &r.name, n as u32),
                Packaging::Cmaf => layout::cmaf_segment(vid, &r.name, n as u32),
            }
            .map_err(layout_error)?;
            if !present.contains(key.as_str()) {
                return Err(JobFailure::Incomplete(format!(
                    "{} segment {n} missing",
                    r.name
                )));
            }
        }
    }
    // Subtitles added while the video was processing: the api recorded
    // them; their playlists need the duration only known now.
    let subs_key = layout::subtitles_sidecar(vid).map_err(layout_error)?;
    let subs: SubtitleSet = match read_bounded(worker, subs_key.as_str()).await? {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| JobFailure::Incomplete(format!("subtitles record unreadable: {e}")))?,
        None => SubtitleSet::default(),
    };
    for t in &subs.tracks {
        let key = layout::subtitle_playlist(vid, &t.lang).map_err(layout_error)?;
        worker
            .store
            .put(key.as_str(), set.subtitle_playlist(&t.lang).into())
            .await?;
    }
    if set.packaging == Packaging::Cmaf {
        let mpd = layout::dash_manifest(vid).map_err(layout_error)?;
        worker
            .store
            .put(mpd.as_str(), set.mpd(vid, &subs.tracks).into())
            .await?;
    }
    let master = layout::master_playlist(vid).map_err(layout_error)?;
    worker
        .store
        .put(
            master.as_str(),
            set.master_playlist(vid, &subs.tracks).into(),
        )
        .await?;
    tracing::info!(
        renditions = set.renditions.len(),
        subtitles = subs.tracks.len(),
        "master playlist written"
    );
    let Some(stitched) = stitched else {
        return Ok(JobOutputs::default());
    };
    if let Some(s) = &params.stitch {
        remove_chunks(worker, vid, s.chunks).await?;
    }
    Ok(JobOutputs {
        encodings: stitched.encodings,
        video: Some(SourceMetadata {
            duration_seconds: Some(stitched.duration),
            ..SourceMetadata::default()
        }),
        ..JobOutputs::default()
    })
}

/// The bytes of a small JSON record of ours, `None` when absent; read
/// with a bound all the same.
pub(super) async fn read_bounded(
    worker: &Arc<Worker>,
    key: &str,
) -> Result<Option<Vec<u8>>, JobFailure> {
    let object = match worker.store.get(key, None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > MAX_SIDECAR_BYTES {
            return Err(JobFailure::Incomplete(format!("{key} too large")));
        }
    }
    Ok(Some(bytes))
}
