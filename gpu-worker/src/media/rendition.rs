//! What a packaged rendition turned out to be: its segments and the
//! bitrates they add up to. The [`Packager`](super::stages::Packager)
//! stage reports it; the transcode job writes its media playlist and keeps
//! it in the renditions sidecar. The types live in `core` because the api
//! rewrites the master playlist from the same sidecar.

pub use vodfarm_core::playlists::{RenditionSet, RenditionSummary, SegmentEntry};
