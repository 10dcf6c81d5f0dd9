//! The media pipeline: probe → decode once → scale to every rung →
//! encode → HLS packaging, and the thumbnail set.
//!
//! - [`probe`]: what a source is, limits against bad input, rung sizes.
//! - [`stages`]: the `Decoder`, `Scaler`, `Encoder`, `Packager` traits
//!   and their libav implementations (software, or NVDEC/NVENC).
//! - [`rendition`]: what a packaged rendition is (segments, bitrates).
//! - [`hls`]: MPEG-TS segmenting and RFC 8216 playlists.
//! - [`transcode`]: the threads that run the stages.
//! - [`thumbs`]: thumbnails, poster, sprite and storyboard.

pub mod error;
pub mod hls;
pub mod probe;
pub mod rendition;
pub mod stages;
pub mod thumbs;
pub mod transcode;

pub use error::MediaError;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

    /// Asks the job to stop as soon as it can.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}
