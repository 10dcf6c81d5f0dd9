//! The `vodfarm worker` role: lease jobs from the coordinator, run the
//! media pipeline, upload while encoding, report the outcome.
//!
//! Each of `--concurrency` slots long-polls for one job at a time. A job
//! runs on blocking threads (libav is synchronous) while async tasks
//! heartbeat its progress and upload its finished segments. SIGTERM stops
//! leasing, lets running jobs finish for `--drain-timeout`, then cancels
//! them and hands them back (`fail` with `retryable`), and exits 0.

use crate::client::{ClientError, CoordinatorClient};
use crate::media::hls::{RenditionSet, SegmentFile};
use crate::media::probe::Limits;
use crate::media::stages::Backends;
use crate::media::thumbs::{thumbnails, ThumbnailRequest, ThumbnailSet};
use crate::media::transcode::{transcode, TranscodeRequest};
use crate::media::{JobControl, MediaError};
use futures::StreamExt;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vodfarm_core::config::parse_duration;
use vodfarm_core::jobs::{
    EncodingOutput, JobOutputs, JobType, LeasedJob, SourceMetadata, ThumbKind, ThumbnailOutput,
};
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout::{self, ThumbFile};
use vodfarm_core::store::{self, SharedStore, StoreError};
use vodfarm_native::GpuCapabilities;

/// How long a draining worker waits for a lease answer already in flight.
const LATE_LEASE_GRACE: Duration = Duration::from_secs(2);

/// Flags and environment of `vodfarm worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Base URL of the coordinator (or a load balancer in front of several).
    #[arg(
        long,
        env = "VODFARM_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub coordinator: String,
    /// Shared secret sent to the coordinator as `Authorization: Bearer ...`.
    #[arg(long, env = "VODFARM_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: String,
    /// Object store holding originals and receiving outputs:
    /// `s3://BUCKET` (endpoint and credentials from the AWS_* variables)
    /// or `file:///absolute/dir`.
    #[arg(long, env = "VODFARM_STORE")]
    pub store: String,
    /// Jobs run at once (each transcode already uses every core through
    /// its encoder threads; raise this on big machines).
    #[arg(long, env = "VODFARM_WORKER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Scratch directory for originals and segments being written; each
    /// job uses a subdirectory removed when it ends. Default: the system
    /// temporary directory + `vodfarm-worker`.
    #[arg(long, env = "VODFARM_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Address for `/metrics` (Prometheus) and `/healthz`.
    #[arg(long, env = "VODFARM_WORKER_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// This worker's name at the coordinator (default: host name and pid).
    #[arg(long, env = "VODFARM_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Job types to take, comma-separated.
    #[arg(
        long,
        env = "VODFARM_WORKER_JOB_TYPES",
        value_delimiter = ',',
        default_value = "transcode,thumbnail,manifest"
    )]
    pub job_types: Vec<JobType>,
    /// libx264 preset (ultrafast … veryslow): speed against quality at
    /// the ladder's bitrates.
    #[arg(long, env = "VODFARM_X264_PRESET", default_value = "veryfast")]
    pub x264_preset: String,
    /// `auto`: use NVDEC/NVENC when the driver and libavcodec have them
    /// (software for the rest); `off`: software only.
    #[arg(long, env = "VODFARM_GPU", default_value = "auto", value_parser = ["auto", "off"])]
    pub gpu: String,
    /// How often a running job reports progress and extends its lease
    /// (keep it well under the coordinator's --lease-ttl).
    #[arg(long, env = "VODFARM_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they
    /// are stopped and handed back for another worker to retry.
    #[arg(long, env = "VODFARM_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Longest long poll for work.
    #[arg(long, env = "VODFARM_POLL_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub poll_wait: Duration,
    /// Largest frame width or height accepted (bigger uploads fail as
    /// decompression bombs).
    #[arg(long, env = "VODFARM_MAX_DIMENSION", default_value_t = 8192)]
    pub max_dimension: u32,
    /// Longest video accepted.
    #[arg(long, env = "VODFARM_MAX_DURATION", default_value = "4h", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// Longest stretch without a new picture accepted (e.g. one frame
    /// that claims to last hours).
    #[arg(long, env = "VODFARM_MAX_GAP", default_value = "60s", value_parser = parse_duration)]
    pub max_gap: Duration,
    /// Largest original accepted, bytes.
    #[arg(long, env = "VODFARM_MAX_INPUT_BYTES", default_value_t = 50 << 30)]
    pub max_input_bytes: u64,
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store URL was unusable.
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    /// The coordinator client could not be built.
    #[error("coordinator client: {0}")]
    Client(#[from] ClientError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listen address could not be bound.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The scratch directory is unusable.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why one job did not complete.
#[derive(Debug, thiserror::Error)]
enum JobFailure {
    #[error("{0}")]
    Media(#[from] MediaError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadParameters(String),
    #[error("The uploaded original is missing from storage.")]
    MissingOriginal,
    #[error("{0}")]
    Incomplete(String),
}

impl JobFailure {
    fn retryable(&self) -> bool {
        match self {
            JobFailure::Media(e) => !e.is_bad_input(),
            JobFailure::Store(_) | JobFailure::Incomplete(_) => true,
            JobFailure::BadParameters(_) | JobFailure::MissingOriginal => false,
        }
    }
}

/// The worker's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    jobs: IntCounterVec,
    job_seconds: HistogramVec,
    running: IntGaugeVec,
    frames: IntCounter,
    segments: IntCounter,
    uploaded_bytes: IntCounter,
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
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_seconds.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(frames.clone()))?;
        registry.register(Box::new(segments.clone()))?;
        registry.register(Box::new(uploaded_bytes.clone()))?;
        Ok(WorkerMetrics {
            registry,
            jobs,
            job_seconds,
            running,
            frames,
            segments,
            uploaded_bytes,
        })
    }
}

