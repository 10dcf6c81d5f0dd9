//! Lease slots: each of `--concurrency` slots long-polls the coordinator
//! for one job at a time, runs it and reports the outcome. A lease
//! answered just as draining began is handed back, not stranded.

use super::failure::JobFailure;
use super::heartbeat::heartbeat_loop;
use super::{jobs, Worker};
use crate::client::ClientError;
use crate::media::{JobControl, MediaError};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vodfarm_core::jobs::LeasedJob;

/// How long a draining worker waits for a lease answer already in flight.
const LATE_LEASE_GRACE: Duration = Duration::from_secs(2);

/// One slot: lease, run, repeat until the worker drains.
pub(super) async fn slot_loop(worker: Arc<Worker>, slot: usize) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if worker.draining.is_cancelled() {
            return;
        }
        let capabilities = worker.lease_capabilities();
        let lease = worker
            .client
            .lease(&worker.job_types, &capabilities, 1, worker.poll_wait);
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

/// Runs one leased job and reports its outcome: completed, failed
/// (retryable or not), handed back, or dropped when the lease was lost.
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
    let result = jobs::run(&worker, &job, &control).await;
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
                    tracing::warn!(error = %e, "hand-back not recorded; the lease will expire");
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

/// Retries a coordinator call on transient errors (6 times, backoff from
/// 250 ms to 5 s).
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
