//! Why a media job failed, in words a creator understands.

/// A media pipeline failure. [`MediaError::is_bad_input`] separates what
/// the uploaded file is to blame for (never retried) from what the worker
/// is (retried on another attempt).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file has no bytes.
    #[error("The uploaded file is empty.")]
    Empty,
    /// The file is larger than the worker accepts.
    #[error("The uploaded file is {size} bytes; the largest accepted is {max} bytes.")]
    FileTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// No demuxer recognises the file.
    #[error("The file is not a video we can read ({0}).")]
    NotMedia(String),
    /// The container holds no video track.
    #[error("The file has no video track.")]
    NoVideo,
    /// The video codec has no decoder here.
    #[error("The video codec {0} is not supported.")]
    UnsupportedCodec(String),
    /// Frame size over the limit (or zero): a decompression bomb or junk.
    #[error("The video is {width}x{height} pixels; the largest accepted is {max}x{max} pixels.")]
    BadDimensions {
        /// Width in the file.
        width: u32,
        /// Height in the file.
        height: u32,
        /// Largest side accepted.
        max: u32,
    },
    /// The file says it lasts longer than the worker accepts.
    #[error("The video lasts {seconds:.0} seconds; the longest accepted is {max:.0} seconds.")]
    TooLong {
        /// Its claimed duration.
        seconds: f64,
        /// The limit.
        max: f64,
    },
    /// A long stretch of the video has no picture (e.g. one frame that
    /// claims to last hours).
    #[error("The video has no new picture for {seconds:.0} seconds after {at:.1} s; the longest gap accepted is {max:.0} seconds.")]
    Gap {
        /// Where the gap starts, seconds.
        at: f64,
        /// How long it is.
        seconds: f64,
        /// The limit.
        max: f64,
    },
    /// Reading or decoding broke off: truncated or corrupt data.
    #[error("The file is damaged or truncated ({0}).")]
    Damaged(String),
    /// Not one picture could be decoded.
    #[error("The video track holds no picture that can be decoded.")]
    NoFrames,
    /// The worker's own encoder, muxer or scaler failed.
    #[error("internal media error: {0}")]
    Internal(String),
    /// Local disk I/O failed (scratch space).
    #[error("scratch I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The job was stopped (lease lost, shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl MediaError {
    /// True when the upload itself is to blame: another attempt on the
    /// same bytes would fail the same way.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            MediaError::Internal(_) | MediaError::Io(_) | MediaError::Cancelled
        )
    }

    /// Wraps a libav error of the worker's own making.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> MediaError {
        MediaError::Internal(format!("{context}: {e}"))
    }
}
