//! NVRTC (`libnvrtc.so.12`, loaded at run time): CUDA C → PTX without a
//! GPU. The library comes with the CUDA toolkit or PyPI's
//! `nvidia-cuda-nvrtc-cu12` wheel; `NVRTC_LIB` names it explicitly.

use crate::error::{NativeError, Result};
use crate::loader::{self, resolve};
use libloading::Library;
use std::ffi::{c_char, c_int, CStr, CString};

type Prog = *mut std::ffi::c_void;
type Create = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type Compile = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type Size = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type Get = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type Destroy = unsafe extern "C" fn(*mut Prog) -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type Version = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

const LIB: &str = "libnvrtc.so.12";
const HINT: &str = "install the CUDA toolkit's NVRTC or `pip install nvidia-cuda-nvrtc-cu12` \
     and set NVRTC_LIB to its lib/libnvrtc.so.12 (scripts/services.sh does); without it \
     the CUDA scaler falls back to the CPU";

/// The NVRTC compiler.
pub struct Nvrtc {
    _lib: Library,
    create: Create,
    compile: Compile,
    ptx_size: Size,
    ptx: Get,
    cubin_size: Size,
    cubin: Get,
    log_size: Size,
    log: Get,
    destroy: Destroy,
    error_string: ErrorString,
    version: Version,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvrtc").finish_non_exhaustive()
    }
}

impl Nvrtc {
    /// Loads `$NVRTC_LIB`, else `libnvrtc.so.12` from the library path.
    pub fn load() -> Result<Nvrtc> {
        match std::env::var("NVRTC_LIB") {
            Ok(path) if !path.is_empty() => Nvrtc::load_from(&path),
            _ => Nvrtc::load_candidates(&["libnvrtc.so.12", "libnvrtc.so"]),
        }
    }

    /// Loads NVRTC from `path`.
    pub fn load_from(path: &str) -> Result<Nvrtc> {
        Nvrtc::load_candidates(&[path])
    }

    fn load_candidates(candidates: &[&str]) -> Result<Nvrtc> {
        let lib = loader::open(LIB, candidates, HINT)?;
        Ok(Nvrtc {
            create: resolve!(&lib, LIB, "nvrtcCreateProgram"),
            compile: resolve!(&lib, LIB, "nvrtcCompileProgram"),
            ptx_size: resolve!(&lib, LIB, "nvrtcGetPTXSize"),
            ptx: resolve!(&lib, LIB, "nvrtcGetPTX"),
            cubin_size: resolve!(&lib, LIB, "nvrtcGetCUBINSize"),
            cubin: resolve!(&lib, LIB, "nvrtcGetCUBIN"),
            log_size: resolve!(&lib, LIB, "nvrtcGetProgramLogSize"),
            log: resolve!(&lib, LIB, "nvrtcGetProgramLog"),
            destroy: resolve!(&lib, LIB, "nvrtcDestroyProgram"),
            error_string: resolve!(&lib, LIB, "nvrtcGetErrorString"),
            version: resolve!(&lib, LIB, "nvrtcVersion"),
            _lib: lib,
        })
    }

    /// NVRTC's version as `major.minor`.
    pub fn version(&self) -> Result<String> {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: writes two ints.
        let r = unsafe { (self.version)(&mut major, &mut minor) };
        self.check("nvrtcVersion", r, String::new())?;
        Ok(format!("{major}.{minor}"))
    }

    fn check(&self, call: &'static str, code: c_int, log: String) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: returns a static NUL-terminated string for any code.
        let p = unsafe { (self.error_string)(code) };
        let name = if p.is_null() {
            format!("nvrtcResult {code}")
        } else {
            // SAFETY: non-null, static, NUL-terminated.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        let log = if log.trim().is_empty() {
            "NVRTC gave no log".to_owned()
        } else {
            log
        };
        Err(NativeError::Nvrtc { call, name, log })
    }

