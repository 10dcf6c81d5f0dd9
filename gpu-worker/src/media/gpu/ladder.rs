//! The ladder on the GPU: NVDEC decodes each source frame into a pooled
//! device surface, one launch of the fused CUDA scaler writes every rung
//! from it, and each rung goes to NVENC as a device pointer, or, on GPUs
//! without NVENC, is downloaded and encoded by libx264. Frames cross PCIe
//! only as compressed packets (NVENC) or as the scaled rungs (libx264).

use super::annexb::AnnexB;
use super::frames::yuv420_frame;
use super::plan::{Device, StagePlan};
use super::stage_metrics::StageMetrics;
use crate::media::error::MediaError;
use crate::media::stages::{Encoder, LibavH264Encoder, VideoEncoderSettings};
use ffmpeg::{format, media, Rational};
use ffmpeg_next as ffmpeg;
use std::path::Path;
use std::sync::Arc;
use vodfarm_native::cuda::{BufferPool, CudaContext};
use vodfarm_native::nvdec::{Codec, NvdecDecoder};
use vodfarm_native::nvenc::{EncodeSettings, NvencSession};
use vodfarm_native::nvrtc::Nvrtc;
use vodfarm_native::reference::{ChromaSiting, Yuv420};
use vodfarm_native::scaler::{CudaScaler, DeviceYuv420};
use vodfarm_native::NativeError;

/// One rung of the GPU ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuRung {
    /// Width (even).
    pub width: u32,
    /// Height (even).
    pub height: u32,
    /// Average bitrate, bits per second.
    pub bitrate: u32,
}

/// What to transcode.
#[derive(Debug, Clone)]
pub struct GpuLadderRequest<'a> {
    /// The source file.
    pub input: &'a Path,
    /// The rungs (at most 8).
    pub rungs: Vec<GpuRung>,
    /// Frames per segment: an IDR is forced on every multiple.
    pub gop: u32,
    /// libx264 preset when encoding on the CPU.
    pub preset: String,
}

/// One encoded access unit of a rung (Annex B, SPS/PPS before IDRs).
#[derive(Debug)]
pub struct RungPacket<'a> {
    /// Index into the request's rungs.
    pub rung: usize,
    /// The bytes.
    pub data: &'a [u8],
    /// Output frame index.
    pub pts: i64,
    /// An IDR frame.
    pub keyframe: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuLadderStats {
    /// Source frames decoded and scaled.
    pub frames: u64,
}

fn native(e: NativeError) -> MediaError {
    MediaError::internal("gpu", e)
}

enum RungEncoder {
    Nvenc(Box<NvencSession>),
    X264(Box<LibavH264Encoder>),
}

/// Runs the ladder with the plan's devices. Decode and scale must be on
/// the GPU (otherwise the software pipeline is the right one).
pub fn run_gpu_ladder(
    req: &GpuLadderRequest<'_>,
    plan: &StagePlan,
    metrics: Option<&StageMetrics>,
    out: &mut dyn FnMut(RungPacket<'_>) -> Result<(), MediaError>,
) -> Result<GpuLadderStats, MediaError> {
    let (Device::Gpu(ordinal), Device::Gpu(_)) = (plan.decode.device, plan.scale.device) else {
        return Err(MediaError::internal(
            "gpu ladder",
            format!(
                "decode and scale must run on the GPU (plan: {})",
                plan.summary()
            ),
        ));
    };
    crate::media::init();
    let mut input = format::input(&req.input).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let stream = input
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| MediaError::NotMedia("no video stream".to_owned()))?;
    let index = stream.index();
    let fps = stream.avg_frame_rate();
    let params = stream.parameters();
    let codec_id = params.id();
    let (codec, name) = match codec_id {
        ffmpeg::codec::Id::H264 => (Codec::H264, "h264"),
        ffmpeg::codec::Id::HEVC => (Codec::Hevc, "hevc"),
        other => {
            return Err(MediaError::UnsupportedCodec(format!(
                "{other:?} on the GPU ladder"
            )))
        }
    };
    let annexb = AnnexB::new(name, &vodfarm_native::extradata(&params))?;
    let siting = ffmpeg::codec::context::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().video())
        .map(|d| siting_of(d.chroma_location()))
        .unwrap_or(ChromaSiting::Left);

    let ctx = CudaContext::new(ordinal).map_err(native)?;
    let nvrtc = Nvrtc::load().map_err(native)?;
    let scaler = CudaScaler::new(&ctx, &nvrtc).map_err(native)?;
    let stream_gpu = ctx.stream().map_err(native)?;
    let mut decoder = NvdecDecoder::new(&ctx, codec, siting).map_err(native)?;
    let pool = BufferPool::new(Arc::clone(&ctx), req.rungs.len() * 2);
    let fps_pair = (
        u32::try_from(fps.numerator()).unwrap_or(30).max(1),
        u32::try_from(fps.denominator()).unwrap_or(1).max(1),
    );
    let mut encoders = Vec::new();
    for r in &req.rungs {
        let enc = if plan.encode.device == Device::Gpu(ordinal) {
            RungEncoder::Nvenc(Box::new(
                NvencSession::new(
                    &ctx,
                    EncodeSettings {
                        width: r.width,
                        height: r.height,
                        fps: fps_pair,
                        bitrate: r.bitrate,
                        max_bitrate: r.bitrate / 2 * 3,
                        gop: req.gop,
                    },
                )
                .map_err(native)?,
            ))
        } else {
            RungEncoder::X264(Box::new(LibavH264Encoder::open(
                &VideoEncoderSettings {
                    width: r.width,
                    height: r.height,
                    fps: Rational::new(fps_pair.0 as i32, fps_pair.1 as i32),
                    bitrate: r.bitrate,
                    gop: req.gop,
                    preset: req.preset.clone(),
                    global_header: false,
                },
                false,
            )?))
        };
        encoders.push(enc);
    }

    let mut frame_index: i64 = 0;
    let mut handle = |frames: Vec<vodfarm_native::nvdec::DecodedFrame>,
                      decoder: &NvdecDecoder,
                      encoders: &mut Vec<RungEncoder>|
     -> Result<(), MediaError> {
        for frame in frames {
            let mut outs = Vec::with_capacity(req.rungs.len());
            for r in &req.rungs {
                outs.push(DeviceYuv420 {
                    buffer: pool
                        .take(DeviceYuv420::bytes(r.width, r.height))
                        .map_err(native)?,
                    width: r.width,
                    height: r.height,
                });
            }
            scaler
                .scale_ladder(&frame.surface, decoder.siting(), &mut outs, &stream_gpu)
                .map_err(native)?;
            stream_gpu.synchronize().map_err(native)?;
            decoder.recycle(frame);
            let idr = req.gop > 0 && frame_index % i64::from(req.gop) == 0;
            for (i, (rung, enc)) in outs.iter().zip(encoders.iter_mut()).enumerate() {
                encode_one(enc, rung, frame_index, idr, i, out)?;
            }
            for o in outs {
                pool.give(o.buffer);
            }
            if let Some(m) = metrics {
                m.plan_frames(plan, 1, req.rungs.len() as u64);
            }
            frame_index += 1;
        }
        Ok(())
    };

    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        let Some(data) = packet.data() else { continue };
        let bytes = annexb.convert(data, packet.is_key())?;
        let frames = decoder
            .decode(Some(&bytes), packet.pts().unwrap_or(0))
            .map_err(native)?;
        handle(frames, &decoder, &mut encoders)?;
    }
    let frames = decoder.decode(None, 0).map_err(native)?;
    handle(frames, &decoder, &mut encoders)?;
    for (i, enc) in encoders.iter_mut().enumerate() {
        flush(enc, i, out)?;
    }
    Ok(GpuLadderStats {
        frames: frame_index as u64,
    })
}

