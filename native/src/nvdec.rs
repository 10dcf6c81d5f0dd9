//! NVDEC (`libnvcuvid.so.1`, loaded at run time): the SDK's parser finds
//! pictures in an Annex B elementary stream, the decoder decodes them on
//! the engine, and each displayed picture is copied (device to device)
//! into a pooled NV12/P010 surface the fused scaler reads. The decoder
//! keeps `min_num_decode_surfaces + 4` surfaces so decoding runs ahead of
//! mapping (the engine works on several frames at once).

use crate::cuda::{resolve_fn, BufferPool, CudaContext, DeviceBuffer, Stream, F};
use crate::error::{NativeError, Result};
use crate::loader;
use crate::reference::ChromaSiting;
use crate::scaler::DeviceSurface;
use crate::sdk;
use libloading::Library;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::{Arc, OnceLock};

const LIB: &str = "libnvcuvid.so.1";

struct Api {
    _lib: Library,
    create_parser: F<sdk::tcuvidCreateVideoParser>,
    parse: F<sdk::tcuvidParseVideoData>,
    destroy_parser: F<sdk::tcuvidDestroyVideoParser>,
    get_caps: F<sdk::tcuvidGetDecoderCaps>,
    create_decoder: F<sdk::tcuvidCreateDecoder>,
    destroy_decoder: F<sdk::tcuvidDestroyDecoder>,
    decode_picture: F<sdk::tcuvidDecodePicture>,
    map: F<sdk::tcuvidMapVideoFrame64>,
    unmap: F<sdk::tcuvidUnmapVideoFrame64>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

static API: OnceLock<std::result::Result<Arc<Api>, NativeError>> = OnceLock::new();

fn api() -> Result<Arc<Api>> {
    API.get_or_init(|| load(&["libnvcuvid.so.1", "libnvcuvid.so"]).map(Arc::new))
        .clone()
}

fn load(candidates: &[&str]) -> Result<Api> {
    let lib = loader::open(LIB, candidates, loader::DRIVER_HINT)?;
    Ok(Api {
        create_parser: resolve_fn!(
            &lib,
            LIB,
            sdk::tcuvidCreateVideoParser,
            "cuvidCreateVideoParser"
        ),
        parse: resolve_fn!(&lib, LIB, sdk::tcuvidParseVideoData, "cuvidParseVideoData"),
        destroy_parser: resolve_fn!(
            &lib,
            LIB,
            sdk::tcuvidDestroyVideoParser,
            "cuvidDestroyVideoParser"
        ),
        get_caps: resolve_fn!(&lib, LIB, sdk::tcuvidGetDecoderCaps, "cuvidGetDecoderCaps"),
        create_decoder: resolve_fn!(&lib, LIB, sdk::tcuvidCreateDecoder, "cuvidCreateDecoder"),
        destroy_decoder: resolve_fn!(&lib, LIB, sdk::tcuvidDestroyDecoder, "cuvidDestroyDecoder"),
        decode_picture: resolve_fn!(&lib, LIB, sdk::tcuvidDecodePicture, "cuvidDecodePicture"),
        map: resolve_fn!(
            &lib,
            LIB,
            sdk::tcuvidMapVideoFrame64,
            "cuvidMapVideoFrame64"
        ),
        unmap: resolve_fn!(
            &lib,
            LIB,
            sdk::tcuvidUnmapVideoFrame64,
            "cuvidUnmapVideoFrame64"
        ),
        _lib: lib,
    })
}

/// Source codecs NVDEC may take from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
}

impl Codec {
    /// Every codec the probe asks about.
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::Hevc, Codec::Vp9, Codec::Av1];

    fn raw(self) -> sdk::cudaVideoCodec {
        match self {
            Codec::H264 => sdk::cudaVideoCodec_H264,
            Codec::Hevc => sdk::cudaVideoCodec_HEVC,
            Codec::Vp9 => sdk::cudaVideoCodec_VP9,
            Codec::Av1 => sdk::cudaVideoCodec_AV1,
        }
    }

    /// The codec's short name (as ffprobe says it).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }
}

/// What NVDEC can decode for one codec at one bit depth (4:2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderCaps {
    /// The codec.
    pub codec: Codec,
    /// 8 or 10.
    pub bit_depth: u32,
    /// Whether the engine decodes it at all.
    pub supported: bool,
    /// Largest coded width.
    pub max_width: u32,
    /// Largest coded height.
    pub max_height: u32,
    /// NVDEC engines able to.
    pub engines: u32,
}

