//! The GPU front of the transcode: what replaces libav's decoder and the
//! rung threads' scale (and encode) when a job's [`VideoPath`] is
//! `Gpu`. NVDEC decodes each packet into a pooled device surface, one
//! launch of the fused CUDA scaler writes every rung from it, and
//! [`ConstantRate`] picks which scaled picture fills each output frame,
//! exactly as on the CPU. Each output frame then goes, per rung, either to
//! NVENC as a device pointer (the rung thread only packages the packets)
//! or, without NVENC, downloaded at the rung's size for the rung thread's
//! libx264. IDR frames are forced on the same frames as on the CPU
//! (`is_segment_start`), so the segments line up whichever path ran.
//!
//! [`VideoPath`]: super::select::VideoPath

use super::annexb::AnnexB;
use super::frames::yuv420_frame;
use crate::media::cfr::ConstantRate;
use crate::media::error::MediaError;
use crate::media::hls::is_segment_start;
use crate::media::transcode::{RungMessage, RungOut};
use ffmpeg::{codec, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::sync::Arc;
use vodfarm_native::cuda::{BufferPool, CudaContext, Stream};
use vodfarm_native::nvdec::{Codec, NvdecDecoder};
use vodfarm_native::nvenc::{EncodeSettings, NvencSession};
use vodfarm_native::nvrtc::Nvrtc;
use vodfarm_native::reference::{ChromaSiting, Yuv420};
use vodfarm_native::scaler::{CudaScaler, DeviceYuv420};
use vodfarm_native::NativeError;

fn native(e: NativeError) -> MediaError {
    MediaError::internal("gpu", e)
}

/// One source picture scaled to every rung, in device memory; the
/// buffers go back to the pool when the last frame using it is sent.
pub(crate) struct ScaledRungs {
    rungs: Vec<DeviceYuv420>,
    pool: Arc<BufferPool>,
}

impl Drop for ScaledRungs {
    fn drop(&mut self) {
        for r in self.rungs.drain(..) {
            self.pool.give(r.buffer);
        }
    }
}

/// A rung as the GPU front needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrontRung {
    /// Width (even).
    pub(crate) width: u32,
    /// Height (even).
    pub(crate) height: u32,
    /// Average bitrate, bits per second.
    pub(crate) bitrate: u32,
}

/// What [`GpuFront::open`] needs besides the stream.
#[derive(Debug, Clone)]
pub(crate) struct FrontSettings {
    /// CUDA device.
    pub(crate) ordinal: u32,
    /// Encode with NVENC (else the rungs are downloaded for libx264).
    pub(crate) nvenc: bool,
    /// Every rung, lowest first.
    pub(crate) rungs: Vec<FrontRung>,
    /// Output frame rate.
    pub(crate) fps: Rational,
    /// Target segment duration (IDR frames start each segment).
    pub(crate) segment_seconds: u32,
    /// The stream's time base (the CFR's timestamps).
    pub(crate) time_base: Rational,
    /// Timestamp of output frame 0 (`None`: the first picture's).
    pub(crate) origin: Option<i64>,
    /// First output frame (a chunk's).
    pub(crate) first_frame: i64,
    /// Longest picture gap, in output frames.
    pub(crate) max_gap_frames: i64,
}

/// NVDEC → fused scaler → (NVENC) for one job. Everything is opened in
/// [`GpuFront::open`], so a GPU that cannot run the job fails there,
/// before any output, and the job falls back to the software path.
pub(crate) struct GpuFront {
    // Field order is drop order: sessions and the decoder before the
    // buffers they reference and the context.
    encoders: Option<Vec<NvencSession>>,
    decoder: NvdecDecoder,
    scaler: CudaScaler,
    stream: Stream,
    annexb: AnnexB,
    cfr: ConstantRate<Arc<ScaledRungs>>,
    pool: Arc<BufferPool>,
    rungs: Vec<FrontRung>,
    fps: Rational,
    segment_seconds: u32,
    _ctx: Arc<CudaContext>,
}

impl std::fmt::Debug for GpuFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuFront")
            .field("rungs", &self.rungs)
            .field("nvenc", &self.encoders.is_some())
            .finish_non_exhaustive()
    }
}

