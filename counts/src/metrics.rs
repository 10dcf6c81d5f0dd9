//! The Prometheus metrics of `vodfarm counts` and `vodfarm recs`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters of the counts role.
#[derive(Debug, Clone)]
pub struct CountsMetrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Events by result: `applied`, `duplicate`.
    pub events: IntCounterVec,
    /// Views counted.
    pub views: IntCounter,
    /// History records written (signed-in viewers).
    pub history_records: IntCounter,
    /// Seconds to apply and commit one batch.
    pub batch_seconds: Histogram,
    /// Bus entries of the group not yet committed.
    pub lag: IntGauge,
    /// Failures (Redis, bus, database), retried.
    pub errors: IntCounterVec,
    /// (video, hour) rows a flush wrote.
    pub flushed_rows: IntCounter,
    /// Views a flush moved into `videos.view_count`.
    pub flushed_views: IntCounter,
    /// When the last flush finished (seconds since the epoch).
    pub last_flush: IntGauge,
}

impl CountsMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = CountsMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "vodfarm_counts_events_total",
                    "Playback events consumed, by result",
                ),
                &["result"],
            )?,
            views: IntCounter::new("vodfarm_counts_views_total", "Views counted")?,
            history_records: IntCounter::new(
                "vodfarm_counts_history_records_total",
                "Watch history records written",
            )?,
            batch_seconds: Histogram::with_opts(HistogramOpts::new(
                "vodfarm_counts_batch_seconds",
                "Seconds to apply and commit one batch of events",
            ))?,
            lag: IntGauge::new(
                "vodfarm_counts_lag_entries",
                "Bus entries (one per beacon request, up to 100 events) of the consumer group not yet committed (-1: unknown)",
            )?,
            errors: IntCounterVec::new(
                Opts::new("vodfarm_counts_errors_total", "Failures, retried, by stage"),
                &["stage"],
            )?,
            flushed_rows: IntCounter::new(
                "vodfarm_counts_flushed_rows_total",
                "view_aggregates rows written by flushes",
            )?,
            flushed_views: IntCounter::new(
                "vodfarm_counts_flushed_views_total",
                "Views flushes moved into videos.view_count",
            )?,
            last_flush: IntGauge::new(
                "vodfarm_counts_last_flush_timestamp_seconds",
                "When the last flush finished",
            )?,
            registry,
        };
        // Unknown until the consumer first asks the bus.
        m.lag.set(-1);
        // Every label value exported from the start (at 0): a rate or an
        // alert over them then sees "none" instead of "no series".
        for result in ["applied", "duplicate"] {
            m.events.with_label_values(&[result]);
        }
        for stage in ["bus", "redis", "history", "commit", "flush"] {
            m.errors.with_label_values(&[stage]);
        }
        m.registry.register(Box::new(m.events.clone()))?;
        m.registry.register(Box::new(m.views.clone()))?;
        m.registry.register(Box::new(m.history_records.clone()))?;
        m.registry.register(Box::new(m.batch_seconds.clone()))?;
        m.registry.register(Box::new(m.lag.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.flushed_rows.clone()))?;
        m.registry.register(Box::new(m.flushed_views.clone()))?;
        m.registry.register(Box::new(m.last_flush.clone()))?;
        Ok(m)
    }
}

/// Counters of the recs role.
#[derive(Debug, Clone)]
pub struct RecsMetrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Finished runs.
    pub runs: IntCounter,
    /// Failed runs.
    pub failures: IntCounter,
    /// Videos with related lists after the last run.
    pub videos: IntGauge,
    /// Users with recommendations after the last run.
    pub users: IntGauge,
    /// When the last run finished (seconds since the epoch).
    pub last_run: IntGauge,
}

impl RecsMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = RecsMetrics {
            runs: IntCounter::new("vodfarm_recs_runs_total", "Recommendation runs finished")?,
            failures: IntCounter::new("vodfarm_recs_failures_total", "Recommendation runs failed")?,
            videos: IntGauge::new("vodfarm_recs_videos", "Videos with related lists")?,
            users: IntGauge::new("vodfarm_recs_users", "Users with recommendations")?,
            last_run: IntGauge::new(
                "vodfarm_recs_last_run_timestamp_seconds",
                "When the last run finished",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.runs.clone()))?;
        m.registry.register(Box::new(m.failures.clone()))?;
        m.registry.register(Box::new(m.videos.clone()))?;
        m.registry.register(Box::new(m.users.clone()))?;
        m.registry.register(Box::new(m.last_run.clone()))?;
        Ok(m)
    }
}
