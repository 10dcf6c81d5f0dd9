//! A running job's heartbeat: progress to the coordinator every
//! `--heartbeat-interval`, which also extends the lease. A lost lease
//! stops the job (another worker owns it now). Each beat also adds the
//! frames encoded since the last one to the worker's frames counter.

use super::Worker;
use crate::client::ClientError;
use crate::media::JobControl;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use vodfarm_core::jobs::LeasedJob;

/// Heartbeats `job` until aborted; on a lost lease cancels `lease_lost`
/// and the job, and returns.
pub(super) async fn heartbeat_loop(
    worker: Arc<Worker>,
    job: LeasedJob,
    control: Arc<JobControl>,
    lease_lost: CancellationToken,
) {
    let mut tick = tokio::time::interval(worker.heartbeat_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        // Frames encoded since the last beat: keeps the encode rate
        // (vodfarm_worker_frames_encoded_total) live during long jobs.
        worker.metrics.encoded(control.take_frames());
        match worker
            .client
            .heartbeat(job.id, job.lease_token, control.percent())
            .await
        {
            Ok(_) => {}
            Err(ClientError::LeaseLost(_) | ClientError::NotFound(_)) => {
                lease_lost.cancel();
                control.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