/// Asks the driver what NVDEC decodes on `ctx`'s device.
pub fn decoder_caps(ctx: &Arc<CudaContext>, codec: Codec, bit_depth: u32) -> Result<DecoderCaps> {
    let api = api()?;
    let _g = ctx.push()?;
    let mut caps = sdk::CUVIDDECODECAPS {
        eCodecType: codec.raw(),
        eChromaFormat: sdk::cudaVideoChromaFormat_420,
        nBitDepthMinus8: bit_depth.saturating_sub(8),
        ..Default::default()
    };
    // SAFETY: in/out structure owned here; a context is current.
    let r = unsafe { (api.get_caps)(&mut caps) };
    ctx.cuda().check("cuvidGetDecoderCaps", r)?;
    Ok(DecoderCaps {
        codec,
        bit_depth,
        supported: caps.bIsSupported != 0,
        max_width: caps.nMaxWidth,
        max_height: caps.nMaxHeight,
        engines: u32::from(caps.nNumNVDECs),
    })
}

/// A decoded picture in a pooled device surface (return it with
/// [`NvdecDecoder::recycle`] when the scaler is done with it).
#[derive(Debug)]
pub struct DecodedFrame {
    /// The NV12/P010 surface: luma rows then chroma rows, `pitch` apart.
    pub buffer: DeviceBuffer,
    /// How the scaler should read it.
    pub surface: DeviceSurface,
    /// The packet timestamp it came from.
    pub pts: i64,
}

/// Parser callbacks' state, owned by the decoder (boxed: its address is
/// the parser's user data).
struct State {
    api: Arc<Api>,
    ctx: Arc<CudaContext>,
    stream: Stream,
    pool: BufferPool,
    decoder: sdk::CUvideodecoder,
    format: Option<(u32, u32, bool)>,
    ready: Vec<DecodedFrame>,
    error: Option<NativeError>,
}

/// An NVDEC decoder for one stream.
pub struct NvdecDecoder {
    state: Box<State>,
    parser: sdk::CUvideoparser,
    siting: ChromaSiting,
}

impl std::fmt::Debug for NvdecDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvdecDecoder").finish_non_exhaustive()
    }
}

// SAFETY: the parser and decoder are driven from one thread at a time
// (`&mut self`), with the context pushed for every call.
unsafe impl Send for NvdecDecoder {}

impl NvdecDecoder {
    /// A decoder for `codec` (Annex B input for H.264/HEVC).
    pub fn new(ctx: &Arc<CudaContext>, codec: Codec, siting: ChromaSiting) -> Result<Self> {
        let api = api()?;
        let stream = ctx.stream()?;
        let mut state = Box::new(State {
            api: Arc::clone(&api),
            ctx: Arc::clone(ctx),
            stream,
            pool: BufferPool::new(Arc::clone(ctx), 8),
            decoder: std::ptr::null_mut(),
            format: None,
            ready: Vec::new(),
            error: None,
        });
        let mut params = sdk::CUVIDPARSERPARAMS {
            CodecType: codec.raw(),
            ulMaxNumDecodeSurfaces: 1,
            ulMaxDisplayDelay: 2,
            pUserData: (&raw mut *state).cast(),
            pfnSequenceCallback: Some(on_sequence),
            pfnDecodePicture: Some(on_decode),
            pfnDisplayPicture: Some(on_display),
            ..Default::default()
        };
        let mut parser: sdk::CUvideoparser = std::ptr::null_mut();
        let _g = ctx.push()?;
        // SAFETY: `params` is complete; the user data is the boxed state,
        // whose address is stable and outlives the parser (Drop destroys
        // the parser first).
        let r = unsafe { (api.create_parser)(&mut parser, &mut params) };
        ctx.cuda().check("cuvidCreateVideoParser", r)?;
        Ok(NvdecDecoder {
            state,
            parser,
            siting,
        })
    }

    /// The chroma siting the scaler should assume for this stream.
    pub fn siting(&self) -> ChromaSiting {
        self.siting
    }

