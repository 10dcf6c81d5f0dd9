//! NVENC (`libnvidia-encode.so.1`, loaded at run time): an H.264 encode
//! session fed with CUDA device pointers (the scaler's rung buffers are
//! registered once and mapped per frame: no copy), IDR frames forced on
//! segment boundaries, and the session's caps.

use crate::cuda::{CudaContext, DeviceBuffer};
use crate::error::{NativeError, Result};
use crate::loader;
use crate::sdk;
use libloading::Library;
use std::ffi::{c_void, CStr};
use std::sync::{Arc, OnceLock};

const LIB: &str = "libnvidia-encode.so.1";

/// `NVENCAPI_STRUCT_VERSION(v)` of the SDK headers (a function-like macro
/// bindgen cannot translate).
pub const fn struct_version(v: u32) -> u32 {
    sdk::NVENCAPI_VERSION | (v << 16) | (0x7 << 28)
}

const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> sdk::GUID {
    sdk::GUID {
        Data1: d1,
        Data2: d2,
        Data3: d3,
        Data4: d4,
    }
}

/// `NV_ENC_CODEC_H264_GUID`.
const CODEC_H264: sdk::GUID = guid(
    0x6bc82762,
    0x4e63,
    0x4ca4,
    [0xaa, 0x85, 0x1e, 0x50, 0xf3, 0x21, 0xf6, 0xbf],
);
/// `NV_ENC_CODEC_HEVC_GUID`.
const CODEC_HEVC: sdk::GUID = guid(
    0x790cdc88,
    0x4522,
    0x4d7b,
    [0x94, 0x25, 0xbd, 0xa9, 0x97, 0x5f, 0x76, 0x03],
);
/// `NV_ENC_H264_PROFILE_HIGH_GUID`.
const PROFILE_HIGH: sdk::GUID = guid(
    0xe7cbc309,
    0x4f7a,
    0x4b89,
    [0xaf, 0x2a, 0xd5, 0x37, 0xc9, 0x2b, 0xe3, 0x10],
);
/// `NV_ENC_PRESET_P5_GUID` (slower, better: the VOD trade-off).
const PRESET_P5: sdk::GUID = guid(
    0x21c6e6b4,
    0x297a,
    0x4cba,
    [0x99, 0x8f, 0xb6, 0xcb, 0xde, 0x72, 0xad, 0xe3],
);

