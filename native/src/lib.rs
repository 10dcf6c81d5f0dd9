//! The only crate with `unsafe`: NVIDIA driver libraries, loaded at run
//! time so vodfarm builds and runs on machines without them.
//!
//! Today: the capability probe a worker runs at start and advertises when
//! it leases (`cuda`, `nvdec`, `nvenc`). Data-centre GPUs (A100, H100,
//! H200) have NVDEC but no NVENC, so each is probed on its own and the
//! worker falls back to software per stage.

#![warn(missing_docs)]

pub mod av;

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
    fn missing_library_is_absent() {
        assert!(!has_symbol(&["libvodfarm-does-not-exist.so"], b"x\0"));
    }
}
