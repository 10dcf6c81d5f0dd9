//! The fused ladder scaler and the thumbnail/sprite scaler on the GPU:
//! `kernels/scale.cu` compiled by NVRTC for the device, launched on a
//! stream. One launch writes every rung from one decoded surface.

use crate::cuda::{CudaContext, DeviceBuffer, Module, Stream};
use crate::error::{NativeError, Result};
use crate::nvrtc::{Nvrtc, SCALE_KERNELS};
use crate::reference::ChromaSiting;
use crate::sdk;
use std::ffi::c_void;
use std::sync::Arc;

/// Most rungs one launch writes (`MAX_RUNGS` in the kernel).
pub const MAX_RUNGS: usize = 8;

/// A decoded picture in device memory (an NVDEC output surface): NV12 or
/// P010, luma then interleaved chroma, both `pitch` bytes per row, the
/// chroma plane starting `pitch * chroma_row` bytes in.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSurface {
    /// Device address of the first luma byte.
    pub ptr: u64,
    /// Bytes per row.
    pub pitch: usize,
    /// Row at which the chroma plane starts (the surface's allocated height).
    pub chroma_row: usize,
    /// Luma width.
    pub width: u32,
    /// Luma height.
    pub height: u32,
    /// P010 rather than NV12.
    pub ten_bit: bool,
}

/// One rung's planar 4:2:0 8-bit picture in device memory (NVENC's IYUV
/// input; libx264's yuv420p after download): Y rows, then U, then V.
#[derive(Debug)]
pub struct DeviceYuv420 {
    /// The planes.
    pub buffer: DeviceBuffer,
    /// Luma width (even).
    pub width: u32,
    /// Luma height (even).
    pub height: u32,
}

impl DeviceYuv420 {
    /// Bytes a `width` x `height` picture takes.
    pub fn bytes(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    }

    /// Copies the picture to system memory: (Y, U, V), rows packed.
    pub fn download(&self) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut all = vec![0u8; Self::bytes(self.width, self.height)];
        self.buffer.download(&mut all)?;
        let luma = self.width as usize * self.height as usize;
        let chroma = self.width.div_ceil(2) as usize * self.height.div_ceil(2) as usize;
        let v = all.split_off(luma + chroma);
        let u = all.split_off(luma);
        Ok((all, u, v))
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RungArg {
    y: u64,
    u: u64,
    v: u64,
    pitch_y: i32,
    pitch_c: i32,
    width: i32,
    height: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LadderArg {
    rung: [RungArg; MAX_RUNGS],
    count: i32,
}

/// The compiled scalers on one device.
pub struct CudaScaler {
    module: Module,
    ladder: sdk::CUfunction,
    thumb: sdk::CUfunction,
}

impl std::fmt::Debug for CudaScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaScaler").finish_non_exhaustive()
    }
}

// SAFETY: function handles are plain handles valid in any thread that
// makes their context current (Module::launch does).
unsafe impl Send for CudaScaler {}
// SAFETY: launching does not mutate the module or its functions.
unsafe impl Sync for CudaScaler {}

/// The PTX of the scalers for compute capability `(major, minor)`.
pub fn compile_scalers(nvrtc: &Nvrtc, compute_capability: (u32, u32)) -> Result<String> {
    let (major, minor) = compute_capability;
    nvrtc.compile_ptx(
        SCALE_KERNELS,
        "vodfarm_scale.cu",
        &format!("compute_{major}{minor}"),
    )
}

fn dims(n: u32, block: u32) -> u32 {
    n.div_ceil(block).max(1)
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| NativeError::Unsupported(format!("{what} {v} is too large")))
}