fn same_guid(a: &sdk::GUID, b: &sdk::GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// The name and meaning of an `NVENCSTATUS`.
pub fn status_name(code: u32) -> (&'static str, &'static str) {
    match code {
        0 => ("NV_ENC_SUCCESS", "success"),
        1 => ("NV_ENC_ERR_NO_ENCODE_DEVICE", "no encode-capable device was found"),
        2 => ("NV_ENC_ERR_UNSUPPORTED_DEVICE", "this device cannot encode (data-centre GPUs such as the A100/H100/H200 have no NVENC)"),
        3 => ("NV_ENC_ERR_INVALID_ENCODERDEVICE", "the device passed to the encoder is not valid"),
        4 => ("NV_ENC_ERR_INVALID_DEVICE", "the device passed to the API call is not valid"),
        5 => ("NV_ENC_ERR_DEVICE_NOT_EXIST", "the device no longer exists (driver reset or hot unplug)"),
        6 => ("NV_ENC_ERR_INVALID_PTR", "a pointer passed to the encoder is not valid"),
        7 => ("NV_ENC_ERR_INVALID_EVENT", "the completion event is not valid"),
        8 => ("NV_ENC_ERR_INVALID_PARAM", "a parameter is out of range for this encoder"),
        9 => ("NV_ENC_ERR_INVALID_CALL", "the call is not valid in the encoder's current state"),
        10 => ("NV_ENC_ERR_OUT_OF_MEMORY", "the encoder ran out of memory; the driver's session limit (consumer cards) is the usual cause"),
        11 => ("NV_ENC_ERR_ENCODER_NOT_INITIALIZED", "the encoder was not initialised"),
        12 => ("NV_ENC_ERR_UNSUPPORTED_PARAM", "a parameter is not supported by this GPU"),
        13 => ("NV_ENC_ERR_LOCK_BUSY", "the bitstream is still being encoded"),
        14 => ("NV_ENC_ERR_NOT_ENOUGH_BUFFER", "the output buffer is too small"),
        15 => ("NV_ENC_ERR_INVALID_VERSION", "the driver does not support this API version (Video Codec SDK 11.1 needs driver 470 or newer)"),
        16 => ("NV_ENC_ERR_MAP_FAILED", "mapping the input resource failed"),
        17 => ("NV_ENC_ERR_NEED_MORE_INPUT", "the encoder needs more input before it produces output"),
        18 => ("NV_ENC_ERR_ENCODER_BUSY", "the encoder is busy"),
        19 => ("NV_ENC_ERR_EVENT_NOT_REGISTERD", "the completion event was not registered"),
        20 => ("NV_ENC_ERR_GENERIC", "unknown encoder failure"),
        21 => ("NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY", "the client key is not valid for this feature"),
        22 => ("NV_ENC_ERR_UNIMPLEMENTED", "the feature is not implemented by this driver"),
        23 => ("NV_ENC_ERR_RESOURCE_REGISTER_FAILED", "registering the input resource failed"),
        24 => ("NV_ENC_ERR_RESOURCE_NOT_REGISTERED", "the input resource is not registered"),
        25 => ("NV_ENC_ERR_RESOURCE_NOT_MAPPED", "the input resource is not mapped"),
        _ => ("NV_ENC_ERR_UNKNOWN", "a status this SDK version does not know"),
    }
}

fn status_error(call: &'static str, code: u32, detail: Option<String>) -> NativeError {
    let (name, meaning) = status_name(code);
    let message = match detail {
        Some(d) if !d.trim().is_empty() => format!("{meaning} ({})", d.trim()),
        _ => meaning.to_owned(),
    };
    NativeError::Nvenc {
        call,
        code,
        name,
        message,
    }
}

struct Api {
    _lib: Library,
    list: sdk::NV_ENCODE_API_FUNCTION_LIST,
}

// SAFETY: the function list is a table of plain function pointers.
unsafe impl Send for Api {}
// SAFETY: as above; it is never written after loading.
unsafe impl Sync for Api {}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

static API: OnceLock<std::result::Result<Arc<Api>, NativeError>> = OnceLock::new();

type GetMaxVersion = unsafe extern "C" fn(*mut u32) -> sdk::NVENCSTATUS;
type CreateInstance =
    unsafe extern "C" fn(*mut sdk::NV_ENCODE_API_FUNCTION_LIST) -> sdk::NVENCSTATUS;

fn api() -> Result<Arc<Api>> {
    API.get_or_init(|| load(&["libnvidia-encode.so.1", "libnvidia-encode.so"]).map(Arc::new))
        .clone()
}

fn load(candidates: &[&str]) -> Result<Api> {
    let lib = loader::open(LIB, candidates, loader::DRIVER_HINT)?;
    let get_max: GetMaxVersion = loader::resolve!(&lib, LIB, "NvEncodeAPIGetMaxSupportedVersion");
    let create: CreateInstance = loader::resolve!(&lib, LIB, "NvEncodeAPICreateInstance");
    let mut max_version = 0u32;
    // SAFETY: writes one u32.
    let r = unsafe { get_max(&mut max_version) };
    if r != 0 {
        return Err(status_error("NvEncodeAPIGetMaxSupportedVersion", r, None));
    }
    let ours = (sdk::NVENCAPI_MAJOR_VERSION << 4) | sdk::NVENCAPI_MINOR_VERSION;
    if max_version < ours {
        return Err(status_error(
            "NvEncodeAPIGetMaxSupportedVersion",
            sdk::NV_ENC_ERR_INVALID_VERSION,
            Some(format!(
                "the driver supports NVENC API {}.{}, vodfarm needs {}.{}",
                max_version >> 4,
                max_version & 0xf,
                sdk::NVENCAPI_MAJOR_VERSION,
                sdk::NVENCAPI_MINOR_VERSION
            )),
        ));
    }
    let mut list = sdk::NV_ENCODE_API_FUNCTION_LIST {
        version: struct_version(2),
        ..Default::default()
    };
    // SAFETY: fills the versioned function table we own.
    let r = unsafe { create(&mut list) };
    if r != 0 {
        return Err(status_error("NvEncodeAPICreateInstance", r, None));
    }
    Ok(Api { _lib: lib, list })
}

/// Resolves one entry of the function list or says the driver lacks it.
macro_rules! func {
    ($api:expr, $name:ident) => {
        match $api.list.$name {
            Some(f) => f,
            None => {
                return Err(NativeError::SymbolMissing {
                    library: LIB,
                    symbol: stringify!($name),
                })
            }
        }
    };
}

/// What one device's NVENC can do for H.264.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderCaps {
    /// Codecs the engine lists (`h264`, `hevc`).
    pub codecs: Vec<String>,
    /// Largest H.264 width.
    pub max_width: u32,
    /// Largest H.264 height.
    pub max_height: u32,
    /// NVENC engines on the device.
    pub engines: u32,
    /// 10-bit encode supported.
    pub ten_bit: bool,
}

