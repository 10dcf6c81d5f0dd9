//! The GPU path of the pipeline: which stage runs where ([`plan`]), the
//! `--probe` report ([`report`]), and the frame conversions between libav
//! and the device layouts ([`frames`]). The device work itself lives in
//! `vodfarm-native` (NVDEC, the fused CUDA scaler, NVENC).

pub mod frames;
