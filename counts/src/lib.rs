//! `vodfarm counts` and `vodfarm recs`: the analytics roles.
//!
//! - [`consumer`]: reads playback events from the bus (a consumer group:
//!   any number of replicas), applies each batch to the Redis counters
//!   with one idempotent Lua script, writes signed-in viewers' history
//!   and progress, and only then commits the batch.
//! - [`flush`]: the hourly flush of the Redis counters into
//!   `view_aggregates`, `videos.view_count` and `channels.total_views`,
//!   exactly once per (video, hour) whatever crashes or runs twice.
//! - [`recs`]: the daily item-to-item recommendations (`vodfarm recs`).
//! - [`metrics`]: Prometheus metrics; [`server`]: `/healthz`, `/readyz`,
//!   `/metrics`.

#![warn(missing_docs)]

pub mod consumer;
pub mod flush;
pub mod metrics;
pub mod recs;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_analytics::args::AnalyticsArgs;
use vodfarm_core::config::parse_duration;

/// Flags and environment of `vodfarm counts`.
#[derive(Debug, Clone, clap::Args)]
pub struct CountsArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "VODFARM_COUNTS_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the flush writes there; erasure marks are read
    /// there).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Redis, the bus and the watch store.
    #[command(flatten)]
    pub analytics: AnalyticsArgs,
    /// The consumer group every counts replica joins.
    #[arg(long, env = "VODFARM_COUNTS_GROUP", default_value = "vodfarm-counts")]
    pub group: String,
    /// This replica's name in the group: keep it stable across restarts
    /// (a restarted replica takes back its own unacknowledged events at
    /// once; others' only after --stream-claim-idle).
    #[arg(long, env = "VODFARM_COUNTS_CONSUMER", default_value_t = default_consumer())]
    pub consumer_name: String,
    /// Events applied per batch (one Lua script run, one commit).
    #[arg(long, env = "VODFARM_COUNTS_BATCH", default_value_t = 500)]
    pub batch_size: usize,
    /// How often the flush runs (the seed's hourly cron). Every replica
    /// may flush: flushes are idempotent per (video, hour).
    #[arg(long, env = "VODFARM_FLUSH_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// An hour stays open for flushing this long after it ended (events
    /// still on the bus keep counting in it); later it is flushed a last
    /// time and closed.
    #[arg(long, env = "VODFARM_FLUSH_GRACE", default_value = "2h", value_parser = parse_duration)]
    pub flush_grace: Duration,
    /// Flush every hour up to now (the current one included) once and
    /// exit, without consuming.
    #[arg(long)]
    pub flush_now: bool,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

fn default_consumer() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "counts".to_owned())
}

/// Why a role could not run.
#[derive(Debug, thiserror::Error)]
pub enum CountsError {
    /// The database could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis, the bus or the watch store could not be opened.
    #[error("{0}")]
    Open(#[from] vodfarm_analytics::args::OpenError),
    /// The bus failed for good.
    #[error("event bus: {0}")]
    Bus(#[from] vodfarm_analytics::bus::BusError),
    /// A flush failed.
    #[error("flush: {0}")]
    Flush(#[from] flush::FlushError),
    /// Recommendations failed.
    #[error("recs: {0}")]
    Recs(#[from] recs::RecsError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listen address could not be bound.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

async fn pool(url: &str, max: u32) -> Result<sqlx::PgPool, sqlx::Error> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// Runs `vodfarm counts` until `shutdown` completes (the batch in flight
/// is applied and committed first), or with `--flush-now` flushes once.
pub async fn run(
    args: CountsArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CountsError> {
    let pool = pool(&args.database_url, args.db_max_connections).await?;
    let analytics = args.analytics.open(pool.clone()).await?;
    let metrics = metrics::CountsMetrics::new()?;
    if args.flush_now {
        let report = flush::flush(
            &pool,
            &analytics.counters,
            &metrics,
            flush::FlushScope::UpToNow,
            args.flush_grace,
        )
        .await?;
        tracing::info!(
            hours = report.hours,
            rows = report.rows,
            views = report.views,
            "flushed"
        );
        println!(
            "flushed {} hour(s): {} row(s), {} view(s) moved",
            report.hours, report.rows, report.views
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CountsError::Serve {
            addr: args.listen,
            source,
        })?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut consumer = analytics
        .bus
        .consumer(&args.group, &args.consumer_name)
        .await?;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(args.listen),
        bus = analytics.bus.kind(),
        group = %args.group,
        consumer = %args.consumer_name,
        "counts consuming"
    );
    {
        let (pool, analytics, metrics, stop) = (
            pool.clone(),
            analytics.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let batch = args.batch_size.clamp(1, 10_000);
        tasks.spawn(async move {
            consumer::consume(&mut *consumer, &pool, &analytics, &metrics, batch, stop).await;
        });
    }
    {
        let (pool, counters, metrics, stop) = (
            pool.clone(),
            analytics.counters.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let (every, grace) = (args.flush_interval, args.flush_grace);
        tasks.spawn(async move {
            flush::flush_every(&pool, &counters, &metrics, every, grace, stop).await;
        });
    }
    let http = server::router(
        pool.clone(),
        analytics.counters.clone(),
        metrics.registry.clone(),
    );
    let connections = vodfarm_core::serve::ConnectionMetrics::new(&metrics.registry)?;
    vodfarm_core::http::serve_until_shutdown(
        listener,
        http,
        (args.server.limits(), connections),
        stop.clone(),
        shutdown,
        "counts",
    )
    .await;
    while tasks.join_next().await.is_some() {}
    pool.close().await;
    tracing::info!("counts stopped");
    Ok(())
}