/// H.264 settings of one rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeSettings {
    /// Width (even).
    pub width: u32,
    /// Height (even).
    pub height: u32,
    /// Frames per second as a fraction.
    pub fps: (u32, u32),
    /// Average bitrate, bits per second.
    pub bitrate: u32,
    /// Peak bitrate, bits per second.
    pub max_bitrate: u32,
    /// Frames between IDRs when no segment boundary forces one sooner.
    pub gop: u32,
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket {
    /// Annex B bytes (SPS/PPS repeated before each IDR).
    pub data: Vec<u8>,
    /// The input's timestamp.
    pub pts: u64,
    /// An IDR frame.
    pub keyframe: bool,
}

/// An NVENC H.264 session on one CUDA context.
pub struct NvencSession {
    api: Arc<Api>,
    ctx: Arc<CudaContext>,
    encoder: *mut c_void,
    bitstream: sdk::NV_ENC_OUTPUT_PTR,
    /// (device pointer, registration) of every input buffer seen.
    registered: Vec<(u64, sdk::NV_ENC_REGISTERED_PTR)>,
    settings: EncodeSettings,
}

impl std::fmt::Debug for NvencSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencSession")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

// SAFETY: an NVENC session may be driven from any one thread at a time
// (we take &mut self for every call) with its CUDA context current.
unsafe impl Send for NvencSession {}

fn open_session(api: &Api, ctx: &CudaContext) -> Result<*mut c_void> {
    let open = func!(api, nvEncOpenEncodeSessionEx);
    let mut params = sdk::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
        version: struct_version(1),
        deviceType: sdk::NV_ENC_DEVICE_TYPE_CUDA,
        device: ctx.raw().cast(),
        apiVersion: sdk::NVENCAPI_VERSION,
        ..Default::default()
    };
    let mut encoder: *mut c_void = std::ptr::null_mut();
    // SAFETY: params are versioned and point at a live, retained context.
    let r = unsafe { open(&mut params, &mut encoder) };
    if r != 0 {
        return Err(status_error("nvEncOpenEncodeSessionEx", r, None));
    }
    Ok(encoder)
}

impl NvencSession {
    /// Reads what the device's encoder can do (opens and closes a session).
    pub fn caps(ctx: &Arc<CudaContext>) -> Result<EncoderCaps> {
        let api = api()?;
        let _g = ctx.push()?;
        let encoder = open_session(&api, ctx)?;
        let result = read_caps(&api, encoder);
        if let Some(destroy) = api.list.nvEncDestroyEncoder {
            // SAFETY: the session opened above, used by nothing else.
            unsafe { destroy(encoder) };
        }
        result
    }

    /// Opens and initialises an H.264 High session for `settings`.
    pub fn new(ctx: &Arc<CudaContext>, settings: EncodeSettings) -> Result<Self> {
        let api = api()?;
        let _g = ctx.push()?;
        let encoder = open_session(&api, ctx)?;
        let mut session = NvencSession {
            api,
            ctx: Arc::clone(ctx),
            encoder,
            bitstream: std::ptr::null_mut(),
            registered: Vec::new(),
            settings,
        };
        session.initialize()?;
        Ok(session)
    }

