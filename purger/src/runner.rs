//! The purge loop: claim due outbox rows, send each to every CDN target
//! that has not acknowledged it yet, record the acknowledgements, and
//! write back what happened.
//!
//! - Woken by `NOTIFY vodfarm_purges` (sent by the outbox trigger when a
//!   change commits), at the earliest `due_at` of a backed-off row, and
//!   every `poll_interval` as a safety net.
//! - Targets are independent: one CDN failing does not hold back or
//!   repeat the others (acknowledgements are per target and round).
//! - **Two rounds** (unless `confirm_after` is 0): an answer that was
//!   already on its way to the edge when the first purge arrived (a fetch
//!   the shield granted just before it heard of the change, or one Varnish
//!   was still receiving) would be cached again for a year; the second
//!   round, `confirm_after` later, removes it.
//! - The database going away is not fatal: the loop logs, backs off and
//!   tries again; nothing is lost since the rows stay in the outbox.

use crate::drivers::{Batch, CdnDriver};
use crate::metrics::PurgerMetrics;
use crate::outbox::{backoff, Claimed, Outbox, Outcome};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vodfarm_core::ids::is_valid_public_id;

/// The channel the outbox trigger notifies.
pub const PURGES_CHANNEL: &str = "vodfarm_purges";

/// How the loop paces itself.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Rows claimed at once.
    pub batch_size: i64,
    /// How long a claim holds its rows before another purger may take
    /// them (longer than a batch's requests can take).
    pub lease: Duration,
    /// First retry delay after a CDN failed.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Delay of the second round (zero: one round only).
    pub confirm_after: Duration,
    /// Longest sleep without a notification.
    pub poll_interval: Duration,
}

/// The purge loop and its LISTEN connection.
#[derive(Debug)]
pub struct Runner {
    outbox: Outbox,
    drivers: Vec<Arc<dyn CdnDriver>>,
    metrics: PurgerMetrics,
    settings: RunSettings,
    wake: Notify,
    listening: AtomicBool,
}

/// Per row, per target: `None` acknowledged, `Some(error)` not.
type TargetResults = Vec<Option<String>>;

