//! The one decision a transcode (or chunk) job makes about devices: from
//! the worker's GPU probe and one source's facts, which [`VideoPath`] its
//! frames take and where each stage runs ([`StagePlan`], with the reason
//! of every stage that falls back to the CPU).
//!
//! [`StagePlan::choose`] says what the machine can do for a codec and bit
//! depth; this adds what the source and the job ask for: NVDEC's output
//! and the fused scaler are 4:2:0 only, the CUDA scaler does not rotate,
//! NVDEC and NVENC have size limits, NVENC writes SPS/PPS in band (CMAF
//! wants them in `avcC`), and the worker's NVENC sessions are counted.
//! Everything here is plain data, so unit tests drive it with a fake
//! probe.

use super::plan::{Device, Stage, StagePlan};
use super::stage_metrics::StageMetrics;
use crate::media::probe::Rotation;
use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;
use std::sync::Arc;
use tokio::sync::Semaphore;
use vodfarm_core::playlists::Packaging;
use vodfarm_native::probe::GpuReport;

/// What the worker found at start: the probe, NVRTC's load result, and
/// `--gpu auto`.
#[derive(Debug, Clone)]
pub struct GpuEnvironment {
    /// The devices, NVDEC and NVENC caps.
    pub report: GpuReport,
    /// NVRTC loaded (the fused scaler is compiled with it), or why not.
    pub nvrtc: Result<(), String>,
    /// `--gpu auto`.
    pub allow: bool,
}

impl GpuEnvironment {
    /// No GPU use at all, with `--gpu off` as the reason.
    pub fn off() -> Self {
        GpuEnvironment {
            report: GpuReport {
                cuda: Err("--gpu off".to_owned()),
                devices: Vec::new(),
            },
            nvrtc: Err("--gpu off".to_owned()),
            allow: false,
        }
    }

    /// Probes the GPUs and NVRTC once (`allow`: `--gpu auto`).
    pub fn probe(allow: bool) -> Self {
        if !allow {
            return Self::off();
        }
        GpuEnvironment {
            report: GpuReport::probe(),
            nvrtc: vodfarm_native::nvrtc::Nvrtc::load()
                .map(|_| ())
                .map_err(|e| e.to_string()),
            allow,
        }
    }
}

/// What a transcode gets of the worker's GPUs: the probe, the NVENC
/// sessions it may take (one per rung), and the per-stage counters.
#[derive(Debug, Clone)]
pub struct GpuAccess {
    /// The probe at worker start.
    pub env: Arc<GpuEnvironment>,
    /// The worker's NVENC sessions (`--nvenc-sessions`): a job holds one
    /// per rung while it encodes with NVENC.
    pub nvenc_sessions: Arc<Semaphore>,
    /// `vodfarm_worker_stage_frames_total`, when the worker exports it.
    pub metrics: Option<StageMetrics>,
}

/// What one source and job bring to the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// Codec name as libavcodec says it (`h264`, `hevc`, ...).
    pub codec: String,
    /// The decoder's pixel format.
    pub pixel: Pixel,
    /// Rotation the renditions get.
    pub rotation: Rotation,
    /// Coded size.
    pub width: u32,
    /// Coded size.
    pub height: u32,
    /// The largest rung (width, height).
    pub largest_rung: (u32, u32),
    /// Number of rungs (the fused scaler writes at most 8 at once).
    pub rungs: usize,
    /// TS or CMAF.
    pub packaging: Packaging,
}

/// Bit depth and whether the chroma is 4:2:0, of the pixel formats the
/// GPU path can meet; `None` for anything else.
fn layout_of(pixel: Pixel) -> Option<(u32, bool)> {
    match pixel {
        Pixel::YUV420P | Pixel::YUVJ420P | Pixel::NV12 => Some((8, true)),
        Pixel::YUV420P10LE | Pixel::YUV420P10BE | Pixel::P010LE | Pixel::P010BE => Some((10, true)),
        Pixel::YUV422P | Pixel::YUVJ422P | Pixel::YUV444P | Pixel::YUVJ444P => Some((8, false)),
        Pixel::YUV422P10LE | Pixel::YUV422P10BE | Pixel::YUV444P10LE | Pixel::YUV444P10BE => {
            Some((10, false))
        }
        _ => None,
    }
}

