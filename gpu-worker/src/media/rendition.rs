//! What a packaged rendition turned out to be: its segments and the
//! bitrates they add up to. The [`Packager`](super::stages::Packager)
//! stage reports it; [`hls`](super::hls) writes its playlists from it and
//! the transcode job keeps it in the renditions sidecar.

use serde::{Deserialize, Serialize};

/// One segment as a playlist lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Duration, seconds.
    pub duration: f64,
    /// Bytes.
    pub bytes: u64,
}

/// What a rendition turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionSummary {
    /// Rung name.
    pub name: String,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub frame_rate: f64,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// The segments, in order.
    pub segments: Vec<SegmentEntry>,
}

impl RenditionSummary {
    /// Sum of segment durations, seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Bits per second over the whole rendition (AVERAGE-BANDWIDTH).
    pub fn average_bandwidth(&self) -> u64 {
        let d = self.duration();
        if d <= 0.0 {
            return 0;
        }
        (self.bytes() as f64 * 8.0 / d).ceil() as u64
    }

    /// The highest segment bitrate (BANDWIDTH).
    pub fn peak_bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.duration > 0.0)
            .map(|s| (s.bytes as f64 * 8.0 / s.duration).ceil() as u64)
            .max()
            .unwrap_or(0)
            .max(self.average_bandwidth())
    }
}
