//! [`NativeError`]: every failure of the driver libraries, with the SDK's
//! status name and a sentence an operator can act on.

/// What went wrong in a driver library.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NativeError {
    /// A driver library could not be loaded at all.
    #[error("{library} could not be loaded (tried {tried}): {reason}; {hint}")]
    LibraryMissing {
        /// The library we looked for (`libcuda.so.1`, ...).
        library: &'static str,
        /// Every name or path tried, comma separated.
        tried: String,
        /// The dynamic loader's message for the first name.
        reason: String,
        /// What an operator does about it.
        hint: &'static str,
    },
    /// The library loaded but lacks an entry point (too old a driver).
    #[error("{library} has no `{symbol}`: the NVIDIA driver is too old for this SDK (Video Codec SDK 11.1, CUDA 11); upgrade the driver")]
    SymbolMissing {
        /// The library.
        library: &'static str,
        /// The entry point.
        symbol: &'static str,
    },
    /// A CUDA driver (or NVDEC, which shares its codes) call failed.
    #[error("{call} failed with {name} ({code}): {message}")]
    Cuda {
        /// The API function.
        call: &'static str,
        /// The `CUresult`.
        code: u32,
        /// Its name (`CUDA_ERROR_OUT_OF_MEMORY`, ...).
        name: String,
        /// The driver's sentence for it.
        message: String,
    },
    /// An NVENC call failed.
    #[error("{call} failed with {name} ({code}): {message}")]
    Nvenc {
        /// The API function.
        call: &'static str,
        /// The `NVENCSTATUS`.
        code: u32,
        /// Its name (`NV_ENC_ERR_OUT_OF_MEMORY`, ...).
        name: &'static str,
        /// What it means (the SDK's description, and the encoder's last
        /// error string when it has one).
        message: String,
    },
    /// NVRTC could not compile a kernel.
    #[error("{call} failed with {name}: {log}")]
    Nvrtc {
        /// The API function.
        call: &'static str,
        /// The `nvrtcResult` name.
        name: String,
        /// The compiler's log (or a sentence when there is none).
        log: String,
    },
    /// The caller asked for something the hardware or the wrapper cannot do.
    #[error("{0}")]
    Unsupported(String),
}

/// The `Result` of this crate.
pub type Result<T> = std::result::Result<T, NativeError>;
