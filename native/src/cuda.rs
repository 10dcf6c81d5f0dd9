//! The CUDA driver API (`libcuda.so.1`, loaded at run time): devices,
//! primary contexts, streams, device memory from a pool, modules and
//! kernel launches. The safe types here own what they create and release
//! it on drop, inside their context.

use crate::error::{NativeError, Result};
use crate::loader::{self, resolve};
use crate::sdk;
use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock};

/// The non-null function type inside bindgen's `Option<fn>` aliases.
pub(crate) trait Unopt {
    /// The function-pointer type.
    type Inner: Copy;
}
impl<F: Copy> Unopt for Option<F> {
    type Inner = F;
}
/// `F<sdk::tcuInit>` is `unsafe extern "C" fn(c_uint) -> CUresult`.
pub(crate) type F<T> = <T as Unopt>::Inner;

/// Resolves an `Option<fn>`-typed symbol to its function.
macro_rules! resolve_fn {
    ($lib:expr, $library:expr, $ty:ty, $name:literal) => {{
        let f: $ty = $crate::loader::resolve!($lib, $library, $name);
        match f {
            Some(f) => f,
            None => {
                return Err($crate::error::NativeError::SymbolMissing {
                    library: $library,
                    symbol: $name,
                })
            }
        }
    }};
}
pub(crate) use resolve_fn;

const LIB: &str = "libcuda.so.1";

type CuDriverGetVersion = unsafe extern "C" fn(*mut c_int) -> sdk::CUresult;
type CuMemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> sdk::CUresult;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, sdk::CUdevice) -> sdk::CUresult;

/// The CUDA driver's entry points.
pub struct Cuda {
    _lib: Library,
    pub(crate) init: F<sdk::tcuInit>,
    driver_get_version: CuDriverGetVersion,
    device_get_count: F<sdk::tcuDeviceGetCount>,
    device_get: F<sdk::tcuDeviceGet>,
    device_get_name: F<sdk::tcuDeviceGetName>,
    device_get_attribute: F<sdk::tcuDeviceGetAttribute>,
    device_total_mem: CuDeviceTotalMem,
    mem_get_info: CuMemGetInfo,
    primary_ctx_retain: F<sdk::tcuDevicePrimaryCtxRetain>,
    primary_ctx_release: F<sdk::tcuDevicePrimaryCtxRelease>,
    ctx_push: F<sdk::tcuCtxPushCurrent_v2>,
    ctx_pop: F<sdk::tcuCtxPopCurrent_v2>,
    stream_create: F<sdk::tcuStreamCreate>,
    stream_destroy: F<sdk::tcuStreamDestroy_v2>,
    stream_synchronize: F<sdk::tcuStreamSynchronize>,
    mem_alloc: F<sdk::tcuMemAlloc_v2>,
    mem_free: F<sdk::tcuMemFree_v2>,
    memcpy_2d_async: F<sdk::tcuMemcpy2DAsync_v2>,
    memcpy_htod: F<sdk::tcuMemcpyHtoD_v2>,
    memcpy_dtoh: F<sdk::tcuMemcpyDtoH_v2>,
    module_load_data: F<sdk::tcuModuleLoadData>,
    module_unload: F<sdk::tcuModuleUnload>,
    module_get_function: F<sdk::tcuModuleGetFunction>,
    launch_kernel: F<sdk::tcuLaunchKernel>,
    get_error_name: F<sdk::tcuGetErrorName>,
    get_error_string: F<sdk::tcuGetErrorString>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda").finish_non_exhaustive()
    }
}

static CUDA: OnceLock<std::result::Result<Arc<Cuda>, NativeError>> = OnceLock::new();

impl Cuda {
    /// Loads `libcuda.so.1` once per process and initialises the driver.
    pub fn get() -> Result<Arc<Cuda>> {
        CUDA.get_or_init(|| Cuda::load_from(&["libcuda.so.1", "libcuda.so"]).map(Arc::new))
            .clone()
    }

