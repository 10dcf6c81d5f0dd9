//! The origin's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the origin exports on `/metrics`.
#[derive(Debug, Clone)]
pub struct OriginMetrics {
    /// The registry they live in.
    pub registry: Registry,
    /// `vodfarm_origin_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `vodfarm_origin_cache_hits_total`: answered from a cached object.
    pub cache_hits: IntCounter,
    /// `vodfarm_origin_cache_misses_total`: requests that started an
    /// upstream fetch.
    pub cache_misses: IntCounter,
    /// `vodfarm_origin_coalesced_waiters_total`: requests that joined a
    /// fetch another request had started and streamed from it.
    pub coalesced: IntCounter,
    /// `vodfarm_origin_stale_served_total`: expired objects served because
    /// the upstream failed (stale-if-error).
    pub stale_served: IntCounter,
    /// `vodfarm_origin_passthrough_total`: objects over the size limit,
    /// streamed through without caching.
    pub passthrough: IntCounter,
    /// `vodfarm_origin_bytes_out_total`: body bytes sent to clients.
    pub bytes_out: IntCounter,
    /// `vodfarm_origin_upstream_fetches_total{outcome}`: requests to the
    /// upstream (object store or the next tier), by how the upstream
    /// answered: `ok`, `not_found`, `timeout`, `error`, or `abandoned` (the
    /// fetch task died first; see [`crate::flight::FetchOutcome`]).
    pub upstream_fetches: IntCounterVec,
    /// `vodfarm_origin_upstream_first_byte_seconds`: time to the upstream's
    /// answer (headers).
    pub upstream_latency: Histogram,
    /// `vodfarm_origin_cache_bytes`: weighed size of the object cache.
    pub cache_bytes: IntGauge,
    /// `vodfarm_origin_cache_objects`: objects in the cache.
    pub cache_objects: IntGauge,
    /// `vodfarm_origin_state_lookups_total`: video state read from the
    /// database (state cache misses).
    pub state_lookups: IntCounter,
    /// `vodfarm_origin_invalidations_total`: video notifications received.
    pub invalidations: IntCounter,
    /// `vodfarm_origin_listening`: 1 while the LISTEN connection is up
    /// (video state is cached only then).
    pub listening: IntGauge,
    /// `vodfarm_origin_listen_connects_total`: LISTEN connections made
    /// (more than one means reconnects).
    pub listen_connects: IntCounter,
    /// `vodfarm_origin_degraded`: 1 while the database cannot be reached
    /// and known videos are served from their last known state.
    pub degraded: IntGauge,
    /// `vodfarm_origin_degraded_entered_total`: times degraded mode began.
    pub degraded_entered: IntCounter,
    /// `vodfarm_origin_stale_state_answers_total`: access decisions taken
    /// from a last known state the database could not confirm.
    pub stale_state_answers: IntCounter,
    /// `vodfarm_origin_state_unavailable_total`: requests answered 503
    /// because the video's state could not be read and was not known
    /// (or was known for longer than `--stale-state-grace`).
    pub state_unavailable: IntCounter,
}

impl OriginMetrics {
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
        let requests = IntCounterVec::new(
            Opts::new(
                "vodfarm_origin_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let upstream_fetches = IntCounterVec::new(
            Opts::new(
                "vodfarm_origin_upstream_fetches_total",
                "Requests to the upstream (object store or next tier) by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(upstream_fetches.clone()))?;
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "vodfarm_origin_upstream_first_byte_seconds",
                "Time until the upstream answered",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        registry.register(Box::new(upstream_latency.clone()))?;
        Ok(OriginMetrics {
            cache_hits: counter(
                "vodfarm_origin_cache_hits_total",
                "Requests answered from the cache",
            )?,
            cache_misses: counter(
                "vodfarm_origin_cache_misses_total",
                "Requests that started an upstream fetch",
            )?,
            coalesced: counter(
                "vodfarm_origin_coalesced_waiters_total",
                "Requests that streamed from a fetch another request started",
            )?,
            stale_served: counter(
                "vodfarm_origin_stale_served_total",
                "Expired objects served because the upstream failed",
            )?,
            passthrough: counter(
                "vodfarm_origin_passthrough_total",
                "Objects over the size limit streamed through uncached",
            )?,
            bytes_out: counter("vodfarm_origin_bytes_out_total", "Body bytes sent")?,
            cache_bytes: gauge(
                "vodfarm_origin_cache_bytes",
                "Weighed size of the object cache",
            )?,
            cache_objects: gauge("vodfarm_origin_cache_objects", "Objects in the cache")?,
            state_lookups: counter(
                "vodfarm_origin_state_lookups_total",
                "Video states read from the database",
            )?,
            invalidations: counter(
                "vodfarm_origin_invalidations_total",
                "Video change notifications received",
            )?,
            listening: gauge(
                "vodfarm_origin_listening",
                "1 while the LISTEN connection for video changes is up",
            )?,
            listen_connects: counter(
                "vodfarm_origin_listen_connects_total",
                "LISTEN connections made for video changes",
            )?,
            degraded: gauge(
                "vodfarm_origin_degraded",
                "1 while the database cannot be reached and known videos are served from their last known state",
            )?,
            degraded_entered: counter(
                "vodfarm_origin_degraded_entered_total",
                "Times the database became unreachable (degraded mode began)",
            )?,
            stale_state_answers: counter(
                "vodfarm_origin_stale_state_answers_total",
                "Access decisions taken from a last known state the database could not confirm",
            )?,
            state_unavailable: counter(
                "vodfarm_origin_state_unavailable_total",
                "Requests answered 503 because the video's state could not be read and was not known",
            )?,
            requests,
            upstream_fetches,
            upstream_latency,
            registry,
        })
    }
}
