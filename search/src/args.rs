//! Flags and environment: which backend ([`BackendArgs`], shared by the
//! api, the indexer and `vodfarm search reindex`), how the api searches
//! PostgreSQL ([`SearchApiArgs`]), and the indexer role ([`IndexerArgs`]).

use crate::cache::CacheSettings;
use crate::elastic::EsIndex;
use crate::index::{IndexError, SearchIndex};
use crate::postgres::{PgIndex, PgSearchSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::config::{parse_duration, DEFAULT_DATABASE_URL};

/// Where the index lives.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Elasticsearch to search and index
    /// (http[s]://[user:password@]host:9200). Unset: PostgreSQL full
    /// text, no other server. The api and every indexer must agree.
    #[arg(long, env = "ELASTICSEARCH_URL", hide_env_values = true)]
    pub elasticsearch_url: Option<String>,
    /// The Elasticsearch alias searched and written; the indexes behind
    /// it are named ALIAS-….
    #[arg(
        long,
        env = "VODFARM_ELASTICSEARCH_INDEX",
        default_value = "vodfarm-videos"
    )]
    pub elasticsearch_index: String,
}

impl BackendArgs {
    /// Opens the configured index (Elasticsearch: template and alias
    /// installed if missing). `pool` serves the PostgreSQL index.
    pub async fn open(
        &self,
        pool: sqlx::PgPool,
        settings: PgSearchSettings,
    ) -> Result<Arc<dyn SearchIndex>, IndexError> {
        match &self.elasticsearch_url {
            Some(url) if !url.trim().is_empty() => {
                let es = EsIndex::new(url.trim(), &self.elasticsearch_index)?;
                es.prepare().await?;
                Ok(Arc::new(es))
            }
            _ => Ok(Arc::new(PgIndex::new(pool, settings))),
        }
    }
}

/// How `vodfarm api` searches (with [`BackendArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct SearchApiArgs {
    /// The index to search.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// PostgreSQL index: relevance ranks at most this many matches, the
    /// most viewed (every match when fewer match).
    #[arg(long, env = "VODFARM_SEARCH_RANK_WINDOW", default_value_t = 500)]
    pub search_rank_window: i64,
    /// PostgreSQL index: the total and the facets count at most this many
    /// matches, the most viewed when the words are common (beyond, the
    /// total is a lower bound, "500+", and the facets are counted over
    /// those).
    #[arg(long, env = "VODFARM_SEARCH_FACET_LIMIT", default_value_t = 500)]
    pub search_facet_limit: i64,
    /// PostgreSQL index: words that match more than this many documents
    /// (estimated from the planner's statistics, as if words were
    /// independent) are
    /// looked up views band by views band, reading about a window of
    /// rows (phrases: in a bounded set of candidates); fewer matches are
    /// read all. 0: always so (prefixes excepted).
    #[arg(long, env = "VODFARM_SEARCH_BAND_THRESHOLD", default_value_t = 2000)]
    pub search_band_threshold: i64,
    /// PostgreSQL index: least trigram similarity (0..1) of a known word
    /// to a typed one to try it as a typo correction (when the words as
    /// typed match nothing).
    #[arg(long, env = "VODFARM_SEARCH_TYPO_SIMILARITY", default_value_t = 0.3)]
    pub search_typo_similarity: f32,
    /// Connections of the search pool (separate from the api's, so slow
    /// searches cannot starve uploads).
    #[arg(long, env = "VODFARM_SEARCH_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub search_db_max_connections: u32,
    /// How long the index's answer to a search or suggestion (hits,
    /// cursor, counts) is reused for the same request (0: not cached).
    /// Every reused hit is still checked against PostgreSQL on each
    /// request, so nothing deleted or private is shown; a new video may
    /// be missing for up to this long after it was indexed (findable
    /// within index lag + TTL).
    #[arg(long, env = "VODFARM_SEARCH_CACHE_TTL", default_value = "250ms", value_parser = parse_duration)]
    pub search_cache_ttl: Duration,
    /// Most answers the search cache keeps (per route).
    #[arg(long, env = "VODFARM_SEARCH_CACHE_ENTRIES", default_value_t = 4096)]
    pub search_cache_entries: u64,
}

impl SearchApiArgs {
    /// The answer cache's settings.
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            ttl: self.search_cache_ttl,
            entries: self.search_cache_entries,
        }
    }

    /// The PostgreSQL index settings.
    pub fn pg_settings(&self) -> PgSearchSettings {
        PgSearchSettings {
            rank_window: self.search_rank_window.max(1),
            facet_limit: self.search_facet_limit.max(1),
            band_threshold: self.search_band_threshold.max(0),
            typo_similarity: self.search_typo_similarity,
        }
    }
}

/// Flags of `vodfarm search-indexer`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexerArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "VODFARM_SEARCH_INDEXER_LISTEN",
        default_value = "127.0.0.1:8086"
    )]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the schema must be applied: `vodfarm migrate`).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The index to write.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Outbox rows claimed and applied per transaction.
    #[arg(long, env = "VODFARM_SEARCH_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: i64,
    /// How often to look at the outbox without a notification (they wake
    /// the indexer at once; this is the safety net).
    #[arg(long, env = "VODFARM_SEARCH_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// PostgreSQL index: tombstones of videos that left search are
    /// removed after this long.
    #[arg(long, env = "VODFARM_SEARCH_TOMBSTONE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub tombstone_ttl: Duration,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server (/metrics, /healthz,
    /// /readyz).
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

/// Flags of `vodfarm search reindex`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReindexArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The index to rebuild.
    #[command(flatten)]
    pub backend: BackendArgs,
}