    fn load_from(candidates: &[&str]) -> Result<Cuda> {
        let lib = loader::open(LIB, candidates, loader::DRIVER_HINT)?;
        let cuda = Cuda {
            init: resolve_fn!(&lib, LIB, sdk::tcuInit, "cuInit"),
            driver_get_version: resolve!(&lib, LIB, "cuDriverGetVersion"),
            device_get_count: resolve_fn!(&lib, LIB, sdk::tcuDeviceGetCount, "cuDeviceGetCount"),
            device_get: resolve_fn!(&lib, LIB, sdk::tcuDeviceGet, "cuDeviceGet"),
            device_get_name: resolve_fn!(&lib, LIB, sdk::tcuDeviceGetName, "cuDeviceGetName"),
            device_get_attribute: resolve_fn!(
                &lib,
                LIB,
                sdk::tcuDeviceGetAttribute,
                "cuDeviceGetAttribute"
            ),
            device_total_mem: resolve!(&lib, LIB, "cuDeviceTotalMem_v2"),
            mem_get_info: resolve!(&lib, LIB, "cuMemGetInfo_v2"),
            primary_ctx_retain: resolve_fn!(
                &lib,
                LIB,
                sdk::tcuDevicePrimaryCtxRetain,
                "cuDevicePrimaryCtxRetain"
            ),
            primary_ctx_release: resolve_fn!(
                &lib,
                LIB,
                sdk::tcuDevicePrimaryCtxRelease,
                "cuDevicePrimaryCtxRelease_v2"
            ),
            ctx_push: resolve_fn!(&lib, LIB, sdk::tcuCtxPushCurrent_v2, "cuCtxPushCurrent_v2"),
            ctx_pop: resolve_fn!(&lib, LIB, sdk::tcuCtxPopCurrent_v2, "cuCtxPopCurrent_v2"),
            stream_create: resolve_fn!(&lib, LIB, sdk::tcuStreamCreate, "cuStreamCreate"),
            stream_destroy: resolve_fn!(&lib, LIB, sdk::tcuStreamDestroy_v2, "cuStreamDestroy_v2"),
            stream_synchronize: resolve_fn!(
                &lib,
                LIB,
                sdk::tcuStreamSynchronize,
                "cuStreamSynchronize"
            ),
            mem_alloc: resolve_fn!(&lib, LIB, sdk::tcuMemAlloc_v2, "cuMemAlloc_v2"),
            mem_free: resolve_fn!(&lib, LIB, sdk::tcuMemFree_v2, "cuMemFree_v2"),
            memcpy_2d_async: resolve_fn!(&lib, LIB, sdk::tcuMemcpy2DAsync_v2, "cuMemcpy2DAsync_v2"),
            memcpy_htod: resolve_fn!(&lib, LIB, sdk::tcuMemcpyHtoD_v2, "cuMemcpyHtoD_v2"),
            memcpy_dtoh: resolve_fn!(&lib, LIB, sdk::tcuMemcpyDtoH_v2, "cuMemcpyDtoH_v2"),
            module_load_data: resolve_fn!(&lib, LIB, sdk::tcuModuleLoadData, "cuModuleLoadData"),
            module_unload: resolve_fn!(&lib, LIB, sdk::tcuModuleUnload, "cuModuleUnload"),
            module_get_function: resolve_fn!(
                &lib,
                LIB,
                sdk::tcuModuleGetFunction,
                "cuModuleGetFunction"
            ),
            launch_kernel: resolve_fn!(&lib, LIB, sdk::tcuLaunchKernel, "cuLaunchKernel"),
            get_error_name: resolve_fn!(&lib, LIB, sdk::tcuGetErrorName, "cuGetErrorName"),
            get_error_string: resolve_fn!(&lib, LIB, sdk::tcuGetErrorString, "cuGetErrorString"),
            _lib: lib,
        };
        // SAFETY: cuInit takes flags (must be 0) and may be called any
        // number of times from any thread.
        let r = unsafe { (cuda.init)(0) };
        cuda.check("cuInit", r)?;
        Ok(cuda)
    }

