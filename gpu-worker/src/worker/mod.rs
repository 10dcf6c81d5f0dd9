//! The `vodfarm worker` role: lease jobs from the coordinator, run the
//! media pipeline, upload while encoding, report the outcome.
//!
//! Each of `--concurrency` slots long-polls for one job at a time. A job
//! runs on blocking threads (libav is synchronous) while async tasks
//! heartbeat its progress and upload its finished segments. SIGTERM stops
//! leasing, lets running jobs finish for `--drain-timeout`, then cancels
//! them and hands them back (`release`: due again at once, no attempt
//! spent), and exits 0.
//!
//! - `args`: the flags ([`WorkerArgs`]); `error`: [`WorkerError`].
//! - `slots`: the lease slots, one job's run and its outcome report.
//! - `heartbeat`: progress and lease extension while a job runs.
//! - `jobs`: the transcode, manifest and thumbnail handlers.
//! - `scratch`: per-job scratch directories and the original's download.
//! - `failure`: why a job failed and whether it is retried.
//! - `metrics`: [`WorkerMetrics`] and `/metrics`.

mod args;
mod error;
mod failure;
mod heartbeat;
mod jobs;
mod metrics;
mod ranged;
mod scratch;
mod slots;

pub use args::WorkerArgs;
pub use error::WorkerError;
pub use metrics::WorkerMetrics;

use crate::client::CoordinatorClient;
use crate::media::gpu::plan::StagePlan;
use crate::media::gpu::select::{GpuAccess, GpuEnvironment};
use crate::media::probe::Limits;
use crate::media::stages::StageChoice;
use crate::media::JobControl;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_core::jobs::JobType;
use vodfarm_core::store::{self, SharedStore};
use vodfarm_native::GpuCapabilities;

/// What every slot and job of a running worker shares.
struct Worker {
    client: CoordinatorClient,
    store: SharedStore,
    scratch: PathBuf,
    job_types: Vec<JobType>,
    capabilities: Vec<String>,
    stages: StageChoice,
    /// The GPUs as every transcode sees them (probe, NVENC sessions).
    gpu: GpuAccess,
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
    if args.probe {
        let doc = crate::media::gpu::report::probe_json(args.gpu == "auto");
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    let scratch_dir = args
        .scratch_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vodfarm-worker"));
    scratch::prepare(&scratch_dir)
        .await
        .map_err(|source| WorkerError::Scratch {
            path: scratch_dir.clone(),
            source,
        })?;
    let store = store::open(&args.store).await?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let client = CoordinatorClient::new(&args.coordinator, &args.worker_token, &worker_id)?;
    let caps = if args.gpu == "auto" {
        GpuCapabilities::probe()
    } else {
        GpuCapabilities::default()
    };
    let stages = StageChoice::select(caps, args.gpu == "auto");
    let env = GpuEnvironment::probe(args.gpu == "auto");
    let plan = StagePlan::choose(&env.report, env.nvrtc.clone(), "h264", 8, env.allow);
    plan.log_fallbacks();
    let nvenc_sessions = args
        .nvenc_sessions
        .unwrap_or_else(|| default_nvenc_sessions(&env));
    let metrics = WorkerMetrics::new()?;
    metrics.stages.watch_gpus(&plan);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| WorkerError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let mut capabilities = caps.names();
    capabilities.extend(plan.capabilities());
    tracing::info!(%addr, worker_id, ?stages, stage_plan = %plan.summary(), ?capabilities, nvenc_sessions, "worker listening");

    let worker = Arc::new(Worker {
        client,
        store,
        scratch: scratch_dir,
        job_types: args.job_types.clone(),
        capabilities,
        stages,
        gpu: GpuAccess {
            env: Arc::new(env),
            nvenc_sessions: Arc::new(tokio::sync::Semaphore::new(nvenc_sessions)),
            metrics: Some(metrics.stages.clone()),
        },
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
    let app = metrics.router();
    let (limits, connections) = (args.server.limits(), metrics.connections()?);
    let server = tokio::spawn(vodfarm_core::serve::serve_router(
        listener,
        app,
        limits,
        connections,
        stop_serving.clone(),
    ));

    let mut slot_tasks = tokio::task::JoinSet::new();
    for slot in 0..args.concurrency.max(1) {
        slot_tasks.spawn(slots::slot_loop(worker.clone(), slot));
    }

    tokio::spawn(drain_on(shutdown, worker.clone(), args.drain_timeout));

    while slot_tasks.join_next().await.is_some() {}
    stop_serving.cancel();
    let _ = server.await;
    tracing::info!("worker stopped");
    Ok(())
}

/// NVENC sessions when `--nvenc-sessions` is not given: 8 per device with
/// NVENC (the concurrent-session cap of consumer drivers; data-centre
/// cards have no cap but no NVENC either, or plenty of engines), 0 when no
/// device has one.
fn default_nvenc_sessions(env: &GpuEnvironment) -> usize {
    8 * env
        .report
        .devices
        .iter()
        .filter(|d| d.nvenc.is_ok())
        .count()
}

impl Worker {
    /// The capabilities of a lease now: all of them, less `gpu-encode`
    /// while every NVENC session is taken, so the coordinator's subset
    /// rule gives jobs that require it to a worker that can run them.
    fn lease_capabilities(&self) -> Vec<String> {
        lease_capabilities(
            &self.capabilities,
            self.gpu.nvenc_sessions.available_permits(),
        )
    }
}

/// The capabilities a worker sends with a lease, given all it has and how
/// many NVENC sessions are free: without a free session it leaves
/// `gpu-encode` out (how it advertises its GPU capacity).
pub fn lease_capabilities(all: &[String], free_sessions: usize) -> Vec<String> {
    all.iter()
        .filter(|c| free_sessions > 0 || c.as_str() != "gpu-encode")
        .cloned()
        .collect()
}

/// Once `shutdown` completes: stops leasing, lets running jobs finish for
/// `drain_timeout`, then cancels them (their slots hand them back).
async fn drain_on(
    shutdown: impl Future<Output = ()>,
    worker: Arc<Worker>,
    drain_timeout: Duration,
) {
    shutdown.await;
    tracing::info!(
        ?drain_timeout,
        "draining: no new leases; running jobs may finish"
    );
    worker.draining.cancel();
    tokio::time::sleep(drain_timeout).await;
    let running: Vec<Arc<JobControl>> = worker
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_with_no_free_nvenc_session_stops_offering_gpu_encode() {
        let all: Vec<String> = ["cuda", "nvenc", "gpu-decode", "gpu-scale", "gpu-encode"]
            .map(String::from)
            .to_vec();
        assert_eq!(lease_capabilities(&all, 3), all);
        assert_eq!(
            lease_capabilities(&all, 0),
            ["cuda", "nvenc", "gpu-decode", "gpu-scale"]
        );
        assert_eq!(default_nvenc_sessions(&GpuEnvironment::off()), 0);
    }
}
