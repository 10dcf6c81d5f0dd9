//! [`LibavH264Encoder`]: the [`Encoder`] for H.264 High through
//! libavcodec (libx264, or h264_nvenc), and its [`VideoEncoderSettings`].

use super::packets::drain_packets;
use super::Encoder;
use crate::media::error::MediaError;
use ffmpeg::{codec, format::Pixel, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

/// x264 settings shared by every rung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoEncoderSettings {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Constant frame rate.
    pub fps: Rational,
    /// Average bitrate, bits per second.
    pub bitrate: u32,
    /// Frames between forced keyframes (the segment length).
    pub gop: u32,
    /// x264 preset (`veryfast`, `medium`, …).
    pub preset: String,
    /// SPS/PPS in the codec's extradata (`avcC`, for MP4/CMAF) instead of
    /// in the stream before every IDR (MPEG-TS).
    pub global_header: bool,
}

impl VideoEncoderSettings {
    /// Peak bitrate the VBV allows (1.5 x average).
    pub fn max_bitrate(&self) -> u32 {
        self.bitrate.saturating_mul(3) / 2
    }

    /// VBV buffer (2 x average: a two-second window).
    pub fn buffer_size(&self) -> u32 {
        self.bitrate.saturating_mul(2)
    }
}

/// The codec parameters a muxer needs for an H.264 stream of `settings`'
/// size and rate whose packets come from elsewhere (NVENC on the GPU
/// front): an encoder context that is configured but never opened.
pub fn h264_stream_parameters(
    settings: &VideoEncoderSettings,
) -> Result<codec::Parameters, MediaError> {
    let codec = ffmpeg::encoder::find(codec::Id::H264)
        .ok_or_else(|| MediaError::Internal("no H.264 encoder in this libavcodec".into()))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| MediaError::internal("h264 parameters", e))?;
    enc.set_width(settings.width);
    enc.set_height(settings.height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(settings.fps.invert());
    enc.set_frame_rate(Some(settings.fps));
    Ok(codec::Parameters::from(&enc))
}

/// H.264 High through libavcodec: libx264, or h264_nvenc.
pub struct LibavH264Encoder {
    encoder: ffmpeg::encoder::video::Encoder,
    name: &'static str,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for LibavH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibavH264Encoder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LibavH264Encoder {
    /// Opens libx264 (or h264_nvenc when `nvenc`, falling back to libx264
    /// if it will not open).
    pub fn open(settings: &VideoEncoderSettings, nvenc: bool) -> Result<Self, MediaError> {
        if nvenc {
            match Self::open_named(settings, "h264_nvenc") {
                Ok(e) => return Ok(e),
                Err(e) => tracing::warn!(error = %e, "NVENC failed to open; encoding with libx264"),
            }
        }
        Self::open_named(settings, "libx264")
    }

    fn open_named(settings: &VideoEncoderSettings, name: &'static str) -> Result<Self, MediaError> {
        let codec = ffmpeg::encoder::find_by_name(name).ok_or_else(|| {
            MediaError::Internal(format!("encoder {name} not in this libavcodec"))
        })?;
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| MediaError::internal(name, e))?;
        enc.set_width(settings.width);
        enc.set_height(settings.height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(settings.fps.invert());
        enc.set_frame_rate(Some(settings.fps));
        enc.set_gop(settings.gop.max(1));
        enc.set_bit_rate(settings.bitrate as usize);
        enc.set_max_bit_rate(settings.max_bitrate() as usize);
        let mut opts = Dictionary::new();
        opts.set("bufsize", &settings.buffer_size().to_string());
        opts.set("profile", "high");
        opts.set("forced-idr", "1");
        opts.set(
            "flags",
            if settings.global_header {
                "+cgop+global_header"
            } else {
                "+cgop"
            },
        );
        if name == "libx264" {
            opts.set("preset", &settings.preset);
        } else {
            opts.set("preset", "p4");
            opts.set("rc", "vbr");
        }
        let encoder = enc
            .open_with(opts)
            .map_err(|e| MediaError::internal(name, e))?;
        Ok(LibavH264Encoder { encoder, name })
    }
}

impl Encoder for LibavH264Encoder {
    fn encode(
        &mut self,
        picture: Option<(&mut frame::Video, bool)>,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        match picture {
            Some((p, key)) => {
                p.set_kind(if key {
                    ffmpeg::picture::Type::I
                } else {
                    ffmpeg::picture::Type::None
                });
                self.encoder
                    .send_frame(p)
                    .map_err(|e| MediaError::internal(self.name, e))?;
            }
            None => self
                .encoder
                .send_eof()
                .map_err(|e| MediaError::internal(self.name, e))?,
        }
        drain_packets(&mut self.encoder, self.name, out)
    }

    fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.encoder)
    }

    fn time_base(&self) -> Rational {
        self.encoder.time_base()
    }

    fn name(&self) -> &str {
        self.name
    }
}
