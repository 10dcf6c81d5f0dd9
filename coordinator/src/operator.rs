//! The operators' routes (operator token): jobs (list, show, retry,
//! cancel), queue stats, workers, and a video's processing state. What
//! `vodfarm jobs`, `vodfarm workers` and `vodfarm videos` call.

use crate::api::{parse_id, AppState};
use crate::queue::JobFilter;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::is_valid_public_id;
use vodfarm_core::jobs::{
    JobList, JobStatus, JobType, JobView, QueueStats, RetryReport, VideoOpsView, WorkerList,
};

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    job_type: Option<String>,
    video_id: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

pub(crate) async fn list_jobs(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<ApiJson<JobList>, ApiError> {
    let status = p
        .status
        .as_deref()
        .map(|v| {
            v.parse::<JobStatus>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    let limit = match p.limit.as_deref() {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be between 1 and 1000"))?,
    };
    let before = p.before.as_deref().map(parse_id).transpose()?;
    let job_type = p
        .job_type
        .as_deref()
        .map(|v| {
            v.parse::<JobType>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    let filter = JobFilter {
        status,
        job_type,
        video_id: p.video_id.as_deref(),
    };
    let jobs = s.queue.list(&filter, limit, before).await?;
    Ok(ApiJson(JobList { jobs }))
}

pub(crate) async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    Ok(ApiJson(s.queue.get(parse_id(&id)?).await?))
}

pub(crate) async fn retry_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    let view = s.queue.retry(parse_id(&id)?).await?;
    tracing::info!(job_id = view.id, video_id = %view.video_id, "job retried by operator");
    Ok(ApiJson(view))
}

pub(crate) async fn cancel_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    let view = s.queue.cancel(parse_id(&id)?).await?;
    tracing::info!(job_id = view.id, video_id = %view.video_id, "job cancelled by operator");
    Ok(ApiJson(view))
}

pub(crate) async fn queue_stats(
    State(s): State<AppState>,
) -> Result<ApiJson<QueueStats>, ApiError> {
    Ok(ApiJson(s.queue.stats().await?))
}

/// `GET /v1/workers`. This replica's sightings since its last periodic
/// flush are written first, so a worker that just polled it is listed.
pub(crate) async fn list_workers(
    State(s): State<AppState>,
) -> Result<ApiJson<WorkerList>, ApiError> {
    s.queue.record_workers(&s.seen.take()).await?;
    Ok(ApiJson(WorkerList {
        workers: s.queue.list_workers().await?,
    }))
}

fn video_not_found(video_id: &str) -> ApiError {
    ApiError::not_found(format!("no video {video_id:?}"))
}

fn check_video_id(video_id: &str) -> Result<(), ApiError> {
    if is_valid_public_id(video_id) {
        Ok(())
    } else {
        Err(video_not_found(video_id))
    }
}

/// `GET /v1/videos/{video_id}`: its state, renditions and jobs.
pub(crate) async fn get_video(
    State(s): State<AppState>,
    Path(video_id): Path<String>,
) -> Result<ApiJson<VideoOpsView>, ApiError> {
    check_video_id(&video_id)?;
    s.queue
        .video_view(&video_id)
        .await?
        .map(ApiJson)
        .ok_or_else(|| video_not_found(&video_id))
}

/// `POST /v1/videos/{video_id}/retry`: reopens its failed and cancelled
/// jobs.
pub(crate) async fn retry_video(
    State(s): State<AppState>,
    Path(video_id): Path<String>,
) -> Result<ApiJson<RetryReport>, ApiError> {
    check_video_id(&video_id)?;
    let jobs = s
        .queue
        .retry_video(&video_id)
        .await?
        .ok_or_else(|| video_not_found(&video_id))?;
    tracing::info!(video_id = %video_id, "video's jobs retried by operator");
    Ok(ApiJson(RetryReport { jobs }))
}
