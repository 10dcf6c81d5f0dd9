//! The process of an outbox-sending role (the CDN purger, the webhook
//! sender): its [`outbox_loop`](crate::outbox_loop) and LISTEN task, an
//! hourly prune of finished rows, and `/healthz`, `/readyz`, `/metrics`,
//! until shutdown; then the batch in flight finishes.

use crate::outbox_loop::{self, OutboxRound, Wakeup};
use crate::serve::{ConnectionMetrics, ServerLimits};
use crate::telemetry::metrics_response;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often finished rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long `/readyz` and `/metrics` wait for the backlog query.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole outbox's backlog, read now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows not finished yet.
    pub pending: i64,
    /// Age of the oldest of them, seconds (0: none).
    pub oldest_seconds: f64,
}

/// What the role's process asks of its outbox, beyond its rounds.
pub trait OutboxRole: OutboxRound + 'static {
    /// The channel the outbox's trigger notifies.
    fn channel(&self) -> &'static str;
    /// The outbox's database.
    fn pool(&self) -> &PgPool;
    /// How the loop is woken.
    fn wakeup(&self) -> &Wakeup;
    /// Longest sleep without a notification.
    fn poll_interval(&self) -> Duration;
    /// The whole outbox's backlog.
    fn backlog(&self) -> impl Future<Output = Result<Backlog, sqlx::Error>> + Send;
    /// Deletes finished rows older than `retention`; returns how many.
    fn prune(&self, retention: Duration) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// The metrics `/metrics` refreshes from the backlog at scrape time (every
/// replica reports the whole outbox: dashboards take `max()`).
#[derive(Debug, Clone)]
pub struct BacklogMetrics {
    /// The role's registry.
    pub registry: Registry,
    /// Pending rows.
    pub pending: IntGauge,
    /// Age of the oldest pending row.
    pub oldest_pending: Gauge,
    /// Outbox statements that failed (a scrape that cannot read the
    /// backlog counts one; the gauges keep their last values).
    pub db_errors: IntCounter,
}

/// Where and how the role serves HTTP, and what it keeps.
#[derive(Debug)]
pub struct RoleSettings {
    /// The bound listener.
    pub listener: tokio::net::TcpListener,
    /// Connection limits.
    pub limits: ServerLimits,
    /// How long finished rows are kept.
    pub retention: Duration,
    /// The role's name in log lines.
    pub name: &'static str,
}

struct Http<R> {
    role: Arc<R>,
    metrics: BacklogMetrics,
}

impl<R> Clone for Http<R> {
    fn clone(&self) -> Self {
        Http {
            role: self.role.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Runs `role` until `shutdown` completes, then lets the batch in flight
/// finish.
pub async fn run<R: OutboxRole>(
    role: Arc<R>,
    metrics: BacklogMetrics,
    settings: RoleSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), prometheus::Error> {
    let connections = ConnectionMetrics::new(&metrics.registry)?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (r, stop) = (role.clone(), stop.clone());
        tasks.spawn(async move {
            outbox_loop::listen(r.pool(), r.channel(), r.wakeup(), &stop).await;
        });
    }
    {
        let (r, stop, name) = (role.clone(), stop.clone(), settings.name);
        tasks.spawn(async move {
            outbox_loop::run(&*r, r.wakeup(), r.poll_interval(), name, &stop).await;
        });
    }
    tasks.spawn(prune(
        role.clone(),
        settings.retention,
        settings.name,
        stop.clone(),
    ));
    let app = axum::Router::new()
        .route("/healthz", get(healthz::<R>))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics_page::<R>))
        .fallback(crate::http::not_found_fallback)
        .with_state(Http {
            role: role.clone(),
            metrics,
        });
    crate::http::serve_until_shutdown(
        settings.listener,
        app,
        (settings.limits, connections),
        stop.clone(),
        shutdown,
        settings.name,
    )
    .await;
    while tasks.join_next().await.is_some() {}
    role.pool().close().await;
    tracing::info!(role = settings.name, "stopped");
    Ok(())
}

/// Deletes finished rows older than `retention`, hourly.
async fn prune<R: OutboxRole>(
    role: Arc<R>,
    retention: Duration,
    name: &'static str,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match role.prune(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(role = name, deleted = n, "finished outbox rows pruned"),
            Err(e) => {
                tracing::warn!(role = name, error = %e, "pruning finished outbox rows failed");
            }
        }
    }
}

async fn healthz<R: OutboxRole>(State(s): State<Http<R>>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "listening": s.role.wakeup().is_listening(),
    }))
    .into_response()
}

async fn readyz<R: OutboxRole>(State(s): State<Http<R>>) -> Response {
    let answered = tokio::time::timeout(BACKLOG_TIMEOUT, s.role.backlog()).await;
    crate::http::database_readiness(matches!(answered, Ok(Ok(_))))
}

async fn metrics_page<R: OutboxRole>(State(s): State<Http<R>>) -> Response {
    match tokio::time::timeout(BACKLOG_TIMEOUT, s.role.backlog()).await {
        Ok(Ok(b)) => {
            s.metrics.pending.set(b.pending);
            s.metrics.oldest_pending.set(b.oldest_seconds);
        }
        _ => s.metrics.db_errors.inc(),
    }
    metrics_response(&s.metrics.registry)
}
