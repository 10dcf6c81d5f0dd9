//! The pipeline's stages behind traits, so a GPU stage replaces a CPU one
//! without touching the rest:
//!
//! | stage | software (always there) | GPU (when `native` probes it) |
//! |---|---|---|
//! | [`Decoder`] | libavcodec's decoder, frame threads | `*_cuvid` (NVDEC) through libavcodec |
//! | [`Scaler`] | swscale (bicubic) + upright rotation | — (frames come back to system memory) |
//! | [`Encoder`] | libx264, H.264 High | `h264_nvenc` through libavcodec |
//! | [`Packager`] | [`crate::media::hls::TsSegmenter`] | — |

use super::error::MediaError;
use super::probe::Rotation;
use ffmpeg::{codec, format::Pixel, frame, software::scaling, Dictionary, Packet, Rational};
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
    fn finish(&mut self, total_frames: i64) -> Result<super::hls::RenditionSummary, MediaError>;
}

/// Which decoder and encoder implementations a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backends {
    /// Decode with NVDEC when the source codec has a `*_cuvid` decoder.
    pub nvdec: bool,
    /// Encode with NVENC instead of libx264.
    pub nvenc: bool,
}

impl Backends {
    /// Software everywhere.
    pub const SOFTWARE: Backends = Backends {
        nvdec: false,
        nvenc: false,
    };

    /// GPU stages where the driver has them *and* this libavcodec was
    /// built with them; software for the rest.
    pub fn select(caps: GpuCapabilities, allow_gpu: bool) -> Backends {
        if !allow_gpu {
            return Backends::SOFTWARE;
        }
        Backends {
            nvdec: caps.nvdec && caps.cuda && ffmpeg::decoder::find_by_name("h264_cuvid").is_some(),
            nvenc: caps.nvenc && ffmpeg::encoder::find_by_name("h264_nvenc").is_some(),
        }
    }
}

/// libavcodec's decoder for the stream (software with frame threads, or
/// `*_cuvid` when asked and available).
pub struct LibavDecoder {
    decoder: ffmpeg::decoder::Video,
    name: String,
    errors: u64,
}

impl LibavDecoder {
    /// Opens a decoder for a stream with `parameters`.
    pub fn open(parameters: codec::Parameters, nvdec: bool) -> Result<Self, MediaError> {
        let id = parameters.id();
        let mut ctx = codec::Context::from_parameters(parameters.clone())
            .map_err(|e| MediaError::NotMedia(e.to_string()))?;
        let cuvid = nvdec
            .then(|| ffmpeg::decoder::find_by_name(&format!("{}_cuvid", id.name())))
            .flatten();
        if let Some(codec) = cuvid {
            let name = codec.name().to_owned();
            let opened = codec::Context::from_parameters(parameters)
                .map_err(|e| MediaError::internal("nvdec", e))
                .and_then(|c| {
                    c.decoder()
                        .open_as(codec)
                        .and_then(|o| o.video())
                        .map_err(|e| MediaError::internal("nvdec", e))
                });
            match opened {
                Ok(decoder) => {
                    return Ok(LibavDecoder {
                        decoder,
                        name,
                        errors: 0,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NVDEC decoder failed to open; decoding in software")
                }
            }
        }
        ctx.set_threading(codec::threading::Config::kind(
            codec::threading::Type::Frame,
        ));
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| MediaError::UnsupportedCodec(format!("{} ({e})", id.name())))?;
        Ok(LibavDecoder {
            decoder,
            name: format!("{} (software)", id.name()),
            errors: 0,
        })
    }
}

impl Decoder for LibavDecoder {
    fn decode(
        &mut self,
        packet: Option<&Packet>,
        out: &mut dyn FnMut(frame::Video) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let sent = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        if let Err(e) = sent {
            // A corrupt packet: conceal and go on, as players do; give up
            // when nothing but errors come.
            self.errors += 1;
            if self.errors > 1000 {
                return Err(MediaError::Damaged(format!("video decoding failed: {e}")));
            }
        }
        loop {
            let mut picture = frame::Video::empty();
            match self.decoder.receive_frame(&mut picture) {
                Ok(()) => out(picture)?,
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(())
                }
                Err(e) => {
                    self.errors += 1;
                    if self.errors > 1000 {
                        return Err(MediaError::Damaged(format!("video decoding failed: {e}")));
                    }
                    return Ok(());
                }
            }
        }
    }

