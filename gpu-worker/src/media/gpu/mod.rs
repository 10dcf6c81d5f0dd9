//! The GPU path of the pipeline: which stage runs where ([`plan`]), the
//! `--probe` report ([`report`]), the frame conversions between libav and
//! the device layouts ([`frames`]), and the per-stage frame counters
//! ([`stage_metrics`]). The device work itself lives in `vodfarm-native`
//! (NVDEC, the fused CUDA scaler, NVENC).

pub mod annexb;
pub mod frames;
pub(crate) mod front;
pub mod plan;
pub mod report;
pub mod select;
pub mod stage_metrics;
