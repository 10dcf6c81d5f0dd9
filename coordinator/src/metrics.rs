//! The coordinator's Prometheus metrics.

use prometheus::{
    exponential_buckets, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the coordinator exports on `/metrics`.
#[derive(Debug, Clone)]
pub struct CoordinatorMetrics {
    /// The registry they are in.
    pub registry: Registry,
    /// Pending jobs by type (what worker autoscaling follows); refreshed
    /// from the database at each scrape, so every replica reports the
    /// whole queue.
    pub jobs_pending: IntGaugeVec,
    /// Leased jobs by type, refreshed like `jobs_pending`.
    pub jobs_processing: IntGaugeVec,
    /// Age of the oldest due pending job by type, seconds (0: none due);
    /// refreshed like `jobs_pending`. What "the queue is stuck" alerts on.
    pub oldest_pending: GaugeVec,
    /// Workers any replica heard from in the last five minutes, refreshed
    /// like `jobs_pending`.
    pub workers_seen: IntGauge,
    /// Leases granted by this replica.
    pub leases_granted: IntCounterVec,
    /// Leases this replica's reaper found expired, by outcome
    /// (`retry` or `failed`).
    pub lease_expiries: IntCounterVec,
    /// Jobs completed through this replica.
    pub jobs_completed: IntCounterVec,
    /// Failures reported through this replica, by outcome.
    pub jobs_failed: IntCounterVec,
    /// Lease-to-completion time of completed jobs, seconds.
    pub job_duration: HistogramVec,
    /// Long polls waiting on this replica.
    pub waiting_polls: IntGauge,
    /// Claim statements this replica sent to the database.
    pub claim_queries: IntCounter,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
}

impl CoordinatorMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let by_type = &["job_type"];
        let m = CoordinatorMetrics {
            jobs_pending: IntGaugeVec::new(
                Opts::new("vodfarm_jobs_pending", "Pending jobs by type (whole queue)"),
                by_type,
            )?,
            jobs_processing: IntGaugeVec::new(
                Opts::new(
                    "vodfarm_jobs_processing",
                    "Leased jobs by type (whole queue)",
                ),
                by_type,
            )?,
            oldest_pending: GaugeVec::new(
                Opts::new(
                    "vodfarm_queue_oldest_pending_seconds",
                    "Age of the oldest due pending job by type, seconds (whole queue)",
                ),
                by_type,
            )?,
            workers_seen: IntGauge::new(
                "vodfarm_workers_seen",
                "Workers heard from by any replica in the last five minutes",
            )?,
            leases_granted: IntCounterVec::new(
                Opts::new(
                    "vodfarm_leases_granted_total",
                    "Leases granted by this replica",
                ),
                by_type,
            )?,
            lease_expiries: IntCounterVec::new(
                Opts::new(
                    "vodfarm_lease_expiries_total",
                    "Expired leases reaped by this replica",
                ),
                &["job_type", "outcome"],
            )?,
            jobs_completed: IntCounterVec::new(
                Opts::new(
                    "vodfarm_jobs_completed_total",
                    "Jobs completed through this replica",
                ),
                by_type,
            )?,
            jobs_failed: IntCounterVec::new(
                Opts::new(
                    "vodfarm_jobs_failed_total",
                    "Job failures reported through this replica",
                ),
                &["job_type", "outcome"],
            )?,
            job_duration: HistogramVec::new(
                HistogramOpts::new(
                    "vodfarm_job_duration_seconds",
                    "Time from lease to completion of completed jobs",
                )
                .buckets(exponential_buckets(0.05, 2.0, 18)?),
                by_type,
            )?,
            waiting_polls: IntGauge::new(
                "vodfarm_lease_polls_waiting",
                "Long polls waiting for work on this replica",
            )?,
            claim_queries: IntCounter::new(
                "vodfarm_claim_queries_total",
                "Claim statements sent to the database by this replica",
            )?,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "vodfarm_http_requests_total",
                    "HTTP requests by route and status",
                ),
                &["route", "status"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.jobs_pending.clone()))?;
        m.registry.register(Box::new(m.jobs_processing.clone()))?;
        m.registry.register(Box::new(m.oldest_pending.clone()))?;
        m.registry.register(Box::new(m.workers_seen.clone()))?;
        m.registry.register(Box::new(m.leases_granted.clone()))?;
        m.registry.register(Box::new(m.lease_expiries.clone()))?;
        m.registry.register(Box::new(m.jobs_completed.clone()))?;
        m.registry.register(Box::new(m.jobs_failed.clone()))?;
        m.registry.register(Box::new(m.job_duration.clone()))?;
        m.registry.register(Box::new(m.waiting_polls.clone()))?;
        m.registry.register(Box::new(m.claim_queries.clone()))?;
        m.registry.register(Box::new(m.http_requests.clone()))?;
        // Export every series from the start (at zero), so dashboards and
        // alerts see "none yet" rather than "no data".
        for t in vodfarm_core::jobs::JobType::ALL {
            let t = t.as_str();
            m.jobs_pending.with_label_values(&[t]);
            m.jobs_processing.with_label_values(&[t]);
            m.oldest_pending.with_label_values(&[t]);
            m.leases_granted.with_label_values(&[t]);
            m.jobs_completed.with_label_values(&[t]);
            m.job_duration.with_label_values(&[t]);
            for outcome in ["retry", "failed"] {
                m.lease_expiries.with_label_values(&[t, outcome]);
                m.jobs_failed.with_label_values(&[t, outcome]);
            }
        }
        Ok(m)
    }
}
