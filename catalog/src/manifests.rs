//! Rewrites what a video's playlists say about its subtitles, after a
//! subtitle was added, replaced or removed.
//!
//! Why the api and not a new manifest job: the change must be visible
//! when the api answers (a creator adds captions and reloads the page),
//! the work is two or three small PUTs, and a job would need a worker to
//! be idle. The text comes from `vodfarm_core::playlists`, the same
//! builder the worker's manifest job uses, so both write the same bytes.
//!
//! What is written: `encoded/{id}/subtitles.json` always (a manifest job
//! that runs later reads it); once the transcode recorded its renditions
//! (`renditions.json`), each track's WebVTT playlist, `master.m3u8` and,
//! for a CMAF video, `manifest.mpd`.
//! The caller holds the video's row lock, so two subtitle changes of one
//! video write in turn.

use crate::state::CatalogState;
use futures::StreamExt as _;
use vodfarm_core::layout;
use vodfarm_core::playlists::{Packaging, RenditionSet, SubtitleSet, SubtitleTrack};
use vodfarm_core::store::StoreError;

/// The largest renditions record read (it is ours; still bounded).
const MAX_SIDECAR_BYTES: usize = 4 << 20;

/// Why the playlists could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    /// A key could not be built (not a valid id or tag).
    #[error("object key: {0}")]
    Layout(#[from] layout::LayoutError),
    /// The renditions record is not what the worker writes.
    #[error("renditions record unreadable: {0}")]
    Sidecar(String),
}

/// Writes the subtitle sidecar, and the master and subtitle playlists if
/// the renditions are known, for `tracks`.
pub(crate) async fn write(
    s: &CatalogState,
    video_id: &str,
    tracks: &[SubtitleTrack],
) -> Result<(), ManifestError> {
    let set = SubtitleSet {
        tracks: tracks.to_vec(),
    };
    let json = serde_json::to_vec(&set).map_err(|e| ManifestError::Sidecar(e.to_string()))?;
    s.store
        .put(layout::subtitles_sidecar(video_id)?.as_str(), json.into())
        .await?;
    let Some(renditions) = renditions(s, video_id).await? else {
        // Not transcoded yet: the manifest job will list the tracks.
        return Ok(());
    };
    for t in tracks {
        s.store
            .put(
                layout::subtitle_playlist(video_id, &t.lang)?.as_str(),
                renditions.subtitle_playlist(&t.lang).into(),
            )
            .await?;
    }
    if renditions.packaging == Packaging::Cmaf {
        s.store
            .put(
                layout::dash_manifest(video_id)?.as_str(),
                renditions.mpd(video_id, tracks).into(),
            )
            .await?;
    }
    s.store
        .put(
            layout::master_playlist(video_id)?.as_str(),
            renditions.master_playlist(video_id, tracks).into(),
        )
        .await?;
    Ok(())
}

async fn renditions(
    s: &CatalogState,
    video_id: &str,
) -> Result<Option<RenditionSet>, ManifestError> {
    let key = layout::renditions_sidecar(video_id)?;
    let object = match s.store.get(key.as_str(), None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > MAX_SIDECAR_BYTES {
            return Err(ManifestError::Sidecar("too large".into()));
        }
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ManifestError::Sidecar(e.to_string()))
}
