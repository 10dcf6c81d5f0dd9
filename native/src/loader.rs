//! Loading the driver libraries at run time and resolving their entry
//! points. Each library is loaded once per process; a missing library is
//! a [`NativeError::LibraryMissing`] naming it and what to install.

use crate::error::{NativeError, Result};
use libloading::Library;

/// Opens the first of `candidates` that loads.
pub(crate) fn open(
    library: &'static str,
    candidates: &[&str],
    hint: &'static str,
) -> Result<Library> {
    let mut first_reason = None;
    for name in candidates {
        // SAFETY: loading a shared library runs its initialisers. The
        // candidates are NVIDIA's driver and compiler libraries (or a path
        // an operator configured for one of them), whose initialisers only
        // set up their own state.
        match unsafe { Library::new(name) } {
            Ok(lib) => {
                tracing::debug!(library, name, "native library loaded");
                return Ok(lib);
            }
            Err(e) => {
                first_reason.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Err(NativeError::LibraryMissing {
        library,
        tried: candidates.join(", "),
        reason: first_reason.unwrap_or_else(|| "no candidate names".to_owned()),
        hint,
    })
}

/// Resolves `symbol` (NUL-terminated) as a value of type `T`.
///
/// # Safety
/// `T` must be the exact function-pointer type of `symbol` in `lib`.
pub(crate) unsafe fn symbol<T: Copy>(
    lib: &Library,
    library: &'static str,
    symbol: &'static str,
) -> Result<T> {
    debug_assert!(symbol.ends_with('\0'));
    // SAFETY: the caller promises `T` is the symbol's real type.
    match unsafe { lib.get::<T>(symbol.as_bytes()) } {
        Ok(s) => Ok(*s),
        Err(_) => Err(NativeError::SymbolMissing {
            library,
            symbol: symbol.trim_end_matches('\0'),
        }),
    }
}

/// Resolves a bindgen `Option<fn>` type and unwraps it (a resolved symbol
/// is never null).
macro_rules! resolve {
    ($lib:expr, $library:expr, $name:literal) => {{
        // SAFETY: the field's type is bindgen's (or our declared) type for
        // this exact entry point of the SDK header.
        let f = unsafe { $crate::loader::symbol($lib, $library, concat!($name, "\0")) }?;
        f
    }};
}
pub(crate) use resolve;

/// The hint when the driver libraries are missing.
pub(crate) const DRIVER_HINT: &str = "install the NVIDIA driver (libcuda, libnvcuvid, \
     libnvidia-encode come with it) or, in a container, run with the NVIDIA container \
     runtime and NVIDIA_DRIVER_CAPABILITIES=compute,video,utility; without them the \
     worker runs every stage in software";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_error_names_it_and_says_what_to_do() {
        let err = open(
            "libvodfarm-missing.so.1",
            &["libvodfarm-missing.so.1", "libvodfarm-missing.so"],
            DRIVER_HINT,
        )
        .expect_err("no such library");
        let text = err.to_string();
        assert!(
            text.starts_with("libvodfarm-missing.so.1 could not be loaded"),
            "{text}"
        );
        assert!(
            text.contains("tried libvodfarm-missing.so.1, libvodfarm-missing.so"),
            "{text}"
        );
        assert!(text.contains("cannot open shared object file"), "{text}");
        assert!(text.contains("NVIDIA container runtime"), "{text}");
    }

    #[test]
    fn missing_symbol_error_says_driver_too_old() {
        // libc is always there and certainly has no CUDA entry point.
        let lib = open("libc.so.6", &["libc.so.6"], DRIVER_HINT).expect("libc");
        // SAFETY: the symbol does not exist, so the type is never used.
        let err = unsafe { symbol::<unsafe extern "C" fn()>(&lib, "libc.so.6", "cuInit\0") }
            .expect_err("libc has no cuInit");
        assert_eq!(
            err.to_string(),
            "libc.so.6 has no `cuInit`: the NVIDIA driver is too old for this SDK (Video Codec SDK 11.1, CUDA 11); upgrade the driver"
        );
    }
}