    /// Compiles `source` (named `name` in messages) for `arch`
    /// (`compute_90`: PTX; `sm_90`: also SASS). Floating-point contraction
    /// is off so kernels round exactly as their CPU references.
    fn compile(&self, source: &str, name: &str, arch: &str) -> Result<ProgGuard<'_>> {
        let src = CString::new(source)
            .map_err(|_| NativeError::Unsupported("kernel source holds a NUL".to_owned()))?;
        let cname = CString::new(name)
            .map_err(|_| NativeError::Unsupported("kernel name holds a NUL".to_owned()))?;
        let options: Vec<CString> = [
            format!("--gpu-architecture={arch}"),
            "--fmad=false".to_owned(),
            "--std=c++14".to_owned(),
        ]
        .into_iter()
        .filter_map(|o| CString::new(o).ok())
        .collect();
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: source and name are NUL-terminated and outlive the call;
        // no headers are passed (count 0, null arrays).
        let r = unsafe {
            (self.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        self.check("nvrtcCreateProgram", r, String::new())?;
        let guard = ProgGuard { nvrtc: self, prog };
        // SAFETY: the program is alive; the options array holds
        // `option_ptrs.len()` NUL-terminated strings alive for the call.
        let r = unsafe { (self.compile)(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr()) };
        let log = String::from_utf8_lossy(&guard.read(self.log_size, self.log)).into_owned();
        self.check(
            "nvrtcCompileProgram",
            r,
            log.trim_end_matches('\0').to_owned(),
        )?;
        Ok(guard)
    }

    /// PTX of `source` for a virtual `arch` (`compute_75`, ...): portable
    /// to newer GPUs, JIT-compiled by the driver (which must be at least
    /// as new as this NVRTC).
    pub fn compile_ptx(&self, source: &str, name: &str, arch: &str) -> Result<String> {
        let guard = self.compile(source, name, arch)?;
        let mut ptx = guard.read(self.ptx_size, self.ptx);
        while ptx.last() == Some(&0) {
            ptx.pop();
        }
        if ptx.is_empty() {
            return Err(NativeError::Nvrtc {
                call: "nvrtcGetPTX",
                name: "NVRTC_SUCCESS".to_owned(),
                log: "compilation succeeded but produced no PTX".to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&ptx).into_owned())
    }

    /// SASS (an ELF cubin) of `source` for a real `arch` (`sm_90`, ...):
    /// loads on any driver of the same CUDA major version, without the
    /// PTX JIT (CUDA minor-version compatibility), so a newer NVRTC than
    /// the driver is fine.
    pub fn compile_cubin(&self, source: &str, name: &str, arch: &str) -> Result<Vec<u8>> {
        let guard = self.compile(source, name, arch)?;
        let cubin = guard.read(self.cubin_size, self.cubin);
        if !cubin.starts_with(b"\x7fELF") {
            return Err(NativeError::Nvrtc {
                call: "nvrtcGetCUBIN",
                name: "NVRTC_SUCCESS".to_owned(),
                log: format!(
                    "no cubin for {arch} (a virtual compute_ architecture gives PTX only)"
                ),
            });
        }
        Ok(cubin)
    }
}

struct ProgGuard<'a> {
    nvrtc: &'a Nvrtc,
    prog: Prog,
}

impl ProgGuard<'_> {
    /// Reads a size-then-bytes output of the program (log, PTX, cubin).
    fn read(&self, size: Size, get: Get) -> Vec<u8> {
        let mut n = 0usize;
        // SAFETY: writes one size_t for a live program.
        if unsafe { size(self.prog, &mut n) } != 0 || n == 0 {
            return Vec::new();
        }
        let mut buf = vec![0u8; n];
        // SAFETY: the buffer holds the `n` bytes NVRTC said it writes.
        if unsafe { get(self.prog, buf.as_mut_ptr().cast()) } != 0 {
            return Vec::new();
        }
        buf
    }
}

impl Drop for ProgGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: destroys the program created in `compile`, once.
        unsafe { (self.nvrtc.destroy)(&mut self.prog) };
    }
}

/// vodfarm's scaler kernels (the fused ladder scaler and the thumbnail /
/// sprite scaler), CUDA C.
pub const SCALE_KERNELS: &str = include_str!("kernels/scale.cu");
