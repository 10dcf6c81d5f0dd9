//! The coordinator: a leased job queue over PostgreSQL `processing_jobs`
//! and the HTTP API that GPU workers lease work through.
//!
//! - [`queue`]: the SQL of leasing, heartbeats, completion (with outputs),
//!   failure, reaping, retry and cancel.
//! - [`dispatch`]: long-poll waiters woken by `LISTEN/NOTIFY`.
//! - [`api`]: the HTTP routes.
//! - [`pipeline`]: the jobs an upload becomes (the per-video DAG).
//! - [`uploads`]: the creators' upload API (initiate, tus 1.0), which
//!   ends by enqueuing those jobs.
//! - [`run`]: the `vodfarm coordinator` role.

#![warn(missing_docs)]

pub mod api;
pub mod dispatch;
pub mod metrics;
mod operator;
pub mod pipeline;
pub mod queue;
pub mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_core::config::parse_duration;

pub use queue::{JobQueue, LeaseFilter, NewJob, QueueError, QueueSettings, WorkerSighting};

/// Flags and environment of `vodfarm coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to serve the worker and operator API on.
    #[arg(
        long,
        env = "VODFARM_COORDINATOR_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the schema must be applied: `vodfarm migrate`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Shared secret workers send as `Authorization: Bearer ...`.
    #[arg(long, env = "VODFARM_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: String,
    /// Secret for the operator routes (/v1/jobs*, /v1/queue/stats,
    /// /v1/workers, /v1/videos/*); required, and must differ from the
    /// worker token (workers parse untrusted media, so their token opens
    /// only the worker routes). `--admin-token` and VODFARM_ADMIN_TOKEN
    /// still work but are deprecated.
    #[arg(
        long,
        alias = "admin-token",
        env = "VODFARM_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    pub operator_token: Option<String>,
    /// How long a lease lasts without a heartbeat (e.g. 60s).
    #[arg(long, env = "VODFARM_LEASE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How often the reaper looks for expired leases.
    #[arg(long, env = "VODFARM_REAP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reap_interval: Duration,
    /// Backoff before the first retry of a failed or expired job; doubles
    /// with every attempt (±25 % jitter).
    #[arg(long, env = "VODFARM_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Longest retry backoff.
    #[arg(long, env = "VODFARM_RETRY_MAX", default_value = "10m", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// While polls wait, look for due work at least this often even without
    /// a notification (a safety net; notifications do the real work).
    #[arg(long, env = "VODFARM_IDLE_RECHECK", default_value = "10s", value_parser = parse_duration)]
    pub idle_recheck: Duration,
    /// Longest long poll a worker may ask for (`wait_ms` is capped to it).
    #[arg(long, env = "VODFARM_MAX_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

/// Why the coordinator could not run.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The listen address could not be bound, or serving failed.
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
    /// The operator token is missing or unusable.
    #[error("{0}")]
    OperatorToken(#[from] vodfarm_core::config::OperatorTokenError),
}

/// Runs the coordinator until `shutdown` completes, then stops cleanly:
/// waiting polls answer at once, in-flight requests finish, background
/// tasks end.
pub async fn run(
    args: CoordinatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let operator_token = vodfarm_core::config::operator_token(
        args.operator_token.as_deref(),
        Some(&args.worker_token),
    )?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.db_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CoordinatorError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, "coordinator listening");

    let queue = JobQueue::new(
        pool.clone(),
        QueueSettings {
            lease_ttl: args.lease_ttl,
            retry_base: args.retry_base,
            retry_max: args.retry_max,
        },
    );
    let metrics = Arc::new(metrics::CoordinatorMetrics::new()?);
    let stop = CancellationToken::new();
    let dispatcher = dispatch::Dispatcher::new(
        queue.clone(),
        metrics.clone(),
        args.idle_recheck,
        stop.clone(),
    );
    let seen = Arc::new(api::WorkersSeen::default());
    let state = api::AppState {
        queue: queue.clone(),
        dispatcher: dispatcher.clone(),
        metrics: metrics.clone(),
        operator_token: operator_token.into(),
        worker_token: args.worker_token.clone().into(),
        max_wait: args.max_wait,
        seen: seen.clone(),
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(dispatcher.clone().run());
    tasks.spawn(dispatcher.clone().listen(pool.clone()));
    tasks.spawn(reaper(
        queue.clone(),
        metrics.clone(),
        args.reap_interval,
        stop.clone(),
    ));
    tasks.spawn(flush_workers(queue.clone(), seen, stop.clone()));

    let connections = vodfarm_core::serve::ConnectionMetrics::new(&metrics.registry)?;
    let app = api::router(state);
    // Waiting long polls answer at once: the dispatcher drops them on stop.
    vodfarm_core::http::serve_until_shutdown(
        listener,
        app,
        (args.server.limits(), connections),
        stop.clone(),
        shutdown,
        "coordinator",
    )
    .await;
    while tasks.join_next().await.is_some() {}
    pool.close().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn reaper(
    queue: JobQueue,
    metrics: Arc<metrics::CoordinatorMetrics>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match queue.reap().await {
            Ok(report) => {
                for (id, t) in &report.returned {
                    metrics
                        .lease_expiries
                        .with_label_values(&[t.as_str(), "retry"])
                        .inc();
                    tracing::warn!(job_id = id, job_type = %t, "lease expired; job returned to the queue");
                }
                for (id, t) in &report.failed {
                    metrics
                        .lease_expiries
                        .with_label_values(&[t.as_str(), "failed"])
                        .inc();
                    tracing::error!(job_id = id, job_type = %t, "lease expired on the last attempt; job failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
    }
}

async fn flush_workers(queue: JobQueue, seen: Arc<api::WorkersSeen>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let batch = seen.take();
        if let Err(e) = queue.record_workers(&batch).await {
            tracing::warn!(error = %e, "could not record workers seen");
        }
        if last {
            return;
        }
    }
}
