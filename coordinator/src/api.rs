//! The coordinator's HTTP API: the worker protocol and the operators' view.

use crate::dispatch::Dispatcher;
use crate::metrics::CoordinatorMetrics;
use crate::operator;
use crate::queue::{JobQueue, LeaseFilter, QueueError, WorkerSighting};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vodfarm_core::http::{bearer_token, not_found_fallback, ApiError, ApiJson};
use vodfarm_core::ids::constant_time_eq;
use vodfarm_core::jobs::{
    CompleteRequest, CompleteResponse, FailRequest, FailResponse, HeartbeatRequest,
    HeartbeatResponse, JobStatus, LeaseRequest, LeaseResponse, ReleaseRequest, ReleaseResponse,
};
use vodfarm_core::telemetry::metrics_response;

/// Most jobs one lease may ask for.
pub const MAX_JOBS_PER_LEASE: i64 = 100;

/// Workers heard from since the last flush to the `workers` table.
#[derive(Debug, Default)]
pub struct WorkersSeen {
    dirty: Mutex<HashMap<String, WorkerSighting>>,
}

impl WorkersSeen {
    fn record(&self, req: &LeaseRequest) {
        let sighting = WorkerSighting {
            worker_id: req.worker_id.clone(),
            capabilities: req.capabilities.clone(),
            job_types: req
                .job_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            last_seen_at: Utc::now(),
        };
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(req.worker_id.clone(), sighting);
    }

    /// Takes what was seen since the last call.
    pub fn take(&self) -> Vec<WorkerSighting> {
        let mut map = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.drain().map(|(_, s)| s).collect()
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The queue.
    pub queue: JobQueue,
    /// Long-poll dispatch.
    pub dispatcher: Arc<Dispatcher>,
    /// Metrics.
    pub metrics: Arc<CoordinatorMetrics>,
    /// Workers' shared secret.
    pub worker_token: Arc<str>,
    /// Operators' secret (never the workers').
    pub operator_token: Arc<str>,
    /// Longest long poll.
    pub max_wait: Duration,
    /// Workers seen.
    pub seen: Arc<WorkersSeen>,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("queue", &self.queue)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match &e {
            QueueError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "job_not_found", e.to_string())
            }
            QueueError::LeaseLost { .. } => ApiError::conflict("lease_lost", e.to_string()),
            QueueError::InvalidState { .. } | QueueError::NothingToRetry(_) => {
                ApiError::conflict("invalid_state", e.to_string())
            }
            QueueError::InvalidInput(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.to_string(),
            ),
            QueueError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("database unavailable, retry shortly")
            }
            QueueError::Db(_) => ApiError::internal(&e),
        }
    }
}

/// The router: worker routes, operator routes, health and metrics.
pub fn router(state: AppState) -> Router {
    let worker = Router::new()
        .route("/v1/worker/lease", post(lease))
        .route("/v1/worker/jobs/{id}/heartbeat", post(heartbeat))
        .route("/v1/worker/jobs/{id}/complete", post(complete))
        .route("/v1/worker/jobs/{id}/fail", post(fail))
        .route("/v1/worker/jobs/{id}/release", post(release))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_worker,
        ));
    let operator = Router::new()
        .route("/v1/jobs", get(operator::list_jobs))
        .route("/v1/jobs/{id}", get(operator::get_job))
        .route("/v1/jobs/{id}/retry", post(operator::retry_job))
        .route("/v1/jobs/{id}/cancel", post(operator::cancel_job))
        .route("/v1/queue/stats", get(operator::queue_stats))
        .route("/v1/workers", get(operator::list_workers))
        .route("/v1/videos/{video_id}", get(operator::get_video))
        .route("/v1/videos/{video_id}/retry", post(operator::retry_video))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ));
    Router::new()
        .merge(worker)
        .merge(operator)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found_fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

/// Checks the bearer token against `secret`: 401 without one or with an
/// unknown one, 403 with `other`, the other role's token (a worker's
/// token on an operator route, or the reverse), so the caller learns
/// which token to use.
fn check_bearer(req: &Request, secret: &str, other: &str, route: &str) -> Result<(), ApiError> {
    match bearer_token(req.headers().get(header::AUTHORIZATION)) {
        Some(t) if constant_time_eq(t.as_bytes(), secret.as_bytes()) => Ok(()),
        Some(t) if constant_time_eq(t.as_bytes(), other.as_bytes()) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token does not open the {route} routes"),
        )),
        Some(_) => Err(ApiError::unauthorized("invalid bearer token")),
        None => Err(ApiError::unauthorized(
            "missing Authorization: Bearer token",
        )),
    }
}

async fn require_worker(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check_bearer(&req, &s.worker_token, &s.operator_token, "worker") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_operator(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check_bearer(&req, &s.operator_token, &s.worker_token, "operator") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    s.metrics
        .http_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

pub(crate) fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(format!("job id must be a positive integer, got {raw:?}"))
    })
}

