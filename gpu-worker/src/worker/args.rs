//! The flags and environment of `vodfarm worker`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vodfarm_core::config::parse_duration;
use vodfarm_core::jobs::JobType;

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
    #[arg(
        long,
        env = "VODFARM_WORKER_TOKEN",
        hide_env_values = true,
        required_unless_present = "probe",
        default_value = "",
        hide_default_value = true
    )]
    pub worker_token: String,
    /// Object store holding originals and receiving outputs:
    /// `s3://BUCKET` (endpoint and credentials from the AWS_* variables)
    /// or `file:///absolute/dir`.
    #[arg(
        long,
        env = "VODFARM_STORE",
        required_unless_present = "probe",
        default_value = "",
        hide_default_value = true
    )]
    pub store: String,
    /// Print what this machine's GPUs offer (devices, memory, NVDEC and
    /// NVENC codecs, CUDA version) and where each stage would run, as
    /// JSON, then exit.
    #[arg(long)]
    pub probe: bool,
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
        default_value = "transcode,thumbnail,manifest,mp4"
    )]
    pub job_types: Vec<JobType>,
    /// libx264 preset (ultrafast … veryslow): speed against quality at
    /// the ladder's bitrates.
    #[arg(long, env = "VODFARM_X264_PRESET", default_value = "veryfast")]
    pub x264_preset: String,
    /// `auto`: per job, NVDEC → CUDA scaler → NVENC with frames on the
    /// GPU where the probe finds them (each stage falls back to software
    /// alone, logging why); `off`: software only.
    #[arg(long, env = "VODFARM_GPU", default_value = "auto", value_parser = ["auto", "off"])]
    pub gpu: String,
    /// NVENC sessions this worker opens at once (a job holds one per rung
    /// while it encodes on the GPU; consumer drivers cap concurrent
    /// sessions per system). While none is free the worker stops
    /// advertising `gpu-encode`, and a job it runs anyway encodes with
    /// libx264. Default: 8 per GPU with NVENC (the consumer driver cap),
    /// 0 without.
    #[arg(long, env = "VODFARM_NVENC_SESSIONS")]
    pub nvenc_sessions: Option<usize>,
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
    /// Connection limits of the metrics server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}
