//! Phase 3, lookup: where a granted request's bytes come from.

use super::{App, Ctx};
use crate::cache::{CachedObject, Joined, Lookup};
use crate::flight::{Flight, FlightError};
use crate::upstream::{Head, UpstreamError};
use std::sync::Arc;

/// The cache status of a request, as the access log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CacheStatus {
    /// Answered before the lookup.
    None,
    /// From a cached object.
    Hit,
    /// This request started the upstream fetch.
    Miss,
    /// Joined a fetch another request started.
    Coalesced,
    /// An expired copy, because the upstream failed.
    Stale,
    /// Over the size limit: straight from the upstream.
    Pass,
}

impl CacheStatus {
    /// The access log's `cache` field.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "-",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Stale => "stale",
            CacheStatus::Pass => "pass",
        }
    }
}

/// Where the bytes come from.
#[derive(Debug)]
pub(super) enum Source {
    /// An object in memory: a fresh one, or an expired one served because
    /// the upstream failed.
    Object(Arc<CachedObject>),
    /// A flight whose head has come: stream from it.
    Flight(Arc<Flight>, Head),
    /// Over the size limit: fetch straight from the upstream.
    Pass,
    /// The upstream has no such object.
    NotFound,
    /// The upstream failed (or the fetch was abandoned) and nothing is
    /// cached.
    Failed(FlightError),
}

/// Finds the source of `ctx`'s object: a fresh cached object; else the
/// flight for its key (joining the running one or starting one), once its
/// head has come; else, when the flight failed, an expired copy if there
/// is one. An abandoned flight is such a failure: its waiters answer 502
/// (or the stale copy) rather than retry, so a fetch that keeps dying
/// cannot pile retries up. Drops the cached copy of an object the
/// upstream no longer has. Counts the status in the metrics.
pub(super) async fn lookup(app: &App, ctx: &Ctx<'_>) -> (Source, CacheStatus) {
    let key = ctx.route.key.as_str();
    if app.cache.is_too_large(key) {
        return (Source::Pass, CacheStatus::Pass);
    }
    let hit = |o: Arc<CachedObject>| {
        app.metrics.cache_hits.inc();
        (Source::Object(o), CacheStatus::Hit)
    };
    let stale = match app.cache.lookup(key) {
        Lookup::Fresh(o) => return hit(o),
        Lookup::Stale(o) => Some(o),
        Lookup::Miss => None,
    };
    let (flight, status) = match app.cache.join(ctx.route, ctx.path) {
        Joined::Cached(o) => return hit(o),
        Joined::Flight {
            flight,
            leader: true,
        } => {
            app.metrics.cache_misses.inc();
            (flight, CacheStatus::Miss)
        }
        Joined::Flight {
            flight,
            leader: false,
        } => {
            app.metrics.coalesced.inc();
            (flight, CacheStatus::Coalesced)
        }
    };
    match flight.head().await {
        Ok(head) => (Source::Flight(flight, head), status),
        Err(FlightError::TooLarge(_)) => (Source::Pass, CacheStatus::Pass),
        Err(FlightError::Upstream(UpstreamError::NotFound)) => {
            app.cache.remove(key);
            (Source::NotFound, status)
        }
        Err(e) => match stale {
            Some(o) => {
                app.metrics.stale_served.inc();
                (Source::Object(o), CacheStatus::Stale)
            }
            None => (Source::Failed(e), status),
        },
    }
}