    fn last_error(&self) -> Option<String> {
        let f = self.api.list.nvEncGetLastErrorString?;
        // SAFETY: returns a NUL-terminated string owned by the session.
        let p = unsafe { f(self.encoder) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated, read before the next call.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    fn check(&self, call: &'static str, r: sdk::NVENCSTATUS) -> Result<()> {
        if r == 0 {
            Ok(())
        } else {
            Err(status_error(call, r, self.last_error()))
        }
    }

    fn initialize(&mut self) -> Result<()> {
        let s = self.settings;
        let preset = func!(self.api, nvEncGetEncodePresetConfigEx);
        let mut preset_config = sdk::NV_ENC_PRESET_CONFIG {
            version: struct_version(4) | (1 << 31),
            presetCfg: sdk::NV_ENC_CONFIG {
                version: struct_version(7) | (1 << 31),
                ..Default::default()
            },
            ..Default::default()
        };
        // SAFETY: versioned in/out structure owned here.
        let r = unsafe {
            preset(
                self.encoder,
                CODEC_H264,
                PRESET_P5,
                sdk::NV_ENC_TUNING_INFO_HIGH_QUALITY,
                &mut preset_config,
            )
        };
        self.check("nvEncGetEncodePresetConfigEx", r)?;
        let mut config = preset_config.presetCfg;
        config.version = struct_version(7) | (1 << 31);
        config.profileGUID = PROFILE_HIGH;
        config.gopLength = s.gop;
        config.frameIntervalP = 1; // no B-frames: output follows input at once
        config.rcParams.rateControlMode = sdk::NV_ENC_PARAMS_RC_VBR;
        config.rcParams.averageBitRate = s.bitrate;
        config.rcParams.maxBitRate = s.max_bitrate;
        config.rcParams.vbvBufferSize = s.max_bitrate;
        // SAFETY: the union's H.264 member is the one in use (codec H.264).
        unsafe {
            config.encodeCodecConfig.h264Config.idrPeriod = s.gop;
            config.encodeCodecConfig.h264Config.set_repeatSPSPPS(1);
        }
        let mut init = sdk::NV_ENC_INITIALIZE_PARAMS {
            version: struct_version(5) | (1 << 31),
            encodeGUID: CODEC_H264,
            presetGUID: PRESET_P5,
            encodeWidth: s.width,
            encodeHeight: s.height,
            darWidth: s.width,
            darHeight: s.height,
            frameRateNum: s.fps.0,
            frameRateDen: s.fps.1.max(1),
            enablePTD: 1,
            encodeConfig: &mut config,
            maxEncodeWidth: s.width,
            maxEncodeHeight: s.height,
            tuningInfo: sdk::NV_ENC_TUNING_INFO_HIGH_QUALITY,
            ..Default::default()
        };
        let initialize = func!(self.api, nvEncInitializeEncoder);
        // SAFETY: `init` and the config it points to live across the call.
        let r = unsafe { initialize(self.encoder, &mut init) };
        self.check("nvEncInitializeEncoder", r)?;
        let create = func!(self.api, nvEncCreateBitstreamBuffer);
        let mut buffer = sdk::NV_ENC_CREATE_BITSTREAM_BUFFER {
            version: struct_version(1),
            ..Default::default()
        };
        // SAFETY: versioned out structure; the buffer is destroyed in Drop.
        let r = unsafe { create(self.encoder, &mut buffer) };
        self.check("nvEncCreateBitstreamBuffer", r)?;
        self.bitstream = buffer.bitstreamBuffer;
        Ok(())
    }

    fn registration(&mut self, input: &DeviceBuffer) -> Result<sdk::NV_ENC_REGISTERED_PTR> {
        let ptr = input.device_ptr();
        if let Some((_, reg)) = self.registered.iter().find(|(p, _)| *p == ptr) {
            return Ok(*reg);
        }
        let register = func!(self.api, nvEncRegisterResource);
        let mut params = sdk::NV_ENC_REGISTER_RESOURCE {
            version: struct_version(3),
            resourceType: sdk::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR,
            width: self.settings.width,
            height: self.settings.height,
            pitch: self.settings.width,
            resourceToRegister: ptr as *mut c_void,
            bufferFormat: sdk::NV_ENC_BUFFER_FORMAT_IYUV,
            bufferUsage: sdk::NV_ENC_INPUT_IMAGE,
            ..Default::default()
        };
        // SAFETY: the device pointer is a live allocation holding one IYUV
        // picture of the session's size (checked by `encode`); it stays
        // registered until Drop, and callers keep pool buffers alive longer
        // than the session.
        let r = unsafe { register(self.encoder, &mut params) };
        self.check("nvEncRegisterResource", r)?;
        self.registered.push((ptr, params.registeredResource));
        Ok(params.registeredResource)
    }

    /// Encodes one planar 4:2:0 picture in device memory (a rung written by
    /// the fused scaler); `force_idr` starts a segment. Returns the packet
    /// (no B-frames, so every input gives one output).
    pub fn encode(
        &mut self,
        input: &DeviceBuffer,
        pts: u64,
        force_idr: bool,
    ) -> Result<Vec<EncodedPacket>> {
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        if input.len() < w * h * 3 / 2 {
            return Err(NativeError::Unsupported(format!(
                "NVENC input of {} bytes is smaller than a {w}x{h} picture",
                input.len()
            )));
        }
        let ctx = Arc::clone(&self.ctx);
        let _g = ctx.push()?;
        let registered = self.registration(input)?;
        let map = func!(self.api, nvEncMapInputResource);
        let unmap = func!(self.api, nvEncUnmapInputResource);
        let mut mapping = sdk::NV_ENC_MAP_INPUT_RESOURCE {
            version: struct_version(4),
            registeredResource: registered,
            ..Default::default()
        };
        // SAFETY: maps a resource registered on this session.
        let r = unsafe { map(self.encoder, &mut mapping) };
        self.check("nvEncMapInputResource", r)?;
        let mut flags = 0;
        if force_idr {
            flags |= sdk::NV_ENC_PIC_FLAG_FORCEIDR | sdk::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS;
        }
        let mut pic = sdk::NV_ENC_PIC_PARAMS {
            version: struct_version(4) | (1 << 31),
            inputWidth: self.settings.width,
            inputHeight: self.settings.height,
            inputPitch: self.settings.width,
            encodePicFlags: flags,
            inputTimeStamp: pts,
            inputBuffer: mapping.mappedResource,
            outputBitstream: self.bitstream,
            bufferFmt: mapping.mappedBufferFmt,
            pictureStruct: sdk::NV_ENC_PIC_STRUCT_FRAME,
            ..Default::default()
        };
        let result = self.submit(&mut pic);
        // SAFETY: unmaps what was mapped above, after the (synchronous) encode.
        let r = unsafe { unmap(self.encoder, mapping.mappedResource) };
        let packets = result?;
        self.check("nvEncUnmapInputResource", r)?;
        Ok(packets)
    }

    /// Flushes the encoder at the end of the stream.
    pub fn finish(&mut self) -> Result<Vec<EncodedPacket>> {
        let ctx = Arc::clone(&self.ctx);
        let _g = ctx.push()?;
        let mut pic = sdk::NV_ENC_PIC_PARAMS {
            version: struct_version(4) | (1 << 31),
            encodePicFlags: sdk::NV_ENC_PIC_FLAG_EOS,
            ..Default::default()
        };
        self.submit(&mut pic)
    }

    fn submit(&mut self, pic: &mut sdk::NV_ENC_PIC_PARAMS) -> Result<Vec<EncodedPacket>> {
        let encode = func!(self.api, nvEncEncodePicture);
        // SAFETY: `pic` is versioned and its input/output handles belong to
        // this session.
        let r = unsafe { encode(self.encoder, pic) };
        if r == sdk::NV_ENC_ERR_NEED_MORE_INPUT || pic.inputBuffer.is_null() {
            return Ok(Vec::new());
        }
        self.check("nvEncEncodePicture", r)?;
        let lock = func!(self.api, nvEncLockBitstream);
        let unlock = func!(self.api, nvEncUnlockBitstream);
        let mut locked = sdk::NV_ENC_LOCK_BITSTREAM {
            version: struct_version(1),
            outputBitstream: self.bitstream,
            ..Default::default()
        };
        // SAFETY: locks our bitstream buffer (waits for the encode).
        let r = unsafe { lock(self.encoder, &mut locked) };
        self.check("nvEncLockBitstream", r)?;
        let data = if locked.bitstreamBufferPtr.is_null() {
            Vec::new()
        } else {
            // SAFETY: while locked, the driver guarantees
            // `bitstreamSizeInBytes` readable bytes at the pointer.
            unsafe {
                std::slice::from_raw_parts(
                    locked.bitstreamBufferPtr.cast::<u8>(),
                    locked.bitstreamSizeInBytes as usize,
                )
            }
            .to_vec()
        };
        // SAFETY: unlocks what was locked above; `data` is our copy.
        let r = unsafe { unlock(self.encoder, self.bitstream) };
        self.check("nvEncUnlockBitstream", r)?;
        Ok(vec![EncodedPacket {
            data,
            pts: locked.outputTimeStamp,
            keyframe: locked.pictureType == sdk::NV_ENC_PIC_TYPE_IDR,
        }])
    }
}

fn read_caps(api: &Api, encoder: *mut c_void) -> Result<EncoderCaps> {
    let count_fn = func!(api, nvEncGetEncodeGUIDCount);
    let guids_fn = func!(api, nvEncGetEncodeGUIDs);
    let caps_fn = func!(api, nvEncGetEncodeCaps);
    let mut count = 0u32;
    // SAFETY: writes one u32 for a live session.
    let r = unsafe { count_fn(encoder, &mut count) };
    if r != 0 {
        return Err(status_error("nvEncGetEncodeGUIDCount", r, None));
    }
    let mut guids = vec![sdk::GUID::default(); count as usize];
    let mut written = 0u32;
    // SAFETY: the array holds `count` GUIDs, as passed.
    let r = unsafe { guids_fn(encoder, guids.as_mut_ptr(), count, &mut written) };
    if r != 0 {
        return Err(status_error("nvEncGetEncodeGUIDs", r, None));
    }
    guids.truncate(written as usize);
    let mut codecs = Vec::new();
    for g in &guids {
        if same_guid(g, &CODEC_H264) {
            codecs.push("h264".to_owned());
        } else if same_guid(g, &CODEC_HEVC) {
            codecs.push("hevc".to_owned());
        } else {
            codecs.push("av1".to_owned());
        }
    }
    let cap = |which: sdk::NV_ENC_CAPS| -> Result<u32> {
        let mut param = sdk::NV_ENC_CAPS_PARAM {
            version: struct_version(1),
            capsToQuery: which,
            ..Default::default()
        };
        let mut value = 0i32;
        // SAFETY: versioned in structure, one int out, live session.
        let r = unsafe { caps_fn(encoder, CODEC_H264, &mut param, &mut value) };
        if r != 0 {
            return Err(status_error("nvEncGetEncodeCaps", r, None));
        }
        Ok(u32::try_from(value).unwrap_or(0))
    };
    Ok(EncoderCaps {
        codecs,
        max_width: cap(sdk::NV_ENC_CAPS_WIDTH_MAX)?,
        max_height: cap(sdk::NV_ENC_CAPS_HEIGHT_MAX)?,
        engines: cap(sdk::NV_ENC_CAPS_NUM_ENCODER_ENGINES)?,
        ten_bit: cap(sdk::NV_ENC_CAPS_SUPPORT_10BIT_ENCODE)? != 0,
    })
}

impl Drop for NvencSession {
    fn drop(&mut self) {
        let Ok(_g) = self.ctx.push() else { return };
        if let Some(unregister) = self.api.list.nvEncUnregisterResource {
            for (_, reg) in self.registered.drain(..) {
                // SAFETY: registrations of this session, no longer mapped.
                unsafe { unregister(self.encoder, reg) };
            }
        }
        if let (Some(destroy_bs), false) = (
            self.api.list.nvEncDestroyBitstreamBuffer,
            self.bitstream.is_null(),
        ) {
            // SAFETY: our bitstream buffer, unlocked.
            unsafe { destroy_bs(self.encoder, self.bitstream) };
        }
        if let Some(destroy) = self.api.list.nvEncDestroyEncoder {
            // SAFETY: the session is ours and nothing uses it after this.
            unsafe { destroy(self.encoder) };
        }
    }
}

/// Whether NVENC's library is present (without opening a session).
pub fn library_error() -> Option<NativeError> {
    api().err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_follow_the_header() {
        assert_eq!(status_name(sdk::NV_ENC_SUCCESS).0, "NV_ENC_SUCCESS");
        assert_eq!(
            status_name(sdk::NV_ENC_ERR_UNSUPPORTED_DEVICE).0,
            "NV_ENC_ERR_UNSUPPORTED_DEVICE"
        );
        assert_eq!(
            status_name(sdk::NV_ENC_ERR_OUT_OF_MEMORY).0,
            "NV_ENC_ERR_OUT_OF_MEMORY"
        );
        assert_eq!(
            status_name(sdk::NV_ENC_ERR_RESOURCE_NOT_MAPPED).0,
            "NV_ENC_ERR_RESOURCE_NOT_MAPPED"
        );
        let e = status_error(
            "nvEncOpenEncodeSessionEx",
            sdk::NV_ENC_ERR_UNSUPPORTED_DEVICE,
            None,
        );
        assert_eq!(
            e.to_string(),
            "nvEncOpenEncodeSessionEx failed with NV_ENC_ERR_UNSUPPORTED_DEVICE (2): this device cannot encode (data-centre GPUs such as the A100/H100/H200 have no NVENC)"
        );
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let e = load(&["libnvidia-encode-vodfarm-absent.so.1"]).expect_err("absent");
        assert!(
            e.to_string()
                .starts_with("libnvidia-encode.so.1 could not be loaded"),
            "{e}"
        );
    }

    #[test]
    fn guids_are_the_headers() {
        assert_eq!(CODEC_H264.Data1, 0x6bc82762);
        assert!(!same_guid(&CODEC_H264, &CODEC_HEVC));
    }
}
