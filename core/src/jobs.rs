//! Job types, job states, and the worker ⇄ coordinator wire protocol.
//!
//! Workers hold no database credentials: they speak this JSON protocol to
//! the coordinator over HTTP. Every write after the lease carries the
//! job's [`LeasedJob::lease_token`]; the coordinator refuses a write whose
//! token is not the job's current one (HTTP 409), so a worker that lost
//! its lease can never overwrite the work of the worker that took over.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// What a job does. Per upload: `transcode` and `thumbnail` run in
/// parallel, `manifest` runs once every `transcode` has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Decode the original once and encode every rung of the ladder.
    Transcode,
    /// Thumbnails, the default poster, the sprite and its storyboard.
    Thumbnail,
    /// The master playlist over the finished renditions.
    Manifest,
    /// A progressive MP4 download of one rung (stream copy of its HLS
    /// segments), after the manifest.
    Mp4,
}

impl JobType {
    /// Every job type, in pipeline order.
    pub const ALL: [JobType; 4] = [
        JobType::Transcode,
        JobType::Thumbnail,
        JobType::Manifest,
        JobType::Mp4,
    ];

    /// The value stored in `processing_jobs.job_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Transcode => "transcode",
            JobType::Thumbnail => "thumbnail",
            JobType::Manifest => "manifest",
            JobType::Mp4 => "mp4",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no known value of an enum of this module.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    what: &'static str,
    value: String,
}

impl FromStr for JobType {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "job type",
                value: s.to_owned(),
            })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be leased (possibly not yet due: `run_after`, DAG).
    Pending,
    /// Leased to a worker until `lease_expires_at`.
    Processing,
    /// Done; its outputs are recorded.
    Completed,
    /// Gave up: a permanent error, or `max_attempts` used up.
    Failed,
    /// Stopped by an operator or by the video's deletion.
    Cancelled,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The value stored in `processing_jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "job status",
                value: s.to_owned(),
            })
    }
}

/// `POST /v1/worker/lease`: ask for up to `max_jobs` due jobs, waiting up
/// to `wait_ms` for one to become due.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Stable name of the worker (host name + slot), for operators.
    pub worker_id: String,
    /// What the worker can do (e.g. `nvdec`, `nvenc`, `cuda`); a job that
    /// requires a capability is only leased to workers that have it.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The job types the worker takes; empty means all.
    #[serde(default)]
    pub job_types: Vec<JobType>,
    /// At most this many jobs (1..=100).
    #[serde(default = "one")]
    pub max_jobs: i64,
    /// Long-poll: wait up to this long for work (0 answers at once).
    #[serde(default)]
    pub wait_ms: i64,
}

fn one() -> i64 {
    1
}

/// The answer to a lease: possibly empty once `wait_ms` has passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The leased jobs.
    pub jobs: Vec<LeasedJob>,
}

/// One job leased to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedJob {
    /// `processing_jobs.id`.
    pub id: i64,
    /// The video's public id.
    pub video_id: String,
    /// What to do.
    pub job_type: JobType,
    /// Object key of the input (the original upload).
    pub input_path: String,
    /// Object key prefix the outputs go under.
    pub output_path: Option<String>,
    /// Job parameters (ladder, segment duration, …).
    pub parameters: serde_json::Value,
    /// Fences every later write of this lease.
    pub lease_token: Uuid,
    /// The lease ends here unless a heartbeat extends it.
    pub lease_expires_at: DateTime<Utc>,
    /// 1 for the first lease of the job, 2 for its first retry, …
    pub attempt: i32,
}

/// `POST /v1/worker/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The lease being extended.
    pub lease_token: Uuid,
    /// Percent done, 0..=100.
    #[serde(default)]
    pub progress: i32,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The lease now ends here.
    pub lease_expires_at: DateTime<Utc>,
}

/// `POST /v1/worker/jobs/{id}/complete`: the job is done; its outputs are
/// recorded in the same transaction that completes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The lease being completed.
    pub lease_token: Uuid,
    /// What the job produced.
    #[serde(default)]
    pub outputs: JobOutputs,
}

/// The answer to a completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteResponse {
    /// The job's status now (`completed`).
    pub status: JobStatus,
    /// True when this lease had already completed the job (a retried
    /// request): nothing was recorded twice.
    pub already_completed: bool,
    /// The video's status after this completion (`ready` once all its
    /// jobs are done).
    pub video_status: String,
}

