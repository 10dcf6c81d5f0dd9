//! The worker's Prometheus metrics and the endpoint that serves them.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The worker's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    /// Jobs finished, by type and outcome.
    pub(super) jobs: IntCounterVec,
    /// Wall time of a job, by type.
    pub(super) job_seconds: HistogramVec,
    /// Jobs running now, by type.
    pub(super) running: IntGaugeVec,
    /// Output frames encoded, summed over renditions.
    pub(super) frames: IntCounter,
    /// HLS segments uploaded.
    pub(super) segments: IntCounter,
    /// Bytes written to the object store.
    pub(super) uploaded_bytes: IntCounter,
    /// Bytes of job inputs read from the object store, by job type.
    pub(super) source_bytes: IntCounterVec,
    /// Frames per stage and device, GPU memory in use.
    pub(super) stages: crate::media::gpu::stage_metrics::StageMetrics,
}

impl WorkerMetrics {
    /// Registers every metric in a registry of its own.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let jobs = IntCounterVec::new(
            Opts::new(
                "vodfarm_worker_jobs_total",
                "Jobs finished by this worker, by outcome",
            ),
            &["job_type", "outcome"],
        )?;
        let job_seconds = HistogramVec::new(
            HistogramOpts::new("vodfarm_worker_job_seconds", "Wall time of a job")
                .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]),
            &["job_type"],
        )?;
        let running = IntGaugeVec::new(
            Opts::new("vodfarm_worker_jobs_running", "Jobs running now"),
            &["job_type"],
        )?;
        let frames = IntCounter::new(
            "vodfarm_worker_frames_encoded_total",
            "Output frames encoded, summed over renditions",
        )?;
        let segments = IntCounter::new(
            "vodfarm_worker_segments_uploaded_total",
            "HLS segments uploaded",
        )?;
        let uploaded_bytes = IntCounter::new(
            "vodfarm_worker_uploaded_bytes_total",
            "Bytes written to the object store",
        )?;
        let source_bytes = IntCounterVec::new(
            Opts::new(
                "vodfarm_worker_source_bytes_total",
                "Bytes of job inputs (originals, chunk files) read from the object store",
            ),
            &["job_type"],
        )?;
        registry.register(Box::new(source_bytes.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_seconds.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(frames.clone()))?;
        registry.register(Box::new(segments.clone()))?;
        registry.register(Box::new(uploaded_bytes.clone()))?;
        let stages = crate::media::gpu::stage_metrics::StageMetrics::register(&registry)?;
        Ok(WorkerMetrics {
            registry,
            jobs,
            job_seconds,
            running,
            frames,
            segments,
            uploaded_bytes,
            source_bytes,
            stages,
        })
    }

    /// Counts `n` output frames encoded (the per-stage, per-device
    /// counts come from the pipeline, which knows where each stage ran).
    pub(super) fn encoded(&self, n: u64) {
        self.frames.inc_by(n);
    }

    /// The metrics server's connection metrics, in this registry.
    pub(super) fn connections(
        &self,
    ) -> Result<vodfarm_core::serve::ConnectionMetrics, prometheus::Error> {
        vodfarm_core::serve::ConnectionMetrics::new(&self.registry)
    }

    /// `/metrics` (this registry, Prometheus text) and `/healthz`.
    pub(super) fn router(&self) -> axum::Router {
        let registry = self.registry.clone();
        let stages = self.stages.clone();
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    stages.sample_gpu_memory();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                vodfarm_core::telemetry::METRICS_CONTENT_TYPE,
                            )],
                            vodfarm_core::telemetry::render_metrics(&registry),
                        )
                    }
                }),
            )
    }
}