    /// Turns a `CUresult` into `Ok` or an error with its name and sentence.
    pub(crate) fn check(&self, call: &'static str, code: sdk::CUresult) -> Result<()> {
        if code == sdk::CUDA_SUCCESS {
            return Ok(());
        }
        let mut name: *const c_char = std::ptr::null();
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: both calls only write a pointer to a static string (or
        // leave it null for an unknown code), which we read below.
        unsafe {
            (self.get_error_name)(code, &mut name);
            (self.get_error_string)(code, &mut text);
        }
        Err(NativeError::Cuda {
            call,
            code,
            name: static_str(name).unwrap_or_else(|| format!("CUresult {code}")),
            message: static_str(text).unwrap_or_else(|| "unknown CUDA error".to_owned()),
        })
    }

    /// The driver's CUDA version as `major.minor` (12040 → "12.4").
    pub fn driver_version(&self) -> Result<String> {
        let mut v: c_int = 0;
        // SAFETY: writes one int.
        let r = unsafe { (self.driver_get_version)(&mut v) };
        self.check("cuDriverGetVersion", r)?;
        Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    /// How many CUDA devices the driver sees.
    pub fn device_count(&self) -> Result<u32> {
        let mut n: c_int = 0;
        // SAFETY: writes one int.
        let r = unsafe { (self.device_get_count)(&mut n) };
        self.check("cuDeviceGetCount", r)?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Name, memory and compute capability of device `ordinal`.
    pub fn device_info(&self, ordinal: u32) -> Result<DeviceInfo> {
        let dev = self.device(ordinal)?;
        let mut name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes and the driver writes at most
        // `len` bytes, NUL-terminated.
        let r = unsafe { (self.device_get_name)(name.as_mut_ptr(), 256, dev) };
        self.check("cuDeviceGetName", r)?;
        let mut total = 0usize;
        // SAFETY: writes one size_t.
        let r = unsafe { (self.device_total_mem)(&mut total, dev) };
        self.check("cuDeviceTotalMem_v2", r)?;
        let major = self.attribute(dev, sdk::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = self.attribute(dev, sdk::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        // SAFETY: the driver NUL-terminated the name inside the buffer.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(DeviceInfo {
            ordinal,
            name,
            total_memory: total as u64,
            compute_capability: (major as u32, minor as u32),
        })
    }

    fn device(&self, ordinal: u32) -> Result<sdk::CUdevice> {
        let mut dev: sdk::CUdevice = 0;
        let ordinal = c_int::try_from(ordinal)
            .map_err(|_| NativeError::Unsupported(format!("no CUDA device {ordinal}")))?;
        // SAFETY: writes one CUdevice; a bad ordinal is an error code.
        let r = unsafe { (self.device_get)(&mut dev, ordinal) };
        self.check("cuDeviceGet", r)?;
        Ok(dev)
    }

    fn attribute(&self, dev: sdk::CUdevice, attr: sdk::CUdevice_attribute) -> Result<i32> {
        let mut v: c_int = 0;
        // SAFETY: writes one int; the attribute is a valid enum value.
        let r = unsafe { (self.device_get_attribute)(&mut v, attr, dev) };
        self.check("cuDeviceGetAttribute", r)?;
        Ok(v)
    }
}

fn static_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null pointers from cuGetErrorName/String point to static
    // NUL-terminated strings inside the driver.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// One CUDA device as the probe reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The CUDA ordinal.
    pub ordinal: u32,
    /// The marketing name ("NVIDIA H200").
    pub name: String,
    /// Device memory in bytes.
    pub total_memory: u64,
    /// (major, minor).
    pub compute_capability: (u32, u32),
}

/// A device's primary context, retained for as long as this lives.
pub struct CudaContext {
    cuda: Arc<Cuda>,
    device: sdk::CUdevice,
    ctx: sdk::CUcontext,
    ordinal: u32,
}

impl std::fmt::Debug for CudaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaContext")
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

// SAFETY: a CUDA context may be used from any thread once made current
// there; every use below pushes it first (`CurrentGuard`).
unsafe impl Send for CudaContext {}
// SAFETY: as above; the driver serialises work on one context itself.
unsafe impl Sync for CudaContext {}

impl CudaContext {
    /// Retains device `ordinal`'s primary context (the one libavcodec and
    /// other CUDA users in the process share).
    pub fn new(ordinal: u32) -> Result<Arc<CudaContext>> {
        let cuda = Cuda::get()?;
        let device = cuda.device(ordinal)?;
        let mut ctx: sdk::CUcontext = std::ptr::null_mut();
        // SAFETY: writes the context handle; released in Drop.
        let r = unsafe { (cuda.primary_ctx_retain)(&mut ctx, device) };
        cuda.check("cuDevicePrimaryCtxRetain", r)?;
        Ok(Arc::new(CudaContext {
            cuda,
            device,
            ctx,
            ordinal,
        }))
    }

    /// The driver entry points.
    pub(crate) fn cuda(&self) -> &Cuda {
        &self.cuda
    }

    /// The raw context (for NVDEC and NVENC, which take it).
    pub(crate) fn raw(&self) -> sdk::CUcontext {
        self.ctx
    }

    /// The CUDA ordinal.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// Makes the context current on this thread until the guard drops.
    pub(crate) fn push(&self) -> Result<CurrentGuard<'_>> {
        // SAFETY: the context is alive (we retain it).
        let r = unsafe { (self.cuda.ctx_push)(self.ctx) };
        self.cuda.check("cuCtxPushCurrent_v2", r)?;
        Ok(CurrentGuard { ctx: self })
    }

    /// (free, total) device memory in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let _g = self.push()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two size_t; a context is current.
        let r = unsafe { (self.cuda.mem_get_info)(&mut free, &mut total) };
        self.cuda.check("cuMemGetInfo_v2", r)?;
        Ok((free as u64, total as u64))
    }