/// The scaler's siting for a stream's `chroma_sample_location`
/// (unspecified means H.264/HEVC's default, left).
pub fn siting_of(location: ffmpeg::util::chroma::Location) -> ChromaSiting {
    use ffmpeg::util::chroma::Location;
    match location {
        Location::Center => ChromaSiting::Center,
        Location::TopLeft => ChromaSiting::TopLeft,
        _ => ChromaSiting::Left,
    }
}

fn encode_one(
    enc: &mut RungEncoder,
    rung: &DeviceYuv420,
    pts: i64,
    idr: bool,
    index: usize,
    out: &mut dyn FnMut(RungPacket<'_>) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    match enc {
        RungEncoder::Nvenc(session) => {
            for p in session
                .encode(&rung.buffer, pts as u64, idr)
                .map_err(native)?
            {
                out(RungPacket {
                    rung: index,
                    data: &p.data,
                    pts: p.pts as i64,
                    keyframe: p.keyframe,
                })?;
            }
            Ok(())
        }
        RungEncoder::X264(x264) => {
            let (y, u, v) = rung.download().map_err(native)?;
            let mut picture = yuv420_frame(&Yuv420 {
                width: rung.width,
                height: rung.height,
                y,
                u,
                v,
            });
            picture.set_pts(Some(pts));
            x264.encode(Some((&mut picture, idr)), &mut |p| emit(&p, index, out))
        }
    }
}

fn emit(
    p: &ffmpeg::Packet,
    index: usize,
    out: &mut dyn FnMut(RungPacket<'_>) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    out(RungPacket {
        rung: index,
        data: p.data().unwrap_or_default(),
        pts: p.pts().unwrap_or(0),
        keyframe: p.is_key(),
    })
}

fn flush(
    enc: &mut RungEncoder,
    index: usize,
    out: &mut dyn FnMut(RungPacket<'_>) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    match enc {
        RungEncoder::Nvenc(session) => {
            for p in session.finish().map_err(native)? {
                out(RungPacket {
                    rung: index,
                    data: &p.data,
                    pts: p.pts as i64,
                    keyframe: p.keyframe,
                })?;
            }
            Ok(())
        }
        RungEncoder::X264(x264) => x264.encode(None, &mut |p| emit(&p, index, out)),
    }
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
    fn refuses_a_software_plan() {
        let req = GpuLadderRequest {
            input: Path::new("/nonexistent.mp4"),
            rungs: vec![GpuRung {
                width: 426,
                height: 240,
                bitrate: 400_000,
            }],
            gop: 180,
            preset: "veryfast".to_owned(),
        };
        let err = run_gpu_ladder(&req, &StagePlan::software("no GPU"), None, &mut |_| Ok(()))
            .expect_err("software plan");
        assert!(err.to_string().contains("decode=cpu"), "{err}");
    }
}
