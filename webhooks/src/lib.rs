//! `vodfarm webhooks`: sends creators' webhook events.
//!
//! Every change a creator may want to hear about (upload completed, video
//! ready, failed, deleted, updated) writes a `webhook_events` row and one
//! `webhook_deliveries` row per subscribed endpoint in the same
//! transaction as the change (triggers of migration `…000200_webhooks`),
//! so no event is lost or invented. This role POSTs each delivery,
//! signed (`Vodfarm-Signature`, see `core::webhook_signature`), retries
//! with backoff for a day, and disables endpoints that keep failing.
//! Replicas share the work (`FOR UPDATE SKIP LOCKED`). Delivery is at
//! least once: receivers deduplicate on the event id.
//!
//! - [`outbox`]: the outbox's SQL (claim, write-back, prune).
//! - [`deliver`]: one signed HTTP attempt, with the SSRF rules applied
//!   after DNS resolution and no redirects.
//! - [`runner`]: the loop (LISTEN, claim, send, record).
//! - [`metrics`]: backlog, attempts, deliveries, latency.
//! - [`run`]: flags, `/healthz`, `/readyz`, `/metrics`.

#![warn(missing_docs)]

pub mod deliver;
pub mod metrics;
pub mod outbox;
pub mod runner;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use vodfarm_core::config::parse_duration;
use vodfarm_core::outbox_role::{self, BacklogMetrics, RoleSettings};

/// Flags and environment of `vodfarm webhooks`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address to serve `/healthz`, `/readyz` and `/metrics` on.
    #[arg(
        long,
        env = "VODFARM_WEBHOOKS_LISTEN",
        default_value = "127.0.0.1:8087"
    )]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the outbox lives there).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Deliveries claimed at once.
    #[arg(long, env = "VODFARM_WEBHOOKS_BATCH_SIZE", default_value_t = 50)]
    pub batch_size: i64,
    /// Deliveries in flight at once (per replica).
    #[arg(long, env = "VODFARM_WEBHOOKS_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Timeout of each attempt (connection, request and answer).
    #[arg(long, env = "VODFARM_WEBHOOKS_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long a claimed delivery is held before another sender may take
    /// it (a sender that died mid-attempt); at least the request timeout
    /// plus 1 s.
    #[arg(long, env = "VODFARM_WEBHOOKS_CLAIM_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub claim_lease: Duration,
    /// First retry delay after a failed attempt (doubles per attempt,
    /// ±25 %).
    #[arg(long, env = "VODFARM_WEBHOOKS_RETRY_BASE", default_value = "10s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "VODFARM_WEBHOOKS_RETRY_MAX", default_value = "1h", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// A delivery is retried for this long after it was made, then marked
    /// failed.
    #[arg(long, env = "VODFARM_WEBHOOKS_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    pub retry_for: Duration,
    /// An endpoint is disabled (with the reason) after at least this many
    /// failed attempts in a row …
    #[arg(
        long,
        env = "VODFARM_WEBHOOKS_DISABLE_AFTER_FAILURES",
        default_value_t = 10
    )]
    pub disable_after_failures: i32,
    /// … spanning at least this long without a success.
    #[arg(long, env = "VODFARM_WEBHOOKS_DISABLE_AFTER", default_value = "24h", value_parser = parse_duration)]
    pub disable_after: Duration,
    /// Longest sleep without a notification (a safety net: new events
    /// wake the sender at once).
    #[arg(long, env = "VODFARM_WEBHOOKS_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Finished deliveries (and their events) are deleted after this long.
    #[arg(long, env = "VODFARM_WEBHOOKS_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,
    /// Where webhook URLs may point (checked at every connection).
    #[command(flatten)]
    pub destinations: vodfarm_core::destination::DestinationArgs,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

/// Why the sender could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The listen address could not be bound.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the sender until `shutdown` completes; then the batch in flight
/// finishes and it returns.
pub async fn run(
    args: WebhookArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.db_max_connections.max(2))
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| WebhookError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let policy: vodfarm_core::destination::DestinationPolicy = args.destinations.into();
    tracing::info!(%addr, allow_http = policy.allow_http, allow_private = policy.allow_private, "webhook sender listening");
    let metrics = metrics::WebhookMetrics::new()?;
    let sender = deliver::Sender::new(policy, args.request_timeout)?;
    let runner = runner::Runner::new(
        outbox::Outbox::new(pool.clone()),
        sender,
        metrics.clone(),
        runner::RunSettings {
            batch_size: args.batch_size.clamp(1, 1000),
            concurrency: args.concurrency.clamp(1, 256),
            // Every attempt of a batch is over within the request
            // timeout (they run at once, up to `concurrency`), so a lease
            // this long never ends while its sender is still sending.
            lease: args
                .claim_lease
                .max(args.request_timeout + Duration::from_secs(1)),
            retry_base: args.retry_base,
            retry_max: args.retry_max.max(args.retry_base),
            retry_for: args.retry_for,
            disable: outbox::DisableRule {
                failures: args.disable_after_failures.max(1),
                failing_for: args.disable_after,
            },
            poll_interval: args.poll_interval.max(Duration::from_millis(100)),
        },
    );
    let backlog = BacklogMetrics {
        registry: metrics.registry.clone(),
        pending: metrics.backlog.clone(),
        oldest_pending: metrics.oldest_pending.clone(),
        db_errors: metrics.db_errors.clone(),
    };
    let settings = RoleSettings {
        listener,
        limits: args.server.limits(),
        retention: args.retention,
        name: "webhooks",
    };
    outbox_role::run(runner, backlog, settings, shutdown).await?;
    Ok(())
}
