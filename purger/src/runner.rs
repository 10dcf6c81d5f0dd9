//! The purge loop: claim due outbox rows, send each to every CDN target
//! that has not acknowledged it yet, record the acknowledgements, and
//! write back what happened.
//!
//! - Paced by [`outbox_loop`]: woken by `NOTIFY vodfarm_purges` (sent by
//!   the outbox trigger when a change commits), at the earliest `due_at`
//!   of a backed-off row, and every `poll_interval` as a safety net.
//! - Targets are independent: one CDN failing does not hold back or
//!   repeat the others (acknowledgements are per target and round).
//! - **Two rounds** (unless `confirm_after` is 0): an answer that was
//!   already on its way to the edge when the first purge arrived (a fetch
//!   the shield granted just before it heard of the change, or one Varnish
//!   was still receiving) would be cached again for a year; the second
//!   round, `confirm_after` later, removes it.

use crate::drivers::{Batch, CdnDriver};
use crate::metrics::PurgerMetrics;
use crate::outbox::{Claimed, Outbox, Outcome};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::backoff::jittered;
use vodfarm_core::ids::is_valid_public_id;
use vodfarm_core::outbox_loop::{OutboxRound, Wakeup};
use vodfarm_core::outbox_role::{Backlog, OutboxRole};

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
    wakeup: Wakeup,
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
        let wakeup = Wakeup::new(Some(metrics.listening.clone()));
        Arc::new(Runner {
            outbox,
            drivers,
            metrics,
            settings,
            wakeup,
        })
    }

    /// Rounds a purge goes through.
    fn rounds(&self) -> i32 {
        if self.drivers.is_empty() || self.settings.confirm_after.is_zero() {
            1
        } else {
            2
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
                let after = jittered(failures, self.settings.retry_base, self.settings.retry_max);
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
}

impl OutboxRound for Runner {
    type Error = sqlx::Error;

    async fn round(&self) -> Result<usize, sqlx::Error> {
        self.pass().await
    }

    async fn next_due(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
        self.outbox.next_due().await
    }

    fn failed(&self, _: &sqlx::Error) {
        self.metrics.db_errors.inc();
    }
}

impl OutboxRole for Runner {
    fn channel(&self) -> &'static str {
        PURGES_CHANNEL
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.outbox.pool()
    }

    fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    fn poll_interval(&self) -> Duration {
        self.settings.poll_interval
    }

    async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        self.outbox.backlog().await
    }

    async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        self.outbox.prune(retention).await
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
