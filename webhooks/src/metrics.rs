//! The sender's Prometheus metrics.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry,
};

/// Every metric `vodfarm webhooks` exports on `/metrics`.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    /// The registry they live in.
    pub registry: Registry,
    /// `vodfarm_webhooks_backlog`: pending deliveries (whole outbox, read
    /// at scrape time).
    pub backlog: IntGauge,
    /// `vodfarm_webhooks_oldest_pending_seconds`: age of the oldest
    /// pending delivery (0: none), read at scrape time.
    pub oldest_pending: Gauge,
    /// `vodfarm_webhooks_attempts_total{outcome}`: HTTP attempts by
    /// outcome (`delivered`, `http_error`, `network_error`, `refused`).
    pub attempts: IntCounterVec,
    /// `vodfarm_webhooks_deliveries_total{outcome}`: deliveries finished
    /// (`succeeded`, `failed`).
    pub deliveries: IntCounterVec,
    /// `vodfarm_webhooks_delivery_seconds`: from the event to its 2xx
    /// answer.
    pub latency: Histogram,
    /// `vodfarm_webhooks_endpoints_disabled_total`: endpoints disabled
    /// because they kept failing.
    pub disabled: IntCounter,
    /// `vodfarm_webhooks_listening`: 1 while the LISTEN connection is up.
    pub listening: IntGauge,
    /// `vodfarm_webhooks_database_errors_total`: failed outbox statements.
    pub db_errors: IntCounter,
}

impl WebhookMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let backlog = IntGauge::new("vodfarm_webhooks_backlog", "Pending webhook deliveries")?;
        let oldest_pending = Gauge::new(
            "vodfarm_webhooks_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery (0: none)",
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "vodfarm_webhooks_attempts_total",
                "Webhook HTTP attempts by outcome",
            ),
            &["outcome"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "vodfarm_webhooks_deliveries_total",
                "Webhook deliveries finished, by outcome",
            ),
            &["outcome"],
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "vodfarm_webhooks_delivery_seconds",
                "From a webhook event to its 2xx answer",
            )
            .buckets(exponential_buckets(0.05, 2.0, 20)?),
        )?;
        let disabled = IntCounter::new(
            "vodfarm_webhooks_endpoints_disabled_total",
            "Webhook endpoints disabled because they kept failing",
        )?;
        let listening = IntGauge::new(
            "vodfarm_webhooks_listening",
            "1 while the LISTEN connection for new deliveries is up",
        )?;
        let db_errors = IntCounter::new(
            "vodfarm_webhooks_database_errors_total",
            "Webhook outbox statements that failed",
        )?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(oldest_pending.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(disabled.clone()))?;
        registry.register(Box::new(listening.clone()))?;
        registry.register(Box::new(db_errors.clone()))?;
        for o in ["delivered", "http_error", "network_error", "refused"] {
            attempts.with_label_values(&[o]);
        }
        for o in ["succeeded", "failed"] {
            deliveries.with_label_values(&[o]);
        }
        Ok(WebhookMetrics {
            registry,
            backlog,
            oldest_pending,
            attempts,
            deliveries,
            latency,
            disabled,
            listening,
            db_errors,
        })
    }
}
