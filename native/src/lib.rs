//! The only crate with `unsafe`: NVIDIA driver libraries, loaded at run
//! time so vodfarm builds and runs on machines without them.
//!
//! - [`GpuCapabilities`]: the quick probe a worker runs at start and
//!   advertises when it leases (`cuda`, `nvdec`, `nvenc`); [`probe`]: the
//!   full report of `vodfarm worker --probe`.
//! - `sdk` (private): the Video Codec SDK and CUDA driver API, generated
//!   by bindgen from the ffnvcodec headers (`build.rs`).
//! - [`cuda`]: contexts, streams, pooled device memory, modules.
//! - [`nvrtc`] + [`scaler`]: the fused ladder scaler and the thumbnail
//!   scaler, CUDA C compiled at run time; [`reference`]: their CPU
//!   reference (same arithmetic).
//! - [`nvdec`]: the NVDEC decoder (parser + decoder, surface pool).
//! - [`nvenc`]: the NVENC session over CUDA device pointers.
//! - [`av`]: libav fields ffmpeg-next has no safe accessor for.
//!
//! Data-centre GPUs (A100, H100, H200) have NVDEC but no NVENC, so each
//! engine is probed on its own and the worker falls back per stage.

#![warn(missing_docs)]

pub mod av;
pub mod cuda;
pub use av::extradata;
mod error;
mod loader;
pub mod nvdec;
pub mod nvenc;
pub mod nvrtc;
pub mod probe;
pub mod reference;
pub mod scaler;
mod sdk;

pub use error::{NativeError, Result};

use libloading::Library;

/// What the driver libraries on this machine offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuCapabilities {
    /// `libcuda` loads and exports `cuInit` (CUDA kernels, memory).
    pub cuda: bool,
    /// `libnvcuvid` loads and exports `cuvidCreateDecoder` (NVDEC).
    pub nvdec: bool,
    /// `libnvidia-encode` loads and exports
    /// `NvEncodeAPICreateInstance` (NVENC).
    pub nvenc: bool,
}

impl GpuCapabilities {
    /// Looks for the driver libraries. Never panics and never initialises
    /// the driver: it only loads each library and resolves one symbol.
    pub fn probe() -> Self {
        GpuCapabilities {
            cuda: has_symbol(&["libcuda.so.1", "libcuda.so"], b"cuInit\0"),
            nvdec: has_symbol(
                &["libnvcuvid.so.1", "libnvcuvid.so"],
                b"cuvidCreateDecoder\0",
            ),
            nvenc: has_symbol(
                &["libnvidia-encode.so.1", "libnvidia-encode.so"],
                b"NvEncodeAPICreateInstance\0",
            ),
        }
    }

    /// The capability names a worker advertises when it leases.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.cuda {
            names.push("cuda".to_owned());
        }
        if self.nvdec {
            names.push("nvdec".to_owned());
        }
        if self.nvenc {
            names.push("nvenc".to_owned());
        }
        names
    }
}

fn has_symbol(candidates: &[&str], symbol: &[u8]) -> bool {
    candidates.iter().any(|name| {
        // SAFETY: loading a shared library runs its initialisers. These are
        // NVIDIA's driver libraries, whose initialisers only set up their
        // own state; we load them from the system's library path only.
        let Ok(lib) = (unsafe { Library::new(name) }) else {
            return false;
        };
        // SAFETY: the symbol is only looked up, never called, so its type
        // (a plain function pointer here) cannot be misused.
        let found = unsafe { lib.get::<unsafe extern "C" fn()>(symbol) }.is_ok();
        tracing::debug!(library = name, found, "GPU library probed");
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_names_match() {
        let caps = GpuCapabilities::probe();
        let names = caps.names();
        assert_eq!(names.contains(&"cuda".to_owned()), caps.cuda);
        assert_eq!(names.contains(&"nvdec".to_owned()), caps.nvdec);
        assert_eq!(names.contains(&"nvenc".to_owned()), caps.nvenc);
    }

    #[test]
    fn sdk_layouts_match_the_headers() {
        // bindgen's own layout assertions are compiled into `sdk`; these
        // pin the structures the wrappers fill by hand to the SDK's sizes.
        assert_eq!(size_of::<sdk::GUID>(), 16);
        assert_eq!(size_of::<sdk::CUdeviceptr>(), 8);
        assert_eq!(size_of::<sdk::CUVIDDECODECAPS>(), 88);
        // 2 u32 + 41 pointers (40 functions, `reserved1`) + 277 reserved
        // pointers (SDK 11.1).
        assert_eq!(
            size_of::<sdk::NV_ENCODE_API_FUNCTION_LIST>(),
            8 + 8 * (41 + 277)
        );
        // NVENCAPI_STRUCT_VERSION(v) = 11 | 1 << 24 | v << 16 | 7 << 28.
        assert_eq!(nvenc::struct_version(1), 0x7101_000b);
        assert_eq!(nvenc::struct_version(2), 0x7102_000b);
    }

    #[test]
    fn missing_library_is_absent() {
        assert!(!has_symbol(&["libvodfarm-does-not-exist.so"], b"x\0"));
    }
}
