//! `vodfarm_worker_stage_frames_total{stage,device}` and
//! `vodfarm_worker_gpu_memory_used_bytes{device}`: where the frames went
//! and how much device memory the worker's GPU holds.

use super::plan::{Device, StagePlan};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, Mutex};
use vodfarm_native::cuda::CudaContext;

/// The per-stage counters, registered in the worker's registry.
#[derive(Debug, Clone)]
pub struct StageMetrics {
    frames: IntCounterVec,
    gpu_memory: IntGaugeVec,
    /// Contexts of the GPUs the plan uses (retained once, so a scrape
    /// neither creates nor tears down a context).
    watched: Arc<Mutex<Vec<Arc<CudaContext>>>>,
}

impl StageMetrics {
    /// Creates and registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let frames = IntCounterVec::new(
            Opts::new(
                "vodfarm_worker_stage_frames_total",
                "Frames through each pipeline stage, by the device that ran it (cpu, gpu0, ...)",
            ),
            &["stage", "device"],
        )?;
        let gpu_memory = IntGaugeVec::new(
            Opts::new(
                "vodfarm_worker_gpu_memory_used_bytes",
                "Device memory in use on each GPU (total minus free, all processes)",
            ),
            &["device"],
        )?;
        registry.register(Box::new(frames.clone()))?;
        registry.register(Box::new(gpu_memory.clone()))?;
        Ok(StageMetrics {
            frames,
            gpu_memory,
            watched: Arc::default(),
        })
    }

    /// Counts `n` frames through `stage` on `device`.
    pub fn frames(&self, stage: &str, device: Device, n: u64) {
        self.frames
            .with_label_values(&[stage, &device.label()])
            .inc_by(n);
    }

    /// Counts `n` decoded frames and their rungs through a whole plan:
    /// decode and scale once per source frame, encode once per rung.
    pub fn plan_frames(&self, plan: &StagePlan, source_frames: u64, rungs: u64) {
        self.frames("decode", plan.decode.device, source_frames);
        self.frames("scale", plan.scale.device, source_frames);
        self.frames("encode", plan.encode.device, source_frames * rungs);
    }

    /// Reports the memory of the GPUs `plan` runs stages on (none for a
    /// software plan: a worker that does not use the GPU never opens a
    /// context on it).
    pub fn watch_gpus(&self, plan: &StagePlan) {
        let mut ordinals: Vec<u32> = [plan.decode.device, plan.scale.device, plan.encode.device]
            .into_iter()
            .filter_map(|d| match d {
                Device::Gpu(n) => Some(n),
                Device::Cpu => None,
            })
            .collect();
        ordinals.sort_unstable();
        ordinals.dedup();
        let contexts: Vec<_> = ordinals
            .into_iter()
            .filter_map(|n| match CudaContext::new(n) {
                Ok(ctx) => Some(ctx),
                Err(e) => {
                    tracing::warn!(device = n, error = %e, "GPU memory metric unavailable");
                    None
                }
            })
            .collect();
        if let Ok(mut watched) = self.watched.lock() {
            *watched = contexts;
        }
    }

    /// Reads the watched GPUs' memory use now.
    pub fn sample_gpu_memory(&self) {
        let Ok(watched) = self.watched.lock() else {
            return;
        };
        for ctx in watched.iter() {
            if let Ok((free, total)) = ctx.memory() {
                let used = i64::try_from(total.saturating_sub(free)).unwrap_or(i64::MAX);
                self.gpu_memory
                    .with_label_values(&[&Device::Gpu(ctx.ordinal()).label()])
                    .set(used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_stage_and_device() {
        let registry = Registry::new();
        let m = StageMetrics::register(&registry).expect("register");
        m.plan_frames(&StagePlan::software("test"), 10, 3);
        m.watch_gpus(&StagePlan::software("test"));
        m.sample_gpu_memory();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        assert!(
            text.contains("vodfarm_worker_stage_frames_total{device=\"cpu\",stage=\"decode\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("vodfarm_worker_stage_frames_total{device=\"cpu\",stage=\"encode\"} 30"),
            "{text}"
        );
    }
}