impl GpuFront {
    /// Opens the context, compiles the scaler, and opens NVDEC for the
    /// stream (`params`, codec `name`) and one NVENC session per rung.
    /// NVENC falls back alone: when a session will not open, the front
    /// downloads the rungs for libx264 and says why (the second value).
    pub(crate) fn open(
        params: &codec::Parameters,
        name: &str,
        s: FrontSettings,
    ) -> Result<(Self, Option<MediaError>), MediaError> {
        let codec = match name {
            "h264" => Codec::H264,
            "hevc" => Codec::Hevc,
            other => {
                return Err(MediaError::UnsupportedCodec(format!(
                    "{other} on the GPU path"
                )))
            }
        };
        let annexb = AnnexB::new(name, &vodfarm_native::extradata(params))?;
        let siting = codec::context::Context::from_parameters(params.clone())
            .and_then(|c| c.decoder().video())
            .map(|d| siting_of(d.chroma_location()))
            .unwrap_or(ChromaSiting::Left);
        let ctx = CudaContext::new(s.ordinal).map_err(native)?;
        let nvrtc = Nvrtc::load().map_err(native)?;
        let scaler = CudaScaler::new(&ctx, &nvrtc).map_err(native)?;
        let stream = ctx.stream().map_err(native)?;
        let decoder = NvdecDecoder::new(&ctx, codec, siting).map_err(native)?;
        // Two pictures are alive at most (the CFR's pending one and the
        // one being scaled), plus slack: the pool never frees a buffer an
        // NVENC session has registered.
        let pool = Arc::new(BufferPool::new(Arc::clone(&ctx), s.rungs.len() * 4));
        let gop = (f64::from(s.fps) * f64::from(s.segment_seconds))
            .round()
            .max(1.0) as u32;
        let encoders = if s.nvenc {
            let fps = (
                u32::try_from(s.fps.numerator()).unwrap_or(30).max(1),
                u32::try_from(s.fps.denominator()).unwrap_or(1).max(1),
            );
            let sessions = s
                .rungs
                .iter()
                .map(|r| {
                    NvencSession::new(
                        &ctx,
                        EncodeSettings {
                            width: r.width,
                            height: r.height,
                            fps,
                            bitrate: r.bitrate,
                            max_bitrate: r.bitrate.saturating_mul(3) / 2,
                            gop,
                        },
                    )
                })
                .collect::<Result<Vec<_>, _>>();
            match sessions {
                Ok(sessions) => (Some(sessions), None),
                Err(e) => (None, Some(native(e))),
            }
        } else {
            (None, None)
        };
        let (encoders, nvenc_error) = encoders;
        let front = GpuFront {
            encoders,
            decoder,
            scaler,
            stream,
            annexb,
            cfr: ConstantRate::new(
                s.fps,
                s.time_base,
                s.origin,
                s.first_frame,
                s.max_gap_frames,
            ),
            pool,
            rungs: s.rungs,
            fps: s.fps,
            segment_seconds: s.segment_seconds,
            _ctx: ctx,
        };
        Ok((front, nvenc_error))
    }

    /// Feeds one packet of the video stream (`None`: drain NVDEC) and
    /// sends every output frame now due to the rungs.
    pub(crate) fn feed(
        &mut self,
        packet: Option<&Packet>,
        out: &RungOut<'_>,
    ) -> Result<(), MediaError> {
        let frames = match packet {
            Some(p) => {
                let Some(data) = p.data() else { return Ok(()) };
                let bytes = self.annexb.convert(data, p.is_key())?;
                // NVDEC carries the timestamp through; a packet without
                // one is "the slot after the last".
                let ts = p.pts().or(p.dts()).unwrap_or(i64::MIN);
                self.decoder.decode(Some(&bytes), ts).map_err(native)?
            }
            None => self.decoder.decode(None, 0).map_err(native)?,
        };
        for frame in frames {
            out.check_size(frame.surface.width, frame.surface.height)?;
            let mut rungs = Vec::with_capacity(self.rungs.len());
            for r in &self.rungs {
                rungs.push(DeviceYuv420 {
                    buffer: self
                        .pool
                        .take(DeviceYuv420::bytes(r.width, r.height))
                        .map_err(native)?,
                    width: r.width,
                    height: r.height,
                });
            }
            let mut scaled = ScaledRungs {
                rungs,
                pool: Arc::clone(&self.pool),
            };
            let result = self
                .scaler
                .scale_ladder(
                    &frame.surface,
                    self.decoder.siting(),
                    &mut scaled.rungs,
                    &self.stream,
                )
                .and_then(|()| self.stream.synchronize());
            let ts = (frame.pts != i64::MIN).then_some(frame.pts);
            self.decoder.recycle(frame);
            result.map_err(native)?;
            let (encoders, fps, seg) = (&mut self.encoders, self.fps, self.segment_seconds);
            self.cfr.push(Arc::new(scaled), ts, &mut |pic, index| {
                send_frame(encoders, pic, index, is_segment_start(index, seg, fps), out)
            })?;
        }
        Ok(())
    }