    fn reset(&mut self) {
        self.decoder.flush();
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// swscale to the rung's size in 8-bit 4:2:0 (bit depth and chroma
/// reduced on the way), then the rotation applied on the small picture.
pub struct SwsScaler {
    context: Option<scaling::Context>,
    format: Pixel,
    /// Upright output size.
    width: u32,
    height: u32,
    rotation: Rotation,
}

impl SwsScaler {
    /// A scaler to `width` x `height` upright in `format` (`YUV420P` for
    /// encoders, `YUVJ420P` for JPEG).
    pub fn new(width: u32, height: u32, rotation: Rotation, format: Pixel) -> Self {
        SwsScaler {
            context: None,
            format,
            width,
            height,
            rotation,
        }
    }

    fn stored_size(&self) -> (u32, u32) {
        if self.rotation.swaps_axes() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

impl Scaler for SwsScaler {
    fn scale(&mut self, input: &frame::Video) -> Result<frame::Video, MediaError> {
        let fits = self.context.as_ref().is_some_and(|c| {
            let d = c.input();
            d.format == input.format() && d.width == input.width() && d.height == input.height()
        });
        if !fits {
            let (w, h) = self.stored_size();
            let ctx = scaling::Context::get(
                input.format(),
                input.width(),
                input.height(),
                self.format,
                w,
                h,
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| MediaError::Damaged(format!("picture format not convertible: {e}")))?;
            self.context = Some(ctx);
        }
        let (w, h) = self.stored_size();
        let mut scaled = frame::Video::new(self.format, w, h);
        if let Some(ctx) = self.context.as_mut() {
            ctx.run(input, &mut scaled)
                .map_err(|e| MediaError::internal("scale", e))?;
        }
        if self.rotation == Rotation::None {
            return Ok(scaled);
        }
        let mut upright = frame::Video::new(self.format, self.width, self.height);
        for plane in 0..3 {
            rotate_plane(&scaled, &mut upright, plane, self.rotation);
        }
        Ok(upright)
    }
}

/// Rotates one 8-bit plane of `src` into `dst` (whose size is `src`'s,
/// swapped for quarter turns).
fn rotate_plane(src: &frame::Video, dst: &mut frame::Video, plane: usize, rotation: Rotation) {
    let (sw, sh) = (
        src.plane_width(plane) as usize,
        src.plane_height(plane) as usize,
    );
    let (dw, dh) = (
        dst.plane_width(plane) as usize,
        dst.plane_height(plane) as usize,
    );
    let (ss, ds) = (src.stride(plane), dst.stride(plane));
    let s = src.data(plane);
    let d = dst.data_mut(plane);
    for dy in 0..dh {
        let row = &mut d[dy * ds..dy * ds + dw];
        for (dx, px) in row.iter_mut().enumerate() {
            let (sx, sy) = match rotation {
                Rotation::Clockwise90 => (dy, sh - 1 - dx),
                Rotation::Counterclockwise90 => (sw - 1 - dy, dx),
                Rotation::Half => (sw - 1 - dx, sh - 1 - dy),
                Rotation::None => (dx, dy),
            };
            *px = s[sy * ss + sx];
        }
    }
}

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

/// H.264 High through libavcodec: libx264, or h264_nvenc.
pub struct LibavH264Encoder {
    encoder: ffmpeg::encoder::video::Encoder,
    name: &'static str,
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
        opts.set("flags", "+cgop");
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

fn drain_packets(
    encoder: &mut ffmpeg::encoder::Encoder,
    name: &str,
    out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    loop {
        let mut packet = Packet::empty();
        match encoder.receive_packet(&mut packet) {
            Ok(()) => out(packet)?,
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(())
            }
            Err(e) => return Err(MediaError::internal(name, e)),
        }
    }
}

/// Output audio sample rate.
pub const AUDIO_RATE: i32 = 48_000;

/// Decodes the source's audio, resamples it to 48 kHz stereo and encodes
/// AAC-LC once; every rendition muxes the same packets.
pub struct AacEncoder {
    decoder: ffmpeg::decoder::Audio,
    resampler: Option<ffmpeg::software::resampling::Context>,
    encoder: ffmpeg::encoder::audio::Encoder,
    pending: [Vec<f32>; 2],
    next_pts: i64,
    frame_size: usize,
}

impl AacEncoder {
    /// Opens the source stream's decoder and an AAC-LC encoder at `bitrate`.
    pub fn open(parameters: codec::Parameters, bitrate: u32) -> Result<Self, MediaError> {
        let decoder = codec::Context::from_parameters(parameters)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| MediaError::Damaged(format!("audio track: {e}")))?;
        let codec = ffmpeg::encoder::find_by_name("aac")
            .ok_or_else(|| MediaError::Internal("no AAC encoder".into()))?;
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| MediaError::internal("aac", e))?;
        enc.set_rate(AUDIO_RATE);
        enc.set_format(ffmpeg::format::Sample::F32(
            ffmpeg::format::sample::Type::Planar,
        ));
        enc.set_channel_layout(ffmpeg::ChannelLayout::STEREO);
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, AUDIO_RATE));
        let mut opts = Dictionary::new();
        opts.set("profile", "aac_low");
        let encoder = enc
            .open_with(opts)
            .map_err(|e| MediaError::internal("aac", e))?;
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AacEncoder {
            decoder,
            resampler: None,
            encoder,
            pending: [Vec::new(), Vec::new()],
            next_pts: 0,
            frame_size,
        })
    }

    /// Codec parameters for a muxer.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.encoder)
    }

    /// The packets' time base (1/48000).
    pub fn time_base(&self) -> Rational {
        Rational::new(1, AUDIO_RATE)
    }

    /// Feeds one source packet (`None`: end) and hands each AAC packet
    /// now ready to `out`. Undecodable audio is skipped.
    pub fn push(
        &mut self,
        packet: Option<&Packet>,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let _ = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        loop {
            let mut decoded = frame::Audio::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                break;
            }
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ffmpeg::ChannelLayout::default(i32::from(
                    decoded.channels().max(1),
                )));
            }
            if self.resampler.is_none() {
                self.resampler = Some(
                    ffmpeg::software::resampling::Context::get(
                        decoded.format(),
                        decoded.channel_layout(),
                        decoded.rate(),
                        ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
                        ffmpeg::ChannelLayout::STEREO,
                        AUDIO_RATE as u32,
                    )
                    .map_err(|e| MediaError::Damaged(format!("audio format: {e}")))?,
                );
            }
            let mut resampled = frame::Audio::empty();
            if let Some(r) = self.resampler.as_mut() {
                if r.run(&decoded, &mut resampled).is_err() {
                    continue;
                }
            }
            self.append(&resampled);
            self.encode_ready(false, out)?;
        }
        if packet.is_none() {
            if let Some(r) = self.resampler.as_mut() {
                let mut rest = frame::Audio::empty();
                if r.flush(&mut rest).is_ok() && rest.samples() > 0 {
                    self.append(&rest);
                }
            }
            self.encode_ready(true, out)?;
            self.encoder
                .send_eof()
                .map_err(|e| MediaError::internal("aac", e))?;
            drain_packets(&mut self.encoder, "aac", out)?;
        }
        Ok(())
    }

    fn append(&mut self, f: &frame::Audio) {
        let n = f.samples();
        if n == 0 {
            return;
        }
        for ch in 0..2 {
            let plane: &[f32] = f.plane(ch);
            self.pending[ch].extend_from_slice(&plane[..n.min(plane.len())]);
        }
    }

    fn encode_ready(
        &mut self,
        last: bool,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        while self.pending[0].len() >= self.frame_size || (last && !self.pending[0].is_empty()) {
            let n = self.pending[0].len().min(self.frame_size);
            let mut f = frame::Audio::new(
                ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
                n,
                ffmpeg::ChannelLayout::STEREO,
            );
            f.set_rate(AUDIO_RATE as u32);
            for ch in 0..2 {
                let samples: Vec<f32> = self.pending[ch].drain(..n).collect();
                f.plane_mut::<f32>(ch)[..n].copy_from_slice(&samples);
            }
            f.set_pts(Some(self.next_pts));
            self.next_pts += n as i64;
            self.encoder
                .send_frame(&f)
                .map_err(|e| MediaError::internal("aac", e))?;
            drain_packets(&mut self.encoder, "aac", out)?;
        }
        Ok(())
    }
}
