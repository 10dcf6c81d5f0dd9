//! The full GPU probe behind `vodfarm worker --probe`: the CUDA driver and
//! devices, NVDEC's codecs and limits, NVENC's codecs and caps. Each part
//! that is missing says why instead of failing the whole probe.

use crate::cuda::{Cuda, CudaContext, DeviceInfo};
use crate::nvdec::{self, Codec, DecoderCaps};
use crate::nvenc::{EncoderCaps, NvencSession};

/// One device's engines.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    /// Name, memory, compute capability.
    pub info: DeviceInfo,
    /// Free device memory in bytes when probed.
    pub free_memory: Option<u64>,
    /// NVDEC per codec and bit depth, or why it could not be asked.
    pub nvdec: Result<Vec<DecoderCaps>, String>,
    /// NVENC's caps, or why there is none (`NV_ENC_ERR_UNSUPPORTED_DEVICE`
    /// on A100/H100/H200).
    pub nvenc: Result<EncoderCaps, String>,
}

/// What this machine offers.
#[derive(Debug, Clone)]
pub struct GpuReport {
    /// The driver's CUDA version, or why there is no driver.
    pub cuda: Result<String, String>,
    /// Every device the driver sees.
    pub devices: Vec<DeviceReport>,
}

impl GpuReport {
    /// Probes everything. Never panics; on a machine without the driver
    /// `cuda` holds the loader's message and `devices` is empty.
    pub fn probe() -> GpuReport {
        let cuda = match Cuda::get() {
            Ok(c) => c,
            Err(e) => {
                return GpuReport {
                    cuda: Err(e.to_string()),
                    devices: Vec::new(),
                }
            }
        };
        let version = cuda.driver_version().map_err(|e| e.to_string());
        let count = match cuda.device_count() {
            Ok(n) => n,
            Err(e) => {
                return GpuReport {
                    cuda: Err(e.to_string()),
                    devices: Vec::new(),
                }
            }
        };
        let devices = (0..count).filter_map(|i| probe_device(&cuda, i)).collect();
        GpuReport {
            cuda: version,
            devices,
        }
    }
}

fn probe_device(cuda: &Cuda, ordinal: u32) -> Option<DeviceReport> {
    let info = cuda.device_info(ordinal).ok()?;
    let ctx = match CudaContext::new(ordinal) {
        Ok(ctx) => ctx,
        Err(e) => {
            return Some(DeviceReport {
                info,
                free_memory: None,
                nvdec: Err(e.to_string()),
                nvenc: Err(e.to_string()),
            })
        }
    };
    let free_memory = ctx.memory().ok().map(|(free, _)| free);
    let nvdec = match nvdec::library_error() {
        Some(e) => Err(e.to_string()),
        None => {
            let mut all = Vec::new();
            let mut failure = None;
            for codec in Codec::ALL {
                for depth in [8, 10] {
                    match nvdec::decoder_caps(&ctx, codec, depth) {
                        Ok(c) => all.push(c),
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
            }
            match (all.is_empty(), failure) {
                (true, Some(f)) => Err(f),
                _ => Ok(all),
            }
        }
    };
    let nvenc = NvencSession::caps(&ctx).map_err(|e| e.to_string());
    Some(DeviceReport {
        info,
        free_memory,
        nvdec,
        nvenc,
    })
}