    /// Feeds one access unit (`None`: end of stream) and returns the
    /// pictures now ready, in display order.
    pub fn decode(&mut self, data: Option<&[u8]>, pts: i64) -> Result<Vec<DecodedFrame>> {
        let mut packet = sdk::CUVIDSOURCEDATAPACKET::default();
        match data {
            Some(bytes) => {
                packet.payload = bytes.as_ptr();
                packet.payload_size = bytes.len() as _;
                packet.flags = sdk::CUVID_PKT_TIMESTAMP as _;
                packet.timestamp = pts;
            }
            None => packet.flags = sdk::CUVID_PKT_ENDOFSTREAM as _,
        }
        let ctx = Arc::clone(&self.state.ctx);
        let _g = ctx.push()?;
        // SAFETY: the packet points at `bytes` for the call's duration; the
        // callbacks run inside this call on this thread with our state.
        let r = unsafe { (self.state.api.parse)(self.parser, &mut packet) };
        if let Some(e) = self.state.error.take() {
            return Err(e);
        }
        ctx.cuda().check("cuvidParseVideoData", r)?;
        self.state.stream.synchronize()?;
        Ok(std::mem::take(&mut self.state.ready))
    }

    /// Returns a surface to the pool.
    pub fn recycle(&self, frame: DecodedFrame) {
        self.state.pool.give(frame.buffer);
    }
}

impl Drop for NvdecDecoder {
    fn drop(&mut self) {
        let Ok(_g) = self.state.ctx.push() else {
            return;
        };
        // SAFETY: the parser is ours; after this no callback can run.
        unsafe { (self.state.api.destroy_parser)(self.parser) };
        if !self.state.decoder.is_null() {
            // SAFETY: the decoder is ours and no frame is mapped.
            unsafe { (self.state.api.destroy_decoder)(self.state.decoder) };
        }
    }
}

/// # Safety
/// `user` must be the `State` given at parser creation.
unsafe fn state<'a>(user: *mut c_void) -> &'a mut State {
    // SAFETY: the parser hands back the pointer we gave it, to a State
    // that outlives it, and only during `cuvidParseVideoData` on our thread.
    unsafe { &mut *user.cast::<State>() }
}

unsafe extern "C" fn on_sequence(user: *mut c_void, format: *mut sdk::CUVIDEOFORMAT) -> c_int {
    // SAFETY: see `state`; `format` is valid for the callback.
    let (st, fmt) = unsafe { (state(user), &*format) };
    match create_decoder(st, fmt) {
        Ok(surfaces) => surfaces as c_int,
        Err(e) => {
            st.error = Some(e);
            0
        }
    }
}

fn create_decoder(st: &mut State, fmt: &sdk::CUVIDEOFORMAT) -> Result<u32> {
    let ten_bit = fmt.bit_depth_luma_minus8 > 0;
    let width = (fmt.display_area.right - fmt.display_area.left).max(0) as u32;
    let height = (fmt.display_area.bottom - fmt.display_area.top).max(0) as u32;
    if fmt.chroma_format != sdk::cudaVideoChromaFormat_420 {
        return Err(NativeError::Unsupported(
            "NVDEC path takes 4:2:0 sources only; this one is 4:2:2 or 4:4:4".to_owned(),
        ));
    }
    let surfaces = u32::from(fmt.min_num_decode_surfaces).max(1) + 4;
    if !st.decoder.is_null() {
        if st.format == Some((width, height, ten_bit)) {
            return Ok(surfaces);
        }
        // SAFETY: a new sequence with another format: the old decoder has
        // no mapped frames (we unmap in the display callback).
        unsafe { (st.api.destroy_decoder)(st.decoder) };
        st.decoder = std::ptr::null_mut();
    }
    let mut info = sdk::CUVIDDECODECREATEINFO {
        ulWidth: fmt.coded_width as _,
        ulHeight: fmt.coded_height as _,
        ulNumDecodeSurfaces: surfaces as _,
        CodecType: fmt.codec,
        ChromaFormat: fmt.chroma_format,
        ulCreationFlags: sdk::cudaVideoCreate_PreferCUVID as _,
        bitDepthMinus8: fmt.bit_depth_luma_minus8 as _,
        ulMaxWidth: fmt.coded_width as _,
        ulMaxHeight: fmt.coded_height as _,
        OutputFormat: if ten_bit {
            sdk::cudaVideoSurfaceFormat_P016
        } else {
            sdk::cudaVideoSurfaceFormat_NV12
        },
        DeinterlaceMode: sdk::cudaVideoDeinterlaceMode_Weave,
        ulTargetWidth: width as _,
        ulTargetHeight: height as _,
        ulNumOutputSurfaces: 2,
        ..Default::default()
    };
    info.display_area.left = fmt.display_area.left as i16;
    info.display_area.top = fmt.display_area.top as i16;
    info.display_area.right = fmt.display_area.right as i16;
    info.display_area.bottom = fmt.display_area.bottom as i16;
    // SAFETY: `info` is complete; the decoder is destroyed in Drop.
    let r = unsafe { (st.api.create_decoder)(&mut st.decoder, &mut info) };
    st.ctx.cuda().check("cuvidCreateDecoder", r)?;
    st.format = Some((width, height, ten_bit));
    Ok(surfaces)
}