struct Worker {
    client: CoordinatorClient,
    store: SharedStore,
    scratch: PathBuf,
    job_types: Vec<JobType>,
    capabilities: Vec<String>,
    backends: Backends,
    limits: Limits,
    preset: String,
    heartbeat_interval: Duration,
    poll_wait: Duration,
    metrics: WorkerMetrics,
    running: Mutex<HashMap<i64, Arc<JobControl>>>,
    draining: CancellationToken,
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Runs the worker until `shutdown` completes and its jobs are finished or
/// handed back.
pub async fn run(
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    crate::media::init();
    let scratch = args
        .scratch_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vodfarm-worker"));
    let scratch_err = |source| WorkerError::Scratch {
        path: scratch.clone(),
        source,
    };
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(scratch_err)?;
    // Leftovers of a crashed run: no job of this process uses them.
    if let Ok(mut dir) = tokio::fs::read_dir(&scratch).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with("job-") {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }
    let store = store::open(&args.store).await?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let client = CoordinatorClient::new(&args.coordinator, &args.worker_token, &worker_id)?;
    let caps = if args.gpu == "auto" {
        GpuCapabilities::probe()
    } else {
        GpuCapabilities::default()
    };
    let backends = Backends::select(caps, args.gpu == "auto");
    let metrics = WorkerMetrics::new()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| WorkerError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, worker_id, ?backends, capabilities = ?caps.names(), "worker listening");

    let worker = Arc::new(Worker {
        client,
        store,
        scratch,
        job_types: args.job_types.clone(),
        capabilities: caps.names(),
        backends,
        limits: Limits {
            max_dimension: args.max_dimension,
            max_duration: args.max_duration.as_secs_f64(),
            max_gap: args.max_gap.as_secs_f64(),
            max_input_bytes: args.max_input_bytes,
        },
        preset: args.x264_preset.clone(),
        heartbeat_interval: args.heartbeat_interval,
        poll_wait: args.poll_wait,
        metrics: metrics.clone(),
        running: Mutex::new(HashMap::new()),
        draining: CancellationToken::new(),
    });