impl Runner {
    /// A loop over `outbox` sending to `drivers`.
    pub fn new(
        outbox: Outbox,
        drivers: Vec<Arc<dyn CdnDriver>>,
        metrics: PurgerMetrics,
        settings: RunSettings,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            outbox,
            drivers,
            metrics,
            settings,
            wake: Notify::new(),
            listening: AtomicBool::new(false),
        })
    }

    /// Whether the LISTEN connection is up.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Rounds a purge goes through.
    fn rounds(&self) -> i32 {
        if self.drivers.is_empty() || self.settings.confirm_after.is_zero() {
            1
        } else {
            2
        }
    }

    /// Runs until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = 0u32;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.pass().await {
                Ok(claimed) => {
                    if failing > 0 {
                        tracing::info!("outbox reachable again; purging");
                        failing = 0;
                    }
                    if claimed > 0 {
                        continue;
                    }
                    match self.outbox.next_due().await {
                        Ok(Some(at)) => (at - chrono::Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(self.settings.poll_interval),
                        Ok(None) => self.settings.poll_interval,
                        Err(e) => {
                            self.metrics.db_errors.inc();
                            tracing::warn!(error = %e, "cannot read the next due purge");
                            self.settings.poll_interval
                        }
                    }
                }
                Err(e) => {
                    failing += 1;
                    self.metrics.db_errors.inc();
                    if failing == 1 || failing % 10 == 0 {
                        tracing::warn!(error = %e, failures = failing, "outbox unavailable; retrying");
                    }
                    backoff(failing, Duration::from_millis(250), Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One claim and its purges; returns how many rows were claimed.
    pub async fn pass(&self) -> Result<usize, sqlx::Error> {
        let rows = self
            .outbox
            .claim(self.settings.batch_size, self.settings.lease)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        for r in rows.iter().filter(|r| !is_valid_public_id(&r.video_id)) {
            // The origin routes only valid ids: nothing was served under
            // this one, so there is nothing to purge.
            tracing::warn!(purge_id = r.id, video_id = %r.video_id, "not a video id; nothing to purge");
        }
        let sent =
            futures::future::join_all(self.drivers.iter().map(|d| self.send(d.as_ref(), &rows)))
                .await;
        let mut per_target = Vec::with_capacity(sent.len());
        for s in sent {
            per_target.push(s?);
        }
        let rounds = self.rounds();
        let mut outcomes = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let errors: Vec<&str> = per_target.iter().filter_map(|t| t[i].as_deref()).collect();
            let outcome = if errors.is_empty() {
                let last = row.round + 1 >= rounds;
                if row.round == 0 {
                    let took = (chrono::Utc::now() - row.created_at)
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    self.metrics.latency.observe(took.as_secs_f64());
                    tracing::info!(
                        purge_id = row.id,
                        video_id = %row.video_id,
                        reason = %row.reason,
                        seconds = took.as_secs_f64(),
                        "purge acknowledged by every CDN"
                    );
                }
                if last {
                    self.metrics.completed.inc();
                }
                Outcome::RoundDone {
                    next_round_after: (!last).then_some(self.settings.confirm_after),
                }
            } else {
                self.metrics.retries.inc();
                let failures = (row.attempts - row.round).max(1) as u32;
                let after = backoff(failures, self.settings.retry_base, self.settings.retry_max);
                tracing::warn!(
                    purge_id = row.id,
                    video_id = %row.video_id,
                    attempt = failures,
                    retry_in = ?after,
                    error = %errors.join("; "),
                    "purge not acknowledged; will retry"
                );
                Outcome::Retry {
                    after,
                    error: errors.join("; "),
                }
            };
            outcomes.push((row, outcome));
        }
        self.outbox.finish(&outcomes).await?;
        Ok(rows.len())
    }

    /// Sends the rows `driver` has not acknowledged, in batches; records
    /// each acknowledgement as soon as it comes.
    async fn send(
        &self,
        driver: &dyn CdnDriver,
        rows: &[Claimed],
    ) -> Result<TargetResults, sqlx::Error> {
        let target = driver.target();
        let mut results: TargetResults = vec![None; rows.len()];
        let pending: Vec<usize> = (0..rows.len())
            .filter(|&i| !rows[i].acked.contains(target) && is_valid_public_id(&rows[i].video_id))
            .collect();
        for chunk in pending.chunks(driver.max_batch().max(1)) {
            let mut video_ids: Vec<String> =
                chunk.iter().map(|&i| rows[i].video_id.clone()).collect();
            video_ids.sort();
            video_ids.dedup();
            let batch = Batch {
                video_ids,
                reference: reference(chunk.iter().map(|&i| &rows[i])),
            };
            match driver.purge(&batch).await {
                Ok(()) => {
                    self.metrics
                        .requests
                        .with_label_values(&[target, "ok"])
                        .inc();
                    let acks: Vec<(i64, i32)> =
                        chunk.iter().map(|&i| (rows[i].id, rows[i].round)).collect();
                    self.outbox.ack(target, &acks).await?;
                }
                Err(e) => {
                    self.metrics
                        .requests
                        .with_label_values(&[target, "error"])
                        .inc();
                    for &i in chunk {
                        results[i] = Some(e.0.clone());
                    }
                }
            }
        }
        Ok(results)
    }

    /// Listens for new purges until `stop`, reconnecting after a lost
    /// connection (and looking once then: notifications may have been
    /// missed).
    pub async fn listen(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let mut listener =
                match sqlx::postgres::PgListener::connect_with(self.outbox.pool()).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "LISTEN connection failed; retrying");
                        if pause(&stop, Duration::from_millis(500)).await {
                            return;
                        }
                        continue;
                    }
                };
            if let Err(e) = listener.listen(PURGES_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                if pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
            self.listening.store(true, Ordering::SeqCst);
            self.metrics.listening.set(1);
            tracing::info!(channel = PURGES_CHANNEL, "listening for purges");
            self.wake.notify_one();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(_)) => self.wake.notify_one(),
                        Ok(None) => {
                            tracing::warn!("LISTEN connection lost; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            self.listening.store(false, Ordering::SeqCst);
            self.metrics.listening.set(0);
        }
    }
}

/// A name for a batch of rows in their rounds, the same whenever the same
/// rows are sent in the same round.
fn reference<'a>(rows: impl Iterator<Item = &'a Claimed>) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(format!("{}:{};", r.id, r.round).as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("vodfarm-{hex}")
}

/// Sleeps `d`; true when `stop` fired first.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn row(id: i64, round: i32) -> Claimed {
        Claimed {
            id,
            video_id: "v_a".into(),
            reason: "deleted".into(),
            created_at: chrono::Utc::now(),
            attempts: 1,
            round,
            acked: HashSet::new(),
        }
    }

    #[test]
    fn references_are_stable_per_rows_and_round() {
        let a = [row(1, 0), row(2, 0)];
        assert_eq!(reference(a.iter()), reference(a.iter()));
        assert!(reference(a.iter()).starts_with("vodfarm-"));
        assert_eq!(reference(a.iter()).len(), "vodfarm-".len() + 32);
        let b = [row(1, 1), row(2, 1)];
        assert_ne!(reference(a.iter()), reference(b.iter()));
        let c = [row(1, 0)];
        assert_ne!(reference(a.iter()), reference(c.iter()));
    }
}