/// What a job produced. Recording is an upsert, so a re-run of a job
/// after a crash writes the same rows again instead of adding more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOutputs {
    /// Renditions (`video_encodings` rows).
    #[serde(default)]
    pub encodings: Vec<EncodingOutput>,
    /// Thumbnails, sprite, storyboard (`video_thumbs` rows).
    #[serde(default)]
    pub thumbnails: Vec<ThumbnailOutput>,
    /// What the probe found out about the source (`videos` columns).
    #[serde(default)]
    pub video: Option<SourceMetadata>,
    /// A transcode job that planned its source into chunks: the chunk jobs,
    /// in source order. The coordinator enqueues them in the completing
    /// transaction and makes the video's manifest job wait for them and
    /// stitch their outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkJob>,
    /// Bytes of input the job read from the object store (the original,
    /// or a chunk's part of it): `processing_jobs.source_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<i64>,
    /// MP4 downloads written (`video_downloads` rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downloads: Vec<DownloadOutput>,
}

/// A progressive MP4 download of one rendition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadOutput {
    /// Rung name, e.g. `720p`.
    pub rendition: String,
    /// Its object key (`encoded/{video_id}/{rung}/video.mp4`).
    pub storage_key: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Its duration in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<i64>,
}

/// One chunk of a source planned by a transcode job: a transcode job of
/// its own that encodes one time range of the video into every rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkJob {
    /// Object key of the chunk's input (under `originals/{id}/chunks/`).
    pub input_path: String,
    /// The chunk job's parameters (the worker's own format).
    pub parameters: serde_json::Value,
}

/// One rendition of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingOutput {
    /// Rung name, e.g. `720p`.
    pub resolution: String,
    /// e.g. `h264`.
    pub codec: String,
    /// e.g. `ts`.
    pub container: String,
    /// Average bits per second.
    pub bitrate: i32,
    /// Peak bits per second (HLS `BANDWIDTH`).
    #[serde(default)]
    pub peak_bitrate: Option<i32>,
    /// Frame width in pixels.
    #[serde(default)]
    pub width: Option<i32>,
    /// Frame height in pixels.
    #[serde(default)]
    pub height: Option<i32>,
    /// Object key prefix of the rendition's segments.
    pub storage_path: String,
    /// Total bytes of all segments.
    pub file_size_bytes: i64,
    /// Object key of the rendition's playlist.
    #[serde(default)]
    pub manifest_path: Option<String>,
    /// Target segment duration, seconds.
    pub segment_duration: i32,
    /// How many segments.
    #[serde(default)]
    pub segment_count: Option<i32>,
}

/// Kind of an image or cue file a thumbnail job makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbKind {
    /// A frame at an interval (`thumb_{n}.jpg`).
    Frame,
    /// The poster (`default.jpg`).
    Default,
    /// The scrubbing sprite (`sprite.jpg`).
    Sprite,
    /// The WebVTT storyboard into the sprite.
    Storyboard,
}

impl ThumbKind {
    /// The value stored in `video_thumbs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbKind::Frame => "frame",
            ThumbKind::Default => "default",
            ThumbKind::Sprite => "sprite",
            ThumbKind::Storyboard => "storyboard",
        }
    }
}

/// One thumbnail-job output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailOutput {
    /// Second of the source the image shows (0 for sprite/storyboard).
    pub timestamp_sec: i32,
    /// Object key.
    pub url: String,
    /// Bytes.
    pub size: i32,
    /// What it is.
    pub kind: ThumbKind,
    /// Pixels.
    #[serde(default)]
    pub width: Option<i32>,
    /// Pixels.
    #[serde(default)]
    pub height: Option<i32>,
}

/// Source metadata from the worker's probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMetadata {
    /// Duration, seconds (rounded to the nearest second when stored).
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// Display width after rotation.
    #[serde(default)]
    pub width: Option<i32>,
    /// Display height after rotation.
    #[serde(default)]
    pub height: Option<i32>,
    /// Average frame rate.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Source video codec name.
    #[serde(default)]
    pub codec: Option<String>,
}

/// `POST /v1/worker/jobs/{id}/release`: give a job back without working
/// on it (a draining worker). The attempt is not counted and the job is
/// due again at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The lease given back.
    pub lease_token: Uuid,
    /// Why, for operators (kept in `error_message` until the next lease).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// The job's status now (`pending`).
    pub status: JobStatus,
}

/// `POST /v1/worker/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRequest {
    /// The lease that failed.
    pub lease_token: Uuid,
    /// Why, in words a creator understands.
    pub error: String,
    /// Whether another attempt may succeed (a network error: yes; a
    /// corrupt file: no). Defaults to yes.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// The answer to a failure report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailResponse {
    /// `pending` when the job will be retried, `failed` when not.
    pub status: JobStatus,
    /// When the retry becomes due, if there is one.
    pub run_after: Option<DateTime<Utc>>,
}

