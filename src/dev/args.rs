//! Flags of `vodfarm dev`.

use std::path::PathBuf;
use vodfarm_core::telemetry::AccessLog;

/// Flags of `vodfarm dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Directory for the private database, Redis, object store, secrets
    /// and dev.env (created if missing; reused by the next run).
    #[arg(long, env = "VODFARM_DATA_DIR", default_value = ".vodfarm")]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL instead of a private cluster.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Use this Redis instead of a private redis-server.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Use this object store (s3://BUCKET or file:///dir) instead of
    /// DIR/store.
    #[arg(long, env = "VODFARM_STORE")]
    pub store: Option<String>,
    /// Port of the private PostgreSQL cluster.
    #[arg(long, default_value_t = 55432)]
    pub pg_port: u16,
    /// Port of the private redis-server.
    #[arg(long, default_value_t = 56379)]
    pub redis_port: u16,
    /// Port of the coordinator.
    #[arg(long, default_value_t = 8082)]
    pub coordinator_port: u16,
    /// Port of the creator API and the web page.
    #[arg(long, default_value_t = 8080)]
    pub api_port: u16,
    /// Port of the origin (reads the object store).
    #[arg(long, default_value_t = 8081)]
    pub origin_port: u16,
    /// Port of the shield origin in front of the origin (what players use).
    #[arg(long, default_value_t = 8084)]
    pub shield_port: u16,
    /// Port of the worker's /metrics and /healthz.
    #[arg(long, default_value_t = 8083)]
    pub worker_port: u16,
    /// Port of the CDN purger's /metrics and /healthz (it purges the
    /// edges named in VODFARM_PURGE_URLS, if any).
    #[arg(long, default_value_t = 8085)]
    pub purger_port: u16,
    /// Port of the search indexer's /metrics and /healthz.
    #[arg(long, default_value_t = 8086)]
    pub search_indexer_port: u16,
    /// Port of the webhook sender's /metrics and /healthz.
    #[arg(long, default_value_t = 8087)]
    pub webhooks_port: u16,
    /// Port of the view counter's /metrics and /healthz.
    #[arg(long, default_value_t = 8088)]
    pub counts_port: u16,
    /// Port of the recommender's /metrics and /healthz.
    #[arg(long, default_value_t = 8089)]
    pub recs_port: u16,
    /// Upload this video as the demo instead of the generated 30-second
    /// test pattern.
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// Do not create the demo creator, channel and video.
    #[arg(long)]
    pub no_demo: bool,
    /// Also print one access line per HTTP request on the console (by
    /// default they go to DIR/access.log, so the console tells the story).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

impl DevArgs {
    /// Where dev sends access lines: `DIR/access.log` unless `--verbose`.
    /// Creates the data directory (owner-only) and the file (0600: it
    /// names every video and client).
    pub fn access_log(&self) -> anyhow::Result<AccessLog> {
        if self.verbose {
            return Ok(AccessLog::Console);
        }
        let mode = super::private::data_dir_mode(super::servers::is_root());
        super::private::create_dir_with_mode(&self.data_dir, mode)?;
        let path = self.data_dir.join("access.log");
        super::private::touch_private(&path)?;
        Ok(AccessLog::File(path))
    }
}
