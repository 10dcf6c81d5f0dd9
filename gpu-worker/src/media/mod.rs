//! The media pipeline: probe → decode once → scale to every rung →
//! encode → HLS packaging, and the thumbnail set.
//!
//! - [`probe`]: what a source is, limits against bad input, rung sizes.
//! - [`stages`]: the `Decoder`, `Scaler`, `Encoder`, `Packager` traits
//!   and their libav implementations (software, or NVDEC/NVENC).
//! - [`rendition`]: what a packaged rendition is (segments, bitrates).
//! - [`hls`]: MPEG-TS segmenting.
//! - [`continuity`]: MPEG-TS continuity counters each segment computes
//!   alone.
//! - [`chunks`]: planning a long source into chunks (keyframe index,
//!   stream-copy remux) and what a chunk transcodes.
//! - [`cmaf`]: CMAF fMP4 tracks (init + segments) for HLS and DASH.
//! - [`transcode`]: the threads that run the stages.
//! - [`mp4`]: a rung's segments remuxed into one faststart MP4 (downloads).
//! - [`thumbs`]: thumbnails, poster, sprite and storyboard.

mod cfr;
pub mod chunks;
pub mod cmaf;
pub mod continuity;
pub mod error;
pub mod gpu;
pub mod hls;
pub mod mp4;
pub mod probe;
pub mod rendition;
pub mod stages;
pub mod thumbs;
pub mod transcode;

pub use error::MediaError;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

/// Initialises libav once and quiets its logging (errors only).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::error!(error = %e, "libav initialisation failed");
        }
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

/// Shared between a running job and whoever watches it: progress out,
/// cancellation in.
#[derive(Debug, Default)]
pub struct JobControl {
    permille: AtomicU32,
    cancelled: AtomicBool,
    /// Frames handed to encoders (all rungs) not yet counted in metrics.
    frames: AtomicU64,
}

impl JobControl {
    /// Records progress as a fraction 0..=1 (never goes backwards).
    pub fn set_progress(&self, fraction: f64) {
        if fraction.is_finite() {
            let p = (fraction.clamp(0.0, 1.0) * 1000.0) as u32;
            self.permille.fetch_max(p, Ordering::Relaxed);
        }
    }

    /// Progress in percent, 0..=100.
    pub fn percent(&self) -> i32 {
        (self.permille.load(Ordering::Relaxed) / 10) as i32
    }

    /// Counts `n` frames handed to an encoder (summed over renditions).
    pub fn add_frames(&self, n: u64) {
        self.frames.fetch_add(n, Ordering::Relaxed);
    }

    /// Frames counted since the last call: what the worker adds to its
    /// frames counter while the job runs, so encode rates are live.
    pub fn take_frames(&self) -> u64 {
        self.frames.swap(0, Ordering::Relaxed)
    }

    /// Asks the job to stop as soon as it can.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::JobControl;

    #[test]
    fn frames_are_counted_once() {
        let control = JobControl::default();
        control.add_frames(3);
        control.add_frames(2);
        assert_eq!(control.take_frames(), 5);
        assert_eq!(
            control.take_frames(),
            0,
            "taken frames are not counted again"
        );
    }

    #[test]
    fn progress_never_goes_backwards() {
        let control = JobControl::default();
        control.set_progress(0.5);
        control.set_progress(0.2);
        control.set_progress(f64::NAN);
        assert_eq!(control.percent(), 50);
    }
}
