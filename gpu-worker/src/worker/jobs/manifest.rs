//! The manifest job: once every rendition's playlist and segments are in
//! storage, write the master playlist that makes them reachable.

use crate::media::hls::RenditionSet;
use crate::worker::failure::{layout_error, JobFailure};
use crate::worker::Worker;
use futures::StreamExt;
use std::sync::Arc;
use vodfarm_core::jobs::{JobOutputs, LeasedJob};
use vodfarm_core::layout;
use vodfarm_core::store::StoreError;

/// The sidecar's size limit: it is ours, but still read with a bound.
const MAX_SIDECAR_BYTES: usize = 4 << 20;

/// Runs a manifest job: checks the renditions are complete, then writes
/// the master playlist.
pub(super) async fn manifest_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let object = match worker.store.get(sidecar_key.as_str(), None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) => {
            return Err(JobFailure::Incomplete(
                "the renditions of this video are not in storage yet".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > MAX_SIDECAR_BYTES {
            return Err(JobFailure::Incomplete("renditions record too large".into()));
        }
    }
    let set: RenditionSet = serde_json::from_slice(&bytes)
        .map_err(|e| JobFailure::Incomplete(format!("renditions record unreadable: {e}")))?;
    if set.renditions.is_empty() {
        return Err(JobFailure::Incomplete("no renditions recorded".into()));
    }
    // Every rendition's playlist and every segment it lists must be there
    // before the master playlist makes them reachable.
    for r in &set.renditions {
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
        for n in 0..r.segments.len() {
            let key = layout::segment(vid, &r.name, n as u32).map_err(layout_error)?;
            if !present.contains(key.as_str()) {
                return Err(JobFailure::Incomplete(format!(
                    "{} segment {n} missing",
                    r.name
                )));
            }
        }
    }
    let master = layout::master_playlist(vid).map_err(layout_error)?;
    worker
        .store
        .put(master.as_str(), set.master_playlist().into())
        .await?;
    tracing::info!(renditions = set.renditions.len(), "master playlist written");
    Ok(JobOutputs::default())
}