unsafe extern "C" fn on_decode(user: *mut c_void, pic: *mut sdk::CUVIDPICPARAMS) -> c_int {
    // SAFETY: see `state`.
    let st = unsafe { state(user) };
    if st.decoder.is_null() {
        st.error = Some(NativeError::Unsupported(
            "NVDEC: picture before any sequence header".to_owned(),
        ));
        return 0;
    }
    // SAFETY: the parser's picture parameters, valid for the callback.
    let r = unsafe { (st.api.decode_picture)(st.decoder, pic) };
    match st.ctx.cuda().check("cuvidDecodePicture", r) {
        Ok(()) => 1,
        Err(e) => {
            st.error = Some(e);
            0
        }
    }
}

unsafe extern "C" fn on_display(user: *mut c_void, disp: *mut sdk::CUVIDPARSERDISPINFO) -> c_int {
    // SAFETY: see `state`.
    let st = unsafe { state(user) };
    if disp.is_null() {
        return 1; // end of stream
    }
    // SAFETY: valid for the callback.
    let disp = unsafe { &*disp };
    match copy_out(st, disp) {
        Ok(frame) => {
            st.ready.push(frame);
            1
        }
        Err(e) => {
            st.error = Some(e);
            0
        }
    }
}

fn copy_out(st: &mut State, disp: &sdk::CUVIDPARSERDISPINFO) -> Result<DecodedFrame> {
    let (width, height, ten_bit) = st
        .format
        .ok_or_else(|| NativeError::Unsupported("NVDEC: display before sequence".to_owned()))?;
    let mut params = sdk::CUVIDPROCPARAMS {
        progressive_frame: disp.progressive_frame,
        top_field_first: disp.top_field_first,
        output_stream: st.stream.raw(),
        ..Default::default()
    };
    let mut ptr: u64 = 0;
    let mut pitch: c_uint = 0;
    // SAFETY: maps a decoded picture of our decoder; unmapped below.
    let r = unsafe {
        (st.api.map)(
            st.decoder,
            disp.picture_index,
            &mut ptr,
            &mut pitch,
            &mut params,
        )
    };
    st.ctx.cuda().check("cuvidMapVideoFrame64", r)?;
    let bpp = if ten_bit { 2 } else { 1 };
    let row = width as usize * bpp;
    let rows_chroma = height.div_ceil(2) as usize;
    let buffer = st.pool.take(row * (height as usize + rows_chroma));
    let copied = buffer.and_then(|buffer| {
        st.stream.copy_2d(
            ptr,
            pitch as usize,
            buffer.device_ptr(),
            row,
            row,
            height as usize,
        )?;
        // The mapped chroma plane starts after the target height rounded
        // up to even (as in NVIDIA's NvDecoder sample).
        let src_chroma = ptr + u64::from(pitch) * u64::from((height + 1) & !1);
        st.stream.copy_2d(
            src_chroma,
            pitch as usize,
            buffer.device_ptr() + (row * height as usize) as u64,
            row,
            row,
            rows_chroma,
        )?;
        st.stream.synchronize()?;
        Ok(buffer)
    });
    // SAFETY: balances the map above (after the copies finished).
    let r = unsafe { (st.api.unmap)(st.decoder, ptr) };
    let buffer = copied?;
    st.ctx.cuda().check("cuvidUnmapVideoFrame64", r)?;
    Ok(DecodedFrame {
        surface: DeviceSurface {
            ptr: buffer.device_ptr(),
            pitch: row,
            chroma_row: height as usize,
            width,
            height,
            ten_bit,
        },
        buffer,
        pts: disp.timestamp,
    })
}

/// Whether NVDEC's library is present (without touching a device).
pub fn library_error() -> Option<NativeError> {
    api().err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error() {
        let e = load(&["libnvcuvid-vodfarm-absent.so.1"]).expect_err("absent");
        let text = e.to_string();
        assert!(
            text.starts_with("libnvcuvid.so.1 could not be loaded"),
            "{text}"
        );
        assert!(
            text.contains("NVIDIA_DRIVER_CAPABILITIES=compute,video,utility"),
            "{text}"
        );
    }

    #[test]
    fn codec_names() {
        assert_eq!(Codec::ALL.map(Codec::name), ["h264", "hevc", "vp9", "av1"]);
    }
}
