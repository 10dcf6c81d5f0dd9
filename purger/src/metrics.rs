//! The purger's Prometheus metrics.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry,
};

/// Every metric the purger exports on `/metrics`.
#[derive(Debug, Clone)]
pub struct PurgerMetrics {
    /// The registry they live in.
    pub registry: Registry,
    /// `vodfarm_purger_backlog`: purges not yet acknowledged by every CDN
    /// (whole outbox, read at scrape time, so every replica reports it).
    pub backlog: IntGauge,
    /// `vodfarm_purger_oldest_pending_seconds`: age of the oldest purge
    /// not yet acknowledged by every CDN (0: none), read at scrape time.
    /// What "the edge may still serve a deleted video" alerts on.
    pub oldest_pending: Gauge,
    /// `vodfarm_purger_requests_total{target,outcome}`: purge requests sent
    /// to each CDN, by outcome (`ok`, `error`).
    pub requests: IntCounterVec,
    /// `vodfarm_purger_purges_completed_total`: outbox rows every CDN
    /// acknowledged (every round).
    pub completed: IntCounter,
    /// `vodfarm_purger_retries_total`: outbox rows put back for a later
    /// attempt because some CDN failed.
    pub retries: IntCounter,
    /// `vodfarm_purger_purge_seconds`: from the change (the row's
    /// creation) to the first round acknowledged by every CDN.
    pub latency: Histogram,
    /// `vodfarm_purger_listening`: 1 while the LISTEN connection is up.
    pub listening: IntGauge,
    /// `vodfarm_purger_database_errors_total`: failed outbox statements
    /// (the purger keeps retrying; see the logs).
    pub db_errors: IntCounter,
}

impl PurgerMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let oldest_pending = Gauge::new(
            "vodfarm_purger_oldest_pending_seconds",
            "Age of the oldest purge not yet acknowledged by every CDN (0: none)",
        )?;
        registry.register(Box::new(oldest_pending.clone()))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "vodfarm_purger_requests_total",
                "Purge requests sent to each CDN target, by outcome",
            ),
            &["target", "outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "vodfarm_purger_purge_seconds",
                "From a change to its purge acknowledged by every CDN",
            )
            .buckets(exponential_buckets(0.05, 2.0, 16)?),
        )?;
        registry.register(Box::new(latency.clone()))?;
        Ok(PurgerMetrics {
            backlog: gauge(
                "vodfarm_purger_backlog",
                "Purges not yet acknowledged by every CDN",
            )?,
            oldest_pending,
            requests,
            completed: counter(
                "vodfarm_purger_purges_completed_total",
                "Purges every CDN acknowledged",
            )?,
            retries: counter(
                "vodfarm_purger_retries_total",
                "Purges put back for a later attempt because a CDN failed",
            )?,
            latency,
            listening: gauge(
                "vodfarm_purger_listening",
                "1 while the LISTEN connection for new purges is up",
            )?,
            db_errors: counter(
                "vodfarm_purger_database_errors_total",
                "Outbox statements that failed",
            )?,
            registry,
        })
    }
}