    /// A new stream on this context.
    pub fn stream(self: &Arc<Self>) -> Result<Stream> {
        let _g = self.push()?;
        let mut s: sdk::CUstream = std::ptr::null_mut();
        // SAFETY: writes the stream handle; destroyed in Drop.
        let r = unsafe { (self.cuda.stream_create)(&mut s, 0) };
        self.cuda.check("cuStreamCreate", r)?;
        Ok(Stream {
            ctx: Arc::clone(self),
            raw: s,
        })
    }

    /// `bytes` of device memory (uninitialised).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        let _g = self.push()?;
        let mut ptr: sdk::CUdeviceptr = 0;
        // SAFETY: writes the device pointer; freed in Drop.
        let r = unsafe { (self.cuda.mem_alloc)(&mut ptr, bytes.max(1)) };
        self.cuda.check("cuMemAlloc_v2", r)?;
        Ok(DeviceBuffer {
            ctx: Arc::clone(self),
            ptr,
            bytes,
        })
    }

    /// Loads a PTX module (from [`crate::nvrtc`]) into this context.
    pub fn load_module(self: &Arc<Self>, ptx: &str) -> Result<Module> {
        let image = std::ffi::CString::new(ptx)
            .map_err(|_| NativeError::Unsupported("PTX holds a NUL byte".to_owned()))?;
        self.load_image(image.as_bytes_with_nul())
    }

    /// Loads a cubin (ELF, from [`crate::nvrtc::Nvrtc::compile_cubin`]).
    pub fn load_cubin(self: &Arc<Self>, cubin: &[u8]) -> Result<Module> {
        if !cubin.starts_with(b"\x7fELF") {
            return Err(NativeError::Unsupported(
                "not a cubin (no ELF header)".to_owned(),
            ));
        }
        self.load_image(cubin)
    }

    fn load_image(self: &Arc<Self>, image: &[u8]) -> Result<Module> {
        let _g = self.push()?;
        let mut m: sdk::CUmodule = std::ptr::null_mut();
        // SAFETY: the image is a NUL-terminated PTX text or a complete ELF
        // cubin (checked by the callers), alive for the call; the driver
        // copies what it keeps. The module is unloaded in Drop.
        let r = unsafe { (self.cuda.module_load_data)(&mut m, image.as_ptr().cast()) };
        self.cuda.check("cuModuleLoadData", r)?;
        Ok(Module {
            ctx: Arc::clone(self),
            raw: m,
        })
    }
}