/// Where a job's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPath {
    /// libav decode (`h264_cuvid` where the worker's `StageChoice` has
    /// it), libswscale per rung, libx264 (or `h264_nvenc`) per rung.
    Software,
    /// NVDEC → fused CUDA scaler with frames on device `ordinal`; then
    /// NVENC from device pointers (`nvenc`) or the scaled rungs
    /// downloaded for libx264.
    Gpu {
        /// The CUDA device.
        ordinal: u32,
        /// Encode with NVENC (else libx264 after download).
        nvenc: bool,
    },
}

/// The decision and the plan that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChoice {
    /// Every stage's device and, for the CPU ones, why.
    pub plan: StagePlan,
    /// The frames' path.
    pub path: VideoPath,
}

/// Chooses the path of one source. `nvenc_sessions_free`: the worker could
/// reserve one NVENC session per rung for this job.
pub fn choose_path(
    env: &GpuEnvironment,
    facts: &SourceFacts,
    nvenc_sessions_free: bool,
) -> PathChoice {
    let layout = layout_of(facts.pixel);
    let bit_depth = layout.map_or(8, |(d, _)| d);
    let mut plan = StagePlan::choose(
        &env.report,
        env.nvrtc.clone(),
        &facts.codec,
        bit_depth,
        env.allow,
    );
    // The source's own reasons, first one wins: each turns decode (and so
    // everything downstream) to the CPU.
    let decode_blocker = match (plan.decode.device, layout) {
        (Device::Cpu, _) => None,
        (_, None) => Some(format!("{:?} is not a layout NVDEC outputs", facts.pixel)),
        (_, Some((_, false))) => Some(format!(
            "{:?} is not 4:2:0 (NVDEC's output and the fused scaler are 4:2:0 only)",
            facts.pixel
        )),
        (Device::Gpu(n), Some(_)) => nvdec_size_blocker(env, n, facts, bit_depth),
    };
    if let Some(why) = decode_blocker {
        plan.decode = cpu("libavcodec", why);
    }
    if plan.decode.device != Device::Cpu && plan.scale.device != Device::Cpu {
        let scale_blocker = if facts.rotation != Rotation::None {
            Some(format!(
                "the CUDA scaler does not rotate ({:?} source)",
                facts.rotation
            ))
        } else if facts.rungs > vodfarm_native::scaler::MAX_RUNGS {
            Some(format!(
                "{} rungs; the fused scaler writes at most {}",
                facts.rungs,
                vodfarm_native::scaler::MAX_RUNGS
            ))
        } else {
            None
        };
        if let Some(why) = scale_blocker {
            plan.scale = cpu("libswscale", why);
        }
    }
    // Scaling on the CPU means the frames are in system memory from the
    // decoder on: libav's pipeline runs it all (NVDEC through h264_cuvid
    // where the worker's libavcodec has it).
    if plan.decode.device != Device::Cpu && plan.scale.device == Device::Cpu {
        let why = format!("the scaler runs on the CPU: {}", plan.scale.reason);
        plan.decode = cpu("libavcodec", why);
        plan.encode = cpu("libx264", plan.decode.reason.clone());
        plan.thumbnails = cpu("libswscale", plan.scale.reason.clone());
    } else if plan.decode.device == Device::Cpu {
        demote_after_decode(&mut plan);
    }
    if let (Device::Gpu(n), Device::Gpu(_)) = (plan.encode.device, plan.scale.device) {
        let encode_blocker = if facts.packaging == Packaging::Cmaf {
            Some("CMAF wants SPS/PPS out of band (avcC); NVENC writes them in band".to_owned())
        } else if let Some(why) = nvenc_size_blocker(env, n, facts) {
            Some(why)
        } else if !nvenc_sessions_free {
            Some("every NVENC session of this worker is in use (--nvenc-sessions)".to_owned())
        } else {
            None
        };
        if let Some(why) = encode_blocker {
            plan.encode = cpu("libx264", format!("scaled rungs are downloaded: {why}"));
        }
    }
    let path = match (plan.decode.device, plan.scale.device) {
        (Device::Gpu(ordinal), Device::Gpu(_)) => VideoPath::Gpu {
            ordinal,
            nvenc: plan.encode.device != Device::Cpu,
        },
        _ => VideoPath::Software,
    };
    PathChoice { plan, path }
}

