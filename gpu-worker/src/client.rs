//! The worker's side of the coordinator protocol.
//!
//! Workers hold no database credentials; everything goes through these
//! calls. A [`ClientError::LeaseLost`] means another worker owns the job
//! now (or it was cancelled): stop working on it and drop its output.

use std::time::Duration;
use uuid::Uuid;
use vodfarm_core::http::ErrorBody;
use vodfarm_core::jobs::{
    CompleteRequest, CompleteResponse, FailRequest, FailResponse, HeartbeatRequest,
    HeartbeatResponse, JobOutputs, JobType, LeaseRequest, LeaseResponse, LeasedJob, ReleaseRequest,
    ReleaseResponse,
};

/// A coordinator call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The job's lease is no longer ours (HTTP 409 `lease_lost`).
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The job does not exist (HTTP 404).
    #[error("job not found: {0}")]
    NotFound(String),
    /// The worker token was refused (HTTP 401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Any other error answer.
    #[error("coordinator answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code of the body.
        code: String,
        /// Its message.
        message: String,
    },
    /// The request did not get an answer (network, timeout).
    #[error("coordinator unreachable: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    /// Whether repeating the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Talks to one coordinator (or a load balancer in front of several).
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
    worker_id: String,
}

impl CoordinatorClient {
    /// A client for the coordinator at `base` (e.g. `http://127.0.0.1:8082`).
    pub fn new(base: &str, token: &str, worker_id: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(CoordinatorClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            worker_id: worker_id.to_owned(),
        })
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (String::new(), text),
        };
        Err(match (status.as_u16(), code.as_str()) {
            (409, "lease_lost") => ClientError::LeaseLost(message),
            (404, _) => ClientError::NotFound(message),
            (401, _) => ClientError::Unauthorized(message),
            (s, _) => ClientError::Api {
                status: s,
                code,
                message,
            },
        })
    }

    /// Leases up to `max_jobs` jobs of `job_types` (empty: any), waiting
    /// up to `wait` for work.
    pub async fn lease(
        &self,
        job_types: &[JobType],
        capabilities: &[String],
        max_jobs: i64,
        wait: Duration,
    ) -> Result<Vec<LeasedJob>, ClientError> {
        let req = LeaseRequest {
            worker_id: self.worker_id.clone(),
            capabilities: capabilities.to_vec(),
            job_types: job_types.to_vec(),
            max_jobs,
            wait_ms: wait.as_millis().min(i64::MAX as u128) as i64,
        };
        let resp: LeaseResponse = self
            .post("/v1/worker/lease", &req, wait + Duration::from_secs(30))
            .await?;
        Ok(resp.jobs)
    }

    /// Extends the lease and reports progress (0..=100).
    pub async fn heartbeat(
        &self,
        job: i64,
        lease: Uuid,
        progress: i32,
    ) -> Result<HeartbeatResponse, ClientError> {
        let req = HeartbeatRequest {
            lease_token: lease,
            progress,
        };
        self.post(
            &format!("/v1/worker/jobs/{job}/heartbeat"),
            &req,
            Duration::from_secs(30),
        )
        .await
    }

    /// Completes the job with its outputs.
    pub async fn complete(
        &self,
        job: i64,
        lease: Uuid,
        outputs: JobOutputs,
    ) -> Result<CompleteResponse, ClientError> {
        let req = CompleteRequest {
            lease_token: lease,
            outputs,
        };
        self.post(
            &format!("/v1/worker/jobs/{job}/complete"),
            &req,
            Duration::from_secs(60),
        )
        .await
    }

    /// Reports a failure; `retryable` says whether another attempt may help.
    pub async fn fail(
        &self,
        job: i64,
        lease: Uuid,
        error: &str,
        retryable: bool,
    ) -> Result<FailResponse, ClientError> {
        let req = FailRequest {
            lease_token: lease,
            error: error.to_owned(),
            retryable,
        };
        self.post(
            &format!("/v1/worker/jobs/{job}/fail"),
            &req,
            Duration::from_secs(30),
        )
        .await
    }

    /// Gives a job back unworked (this worker is stopping): it is due
    /// again at once and the attempt is not counted.
    pub async fn release(
        &self,
        job: i64,
        lease: Uuid,
        reason: &str,
    ) -> Result<ReleaseResponse, ClientError> {
        let req = ReleaseRequest {
            lease_token: lease,
            reason: Some(reason.to_owned()),
        };
        self.post(
            &format!("/v1/worker/jobs/{job}/release"),
            &req,
            Duration::from_secs(30),
        )
        .await
    }
}