fn validate_lease(req: &LeaseRequest) -> Result<(), ApiError> {
    let id_ok = !req.worker_id.is_empty()
        && req.worker_id.len() <= 100
        && req.worker_id.chars().all(|c| c.is_ascii_graphic());
    if !id_ok {
        return Err(ApiError::bad_request(
            "worker_id must be 1..=100 visible ASCII characters",
        ));
    }
    if !(1..=MAX_JOBS_PER_LEASE).contains(&req.max_jobs) {
        return Err(ApiError::bad_request(format!(
            "max_jobs must be between 1 and {MAX_JOBS_PER_LEASE}, got {}",
            req.max_jobs
        )));
    }
    if req.wait_ms < 0 {
        return Err(ApiError::bad_request(format!(
            "wait_ms must not be negative, got {}",
            req.wait_ms
        )));
    }
    let caps_ok = req.capabilities.len() <= 32
        && req.capabilities.iter().all(|c| {
            !c.is_empty()
                && c.len() <= 50
                && !c.contains(',')
                && c.chars().all(|c| c.is_ascii_graphic())
        });
    if !caps_ok {
        return Err(ApiError::bad_request(
            "capabilities: at most 32 names of 1..=50 visible ASCII characters, no commas",
        ));
    }
    Ok(())
}

async fn lease(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<ApiJson<LeaseResponse>, ApiError> {
    validate_lease(&req)?;
    s.seen.record(&req);
    let wait = Duration::from_millis(req.wait_ms as u64).min(s.max_wait);
    let filter = LeaseFilter::new(&req.job_types, &req.capabilities);
    let jobs = s
        .dispatcher
        .lease(&req.worker_id, filter, req.max_jobs, wait)
        .await?;
    for job in &jobs {
        s.metrics
            .leases_granted
            .with_label_values(&[job.job_type.as_str()])
            .inc();
        tracing::info!(
            job_id = job.id, video_id = %job.video_id, job_type = %job.job_type,
            worker_id = %req.worker_id, attempt = job.attempt, "job leased"
        );
    }
    Ok(ApiJson(LeaseResponse { jobs }))
}

async fn heartbeat(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<ApiJson<HeartbeatResponse>, ApiError> {
    let id = parse_id(&id)?;
    let lease_expires_at = s.queue.heartbeat(id, req.lease_token, req.progress).await?;
    tracing::debug!(job_id = id, progress = req.progress, "heartbeat");
    Ok(ApiJson(HeartbeatResponse { lease_expires_at }))
}

async fn complete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> Result<ApiJson<CompleteResponse>, ApiError> {
    let id = parse_id(&id)?;
    let (resp, timing) = s.queue.complete(id, req.lease_token, &req.outputs).await?;
    if let Some((job_type, secs)) = timing {
        s.metrics
            .jobs_completed
            .with_label_values(&[job_type.as_str()])
            .inc();
        s.metrics
            .job_duration
            .with_label_values(&[job_type.as_str()])
            .observe(secs);
        tracing::info!(
            job_id = id, job_type = %job_type, seconds = secs,
            video_status = %resp.video_status, "job completed"
        );
    }
    Ok(ApiJson(resp))
}

async fn fail(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FailRequest>,
) -> Result<ApiJson<FailResponse>, ApiError> {
    let id = parse_id(&id)?;
    if req.error.trim().is_empty() {
        return Err(ApiError::bad_request("error must say why the job failed"));
    }
    let resp = s
        .queue
        .fail(id, req.lease_token, &req.error, req.retryable)
        .await?;
    let view = s.queue.get(id).await?;
    let outcome = if resp.status == JobStatus::Failed {
        "failed"
    } else {
        "retry"
    };
    s.metrics
        .jobs_failed
        .with_label_values(&[view.job_type.as_str(), outcome])
        .inc();
    tracing::warn!(
        job_id = id, video_id = %view.video_id, job_type = %view.job_type,
        retryable = req.retryable, outcome, error = %req.error, "job failed"
    );
    Ok(ApiJson(resp))
}

async fn release(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<ApiJson<ReleaseResponse>, ApiError> {
    let id = parse_id(&id)?;
    s.queue
        .release_lease(id, req.lease_token, req.reason.as_deref())
        .await?;
    tracing::info!(
        job_id = id,
        reason = req.reason.as_deref().unwrap_or(""),
        "job released unworked"
    );
    Ok(ApiJson(ReleaseResponse {
        status: JobStatus::Pending,
    }))
}

async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1 FROM processing_jobs LIMIT 1")
        .execute(s.queue.pool())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready");
            ApiError::unavailable("database or schema not available")
        })?;
    Ok("ready")
}

async fn metrics(State(s): State<AppState>) -> Response {
    // The gauges describe the whole queue, so read them at scrape time: a
    // cost proportional to scrapes, not to workers.
    match s.queue.open_counts().await {
        Ok(open) => {
            let m = &s.metrics;
            // Types with no open job are absent from the answer: zero
            // every type first, then set those present.
            for t in vodfarm_core::jobs::JobType::ALL {
                let t = [t.as_str()];
                m.jobs_pending.with_label_values(&t).set(0);
                m.jobs_processing.with_label_values(&t).set(0);
                m.oldest_pending.with_label_values(&t).set(0.0);
            }
            for c in open.by_type {
                let t = [c.job_type.as_str()];
                m.jobs_pending.with_label_values(&t).set(c.pending);
                m.jobs_processing.with_label_values(&t).set(c.processing);
                m.oldest_pending
                    .with_label_values(&t)
                    .set(c.oldest_due_seconds);
            }
            m.workers_seen.set(open.workers_seen);
        }
        Err(e) => tracing::warn!(error = %e, "could not refresh queue gauges"),
    }
    metrics_response(&s.metrics.registry)
}