impl Drop for CudaContext {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `new`; nothing of ours uses the
        // context any more (every owner holds an Arc to it).
        unsafe { (self.cuda.primary_ctx_release)(self.device) };
    }
}

/// Pops the context pushed by [`CudaContext::push`].
pub(crate) struct CurrentGuard<'a> {
    ctx: &'a CudaContext,
}

impl Drop for CurrentGuard<'_> {
    fn drop(&mut self) {
        let mut popped: sdk::CUcontext = std::ptr::null_mut();
        // SAFETY: pops the context this guard pushed on this thread.
        unsafe { (self.ctx.cuda.ctx_pop)(&mut popped) };
    }
}

/// A CUDA stream.
pub struct Stream {
    ctx: Arc<CudaContext>,
    raw: sdk::CUstream,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

// SAFETY: streams may be used from any thread with their context current.
unsafe impl Send for Stream {}

impl Stream {
    /// The raw handle.
    pub(crate) fn raw(&self) -> sdk::CUstream {
        self.raw
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        let _g = self.ctx.push()?;
        // SAFETY: the stream is alive.
        let r = unsafe { (self.ctx.cuda.stream_synchronize)(self.raw) };
        self.ctx.cuda.check("cuStreamSynchronize", r)
    }

    /// Queues a pitched 2D device-to-device copy of `width_bytes` x `rows`.
    pub(crate) fn copy_2d(
        &self,
        src: sdk::CUdeviceptr,
        src_pitch: usize,
        dst: sdk::CUdeviceptr,
        dst_pitch: usize,
        width_bytes: usize,
        rows: usize,
    ) -> Result<()> {
        let copy = sdk::CUDA_MEMCPY2D {
            srcMemoryType: sdk::CU_MEMORYTYPE_DEVICE,
            srcDevice: src,
            srcPitch: src_pitch,
            dstMemoryType: sdk::CU_MEMORYTYPE_DEVICE,
            dstDevice: dst,
            dstPitch: dst_pitch,
            WidthInBytes: width_bytes,
            Height: rows,
            ..Default::default()
        };
        let _g = self.ctx.push()?;
        // SAFETY: callers pass pointers into live device allocations of at
        // least `pitch * rows` bytes (checked by the safe callers).
        let r = unsafe { (self.ctx.cuda.memcpy_2d_async)(&copy, self.raw) };
        self.ctx.cuda.check("cuMemcpy2DAsync_v2", r)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(_g) = self.ctx.push() {
            // SAFETY: the stream is ours and no longer used.
            unsafe { (self.ctx.cuda.stream_destroy)(self.raw) };
        }
    }
}

/// Device memory, freed on drop.
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: sdk::CUdeviceptr,
    bytes: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

// SAFETY: device memory is not tied to a thread.
unsafe impl Send for DeviceBuffer {}
// SAFETY: the handle is a plain address; writes go through `&mut self`.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// The device address (what NVENC registers and kernels take).
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when zero bytes were asked for.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Copies `data` to the start of the buffer (synchronously).
    pub fn upload(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > self.bytes {
            return Err(NativeError::Unsupported(format!(
                "upload of {} bytes into a {}-byte device buffer",
                data.len(),
                self.bytes
            )));
        }
        let _g = self.ctx.push()?;
        // SAFETY: `data.len()` bytes fit in the allocation (checked above).
        let r = unsafe { (self.ctx.cuda.memcpy_htod)(self.ptr, data.as_ptr().cast(), data.len()) };
        self.ctx.cuda.check("cuMemcpyHtoD_v2", r)
    }

    /// Copies the start of the buffer into `out` (synchronously).
    pub fn download(&self, out: &mut [u8]) -> Result<()> {
        if out.len() > self.bytes {
            return Err(NativeError::Unsupported(format!(
                "download of {} bytes from a {}-byte device buffer",
                out.len(),
                self.bytes
            )));
        }
        let _g = self.ctx.push()?;
        // SAFETY: `out.len()` bytes exist on both sides (checked above).
        let r =
            unsafe { (self.ctx.cuda.memcpy_dtoh)(out.as_mut_ptr().cast(), self.ptr, out.len()) };
        self.ctx.cuda.check("cuMemcpyDtoH_v2", r)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Ok(_g) = self.ctx.push() {
            // SAFETY: the allocation is ours and no longer referenced.
            unsafe { (self.ctx.cuda.mem_free)(self.ptr) };
        }
    }
}

