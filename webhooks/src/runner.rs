//! The delivery loop: claim due deliveries, send them (several at once),
//! write back what happened.
//!
//! - Paced by [`outbox_loop`]: woken by `NOTIFY vodfarm_webhooks` (sent
//!   by the event trigger and by replays when they commit), at the
//!   earliest `next_attempt_at`, and every `poll_interval` as a safety net.
//! - Failed attempts are retried after `min(base·2^(n−1), max)·(0.75..1.25)`
//!   until `retry_for` after the delivery was made; then it is `failed`.

use crate::deliver::{Attempt, Sender};
use crate::metrics::WebhookMetrics;
use crate::outbox::{Claimed, DisableRule, Outbox, Written};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::backoff::jittered;
use vodfarm_core::outbox_loop::{OutboxRound, Wakeup};
use vodfarm_core::outbox_role::{Backlog, OutboxRole};

/// The channel the event trigger notifies.
pub const CHANNEL: &str = "vodfarm_webhooks";

/// How the loop paces itself.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Deliveries claimed at once.
    pub batch_size: i64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claim holds its rows (longer than one attempt).
    pub lease: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long after it was made a delivery is retried.
    pub retry_for: Duration,
    /// When an endpoint is disabled.
    pub disable: DisableRule,
    /// Longest sleep without a notification.
    pub poll_interval: Duration,
}

/// The delivery loop and its LISTEN connection.
#[derive(Debug)]
pub struct Runner {
    outbox: Outbox,
    sender: Sender,
    metrics: WebhookMetrics,
    settings: RunSettings,
    wakeup: Wakeup,
}

impl Runner {
    /// A loop over `outbox` sending with `sender`.
    pub fn new(
        outbox: Outbox,
        sender: Sender,
        metrics: WebhookMetrics,
        settings: RunSettings,
    ) -> Arc<Runner> {
        let wakeup = Wakeup::new(Some(metrics.listening.clone()));
        Arc::new(Runner {
            outbox,
            sender,
            metrics,
            settings,
            wakeup,
        })
    }

    /// One claim and its deliveries; returns how many were claimed.
    pub async fn pass(&self) -> Result<usize, sqlx::Error> {
        let rows = self
            .outbox
            .claim(self.settings.batch_size, self.settings.lease)
            .await?;
        let n = rows.len();
        let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(rows)
            .map(|c| self.deliver(c))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(n)
    }

    /// Sends one claimed delivery and records the outcome.
    async fn deliver(&self, c: Claimed) -> Result<(), sqlx::Error> {
        let attempt = self
            .sender
            .send(&c.url, &c.secret, &c.event_id, &c.body)
            .await;
        match attempt {
            Attempt::Delivered { status } => {
                self.metrics
                    .attempts
                    .with_label_values(&["delivered"])
                    .inc();
                if self.outbox.succeeded(&c, status).await? == Written::Succeeded {
                    self.metrics
                        .deliveries
                        .with_label_values(&["succeeded"])
                        .inc();
                    let took = (chrono::Utc::now() - c.event_created_at)
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    self.metrics.latency.observe(took.as_secs_f64());
                    tracing::info!(
                        delivery_id = %c.delivery_id,
                        webhook_id = %c.webhook_id,
                        event_id = %c.event_id,
                        event_type = %c.event_type,
                        status,
                        attempt = c.attempts + 1,
                        "webhook delivered"
                    );
                }
            }
            Attempt::Failed {
                status,
                error,
                refused,
            } => {
                let outcome = match (refused, status) {
                    (true, _) => "refused",
                    (false, Some(_)) => "http_error",
                    (false, None) => "network_error",
                };
                self.metrics.attempts.with_label_values(&[outcome]).inc();
                let failures = u32::try_from(c.attempts + 1).unwrap_or(u32::MAX);
                let retry_in =
                    jittered(failures, self.settings.retry_base, self.settings.retry_max);
                let (written, disabled) = self
                    .outbox
                    .failed(
                        &c,
                        status,
                        &error,
                        retry_in,
                        self.settings.retry_for,
                        self.settings.disable,
                    )
                    .await?;
                match written {
                    Written::Failed => {
                        self.metrics.deliveries.with_label_values(&["failed"]).inc();
                        tracing::warn!(
                            delivery_id = %c.delivery_id,
                            webhook_id = %c.webhook_id,
                            event_id = %c.event_id,
                            attempts = c.attempts + 1,
                            error = %error,
                            "webhook delivery failed for good (retry window over)"
                        );
                    }
                    Written::Retrying => tracing::info!(
                        delivery_id = %c.delivery_id,
                        webhook_id = %c.webhook_id,
                        event_id = %c.event_id,
                        attempt = c.attempts + 1,
                        retry_in = ?retry_in,
                        error = %error,
                        "webhook attempt failed; will retry"
                    ),
                    Written::Succeeded | Written::Fenced => {}
                }
                if disabled {
                    self.metrics.disabled.inc();
                    tracing::warn!(webhook_id = %c.webhook_id, error = %error, "webhook endpoint disabled: it kept failing");
                }
            }
        }
        Ok(())
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
        CHANNEL
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