fn cpu(implementation: &'static str, reason: String) -> Stage {
    Stage {
        device: Device::Cpu,
        implementation,
        reason,
    }
}

/// Decode runs on the CPU: scale, encode and thumbnails follow it (the
/// frames are in system memory), with its reason.
fn demote_after_decode(plan: &mut StagePlan) {
    let reason = if plan.decode.reason.starts_with("--gpu off") {
        plan.decode.reason.clone()
    } else {
        format!("decode runs on the CPU: {}", plan.decode.reason)
    };
    plan.scale = cpu("libswscale", reason.clone());
    plan.encode = cpu("libx264", reason.clone());
    plan.thumbnails = cpu("libswscale", reason);
}

fn nvdec_size_blocker(
    env: &GpuEnvironment,
    ordinal: u32,
    facts: &SourceFacts,
    bit_depth: u32,
) -> Option<String> {
    let device = env
        .report
        .devices
        .iter()
        .find(|d| d.info.ordinal == ordinal)?;
    let caps = device.nvdec.as_ref().ok()?;
    let c = caps
        .iter()
        .find(|c| c.codec.name() == facts.codec && c.bit_depth == bit_depth)?;
    (facts.width > c.max_width || facts.height > c.max_height).then(|| {
        format!(
            "{}x{} is larger than NVDEC's {}x{} for {bit_depth}-bit {}",
            facts.width, facts.height, c.max_width, c.max_height, facts.codec
        )
    })
}

