//! `vodfarm migrate`: create the database if needed and apply the schema.

use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;

/// Flags of `vodfarm migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The server could not be reached or refused.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed or the applied history does not match ours.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database if missing, then applies every migration not yet
/// applied. Running it again changes nothing.
pub async fn migrate(database_url: &str) -> Result<usize, MigrateError> {
    if !Postgres::database_exists(database_url).await? {
        tracing::info!("creating database");
        Postgres::create_database(database_url).await?;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let before: i64 = applied_count(&pool).await;
    crate::MIGRATOR.run(&pool).await?;
    let after: i64 = applied_count(&pool).await;
    pool.close().await;
    Ok((after - before).max(0) as usize)
}

async fn applied_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}
