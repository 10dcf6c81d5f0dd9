//! Which device runs each stage, chosen per stage from the probe:
//!
//! | GPU has | decode | scale | encode | thumbnails |
//! |---|---|---|---|---|
//! | NVDEC + CUDA + NVENC | NVDEC | fused CUDA scaler | NVENC (device pointers) | CUDA thumbnail scaler |
//! | NVDEC + CUDA, no NVENC (A100/H100/H200) | NVDEC | fused CUDA scaler | libx264 after downloading the rungs | CUDA thumbnail scaler |
//! | no GPU, `--gpu off`, no driver | libavcodec | libswscale | libx264 | libswscale |
//!
//! Each stage falls back on its own, with the reason kept here and logged:
//! without NVRTC the scaler runs on the CPU (and the frames are
//! downloaded after NVDEC); without NVDEC for the source's codec the
//! frames start in system memory, so scaling and encoding stay there too
//! (uploading them would cost more PCIe traffic than it saves).

use vodfarm_native::probe::{DeviceReport, GpuReport};

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU (libav).
    Cpu,
    /// A CUDA device, by ordinal.
    Gpu(u32),
}

impl Device {
    /// The `device` label of the stage metrics (`cpu`, `gpu0`, ...).
    pub fn label(self) -> String {
        match self {
            Device::Cpu => "cpu".to_owned(),
            Device::Gpu(n) => format!("gpu{n}"),
        }
    }
}

/// One stage's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Where it runs.
    pub device: Device,
    /// What runs it.
    pub implementation: &'static str,
    /// Why here (empty when on the GPU as intended).
    pub reason: String,
}

impl Stage {
    fn gpu(ordinal: u32, implementation: &'static str) -> Stage {
        Stage {
            device: Device::Gpu(ordinal),
            implementation,
            reason: String::new(),
        }
    }

    fn cpu(implementation: &'static str, reason: impl Into<String>) -> Stage {
        Stage {
            device: Device::Cpu,
            implementation,
            reason: reason.into(),
        }
    }
}

/// Every stage's placement for one source codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Decoding the source.
    pub decode: Stage,
    /// Scaling to every rung.
    pub scale: Stage,
    /// Encoding each rung.
    pub encode: Stage,
    /// Thumbnails and sprites.
    pub thumbnails: Stage,
}

impl StagePlan {
    /// Software everywhere, for `reason`.
    pub fn software(reason: &str) -> StagePlan {
        StagePlan {
            decode: Stage::cpu("libavcodec", reason),
            scale: Stage::cpu("libswscale", reason),
            encode: Stage::cpu("libx264", reason),
            thumbnails: Stage::cpu("libswscale", reason),
        }
    }

    /// A short form for logs and the bench line: `decode=gpu0,scale=gpu0,encode=cpu`.
    pub fn summary(&self) -> String {
        format!(
            "decode={},scale={},encode={}",
            self.decode.device.label(),
            self.scale.device.label(),
            self.encode.device.label()
        )
    }

    /// Logs one line per stage that falls back to the CPU, saying why.
    pub fn log_fallbacks(&self) {
        for (name, stage) in [
            ("decode", &self.decode),
            ("scale", &self.scale),
            ("encode", &self.encode),
            ("thumbnails", &self.thumbnails),
        ] {
            if stage.device == Device::Cpu {
                tracing::info!(stage = name, implementation = stage.implementation, reason = %stage.reason, "stage runs on the CPU");
            }
        }
    }

    /// Chooses per stage for sources in `codec` (`h264`, `hevc`, ...) at
    /// `bit_depth`. `nvrtc` is NVRTC's load result (the scaler needs it);
    /// `allow_gpu` is `--gpu auto`.
    pub fn choose(
        report: &GpuReport,
        nvrtc: Result<(), String>,
        codec: &str,
        bit_depth: u32,
        allow_gpu: bool,
    ) -> StagePlan {
        if !allow_gpu {
            return StagePlan::software("--gpu off");
        }
        if let Err(e) = &report.cuda {
            return StagePlan::software(&format!("no CUDA driver: {e}"));
        }
        let Some(device) = pick_device(report, codec, bit_depth) else {
            return StagePlan::software("the CUDA driver sees no device");
        };
        let ordinal = device.info.ordinal;
        let decode = match nvdec_fits(device, codec, bit_depth) {
            Ok(()) => Stage::gpu(ordinal, "nvdec"),
            Err(why) => Stage::cpu("libavcodec", why),
        };
        let scale = match (&decode.device, &nvrtc) {
            (Device::Gpu(_), Ok(())) => Stage::gpu(ordinal, "cuda fused scaler"),
            (Device::Gpu(_), Err(e)) => Stage::cpu(
                "libswscale",
                format!("NVRTC unavailable, frames are downloaded after NVDEC: {e}"),
            ),
            (Device::Cpu, _) => Stage::cpu(
                "libswscale",
                "frames are in system memory (decode runs on the CPU)",
            ),
        };
        let encode = match (&scale.device, &device.nvenc) {
            (Device::Gpu(_), Ok(caps)) if caps.codecs.iter().any(|c| c == "h264") => {
                Stage::gpu(ordinal, "nvenc")
            }
            (Device::Gpu(_), Ok(_)) => Stage::cpu(
                "libx264",
                "NVENC on this device has no H.264; scaled rungs are downloaded",
            ),
            (Device::Gpu(_), Err(e)) => Stage::cpu(
                "libx264",
                format!("no NVENC, scaled rungs are downloaded: {e}"),
            ),
            (Device::Cpu, _) => Stage::cpu("libx264", "scaled frames are in system memory"),
        };
        let thumbnails = match &scale.device {
            Device::Gpu(n) => Stage::gpu(*n, "cuda thumbnail scaler"),
            Device::Cpu => Stage::cpu("libswscale", scale.reason.clone()),
        };
        StagePlan {
            decode,
            scale,
            encode,
            thumbnails,
        }
    }
}

