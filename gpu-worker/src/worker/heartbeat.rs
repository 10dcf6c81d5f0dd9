//! A running job's heartbeat: progress to the coordinator every
//! `--heartbeat-interval`, which also extends the lease. A lost lease
//! stops the job (another worker owns it now). Each beat also adds the
//! frames encoded since the last one to the worker's frames counter.
//!
//! A worker that cannot reach the coordinator stops the job too, once
//! the lease has run out by its own clock with no beat answered: the
//! coordinator hands an expired lease to another worker (and a deleted
//! video's objects are removed a last time `--purge-settle` after the
//! deletion), so a worker cut off from it must not go on writing.

use super::Worker;
use crate::client::ClientError;
use crate::media::JobControl;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vodfarm_core::jobs::LeasedJob;

/// Heartbeats `job` until aborted; on a lost or run-out lease cancels
/// `lease_lost` and the job, and returns.
pub(super) async fn heartbeat_loop(
    worker: Arc<Worker>,
    job: LeasedJob,
    control: Arc<JobControl>,
    lease_lost: CancellationToken,
) {
    let interval = worker.heartbeat_interval;
    let mut deadline = lease_deadline(job.lease_expires_at, Utc::now(), interval);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        let beat = async {
            tick.tick().await;
            // Frames encoded since the last beat: keeps the encode rate
            // (vodfarm_worker_frames_encoded_total) live during long jobs.
            worker.metrics.encoded(control.take_frames());
            worker
                .client
                .heartbeat(job.id, job.lease_token, control.percent())
                .await
        };
        let answer = tokio::select! {
            answer = beat => answer,
            () = tokio::time::sleep_until(deadline) => {
                tracing::error!(
                    "no heartbeat reached the coordinator before the lease ran out; job stopped (the coordinator may give it to another worker)"
                );
                lease_lost.cancel();
                control.cancel();
                return;
            }
        };
        match answer {
            Ok(r) => deadline = lease_deadline(r.lease_expires_at, Utc::now(), interval),
            Err(ClientError::LeaseLost(_) | ClientError::NotFound(_)) => {
                lease_lost.cancel();
                control.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// When a lease that the coordinator says ends at `expires_at` ends by
/// this worker's monotonic clock, read at `now`: never sooner than two
/// beats from now, so a worker clock ahead of the coordinator's costs a
/// job only when two beats in a row go unanswered.
fn lease_deadline(expires_at: DateTime<Utc>, now: DateTime<Utc>, interval: Duration) -> Instant {
    let left = (expires_at - now).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + left.max(interval * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_by_the_coordinators_clock_but_never_within_two_beats() {
        let now = Utc::now();
        let beat = Duration::from_millis(500);
        let at = |secs: i64| {
            let d = lease_deadline(now + chrono::Duration::seconds(secs), now, beat);
            d.duration_since(Instant::now()).as_secs_f64()
        };
        assert!((59.0..=60.0).contains(&at(60)));
        // Already over by this worker's clock (or far behind it): two beats.
        assert!((0.9..=1.0).contains(&at(-30)));
        assert!((0.9..=1.0).contains(&at(0)));
    }
}
