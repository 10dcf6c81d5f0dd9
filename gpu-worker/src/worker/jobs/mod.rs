//! The job handlers, one per job type: each turns a leased job into the
//! outputs reported with `complete`, or a [`JobFailure`].

mod chunk;
mod manifest;
mod mp4;
mod plan;
mod stitch;
mod thumbnail;
mod transcode;

use super::failure::JobFailure;
use super::Worker;
use crate::media::JobControl;
use std::sync::Arc;
use vodfarm_core::jobs::{JobOutputs, JobType, LeasedJob};

/// Runs `job` with the handler for its type.
pub(super) async fn run(
    worker: &Arc<Worker>,
    job: &LeasedJob,
    control: &Arc<JobControl>,
) -> Result<JobOutputs, JobFailure> {
    match job.job_type {
        JobType::Transcode => transcode::transcode_job(worker, job, control).await,
        JobType::Thumbnail => thumbnail::thumbnail_job(worker, job, control).await,
        JobType::Manifest => manifest::manifest_job(worker, job).await,
        JobType::Mp4 => mp4::mp4_job(worker, job).await,
    }
}