    /// After the drain: fills the last frames (up to `end` for a chunk,
    /// else the last picture's duration), flushes NVENC; the frame count.
    pub(crate) fn fill(
        &mut self,
        end: Option<i64>,
        last_duration: i64,
        out: &RungOut<'_>,
    ) -> Result<i64, MediaError> {
        let (encoders, fps, seg) = (&mut self.encoders, self.fps, self.segment_seconds);
        let mut emit = |pic: &Arc<ScaledRungs>, index| {
            send_frame(encoders, pic, index, is_segment_start(index, seg, fps), out)
        };
        let frames = match end {
            Some(end) => self.cfr.finish_until(end, &mut emit)?,
            None => self.cfr.finish(last_duration, &mut emit)?,
        };
        if let Some(sessions) = self.encoders.as_mut() {
            for (i, session) in sessions.iter_mut().enumerate() {
                for p in session.finish().map_err(native)? {
                    out.send(
                        i,
                        RungMessage::Encoded(packet_of(&p.data, p.pts, p.keyframe)),
                    )?;
                }
            }
        }
        Ok(frames)
    }
}

/// One output frame to every rung: NVENC packets, or the downloaded rung.
fn send_frame(
    encoders: &mut Option<Vec<NvencSession>>,
    pic: &ScaledRungs,
    index: i64,
    key: bool,
    out: &RungOut<'_>,
) -> Result<(), MediaError> {
    if !out.wants(index) {
        return Ok(());
    }
    for (i, rung) in pic.rungs.iter().enumerate() {
        match encoders.as_mut().and_then(|e| e.get_mut(i)) {
            Some(session) => {
                for p in session
                    .encode(&rung.buffer, index as u64, key)
                    .map_err(native)?
                {
                    out.send(
                        i,
                        RungMessage::Encoded(packet_of(&p.data, p.pts, p.keyframe)),
                    )?;
                }
                out.control.add_frames(1);
            }
            None => {
                let (y, u, v) = rung.download().map_err(native)?;
                let frame = yuv420_frame(&Yuv420 {
                    width: rung.width,
                    height: rung.height,
                    y,
                    u,
                    v,
                });
                out.send(i, RungMessage::Scaled(frame, index))?;
            }
        }
    }
    Ok(())
}

/// The scaler's siting for a stream's `chroma_sample_location`
/// (unspecified means H.264/HEVC's default, left).
pub(crate) fn siting_of(location: ffmpeg::util::chroma::Location) -> ChromaSiting {
    use ffmpeg::util::chroma::Location;
    match location {
        Location::Center => ChromaSiting::Center,
        Location::TopLeft => ChromaSiting::TopLeft,
        _ => ChromaSiting::Left,
    }
}

/// An NVENC access unit as a libav packet in the rung's time base (one
/// tick per frame; no B-frames, so dts = pts).
fn packet_of(data: &[u8], pts: u64, keyframe: bool) -> Packet {
    let mut p = Packet::copy(data);
    let pts = i64::try_from(pts).unwrap_or(i64::MAX);
    p.set_pts(Some(pts));
    p.set_dts(Some(pts));
    p.set_duration(1);
    if keyframe {
        p.set_flags(ffmpeg::packet::Flags::KEY);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siting_follows_the_stream() {
        use ffmpeg::util::chroma::Location;
        assert_eq!(siting_of(Location::Unspecified), ChromaSiting::Left);
        assert_eq!(siting_of(Location::Left), ChromaSiting::Left);
        assert_eq!(siting_of(Location::Center), ChromaSiting::Center);
        assert_eq!(siting_of(Location::TopLeft), ChromaSiting::TopLeft);
    }

    #[test]
    fn nvenc_packets_keep_their_frame_and_key_flag() {
        let p = packet_of(&[0, 0, 0, 1, 0x65], 42, true);
        assert_eq!((p.pts(), p.dts(), p.is_key()), (Some(42), Some(42), true));
        assert_eq!(p.data(), Some(&[0, 0, 0, 1, 0x65][..]));
        assert!(!packet_of(&[0, 0, 0, 1, 0x41], 43, false).is_key());
    }
}
