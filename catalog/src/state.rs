//! The catalog's shared state and settings.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::destination::DestinationPolicy;
use vodfarm_core::store::SharedStore;
use vodfarm_core::throttle::Throttle;

/// How the catalog answers.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Base URL of the origin/CDN that playback URLs point at.
    pub public_origin_url: String,
    /// Secret shared with the origin for private videos' playback tokens.
    pub signing_secret: Arc<[u8]>,
    /// How long a private video's playback token lasts.
    pub playback_token_ttl: Duration,
    /// How long a user token lasts.
    pub token_ttl: Duration,
    /// The largest subtitle file accepted (bytes).
    pub max_subtitle_size: u64,
    /// Where webhook URLs may point (SSRF rules).
    pub webhook_destinations: DestinationPolicy,
    /// How long after a deletion no worker can still be writing the
    /// video's objects (their final removal).
    pub purge_settle: Duration,
}

/// Shared state of the catalog handlers.
#[derive(Debug, Clone)]
pub struct CatalogState {
    /// The database.
    pub pool: PgPool,
    /// The object store (deleted videos' objects are removed from it).
    pub store: SharedStore,
    /// Settings.
    pub settings: Arc<CatalogSettings>,
    /// Throttling of log-ins, password changes and sign-ups.
    pub throttle: Throttle,
    /// Live counters, the event bus and the watch store.
    pub analytics: vodfarm_analytics::args::Analytics,
    /// Each client address's budget of beacon requests.
    pub beacon_limit: vodfarm_analytics::rate::RateLimit,
}
