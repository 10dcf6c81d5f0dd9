//! The delivery loop: claim due deliveries, send them (several at once),
//! write back what happened.
//!
//! - Woken by `NOTIFY vodfarm_webhooks` (sent by the event trigger and by
//!   replays when they commit), at the earliest `next_attempt_at`, and
//!   every `poll_interval` as a safety net.
//! - Failed attempts are retried after `min(base·2^(n−1), max)·(0.75..1.25)`
//!   until `retry_for` after the delivery was made; then it is `failed`.
//! - The database going away is not fatal: the loop logs, backs off and
//!   tries again; nothing is lost since the rows stay in the outbox.

use crate::deliver::{Attempt, Sender};
use crate::metrics::WebhookMetrics;
use crate::outbox::{Claimed, DisableRule, Outbox, Written};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vodfarm_core::backoff::jittered;

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
    wake: Notify,
    listening: AtomicBool,
}

impl Runner {
    /// A loop over `outbox` sending with `sender`.
    pub fn new(
        outbox: Outbox,
        sender: Sender,
        metrics: WebhookMetrics,
        settings: RunSettings,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            outbox,
            sender,
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

    /// Runs until `stop`; a batch in flight is finished first.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = 0u32;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.pass().await {
                Ok(claimed) => {
                    failing = 0;
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
                            tracing::warn!(error = %e, "cannot read the next due delivery");
                            self.settings.poll_interval
                        }
                    }
                }
                Err(e) => {
                    failing += 1;
                    self.metrics.db_errors.inc();
                    if failing == 1 || failing % 10 == 0 {
                        tracing::warn!(error = %e, failures = failing, "webhook outbox unavailable; retrying");
                    }
                    jittered(failing, Duration::from_millis(250), Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
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

    /// Listens for new deliveries until `stop`, reconnecting after a lost
    /// connection (and looking once then: notifications may have been
    /// missed).
    pub async fn listen(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let connected = async {
                let mut l = sqlx::postgres::PgListener::connect_with(self.outbox.pool()).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            }
            .await;
            let mut listener = match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            self.listening.store(true, Ordering::SeqCst);
            self.metrics.listening.set(1);
            self.wake.notify_one();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(_)) => self.wake.notify_one(),
                        Ok(None) | Err(_) => {
                            tracing::warn!("LISTEN connection lost; reconnecting");
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
