//! The command line: one binary, a subcommand per role.

use anyhow::Context;
use clap::{Parser, Subcommand};
use vodfarm_core::telemetry::{init_tracing_with, AccessLog, LogFormat};

/// vodfarm: a video-on-demand backend. Creators upload, a farm of GPU
/// workers transcodes to an HLS ladder, an origin serves it to CDNs.
///
/// Every role reads its settings from flags or the environment variables
/// named in its --help. Logs go to stderr; RUST_LOG sets the level
/// (e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "vodfarm", version, propagate_version = true)]
pub struct Cli {
    /// Log format: text for people, json for log shippers.
    #[arg(long, global = true, env = "VODFARM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The role or tool to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start and moved into its role: the size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the whole system in one process on embedded defaults (private
    /// PostgreSQL and Redis under --data-dir unless DATABASE_URL/REDIS_URL
    /// are set).
    Dev(crate::dev::DevArgs),
    /// Run the creator API: accounts, channels, videos and tus uploads.
    Api(crate::api::ApiArgs),
    /// Run the coordinator: the leased job queue and the worker API.
    Coordinator(vodfarm_coordinator::CoordinatorArgs),
    /// Run a worker: lease transcode, thumbnail and manifest jobs from the
    /// coordinator and turn uploads into HLS renditions and thumbnails.
    Worker(vodfarm_gpu_worker::worker::WorkerArgs),
    /// Run an origin/shield server: the CDN's upstream for playlists,
    /// segments, images and subtitles.
    Origin(vodfarm_origin::OriginArgs),
    /// Run a CDN purger: send the purge outbox (deleted, privated,
    /// re-encoded videos) to every configured CDN until each acknowledges.
    Purger(vodfarm_purger::PurgerArgs),
    /// Run a webhook sender: POST creators' signed webhook events from the
    /// outbox, retrying with backoff for a day. Any number of replicas.
    Webhooks(vodfarm_webhooks::WebhookArgs),
    /// Run a search indexer: apply the search outbox to the index
    /// (PostgreSQL full text, or Elasticsearch when ELASTICSEARCH_URL is
    /// set). Any number of replicas.
    SearchIndexer(vodfarm_search::args::IndexerArgs),
    /// Run a counter: consume playback events from the bus (Redis Stream,
    /// or Kafka when KAFKA_BROKERS is set) into live Redis counters and
    /// watch history; flush closed hours to PostgreSQL hourly. Any number
    /// of replicas. `--flush-now` flushes once and exits.
    Counts(vodfarm_counts::CountsArgs),
    /// Compute recommendations (related videos, per-viewer lists) from
    /// the last 30 days of watch history into Redis; daily, or `--once`.
    Recs(vodfarm_counts::recs::RecsArgs),
    /// Search maintenance (`vodfarm search reindex`).
    Search(SearchArgs),
    /// Upload a video file (resumable; --wait follows it until playable).
    Upload(crate::upload::UploadArgs),
    /// Create the database if needed and apply the schema (idempotent).
    Migrate(crate::migrate::MigrateArgs),
    /// Operators: list, show, retry and cancel jobs (over the
    /// coordinator's operator API; token from VODFARM_OPERATOR_TOKEN).
    Jobs(crate::ops::JobsArgs),
    /// Operators: the workers the coordinators heard from.
    Workers(crate::ops::WorkersArgs),
    /// Operators: a video's processing state, renditions and jobs.
    Videos(crate::ops::VideosArgs),
}

/// `vodfarm search …`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SearchCommand,
}

/// The subcommands of `vodfarm search`.
#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Rebuild the search index from the videos table without downtime
    /// (Elasticsearch: a new index, then an atomic alias swap).
    Reindex(vodfarm_search::args::ReindexArgs),
}

/// Parses the command line and runs the chosen role to completion.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = if cli.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    let access = match &cli.command {
        Command::Dev(args) => args
            .access_log()
            .with_context(|| format!("creating {}", args.data_dir.display()))?,
        _ => AccessLog::Console,
    };
    init_tracing_with(format, access).context("opening the access log")?;
    match cli.command {
        Command::Migrate(args) => {
            let applied = crate::migrate::migrate(&args.database_url).await?;
            tracing::info!(applied, "schema up to date");
            println!("schema up to date ({applied} migration(s) applied)");
        }
        Command::Coordinator(args) => {
            vodfarm_coordinator::run(args, crate::shutdown_signal()).await?;
        }
        Command::Dev(args) => crate::dev::run(args).await?,
        Command::Origin(args) => {
            vodfarm_origin::run(args, crate::shutdown_signal()).await?;
        }
        Command::Purger(args) => {
            vodfarm_purger::run(args, crate::shutdown_signal()).await?;
        }
        Command::Webhooks(args) => {
            vodfarm_webhooks::run(args, crate::shutdown_signal()).await?;
        }
        Command::Api(args) => {
            crate::api::run(args, crate::shutdown_signal()).await?;
        }
        Command::SearchIndexer(args) => {
            vodfarm_search::indexer::run(args, crate::shutdown_signal()).await?;
        }
        Command::Search(SearchArgs {
            command: SearchCommand::Reindex(args),
        }) => {
            let report = vodfarm_search::reindex::run(&args).await?;
            println!(
                "search reindexed: {} document(s) in {}{}",
                report.documents,
                report.target,
                report
                    .replaced
                    .map(|old| format!(" (replaced {old})"))
                    .unwrap_or_default()
            );
        }
        Command::Counts(args) => {
            vodfarm_counts::run(args, crate::shutdown_signal()).await?;
        }
        Command::Recs(args) => {
            vodfarm_counts::recs::run(args, crate::shutdown_signal()).await?;
        }
        Command::Upload(args) => {
            crate::upload::run(args).await?;
        }
        Command::Jobs(args) => crate::ops::run_jobs(args).await?,
        Command::Workers(args) => crate::ops::run_workers(args).await?,
        Command::Videos(args) => crate::ops::run_videos(args).await?,
        Command::Worker(args) => {
            vodfarm_gpu_worker::worker::run(args, crate::shutdown_signal()).await?;
        }
    }
    Ok(())
}