    let stop_serving = CancellationToken::new();
    let registry = metrics.registry.clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
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
        );
    let app: axum::Router = app;
    let server_stop = stop_serving.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
    });

    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..args.concurrency.max(1) {
        slots.spawn(slot_loop(worker.clone(), slot));
    }

    let drain_worker = worker.clone();
    let drain_timeout = args.drain_timeout;
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            ?drain_timeout,
            "draining: no new leases; running jobs may finish"
        );
        drain_worker.draining.cancel();
        tokio::time::sleep(drain_timeout).await;
        let running: Vec<Arc<JobControl>> = drain_worker
            .running
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        if !running.is_empty() {
            tracing::warn!(
                jobs = running.len(),
                "drain timeout: stopping jobs and handing them back"
            );
        }
        for c in running {
            c.cancel();
        }
    });

    while slots.join_next().await.is_some() {}
    stop_serving.cancel();
    let _ = server.await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn slot_loop(worker: Arc<Worker>, slot: usize) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if worker.draining.is_cancelled() {
            return;
        }
        let lease =
            worker
                .client
                .lease(&worker.job_types, &worker.capabilities, 1, worker.poll_wait);
        tokio::pin!(lease);
        let leased = tokio::select! {
            r = &mut lease => r,
            _ = worker.draining.cancelled() => {
                // A lease the coordinator granted just as draining began is
                // already on its way: give it a moment to arrive and hand
                // its jobs back, rather than strand them until their
                // leases expire. A poll still waiting is simply dropped.
                if let Ok(Ok(jobs)) = tokio::time::timeout(LATE_LEASE_GRACE, &mut lease).await {
                    for job in jobs {
                        let msg = "The worker was shut down before starting; the job will be retried.";
                        match with_retries(|| worker.client.release(job.id, job.lease_token, msg)).await {
                            Ok(_) => tracing::info!(job_id = job.id, "late lease handed back"),
                            Err(e) => tracing::warn!(job_id = job.id, error = %e, "hand-back not recorded; the lease will expire"),
                        }
                    }
                }
                return;
            }
        };
        match leased {
            Ok(jobs) => {
                backoff = Duration::from_millis(500);
                for job in jobs {
                    let span = tracing::info_span!("job", job_id = job.id, video_id = %job.video_id, job_type = %job.job_type, slot);
                    run_job(worker.clone(), job).instrument(span).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = worker.draining.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// A job's scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "scratch not removed");
            }
        }
    }
}

async fn run_job(worker: Arc<Worker>, job: LeasedJob) {
    let started = Instant::now();
    let job_type = job.job_type.as_str();
    tracing::info!(attempt = job.attempt, "job started");
    let control = Arc::new(JobControl::default());
    if let Ok(mut m) = worker.running.lock() {
        m.insert(job.id, control.clone());
    }
    worker.metrics.running.with_label_values(&[job_type]).inc();
    let lease_lost = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        worker.clone(),
        job.clone(),
        control.clone(),
        lease_lost.clone(),
    ));
    let result = match job.job_type {
        JobType::Transcode => transcode_job(&worker, &job, &control).await,
        JobType::Thumbnail => thumbnail_job(&worker, &job, &control).await,
        JobType::Manifest => manifest_job(&worker, &job).await,
    };
    heartbeat.abort();
    if let Ok(mut m) = worker.running.lock() {
        m.remove(&job.id);
    }
    worker.metrics.running.with_label_values(&[job_type]).dec();
    worker
        .metrics
        .job_seconds
        .with_label_values(&[job_type])
        .observe(started.elapsed().as_secs_f64());
    let lost = lease_lost.is_cancelled();
    let outcome = match result {
        _ if lost => {
            tracing::warn!("lease lost; output dropped (another worker owns the job)");
            "lease_lost"
        }
        Ok(outputs) => match with_retries(|| {
            worker
                .client
                .complete(job.id, job.lease_token, outputs.clone())
        })
        .await
        {
            Ok(r) => {
                tracing::info!(video_status = %r.video_status, secs = started.elapsed().as_secs_f64(), "job completed");
                "completed"
            }
            Err(e) => {
                tracing::error!(error = %e, "completion not recorded; the lease will expire and the job rerun");
                "complete_failed"
            }
        },
        Err(JobFailure::Media(MediaError::Cancelled)) => {
            // Released, not failed: a drain is no fault of the job's, so
            // it costs no attempt and no backoff.
            let msg = "The worker was shut down before finishing; the job will be retried.";
            match with_retries(|| worker.client.release(job.id, job.lease_token, msg)).await {
                Ok(_) => tracing::info!("job handed back"),
                Err(e) => {
                    tracing::warn!(error = %e, "hand-back not recorded; the lease will expire")
                }
            }
            "handed_back"
        }
        Err(e) => {
            let retryable = e.retryable();
            let message = e.to_string();
            tracing::warn!(error = %message, retryable, "job failed");
            if let Err(err) = with_retries(|| {
                worker
                    .client
                    .fail(job.id, job.lease_token, &message, retryable)
            })
            .await
            {
                tracing::error!(error = %err, "failure not recorded; the lease will expire");
            }
            if retryable {
                "failed_retryable"
            } else {
                "failed"
            }
        }
    };
    worker
        .metrics
        .jobs
        .with_label_values(&[job_type, outcome])
        .inc();
}