fn nvenc_size_blocker(env: &GpuEnvironment, ordinal: u32, facts: &SourceFacts) -> Option<String> {
    let device = env
        .report
        .devices
        .iter()
        .find(|d| d.info.ordinal == ordinal)?;
    let caps = device.nvenc.as_ref().ok()?;
    let (w, h) = facts.largest_rung;
    (w > caps.max_width || h > caps.max_height).then(|| {
        format!(
            "a {w}x{h} rung is larger than NVENC's {}x{}",
            caps.max_width, caps.max_height
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vodfarm_native::cuda::DeviceInfo;
    use vodfarm_native::nvdec::{Codec, DecoderCaps};
    use vodfarm_native::nvenc::EncoderCaps;
    use vodfarm_native::probe::DeviceReport;

    fn env(nvenc: bool) -> GpuEnvironment {
        let dec = |bit_depth| DecoderCaps {
            codec: Codec::H264,
            bit_depth,
            supported: bit_depth == 8,
            max_width: 4096,
            max_height: 4096,
            engines: 7,
        };
        GpuEnvironment {
            report: GpuReport {
                cuda: Ok("12.4".to_owned()),
                devices: vec![DeviceReport {
                    info: DeviceInfo {
                        ordinal: 0,
                        name: "test GPU".to_owned(),
                        total_memory: 80 << 30,
                        compute_capability: (8, 9),
                    },
                    free_memory: Some(79 << 30),
                    nvdec: Ok(vec![dec(8), dec(10)]),
                    nvenc: if nvenc {
                        Ok(EncoderCaps {
                            codecs: vec!["h264".to_owned()],
                            max_width: 1920,
                            max_height: 1920,
                            engines: 1,
                            ten_bit: false,
                        })
                    } else {
                        Err("NV_ENC_ERR_UNSUPPORTED_DEVICE".to_owned())
                    },
                }],
            },
            nvrtc: Ok(()),
            allow: true,
        }
    }

    fn facts() -> SourceFacts {
        SourceFacts {
            codec: "h264".to_owned(),
            pixel: Pixel::YUV420P,
            rotation: Rotation::None,
            width: 1920,
            height: 1080,
            largest_rung: (1920, 1080),
            rungs: 4,
            packaging: Packaging::Ts,
        }
    }

    #[test]
    fn an_h264_source_stays_on_the_device_end_to_end() {
        let c = choose_path(&env(true), &facts(), true);
        assert_eq!(
            c.path,
            VideoPath::Gpu {
                ordinal: 0,
                nvenc: true
            }
        );
        assert_eq!(c.plan.summary(), "decode=gpu0,scale=gpu0,encode=gpu0");
    }

    #[test]
    fn without_nvenc_the_scaled_rungs_go_to_libx264() {
        let c = choose_path(&env(false), &facts(), true);
        assert_eq!(
            c.path,
            VideoPath::Gpu {
                ordinal: 0,
                nvenc: false
            }
        );
        assert!(
            c.plan
                .encode
                .reason
                .contains("NV_ENC_ERR_UNSUPPORTED_DEVICE"),
            "{:?}",
            c.plan.encode
        );
    }

    #[test]
    fn encode_falls_back_alone() {
        let big = SourceFacts {
            width: 3840,
            height: 2160,
            largest_rung: (3840, 2160),
            ..facts()
        };
        let cmaf = SourceFacts {
            packaging: Packaging::Cmaf,
            ..facts()
        };
        for (f, sessions_free, why) in [
            (facts(), false, "NVENC session"),
            (cmaf, true, "CMAF"),
            (big, true, "larger than NVENC"),
        ] {
            let c = choose_path(&env(true), &f, sessions_free);
            let want = VideoPath::Gpu {
                ordinal: 0,
                nvenc: false,
            };
            assert_eq!(c.path, want, "{f:?}");
            assert!(c.plan.encode.reason.contains(why), "{:?}", c.plan.encode);
        }
    }

    #[test]
    fn source_traits_send_the_frames_to_system_memory() {
        let cases = [
            (
                SourceFacts {
                    pixel: Pixel::YUV422P,
                    ..facts()
                },
                "4:2:0",
            ),
            (
                SourceFacts {
                    pixel: Pixel::YUV420P10LE,
                    ..facts()
                },
                "10-bit",
            ),
            (
                SourceFacts {
                    codec: "vp9".to_owned(),
                    ..facts()
                },
                "vp9",
            ),
            (
                SourceFacts {
                    width: 8192,
                    height: 4320,
                    ..facts()
                },
                "larger than NVDEC",
            ),
            (
                SourceFacts {
                    rotation: Rotation::Clockwise90,
                    ..facts()
                },
                "rotate",
            ),
            (
                SourceFacts {
                    rungs: 9,
                    ..facts()
                },
                "at most 8",
            ),
        ];
        for (f, why) in cases {
            let c = choose_path(&env(true), &f, true);
            assert_eq!(c.path, VideoPath::Software, "{f:?}");
            assert_eq!(c.plan.summary(), "decode=cpu,scale=cpu,encode=cpu", "{f:?}");
            assert!(
                c.plan.decode.reason.contains(why),
                "{f:?}: {}",
                c.plan.decode.reason
            );
            assert!(
                c.plan.encode.reason.contains(why),
                "{f:?}: {}",
                c.plan.encode.reason
            );
        }
    }

    #[test]
    fn no_gpu_or_gpu_off_is_todays_software_path() {
        let off = choose_path(&GpuEnvironment::off(), &facts(), true);
        assert_eq!(off.path, VideoPath::Software);
        assert_eq!(off.plan.decode.reason, "--gpu off");
        let mut no_driver = env(true);
        no_driver.report = GpuReport {
            cuda: Err("libcuda.so.1: not found".to_owned()),
            devices: Vec::new(),
        };
        let c = choose_path(&no_driver, &facts(), true);
        assert_eq!(c.path, VideoPath::Software);
        assert!(
            c.plan.decode.reason.contains("libcuda.so.1"),
            "{}",
            c.plan.decode.reason
        );
        let mut no_nvrtc = env(true);
        no_nvrtc.nvrtc = Err("libnvrtc.so.12 could not be loaded".to_owned());
        let c = choose_path(&no_nvrtc, &facts(), true);
        assert_eq!(c.path, VideoPath::Software);
        assert!(
            c.plan.scale.reason.contains("NVRTC"),
            "{}",
            c.plan.scale.reason
        );
    }
}