impl StagePlan {
    /// Capability names the worker adds when it leases, so jobs that need
    /// a GPU stage go only to workers that run it there: `gpu-decode`,
    /// `gpu-scale`, `gpu-encode`.
    pub fn capabilities(&self) -> Vec<String> {
        [
            ("gpu-decode", &self.decode),
            ("gpu-scale", &self.scale),
            ("gpu-encode", &self.encode),
        ]
        .into_iter()
        .filter(|(_, s)| s.device != Device::Cpu)
        .map(|(name, _)| name.to_owned())
        .collect()
    }
}

fn pick_device<'a>(report: &'a GpuReport, codec: &str, bit_depth: u32) -> Option<&'a DeviceReport> {
    report
        .devices
        .iter()
        .find(|d| nvdec_fits(d, codec, bit_depth).is_ok())
        .or_else(|| report.devices.first())
}

fn nvdec_fits(device: &DeviceReport, codec: &str, bit_depth: u32) -> Result<(), String> {
    let caps = device
        .nvdec
        .as_ref()
        .map_err(|e| format!("no NVDEC: {e}"))?;
    match caps
        .iter()
        .find(|c| c.codec.name() == codec && c.bit_depth == bit_depth)
    {
        Some(c) if c.supported => Ok(()),
        Some(_) => Err(format!(
            "NVDEC on {} does not decode {bit_depth}-bit {codec}",
            device.info.name
        )),
        None => Err(format!("NVDEC does not take {codec} from vodfarm")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vodfarm_native::cuda::DeviceInfo;
    use vodfarm_native::nvdec::{Codec, DecoderCaps};
    use vodfarm_native::nvenc::EncoderCaps;

    fn device(nvenc: bool) -> DeviceReport {
        DeviceReport {
            info: DeviceInfo {
                ordinal: 0,
                name: "NVIDIA H200".to_owned(),
                total_memory: 141 << 30,
                compute_capability: (9, 0),
            },
            free_memory: Some(140 << 30),
            nvdec: Ok(vec![
                DecoderCaps {
                    codec: Codec::H264,
                    bit_depth: 8,
                    supported: true,
                    max_width: 4096,
                    max_height: 4096,
                    engines: 7,
                },
                DecoderCaps {
                    codec: Codec::H264,
                    bit_depth: 10,
                    supported: false,
                    max_width: 0,
                    max_height: 0,
                    engines: 0,
                },
            ]),
            nvenc: if nvenc {
                Ok(EncoderCaps {
                    codecs: vec!["h264".to_owned()],
                    max_width: 4096,
                    max_height: 4096,
                    engines: 1,
                    ten_bit: false,
                })
            } else {
                Err(
                    "nvEncOpenEncodeSessionEx failed with NV_ENC_ERR_UNSUPPORTED_DEVICE (2)"
                        .to_owned(),
                )
            },
        }
    }

    fn report(devices: Vec<DeviceReport>) -> GpuReport {
        GpuReport {
            cuda: Ok("12.4".to_owned()),
            devices,
        }
    }

    #[test]
    fn this_machine_plans_software_with_the_reason() {
        let plan = StagePlan::choose(&GpuReport::probe(), Ok(()), "h264", 8, true);
        if GpuReport::probe().cuda.is_err() {
            assert_eq!(plan.summary(), "decode=cpu,scale=cpu,encode=cpu");
            assert!(
                plan.decode.reason.contains("libcuda.so.1"),
                "{}",
                plan.decode.reason
            );
        }
    }

    #[test]
    fn full_gpu_keeps_frames_on_the_device() {
        let plan = StagePlan::choose(&report(vec![device(true)]), Ok(()), "h264", 8, true);
        assert_eq!(plan.summary(), "decode=gpu0,scale=gpu0,encode=gpu0");
        assert_eq!(plan.thumbnails.device, Device::Gpu(0));
        assert_eq!(
            plan.capabilities(),
            ["gpu-decode", "gpu-scale", "gpu-encode"]
        );
        assert!(StagePlan::software("x").capabilities().is_empty());
    }

    #[test]
    fn no_nvenc_downloads_rungs_for_libx264() {
        let plan = StagePlan::choose(&report(vec![device(false)]), Ok(()), "h264", 8, true);
        assert_eq!(plan.summary(), "decode=gpu0,scale=gpu0,encode=cpu");
        assert!(
            plan.encode.reason.contains("NV_ENC_ERR_UNSUPPORTED_DEVICE"),
            "{}",
            plan.encode.reason
        );
    }

    #[test]
    fn each_stage_falls_back_alone() {
        let no_nvrtc = StagePlan::choose(
            &report(vec![device(true)]),
            Err("libnvrtc.so.12 could not be loaded".to_owned()),
            "h264",
            8,
            true,
        );
        assert_eq!(no_nvrtc.summary(), "decode=gpu0,scale=cpu,encode=cpu");
        assert!(no_nvrtc.scale.reason.contains("NVRTC"));
        let ten_bit = StagePlan::choose(&report(vec![device(true)]), Ok(()), "h264", 10, true);
        assert_eq!(ten_bit.summary(), "decode=cpu,scale=cpu,encode=cpu");
        assert!(
            ten_bit.decode.reason.contains("10"),
            "{}",
            ten_bit.decode.reason
        );
        let off = StagePlan::choose(&report(vec![device(true)]), Ok(()), "h264", 8, false);
        assert_eq!(off.decode.reason, "--gpu off");
    }
}