async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if e.is_transient() && tries < 6 => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

async fn heartbeat_loop(
    worker: Arc<Worker>,
    job: LeasedJob,
    control: Arc<JobControl>,
    lease_lost: CancellationToken,
) {
    let mut tick = tokio::time::interval(worker.heartbeat_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        match worker
            .client
            .heartbeat(job.id, job.lease_token, control.percent())
            .await
        {
            Ok(_) => {}
            Err(ClientError::LeaseLost(_)) | Err(ClientError::NotFound(_)) => {
                lease_lost.cancel();
                control.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

fn media_blocking_error(e: tokio::task::JoinError) -> JobFailure {
    JobFailure::Media(MediaError::Internal(format!("media thread: {e}")))
}

async fn job_scratch(worker: &Worker, job: &LeasedJob) -> Result<Scratch, JobFailure> {
    let dir = worker
        .scratch
        .join(format!("job-{}-{}", job.id, uuid::Uuid::new_v4().simple()));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| JobFailure::Media(MediaError::Io(e)))?;
    Ok(Scratch(dir))
}

/// Streams the original to `dest`, refusing more than the size limit.
async fn download(worker: &Worker, key: &str, dest: &Path) -> Result<(), JobFailure> {
    let object = match worker.store.get(key, None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) | Err(StoreError::InvalidKey(_)) => {
            return Err(JobFailure::MissingOriginal)
        }
        Err(e) => return Err(e.into()),
    };
    if object.meta.size > worker.limits.max_input_bytes {
        return Err(MediaError::FileTooLarge {
            size: object.meta.size,
            max: worker.limits.max_input_bytes,
        }
        .into());
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(MediaError::Io)?;
    let mut body = object.body;
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await.map_err(MediaError::Io)?;
    }
    file.flush().await.map_err(MediaError::Io)?;
    Ok(())
}

fn default_segment_duration() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
struct TranscodeParameters {
    #[serde(default)]
    ladder: Option<RenditionLadder>,
    #[serde(default = "default_segment_duration")]
    segment_duration: u32,
}

fn check_ladder(ladder: &RenditionLadder, segment_duration: u32) -> Result<(), JobFailure> {
    if !(1..=60).contains(&segment_duration) {
        return Err(JobFailure::BadParameters(format!(
            "segment_duration {segment_duration} is outside 1..=60 seconds"
        )));
    }
    if ladder.rungs.is_empty() || ladder.rungs.len() > 10 {
        return Err(JobFailure::BadParameters(
            "the ladder needs 1..=10 rungs".into(),
        ));
    }
    for r in &ladder.rungs {
        if !layout::is_valid_rendition(&r.name)
            || !(16..=8192).contains(&r.height)
            || r.video_bitrate < 10_000
        {
            return Err(JobFailure::BadParameters(format!(
                "invalid rung {:?}",
                r.name
            )));
        }
    }
    if !(16_000..=512_000).contains(&ladder.audio_bitrate) {
        return Err(JobFailure::BadParameters(
            "audio_bitrate outside 16..=512 kb/s".into(),
        ));
    }
    Ok(())
}

fn layout_error(e: layout::LayoutError) -> JobFailure {
    JobFailure::BadParameters(format!("object key: {e}"))
}

async fn transcode_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
) -> Result<JobOutputs, JobFailure> {
    let params: TranscodeParameters = serde_json::from_value(job.parameters.clone())
        .map_err(|e| JobFailure::BadParameters(format!("transcode parameters: {e}")))?;
    let ladder = params.ladder.unwrap_or_default();
    check_ladder(&ladder, params.segment_duration)?;
    let vid = job.video_id.as_str();
    layout::encoded_prefix(vid).map_err(layout_error)?;
    let scratch = job_scratch(worker, job).await?;
    let source = scratch.0.join("original");
    download(worker, &job.input_path, &source).await?;

    // Segments go up while the next ones are encoded; the channel's bound
    // holds the encoder back when uploads fall behind (bounded disk).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SegmentFile>(8);
    let store = worker.store.clone();
    let metrics = worker.metrics.clone();
    let video_id = job.video_id.clone();
    let uploader = tokio::spawn(async move {
        let mut first_error: Option<JobFailure> = None;
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            let next = tokio::select! {
                seg = rx.recv() => seg,
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(Err(e)) = done { first_error.get_or_insert(e); }
                    continue;
                }
            };
            let Some(seg) = next else { break };
            while inflight.len() >= 4 {
                if let Some(Ok(Err(e))) = inflight.join_next().await {
                    first_error.get_or_insert(e);
                }
            }
            let store = store.clone();
            let metrics = metrics.clone();
            let video_id = video_id.clone();
            inflight.spawn(async move {
                let key =
                    layout::segment(&video_id, &seg.rendition, seg.index).map_err(layout_error)?;
                let result = store.put_file(key.as_str(), &seg.path).await;
                let _ = tokio::fs::remove_file(&seg.path).await;
                result?;
                metrics.segments.inc();
                metrics.uploaded_bytes.inc_by(seg.bytes);
                Ok::<(), JobFailure>(())
            });
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    });

    let request = TranscodeRequest {
        source,
        work_dir: scratch.0.join("out"),
        ladder,
        segment_seconds: params.segment_duration,
        preset: worker.preset.clone(),
        backends: worker.backends,
        limits: worker.limits,
    };
    let control_for_media = control.clone();
    let media = tokio::task::spawn_blocking(move || {
        transcode(&request, &control_for_media, move |seg| {
            tx.blocking_send(seg).map_err(|_| MediaError::Cancelled)
        })
    })
    .await
    .map_err(media_blocking_error)?;
    let uploaded = uploader.await.map_err(media_blocking_error)?;
    let output = media?;
    uploaded?;
    worker
        .metrics
        .frames
        .inc_by(output.frames.max(0) as u64 * output.renditions.len() as u64);

    let mut encodings = Vec::new();
    for r in &output.renditions {
        let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
        let body = r.media_playlist();
        worker.store.put(playlist.as_str(), body.into()).await?;
        // A re-run never leaves segments past the new end behind.
        let prefix = layout::rendition_prefix(vid, &r.name).map_err(layout_error)?;
        for o in worker.store.list(prefix.as_str()).await? {
            let n = o
                .key
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_prefix("segment_"))
                .and_then(|f| f.strip_suffix(".ts"))
                .and_then(|n| n.parse::<usize>().ok());
            if n.is_some_and(|n| n >= r.segments.len()) {
                worker.store.delete(&o.key).await?;
            }
        }
        encodings.push(EncodingOutput {
            resolution: r.name.clone(),
            codec: "h264".into(),
            container: "ts".into(),
            bitrate: i32::try_from(r.average_bandwidth()).unwrap_or(i32::MAX),
            peak_bitrate: Some(i32::try_from(r.peak_bandwidth()).unwrap_or(i32::MAX)),
            width: Some(r.width as i32),
            height: Some(r.height as i32),
            storage_path: prefix.to_string(),
            file_size_bytes: i64::try_from(r.bytes()).unwrap_or(i64::MAX),
            manifest_path: Some(playlist.to_string()),
            segment_duration: params.segment_duration as i32,
            segment_count: Some(r.segments.len() as i32),
        });
    }
    let sidecar = RenditionSet {
        renditions: output.renditions.clone(),
    };
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let json = serde_json::to_vec(&sidecar)
        .map_err(|e| JobFailure::Media(MediaError::internal("sidecar", e)))?;
    worker.store.put(sidecar_key.as_str(), json.into()).await?;
    tracing::info!(
        renditions = output.renditions.len(),
        frames = output.frames,
        decoder = %output.decoder,
        "transcode done"
    );
    let fps = f64::from(output.source.output_fps);
    Ok(JobOutputs {
        encodings,
        thumbnails: Vec::new(),
        video: Some(SourceMetadata {
            duration_seconds: Some(if fps > 0.0 {
                output.frames as f64 / fps
            } else {
                output.source.duration
            }),
            width: Some(output.source.display_width as i32),
            height: Some(output.source.display_height as i32),
            fps: Some(output.source.source_fps).filter(|f| *f > 0.0),
            codec: Some(output.source.codec.clone()),
        }),
    })
}