/// Reuses device buffers of the same size (decoded surfaces, rungs), so a
/// steady stream of frames allocates nothing.
#[derive(Debug)]
pub struct BufferPool {
    ctx: Arc<CudaContext>,
    free: Mutex<Vec<DeviceBuffer>>,
    keep: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep` idle buffers.
    pub fn new(ctx: Arc<CudaContext>, keep: usize) -> Self {
        BufferPool {
            ctx,
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of exactly `bytes`, reused when one is idle.
    pub fn take(&self, bytes: usize) -> Result<DeviceBuffer> {
        if let Ok(mut free) = self.free.lock() {
            if let Some(i) = free.iter().position(|b| b.bytes == bytes) {
                return Ok(free.swap_remove(i));
            }
        }
        self.ctx.alloc(bytes)
    }

    /// Returns a buffer for reuse (dropped when the pool is full).
    pub fn give(&self, buffer: DeviceBuffer) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buffer);
            }
        }
    }
}

/// A loaded PTX module.
pub struct Module {
    ctx: Arc<CudaContext>,
    raw: sdk::CUmodule,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").finish_non_exhaustive()
    }
}

// SAFETY: module handles may be used from any thread with the context current.
unsafe impl Send for Module {}
// SAFETY: as above; launches do not mutate the module.
unsafe impl Sync for Module {}

impl Module {
    /// The kernel named `name` (an `extern "C" __global__` function).
    pub(crate) fn function(&self, name: &'static str) -> Result<sdk::CUfunction> {
        let c = std::ffi::CString::new(name)
            .map_err(|_| NativeError::Unsupported("kernel name holds a NUL".to_owned()))?;
        let _g = self.ctx.push()?;
        let mut f: sdk::CUfunction = std::ptr::null_mut();
        // SAFETY: writes the function handle, which lives as long as the module.
        let r = unsafe { (self.ctx.cuda.module_get_function)(&mut f, self.raw, c.as_ptr()) };
        self.ctx.cuda.check("cuModuleGetFunction", r)?;
        Ok(f)
    }

    /// Queues `f` on `stream`.
    ///
    /// # Safety
    /// `params` must point to the kernel's arguments, each of its exact C
    /// type, and every device pointer among them must be valid for what
    /// the kernel reads and writes.
    pub(crate) unsafe fn launch(
        &self,
        f: sdk::CUfunction,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        stream: &Stream,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let _g = self.ctx.push()?;
        // SAFETY: the caller vouches for the parameters; grid and block
        // sizes are checked by the driver.
        let r = unsafe {
            (self.ctx.cuda.launch_kernel)(
                f,
                grid.0 as c_uint,
                grid.1 as c_uint,
                grid.2 as c_uint,
                block.0 as c_uint,
                block.1 as c_uint,
                block.2 as c_uint,
                0,
                stream.raw(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.ctx.cuda.check("cuLaunchKernel", r)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if let Ok(_g) = self.ctx.push() {
            // SAFETY: the module is ours; its functions are not used after.
            unsafe { (self.ctx.cuda.module_unload)(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_from_a_missing_library_is_a_clear_error() {
        let err = Cuda::load_from(&["libcuda-vodfarm-absent.so.1"]).expect_err("absent");
        let text = err.to_string();
        assert!(
            text.starts_with("libcuda.so.1 could not be loaded"),
            "{text}"
        );
        assert!(text.contains("install the NVIDIA driver"), "{text}");
    }

    #[test]
    fn get_on_this_machine_is_ok_or_names_libcuda() {
        match Cuda::get() {
            Ok(cuda) => {
                let n = cuda.device_count().expect("device count");
                println!("CUDA driver present: {n} device(s)");
            }
            Err(e) => {
                assert!(e.to_string().contains("libcuda.so.1"), "{e}");
                println!("no libcuda here (expected without a GPU): {e}");
            }
        }
    }
}