/// A job as operators see it (`GET /v1/jobs`, `GET /v1/jobs/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// `processing_jobs.id`.
    pub id: i64,
    /// The video's public id.
    pub video_id: String,
    /// What it does.
    pub job_type: JobType,
    /// Where it is.
    pub status: JobStatus,
    /// Percent done.
    pub progress: i32,
    /// Why it failed (or was retried last).
    pub error_message: Option<String>,
    /// Who holds or held it.
    pub worker_id: Option<String>,
    /// Leases so far.
    pub attempts: i32,
    /// Leases allowed before it fails.
    pub max_attempts: i32,
    /// Higher runs first.
    pub priority: i32,
    /// Jobs that must complete first.
    pub depends_on: Vec<i64>,
    /// Capabilities a worker needs to lease it.
    pub required_capabilities: Vec<String>,
    /// Input object key.
    pub input_path: String,
    /// Output object key prefix.
    pub output_path: Option<String>,
    /// Parameters.
    pub parameters: serde_json::Value,
    /// Not due before this.
    pub run_after: DateTime<Utc>,
    /// Current lease end, while processing.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Last leased.
    pub started_at: Option<DateTime<Utc>>,
    /// Completed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// `GET /v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
}

/// `GET /v1/queue/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueStats {
    /// Job counts by type and status (zero rows left out).
    pub counts: Vec<JobCount>,
    /// Age of the oldest due pending job, seconds (None: nothing due).
    pub oldest_pending_age_seconds: Option<f64>,
    /// Jobs completed in the last minute (throughput).
    #[serde(default)]
    pub completed_last_minute: i64,
    /// Workers that leased or polled within the last five minutes.
    pub workers_seen: i64,
    /// Those workers.
    pub workers: Vec<WorkerSeen>,
}

/// One (type, status) count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCount {
    /// Job type.
    pub job_type: JobType,
    /// Status.
    pub status: JobStatus,
    /// How many.
    pub count: i64,
}

/// A worker some coordinator replica heard from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSeen {
    /// Its id.
    pub worker_id: String,
    /// What it advertised.
    pub capabilities: Vec<String>,
    /// Last poll or write.
    pub last_seen_at: DateTime<Utc>,
}

/// `GET /v1/workers` (operator): every worker any coordinator replica
/// heard from, most recently seen first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerList {
    /// The workers.
    pub workers: Vec<WorkerView>,
}

/// One worker as an operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerView {
    /// Its id (`--worker-id`).
    pub worker_id: String,
    /// Capabilities it advertised (e.g. `nvenc`).
    pub capabilities: Vec<String>,
    /// Job types it leases.
    pub job_types: Vec<String>,
    /// Jobs it holds a lease on now.
    pub jobs_running: i64,
    /// Last poll or write.
    pub last_seen_at: DateTime<Utc>,
}

/// `GET /v1/videos/{video_id}` on the coordinator (operator): a video's
/// processing state with its jobs and renditions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoOpsView {
    /// Public id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// The owning channel's public id.
    pub channel_id: String,
    /// `uploading`, `processing`, `ready`, `failed` or `deleted`.
    pub status: String,
    /// `public`, `unlisted` or `private`.
    pub privacy: String,
    /// Mean progress of its jobs, percent.
    pub processing_progress: i32,
    /// Why processing failed.
    pub processing_error: Option<String>,
    /// Probed duration (0 until probed).
    pub duration_seconds: i32,
    /// Size of the original, bytes.
    pub original_size_bytes: Option<i64>,
    /// When the upload began.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Renditions recorded so far.
    pub encodings: Vec<EncodingView>,
    /// Every job of the video, oldest first.
    pub jobs: Vec<JobView>,
}

/// A recorded rendition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodingView {
    /// `240p`, `720p`, `1080p`.
    pub resolution: String,
    /// Average bitrate, bits/s.
    pub bitrate: i32,
    /// Frame width.
    pub width: Option<i32>,
    /// Frame height.
    pub height: Option<i32>,
    /// Segments in its playlist.
    pub segment_count: Option<i32>,
    /// Bytes of all its segments.
    pub file_size_bytes: i64,
    /// Its media playlist's object key.
    pub manifest_path: Option<String>,
}

/// `POST /v1/videos/{video_id}/retry` (operator): the jobs reopened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryReport {
    /// The video's jobs after the retry.
    pub jobs: Vec<JobView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_type_and_status_round_trip() {
        for t in JobType::ALL {
            assert_eq!(t.as_str().parse::<JobType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
        assert!("transcoding".parse::<JobType>().is_err());
    }

    #[test]
    fn lease_request_defaults() {
        let r: LeaseRequest = serde_json::from_str(r#"{"worker_id":"w1"}"#).unwrap();
        assert_eq!(r.max_jobs, 1);
        assert_eq!(r.wait_ms, 0);
        assert!(r.job_types.is_empty());
        let f: FailRequest = serde_json::from_value(serde_json::json!({
            "lease_token": Uuid::nil(), "error": "x"
        }))
        .unwrap();
        assert!(f.retryable);
    }
}