/// The sidecar's size limit: it is ours, but still read with a bound.
const MAX_SIDECAR_BYTES: usize = 4 << 20;

async fn manifest_job(worker: &Arc<Worker>, job: &LeasedJob) -> Result<JobOutputs, JobFailure> {
    let vid = job.video_id.as_str();
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let object = match worker.store.get(sidecar_key.as_str(), None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) => {
            return Err(JobFailure::Incomplete(
                "the renditions of this video are not in storage yet".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > MAX_SIDECAR_BYTES {
            return Err(JobFailure::Incomplete("renditions record too large".into()));
        }
    }
    let set: RenditionSet = serde_json::from_slice(&bytes)
        .map_err(|e| JobFailure::Incomplete(format!("renditions record unreadable: {e}")))?;
    if set.renditions.is_empty() {
        return Err(JobFailure::Incomplete("no renditions recorded".into()));
    }
    // Every rendition's playlist and every segment it lists must be there
    // before the master playlist makes them reachable.
    for r in &set.renditions {
        let prefix = layout::rendition_prefix(vid, &r.name).map_err(layout_error)?;
        let present: std::collections::HashSet<String> = worker
            .store
            .list(prefix.as_str())
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
        if !present.contains(playlist.as_str()) {
            return Err(JobFailure::Incomplete(format!(
                "{} playlist missing",
                r.name
            )));
        }
        for n in 0..r.segments.len() {
            let key = layout::segment(vid, &r.name, n as u32).map_err(layout_error)?;
            if !present.contains(key.as_str()) {
                return Err(JobFailure::Incomplete(format!(
                    "{} segment {n} missing",
                    r.name
                )));
            }
        }
    }
    let master = layout::master_playlist(vid).map_err(layout_error)?;
    worker
        .store
        .put(master.as_str(), set.master_playlist().into())
        .await?;
    tracing::info!(renditions = set.renditions.len(), "master playlist written");
    Ok(JobOutputs::default())
}

#[derive(Debug, Deserialize)]
struct ThumbnailParameters {
    #[serde(default = "default_segment_duration")]
    interval_seconds: u32,
    #[serde(default = "default_columns")]
    sprite_columns: u32,
    #[serde(default = "default_tile_width")]
    sprite_tile_width: u32,
}

fn default_columns() -> u32 {
    10
}

fn default_tile_width() -> u32 {
    160
}

fn thumb_output(
    key: layout::ObjectKey,
    kind: ThumbKind,
    timestamp: f64,
    size: u64,
    w: u32,
    h: u32,
) -> ThumbnailOutput {
    ThumbnailOutput {
        timestamp_sec: timestamp.floor() as i32,
        url: key.into(),
        size: i32::try_from(size).unwrap_or(i32::MAX),
        kind,
        width: Some(w as i32),
        height: Some(h as i32),
    }
}

async fn thumbnail_job(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
) -> Result<JobOutputs, JobFailure> {
    let params: ThumbnailParameters = serde_json::from_value(job.parameters.clone())
        .map_err(|e| JobFailure::BadParameters(format!("thumbnail parameters: {e}")))?;
    if !(1..=3600).contains(&params.interval_seconds)
        || !(1..=100).contains(&params.sprite_columns)
        || !(16..=1920).contains(&params.sprite_tile_width)
    {
        return Err(JobFailure::BadParameters(
            "thumbnail parameters out of range".into(),
        ));
    }
    let vid = job.video_id.as_str();
    layout::thumbnails_prefix(vid).map_err(layout_error)?;
    let scratch = job_scratch(worker, job).await?;
    let source = scratch.0.join("original");
    download(worker, &job.input_path, &source).await?;
    let request = ThumbnailRequest {
        source,
        work_dir: scratch.0.join("thumbs"),
        interval_seconds: params.interval_seconds,
        sprite_columns: params.sprite_columns,
        sprite_tile_width: params.sprite_tile_width,
        limits: worker.limits,
    };
    let control_for_media = control.clone();
    let set: ThumbnailSet =
        tokio::task::spawn_blocking(move || thumbnails(&request, &control_for_media))
            .await
            .map_err(media_blocking_error)??;
    let mut outputs = Vec::new();
    for (n, f) in set.frames.iter().enumerate() {
        let key = layout::thumbnail(vid, n as u32).map_err(layout_error)?;
        let meta = worker.store.put_file(key.as_str(), &f.path).await?;
        outputs.push(thumb_output(
            key,
            ThumbKind::Frame,
            f.timestamp,
            meta.size,
            f.width,
            f.height,
        ));
    }
    let prefix = layout::thumbnails_prefix(vid).map_err(layout_error)?;
    for o in worker.store.list(prefix.as_str()).await? {
        let n = o
            .key
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix("thumb_"))
            .and_then(|f| f.strip_suffix(".jpg"))
            .and_then(|n| n.parse::<usize>().ok());
        if n.is_some_and(|n| n >= set.frames.len()) {
            worker.store.delete(&o.key).await?;
        }
    }
    let files = [
        (
            ThumbFile::Default,
            ThumbKind::Default,
            &set.poster.path,
            set.poster.timestamp,
            set.poster.width,
            set.poster.height,
        ),
        (
            ThumbFile::Sprite,
            ThumbKind::Sprite,
            &set.sprite.path,
            0.0,
            set.sprite.width,
            set.sprite.height,
        ),
        (
            ThumbFile::Storyboard,
            ThumbKind::Storyboard,
            &set.storyboard,
            0.0,
            set.sprite.width,
            set.sprite.height,
        ),
    ];
    for (file, kind, path, ts, w, h) in files {
        let key = layout::thumb_file(vid, file).map_err(layout_error)?;
        let meta = worker.store.put_file(key.as_str(), path).await?;
        outputs.push(thumb_output(key, kind, ts, meta.size, w, h));
    }
    tracing::info!(thumbnails = set.frames.len(), "thumbnails done");
    Ok(JobOutputs {
        encodings: Vec::new(),
        thumbnails: outputs,
        video: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_are_checked() {
        check_ladder(&RenditionLadder::default(), 6).unwrap();
        assert!(check_ladder(&RenditionLadder::default(), 0).is_err());
        let mut bad = RenditionLadder::default();
        bad.rungs[0].name = "../x".into();
        assert!(check_ladder(&bad, 6).is_err());
    }

    #[test]
    fn bad_input_is_not_retried() {
        assert!(!JobFailure::Media(MediaError::Empty).retryable());
        assert!(JobFailure::Media(MediaError::Internal("x".into())).retryable());
        assert!(!JobFailure::MissingOriginal.retryable());
    }
}
