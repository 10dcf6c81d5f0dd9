//! `vodfarm search reindex`: rebuilds the configured index from `videos`
//! while searches keep being answered (Elasticsearch: a new index and an
//! atomic alias swap; PostgreSQL: every document brought up to date in
//! place, version-guarded like the indexer's writes).

use crate::args::ReindexArgs;
use crate::index::{IndexError, ReindexReport};
use crate::postgres::PgSearchSettings;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// Runs the rebuild to completion.
pub async fn run(args: &ReindexArgs) -> Result<ReindexReport, IndexError> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await?;
    let index = args
        .backend
        .open(pool.clone(), PgSearchSettings::default())
        .await?;
    tracing::info!(index = index.kind(), "search reindex started");
    let report = index.reindex(&pool).await;
    pool.close().await;
    report
}
