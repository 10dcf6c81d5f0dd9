//! `vodfarm search-indexer`: applies the search outbox to the index.
//!
//! Each round claims a batch of the oldest outbox rows (`SKIP LOCKED`, so
//! any number of replicas share the work), makes the index hold the
//! current state of the batch's videos, deletes the rows and commits, in
//! one transaction. It drains the outbox, then sleeps until a
//! notification (`vodfarm_search`, sent by the outbox trigger) or the
//! poll interval. A failed batch rolls back and is retried after a
//! backoff; nothing is lost and, writes being versioned, a replay changes
//! nothing.
//!
//! The role serves `/metrics` (lag, batches, backlog), `/healthz` and
//! `/readyz` (database and index reachable).

use crate::args::IndexerArgs;
use crate::index::{IndexError, SearchIndex};
use crate::metrics::IndexerMetrics;
use crate::outbox;
use crate::postgres::PgSearchSettings;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use prometheus::Registry;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vodfarm_core::http::ApiError;
use vodfarm_core::outbox_loop::{self, OutboxRound, Wakeup};
use vodfarm_core::telemetry::metrics_response;

/// The NOTIFY channel of the outbox trigger.
pub const CHANNEL: &str = "vodfarm_search";

/// Why the indexer could not run.
#[derive(Debug, thiserror::Error)]
pub enum IndexerRunError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The index could not be opened.
    #[error("search index: {0}")]
    Index(#[from] IndexError),
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

/// Applies the outbox to an index.
#[derive(Debug, Clone)]
pub struct Indexer {
    pool: PgPool,
    index: Arc<dyn SearchIndex>,
    metrics: IndexerMetrics,
    batch_size: i64,
}

impl Indexer {
    /// An indexer of `index` reading the outbox through `pool`.
    pub fn new(
        pool: PgPool,
        index: Arc<dyn SearchIndex>,
        metrics: IndexerMetrics,
        batch_size: i64,
    ) -> Indexer {
        Indexer {
            pool,
            index,
            metrics,
            batch_size: batch_size.max(1),
        }
    }

    /// One batch: claim, apply, delete, commit. Returns the outbox rows
    /// applied (0: nothing was waiting).
    pub async fn run_batch(&self) -> Result<usize, IndexError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let rows = outbox::claim(&mut tx, self.batch_size).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let videos = outbox::by_video(&rows);
        let applied = self.index.apply(&mut tx, &videos).await?;
        let lags = outbox::finish(&mut tx, &rows).await?;
        tx.commit().await?;
        for lag in &lags {
            self.metrics.lag.observe(lag.max(0.0));
        }
        let m = &self.metrics.applied;
        m.with_label_values(&["upsert"]).inc_by(applied.upserted);
        m.with_label_values(&["remove"]).inc_by(applied.removed);
        m.with_label_values(&["skip"]).inc_by(applied.skipped);
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batches.with_label_values(&["ok"]).inc();
        tracing::debug!(
            rows = rows.len(),
            videos = videos.len(),
            upserted = applied.upserted,
            removed = applied.removed,
            skipped = applied.skipped,
            first_video = videos.first().map(|v| v.video_row),
            "search outbox batch applied"
        );
        Ok(rows.len())
    }

    async fn refresh_backlog(&self) {
        match outbox::backlog(&self.pool).await {
            Ok((pending, oldest)) => {
                self.metrics.pending.set(pending);
                self.metrics.oldest.set(oldest);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the search outbox backlog"),
        }
    }

    /// Drains the outbox whenever it is notified or `poll` passes, until
    /// `stop` (the shared [`outbox_loop`]); prunes what the index no
    /// longer needs every so often.
    pub async fn run(self, poll: Duration, tombstone_ttl: Duration, stop: CancellationToken) {
        tracing::info!(index = self.index.kind(), "search indexer running");
        let wakeup = Wakeup::new(None);
        let pool = self.pool.clone();
        let rounds = Rounds {
            indexer: self,
            tombstone_ttl,
            last_prune: Mutex::new(Instant::now()),
        };
        tokio::join!(
            outbox_loop::listen(&pool, CHANNEL, &wakeup, &stop),
            outbox_loop::run(&rounds, &wakeup, poll, "search", &stop),
        );
        tracing::info!("search indexer stopped");
    }
}

/// How often the index's tombstones are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The indexer's rounds, as the shared outbox loop runs them.
struct Rounds {
    indexer: Indexer,
    tombstone_ttl: Duration,
    last_prune: Mutex<Instant>,
}

impl OutboxRound for Rounds {
    type Error = IndexError;

    async fn round(&self) -> Result<usize, IndexError> {
        self.indexer.run_batch().await
    }

    async fn idle(&self) {
        self.indexer.refresh_backlog().await;
        let due = match self.last_prune.lock() {
            Ok(mut last) if last.elapsed() > PRUNE_EVERY => {
                *last = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            match self.indexer.index.prune(self.tombstone_ttl).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "search tombstones removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "search prune failed"),
            }
        }
    }

    fn failed(&self, _: &IndexError) {
        self.indexer
            .metrics
            .batches
            .with_label_values(&["error"])
            .inc();
    }
}

#[derive(Clone)]
struct Served {
    pool: PgPool,
    index: Arc<dyn SearchIndex>,
    registry: Registry,
}

async fn readyz(State(s): State<Served>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1 FROM search_outbox LIMIT 1")
        .execute(&s.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready: database");
            ApiError::unavailable("database or schema not available")
        })?;
    s.index.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready: search index");
        ApiError::unavailable("search index not available")
    })?;
    Ok("ready")
}

async fn serve_metrics(State(s): State<Served>) -> Response {
    metrics_response(&s.registry)
}

/// Runs the indexer role until `shutdown` completes.
pub async fn run(
    args: IndexerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IndexerRunError> {
    let pool = PgPoolOptions::new()
        .max_connections(args.db_max_connections.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await?;
    let index = args
        .backend
        .open(pool.clone(), PgSearchSettings::default())
        .await?;
    let registry = Registry::new();
    let metrics = IndexerMetrics::new(&registry)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| IndexerRunError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, index = index.kind(), "search indexer listening");
    let connections = vodfarm_core::serve::ConnectionMetrics::new(&registry)?;
    let indexer = Indexer::new(pool.clone(), index.clone(), metrics, args.batch_size);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(indexer.run(args.poll_interval, args.tombstone_ttl, stop.clone()));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(serve_metrics))
        .fallback(vodfarm_core::http::not_found_fallback)
        .with_state(Served {
            pool: pool.clone(),
            index,
            registry,
        });
    vodfarm_core::http::serve_until_shutdown(
        listener,
        app,
        (args.server.limits(), connections),
        stop.clone(),
        shutdown,
        "search-indexer",
    )
    .await;
    let _ = worker.await;
    pool.close().await;
    Ok(())
}
