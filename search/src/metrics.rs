//! Prometheus metrics of the indexer ([`IndexerMetrics`]) and of the
//! search routes ([`SearchMetrics`]).

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// Buckets of the index lag: the target is under a second.
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of query and batch durations.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The indexer's metrics.
#[derive(Debug, Clone)]
pub struct IndexerMetrics {
    /// Seconds from a change to its application to the index.
    pub lag: Histogram,
    /// Outbox changes applied, by what they did (`upsert`, `remove`,
    /// `skip`: the index held that version already).
    pub applied: IntCounterVec,
    /// Batches, by outcome (`ok`, `error`).
    pub batches: IntCounterVec,
    /// Seconds to apply one batch (claim to commit).
    pub batch_seconds: Histogram,
    /// Outbox rows waiting.
    pub pending: IntGauge,
    /// Age of the oldest waiting outbox row.
    pub oldest: Gauge,
}

impl IndexerMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = IndexerMetrics {
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    "vodfarm_search_index_lag_seconds",
                    "Seconds from a change to a video to the search index holding it",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )?,
            applied: IntCounterVec::new(
                Opts::new(
                    "vodfarm_search_changes_applied_total",
                    "Outbox changes applied to the search index, by effect",
                ),
                &["effect"],
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    "vodfarm_search_batches_total",
                    "Indexer batches, by outcome",
                ),
                &["outcome"],
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "vodfarm_search_batch_duration_seconds",
                    "Seconds to claim, apply and commit one batch",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
            )?,
            pending: IntGauge::new(
                "vodfarm_search_outbox_pending",
                "Search outbox rows waiting to be applied",
            )?,
            oldest: Gauge::new(
                "vodfarm_search_outbox_oldest_seconds",
                "Age of the oldest search outbox row waiting to be applied",
            )?,
        };
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.oldest.clone()))?;
        for effect in ["upsert", "remove", "skip"] {
            m.applied.with_label_values(&[effect]);
        }
        for outcome in ["ok", "error"] {
            m.batches.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}

/// The search routes' metrics.
#[derive(Debug, Clone)]
pub struct SearchMetrics {
    /// Requests by route (`search`, `suggest`) and outcome (`hits`,
    /// `typo`: answered by the typo-tolerant match, `none`, `invalid`,
    /// `error`).
    pub requests: IntCounterVec,
    /// Seconds to answer, by route.
    pub seconds: HistogramVec,
    /// Candidates the index returned that PostgreSQL said not to show
    /// (deleted, private or unfinished since they were indexed): how
    /// much the index lags.
    pub hidden: IntCounter,
    /// Answer cache lookups by route and result (`hit`, `miss`).
    pub cache: IntCounterVec,
}

impl SearchMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = SearchMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "vodfarm_search_requests_total",
                    "Search requests, by route and outcome",
                ),
                &["route", "outcome"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "vodfarm_search_request_duration_seconds",
                    "Seconds to answer a search request, by route",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["route"],
            )?,
            hidden: IntCounter::new(
                "vodfarm_search_hidden_hits_total",
                "Search index candidates withheld because PostgreSQL says the video may not be shown",
            )?,
            cache: IntCounterVec::new(
                Opts::new(
                    "vodfarm_search_cache_requests_total",
                    "Search answer cache lookups, by route and result (hit, miss)",
                ),
                &["route", "result"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.cache.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.hidden.clone()))?;
        Ok(m)
    }
}
