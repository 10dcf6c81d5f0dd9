//! The HTTP side of `vodfarm counts` and `vodfarm recs`: `/healthz`,
//! `/readyz` (PostgreSQL and Redis answer) and `/metrics`.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use prometheus::Registry;
use vodfarm_analytics::counters::Counters;
use vodfarm_core::http::ApiError;
use vodfarm_core::telemetry::metrics_response;

#[derive(Clone)]
struct Http {
    pool: sqlx::PgPool,
    counters: Counters,
    registry: Registry,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(pool: sqlx::PgPool, counters: Counters, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Http {
            pool,
            counters,
            registry,
        })
}

async fn readyz(State(s): State<Http>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1 FROM view_aggregates LIMIT 1")
        .execute(&s.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready: database");
            ApiError::unavailable("database or schema not available")
        })?;
    let mut conn = s.counters.connection();
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready: redis");
            ApiError::unavailable("redis not available")
        })?;
    Ok("ready")
}

async fn metrics(State(s): State<Http>) -> Response {
    metrics_response(&s.registry)
}