impl CudaScaler {
    /// Compiles the kernels for `ctx`'s device and loads them.
    pub fn new(ctx: &Arc<CudaContext>, nvrtc: &Nvrtc) -> Result<Self> {
        let info = ctx.cuda().device_info(ctx.ordinal())?;
        let (major, minor) = info.compute_capability;
        // SASS for this GPU first: it loads on any driver of the same CUDA
        // major version. PTX (JIT-compiled by the driver, which must then
        // be as new as NVRTC) only when NVRTC has no SASS target for it.
        let module = match nvrtc
            .compile_cubin(
                SCALE_KERNELS,
                "vodfarm_scale.cu",
                &format!("sm_{major}{minor}"),
            )
            .and_then(|cubin| ctx.load_cubin(&cubin))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(error = %e, "no cubin for this GPU; loading the scalers as PTX");
                ctx.load_module(&compile_scalers(nvrtc, info.compute_capability)?)?
            }
        };
        let ladder = module.function("vodfarm_ladder")?;
        let thumb = module.function("vodfarm_thumb")?;
        Ok(CudaScaler {
            module,
            ladder,
            thumb,
        })
    }

    /// Writes every rung in `outs` from `src`, in one launch on `stream`.
    pub fn scale_ladder(
        &self,
        src: &DeviceSurface,
        siting: ChromaSiting,
        outs: &mut [DeviceYuv420],
        stream: &Stream,
    ) -> Result<()> {
        if outs.is_empty() || outs.len() > MAX_RUNGS {
            return Err(NativeError::Unsupported(format!(
                "the fused scaler writes 1..={MAX_RUNGS} rungs, not {}",
                outs.len()
            )));
        }
        let mut arg = LadderArg {
            count: outs.len() as i32,
            ..Default::default()
        };
        let (mut max_cw, mut max_ch) = (1, 1);
        for (slot, out) in arg.rung.iter_mut().zip(outs.iter()) {
            if out.buffer.len() < DeviceYuv420::bytes(out.width, out.height)
                || out.width % 2 == 1
                || out.height % 2 == 1
            {
                return Err(NativeError::Unsupported(format!(
                    "rung {}x{} needs even sizes and {} bytes",
                    out.width,
                    out.height,
                    DeviceYuv420::bytes(out.width, out.height)
                )));
            }
            let (w, h) = (out.width as u64, out.height as u64);
            let base = out.buffer.device_ptr();
            *slot = RungArg {
                y: base,
                u: base + w * h,
                v: base + w * h + (w / 2) * (h / 2),
                pitch_y: out.width as i32,
                pitch_c: (out.width / 2) as i32,
                width: out.width as i32,
                height: out.height as i32,
            };
            max_cw = max_cw.max(out.width / 2);
            max_ch = max_ch.max(out.height / 2);
        }
        let mut src_y = src.ptr;
        let mut src_uv = src.ptr + (src.pitch * src.chroma_row) as u64;
        let mut pitch = i32_of(src.pitch, "pitch")?;
        let mut w = src.width as i32;
        let mut h = src.height as i32;
        let mut ten = i32::from(src.ten_bit);
        let (mut ux, mut uy) = siting.units();
        let mut params: [*mut c_void; 9] = [
            (&raw mut src_y).cast(),
            (&raw mut src_uv).cast(),
            (&raw mut pitch).cast(),
            (&raw mut w).cast(),
            (&raw mut h).cast(),
            (&raw mut ten).cast(),
            (&raw mut ux).cast(),
            (&raw mut uy).cast(),
            (&raw mut arg).cast(),
        ];
        // SAFETY: the nine parameters match `vodfarm_ladder`'s signature in
        // type and order (LadderArg mirrors `Ladder` with repr(C)); every
        // output buffer was checked to hold its rung, and the source surface
        // is a live NVDEC/pool surface of the stated size and pitch.
        unsafe {
            self.module.launch(
                self.ladder,
                (dims(max_cw, 16), dims(max_ch, 8), outs.len() as u32),
                (16, 8, 1),
                stream,
                &mut params,
            )
        }
    }

    /// Writes an `out_w` x `out_h` RGB24 thumbnail of `src` at
    /// (`tile_x`, `tile_y`) of `dst` (a sprite sheet `dst_w` x `dst_h`).
    #[allow(clippy::too_many_arguments)]
    pub fn thumbnail(
        &self,
        src: &DeviceSurface,
        siting: ChromaSiting,
        dst: &mut DeviceBuffer,
        (dst_w, dst_h): (u32, u32),
        (tile_x, tile_y): (u32, u32),
        (out_w, out_h): (u32, u32),
        stream: &Stream,
    ) -> Result<()> {
        if tile_x + out_w > dst_w
            || tile_y + out_h > dst_h
            || dst.len() < (dst_w * dst_h * 3) as usize
        {
            return Err(NativeError::Unsupported(format!(
                "tile {out_w}x{out_h} at {tile_x},{tile_y} does not fit a {dst_w}x{dst_h} RGB sheet"
            )));
        }
        let mut src_y = src.ptr;
        let mut src_uv = src.ptr + (src.pitch * src.chroma_row) as u64;
        let mut pitch = i32_of(src.pitch, "pitch")?;
        let mut w = src.width as i32;
        let mut h = src.height as i32;
        let mut ten = i32::from(src.ten_bit);
        let (mut ox, mut oy) = siting.units();
        let mut dst_ptr = dst.device_ptr();
        let mut dst_pitch = (dst_w * 3) as i32;
        let (mut tx, mut ty, mut ow, mut oh) =
            (tile_x as i32, tile_y as i32, out_w as i32, out_h as i32);
        let mut params: [*mut c_void; 14] = [
            (&raw mut src_y).cast(),
            (&raw mut src_uv).cast(),
            (&raw mut pitch).cast(),
            (&raw mut w).cast(),
            (&raw mut h).cast(),
            (&raw mut ten).cast(),
            (&raw mut ox).cast(),
            (&raw mut oy).cast(),
            (&raw mut dst_ptr).cast(),
            (&raw mut dst_pitch).cast(),
            (&raw mut tx).cast(),
            (&raw mut ty).cast(),
            (&raw mut ow).cast(),
            (&raw mut oh).cast(),
        ];
        // SAFETY: the fourteen parameters match `vodfarm_thumb`'s signature
        // in type and order; the tile was checked to lie inside `dst`.
        unsafe {
            self.module.launch(
                self.thumb,
                (dims(out_w, 16), dims(out_h, 16), 1),
                (16, 16, 1),
                stream,
                &mut params,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_arguments_have_the_c_layout() {
        // struct Rung { 3 pointers; 4 ints } = 40 bytes; Ladder = 8 rungs
        // + int count, padded to 8: 328 bytes (well under the 4 KiB
        // kernel-parameter limit).
        assert_eq!(size_of::<RungArg>(), 40);
        assert_eq!(size_of::<LadderArg>(), 328);
        assert_eq!(align_of::<LadderArg>(), 8);
    }

    /// NVRTC from `$NVRTC_LIB`, else from the `nvidia-cuda-nvrtc-cu12`
    /// wheel python3 knows (scripts/services.sh installs it).
    pub(crate) fn nvrtc_for_tests() -> Nvrtc {
        if let Ok(path) = std::env::var("NVRTC_LIB") {
            return Nvrtc::load_from(&path).expect("NVRTC_LIB loads");
        }
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0] + '/lib/libnvrtc.so.12')",
            ])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "NVRTC not found: set NVRTC_LIB or `pip install nvidia-cuda-nvrtc-cu12` \
             (scripts/services.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Nvrtc::load_from(&path).expect("the wheel's libnvrtc loads")
    }

    #[test]
    fn scalers_compile_to_ptx_with_nvrtc() {
        let nvrtc = nvrtc_for_tests();
        println!("NVRTC {}", nvrtc.version().expect("version"));
        // Turing (T4, consumer RTX 20), Ampere (A100), Ada (L4, L40S),
        // Hopper (H100/H200).
        for cc in [(7, 5), (8, 0), (8, 9), (9, 0)] {
            let ptx = compile_scalers(&nvrtc, cc).expect("kernels compile");
            assert!(
                ptx.contains(".entry vodfarm_ladder("),
                "no ladder entry for {cc:?}"
            );
            assert!(
                ptx.contains(".entry vodfarm_thumb("),
                "no thumb entry for {cc:?}"
            );
            assert!(
                ptx.contains(&format!(".target sm_{}{}", cc.0, cc.1)),
                "target for {cc:?}"
            );
            // --fmad=false: no fused multiply-add in the float arithmetic,
            // so results round exactly as src/reference.rs.
            assert!(
                !ptx.contains("fma.rn.f32"),
                "contracted FMA in PTX for {cc:?}"
            );
        }
    }

    #[test]
    fn scalers_compile_to_sass_for_real_gpus() {
        let nvrtc = nvrtc_for_tests();
        for arch in ["sm_75", "sm_80", "sm_89", "sm_90"] {
            let cubin = nvrtc
                .compile_cubin(SCALE_KERNELS, "vodfarm_scale.cu", arch)
                .expect("cubin");
            assert!(cubin.starts_with(b"\x7fELF"), "{arch}: not ELF");
            let has = |name: &[u8]| cubin.windows(name.len()).any(|w| w == name);
            assert!(
                has(b"vodfarm_ladder") && has(b"vodfarm_thumb"),
                "{arch}: kernels missing"
            );
        }
        let err = nvrtc
            .compile_cubin(SCALE_KERNELS, "vodfarm_scale.cu", "compute_90")
            .expect_err("virtual arch has no SASS");
        assert!(err.to_string().contains("no cubin for compute_90"), "{err}");
    }

    #[test]
    fn compile_errors_carry_the_log() {
        let nvrtc = nvrtc_for_tests();
        let err = nvrtc
            .compile_ptx(
                "extern \"C\" __global__ void k() { undefined_thing(); }",
                "bad.cu",
                "compute_75",
            )
            .expect_err("does not compile");
        let text = err.to_string();
        assert!(
            text.starts_with("nvrtcCompileProgram failed with NVRTC_ERROR_COMPILATION"),
            "{text}"
        );
        assert!(text.contains("undefined_thing"), "{text}");
    }

    #[test]
    fn missing_nvrtc_is_a_clear_error() {
        let err = Nvrtc::load_from("/nonexistent/libnvrtc.so.12").expect_err("absent");
        let text = err.to_string();
        assert!(
            text.starts_with("libnvrtc.so.12 could not be loaded"),
            "{text}"
        );
        assert!(text.contains("nvidia-cuda-nvrtc-cu12"), "{text}");
    }

    #[test]
    fn rung_sizes() {
        assert_eq!(DeviceYuv420::bytes(1920, 1080), 1920 * 1080 * 3 / 2);
        assert_eq!(DeviceYuv420::bytes(426, 240), 426 * 240 + 2 * 213 * 120);
    }
}
