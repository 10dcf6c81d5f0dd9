//! The pipeline's stages behind traits, so a GPU stage replaces a CPU one
//! without touching the rest:
//!
//! | stage | software (always there) | GPU (when `native` probes it) |
//! |---|---|---|
//! | [`Decoder`] | [`LibavDecoder`]: libavcodec's decoder, frame threads | `*_cuvid` (NVDEC) through libavcodec |
//! | [`Scaler`] | [`SwsScaler`]: swscale (bicubic) + upright rotation | — (frames come back to system memory) |
//! | [`Encoder`] | [`LibavH264Encoder`]: libx264, H.264 High | `h264_nvenc` through libavcodec |
//! | [`Packager`] | [`crate::media::hls::TsSegmenter`] | — |
//!
//! Audio has one implementation, [`AacEncoder`] (AAC-LC, shared by every
//! rendition). [`StageChoice`] says which of the two a worker runs.
//!
//! This module holds the contracts only; the libav implementations live
//! in its submodules (`decode`, `scale`, `h264`, `aac`) and are re-exported
//! here. Nothing here depends on a packager's implementation: the
//! [`Packager`] reports a [`RenditionSummary`], which the HLS packager
//! (and its playlists) build on.

mod aac;
mod decode;
mod h264;
mod packets;
mod scale;

pub use aac::{AacEncoder, AudioWindow, AAC_FRAME, AUDIO_RATE};
pub use decode::LibavDecoder;
pub use h264::{h264_stream_parameters, LibavH264Encoder, VideoEncoderSettings};
pub use scale::SwsScaler;

use super::error::MediaError;
use super::rendition::RenditionSummary;
use ffmpeg::{codec, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;
use vodfarm_native::GpuCapabilities;

/// Turns compressed packets of one video stream into pictures.
pub trait Decoder: Send {
    /// Feeds one packet (`None`: end of stream, drain everything) and hands
    /// each picture that is now ready to `out`.
    fn decode(
        &mut self,
        packet: Option<&Packet>,
        out: &mut dyn FnMut(frame::Video) -> Result<(), MediaError>,
    ) -> Result<(), MediaError>;
    /// Forgets buffered state (after a seek).
    fn reset(&mut self);
    /// Which implementation this is (for logs and metrics).
    fn name(&self) -> &str;
}

/// Turns a decoded picture into one rung's upright 8-bit yuv420p picture.
pub trait Scaler {
    /// Scales (and converts, and rotates) `input`.
    fn scale(&mut self, input: &frame::Video) -> Result<frame::Video, MediaError>;
}

/// Compresses one rung's pictures.
pub trait Encoder: Send {
    /// Feeds one picture (`None`: end of stream, drain everything) and
    /// hands each packet now ready to `out`. Pictures carry their output
    /// frame index as pts; `keyframe` forces an IDR frame.
    fn encode(
        &mut self,
        picture: Option<(&mut frame::Video, bool)>,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError>;
    /// Codec parameters for a muxer.
    fn parameters(&self) -> codec::Parameters;
    /// The time base of the packets' timestamps.
    fn time_base(&self) -> Rational;
    /// Which implementation this is.
    fn name(&self) -> &str;
}

/// Writes one rendition's packets into deliverable files.
pub trait Packager: Send {
    /// One video packet, in decode order, pts/dts in the encoder's time base.
    fn write_video(&mut self, packet: Packet) -> Result<(), MediaError>;
    /// One audio packet, pts/dts in the audio encoder's time base.
    fn write_audio(&mut self, packet: Packet) -> Result<(), MediaError>;
    /// No more packets: closes the last file and says what was written.
    fn finish(&mut self, total_frames: i64) -> Result<RenditionSummary, MediaError>;
}

/// Which decoder and encoder implementations a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageChoice {
    /// Decode with NVDEC when the source codec has a `*_cuvid` decoder.
    pub nvdec: bool,
    /// Encode with NVENC instead of libx264.
    pub nvenc: bool,
}

impl StageChoice {
    /// Software everywhere.
    pub const SOFTWARE: StageChoice = StageChoice {
        nvdec: false,
        nvenc: false,
    };

    /// GPU stages where the driver has them *and* this libavcodec was
    /// built with them; software for the rest.
    pub fn select(caps: GpuCapabilities, allow_gpu: bool) -> StageChoice {
        if !allow_gpu {
            return StageChoice::SOFTWARE;
        }
        StageChoice {
            nvdec: caps.nvdec && caps.cuda && ffmpeg::decoder::find_by_name("h264_cuvid").is_some(),
            nvenc: caps.nvenc && ffmpeg::encoder::find_by_name("h264_nvenc").is_some(),
        }
    }
}
