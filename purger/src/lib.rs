//! `vodfarm purger`: the CDN purge outbox's sender.
//!
//! Every change after which a video's cached answers must stop being
//! served (deleted, made private, no longer ready, re-encoded) writes a
//! `cdn_purges` row in the same transaction (triggers of migration
//! `…040_cdn_purge`). The purger sends each row to every configured CDN
//! and retries with backoff until each acknowledged it; replicas share
//! the work (`FOR UPDATE SKIP LOCKED`).
//!
//! - [`outbox`]: the outbox's SQL (claim, acknowledgements, write-back).
//! - [`runner`]: the loop (LISTEN, claim, send, record) and its rounds.
//! - [`drivers`]: HTTP edges (`PURGE` + `Surrogate-Key`), Fastly,
//!   Cloudflare, CloudFront.
//! - [`metrics`]: backlog, oldest pending purge, requests per target.
//! - [`run`]: flags, `/healthz`, `/readyz`, `/metrics`.

#![warn(missing_docs)]

pub mod drivers;
pub mod metrics;
pub mod outbox;
pub mod runner;

use drivers::CdnDriver;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::config::parse_duration;
use vodfarm_core::outbox_role::{self, BacklogMetrics, RoleSettings};

/// How Cloudflare identifies a video's files (`--cloudflare-purge-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudflarePurgeBy {
    /// Cache tags (`Cache-Tag: video-{id}`, sent by the origin).
    Tags,
    /// URL prefixes on `--cloudflare-prefix-host`.
    Prefixes,
}

/// Flags and environment of `vodfarm purger`. Credentials are read from
/// flags or (better) the environment and never logged: `Debug` shows
/// whether they are set, not what they are.
#[derive(Clone, clap::Args)]
pub struct PurgerArgs {
    /// Address to serve `/healthz`, `/readyz` and `/metrics` on.
    #[arg(long, env = "VODFARM_PURGER_LISTEN", default_value = "127.0.0.1:8085")]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the outbox lives there).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Edge caches purged over HTTP, comma-separated: each gets `PURGE /`
    /// with `Surrogate-Key: video-{id}` (Varnish with
    /// deploy/varnish/vodfarm.vcl, nginx-based caches). Each URL is a
    /// target of its own.
    #[arg(
        long,
        env = "VODFARM_PURGE_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub purge_urls: Vec<String>,
    /// Fastly service to purge by surrogate key (needs
    /// --fastly-api-token).
    #[arg(long, env = "VODFARM_FASTLY_SERVICE_ID")]
    pub fastly_service_id: Option<String>,
    /// Fastly API token with purge rights (prefer the environment).
    #[arg(long, env = "VODFARM_FASTLY_API_TOKEN", hide_env_values = true)]
    pub fastly_api_token: Option<String>,
    /// Fastly's API base URL.
    #[arg(long, env = "VODFARM_FASTLY_API_URL", default_value = drivers::fastly::DEFAULT_API_URL)]
    pub fastly_api_url: String,
    /// Cloudflare zone to purge (needs --cloudflare-api-token).
    #[arg(long, env = "VODFARM_CLOUDFLARE_ZONE_ID")]
    pub cloudflare_zone_id: Option<String>,
    /// Cloudflare API token with the "Cache Purge" permission (prefer the
    /// environment).
    #[arg(long, env = "VODFARM_CLOUDFLARE_API_TOKEN", hide_env_values = true)]
    pub cloudflare_api_token: Option<String>,
    /// Purge Cloudflare by cache tag (`Cache-Tag: video-{id}`, sent by the
    /// origin) or by URL prefix (then set --cloudflare-prefix-host).
    #[arg(
        long,
        env = "VODFARM_CLOUDFLARE_PURGE_BY",
        value_enum,
        default_value = "tags"
    )]
    pub cloudflare_purge_by: CloudflarePurgeBy,
    /// The host viewers fetch videos from through Cloudflare (with an
    /// optional path prefix), for --cloudflare-purge-by prefixes.
    #[arg(long, env = "VODFARM_CLOUDFLARE_PREFIX_HOST")]
    pub cloudflare_prefix_host: Option<String>,
    /// Cloudflare's API base URL.
    #[arg(long, env = "VODFARM_CLOUDFLARE_API_URL", default_value = drivers::cloudflare::DEFAULT_API_URL)]
    pub cloudflare_api_url: String,
    /// CloudFront distribution to invalidate (`/v/{id}/*`, `/t/{id}/*`,
    /// `/s/{id}/*`); credentials from the AWS SDK's chain
    /// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, IRSA, instance
    /// role).
    #[arg(long, env = "VODFARM_CLOUDFRONT_DISTRIBUTION_ID")]
    pub cloudfront_distribution_id: Option<String>,
    /// CloudFront API endpoint override (proxies, tests). The generic
    /// AWS_ENDPOINT_URL (often an S3-compatible store) is not used.
    #[arg(long, env = "AWS_ENDPOINT_URL_CLOUDFRONT")]
    pub cloudfront_endpoint: Option<String>,
    /// Run with no CDN configured: purges are marked done at once. For
    /// deployments without a CDN and for `vodfarm dev`; without it a
    /// purger with nothing to purge refuses to start (a forgotten setting
    /// would otherwise silently drop every purge).
    #[arg(long, env = "VODFARM_PURGE_ALLOW_NO_CDN")]
    pub allow_no_cdn: bool,
    /// Outbox rows claimed at once.
    #[arg(long, env = "VODFARM_PURGE_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: i64,
    /// First retry delay after a CDN did not acknowledge (doubles per
    /// attempt, ±25 %).
    #[arg(long, env = "VODFARM_PURGE_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "VODFARM_PURGE_RETRY_MAX", default_value = "60s", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// Each purge is sent a second time this long after every CDN
    /// acknowledged it, for answers already on their way to the edge when
    /// the first one arrived (0s: once only).
    #[arg(long, env = "VODFARM_PURGE_CONFIRM_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub confirm_after: Duration,
    /// Timeout of each request to a CDN.
    #[arg(long, env = "VODFARM_PURGE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Longest sleep without a notification (a safety net: new purges
    /// wake the purger at once).
    #[arg(long, env = "VODFARM_PURGE_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Finished purges are deleted from the outbox after this long.
    #[arg(long, env = "VODFARM_PURGE_RETENTION", default_value = "168h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

impl std::fmt::Debug for PurgerArgs {
    // Tokens and purge URLs (which may carry basic-auth credentials) are
    // never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgerArgs")
            .field("listen", &self.listen)
            .field("purge_urls", &self.purge_urls.len())
            .field("fastly_service_id", &self.fastly_service_id)
            .field(
                "fastly_api_token",
                &self.fastly_api_token.as_ref().map(|_| "set"),
            )
            .field("cloudflare_zone_id", &self.cloudflare_zone_id)
            .field(
                "cloudflare_api_token",
                &self.cloudflare_api_token.as_ref().map(|_| "set"),
            )
            .field("cloudflare_purge_by", &self.cloudflare_purge_by)
            .field(
                "cloudfront_distribution_id",
                &self.cloudfront_distribution_id,
            )
            .field("allow_no_cdn", &self.allow_no_cdn)
            .finish_non_exhaustive()
    }
}

/// Why the purger could not run.
#[derive(Debug, thiserror::Error)]
pub enum PurgerError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// A CDN setting is unusable.
    #[error("{0}")]
    Config(String),
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
}

/// The CDN targets `args` configure.
pub async fn drivers_from(args: &PurgerArgs) -> Result<Vec<Arc<dyn CdnDriver>>, PurgerError> {
    let client = reqwest::Client::builder()
        .timeout(args.request_timeout)
        .user_agent(concat!("vodfarm-purger/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PurgerError::Config(format!("HTTP client: {e}")))?;
    let cfg = |e: drivers::DriverError| PurgerError::Config(e.0);
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let mut out: Vec<Arc<dyn CdnDriver>> = Vec::new();
    for url in args.purge_urls.iter().filter(|u| !u.trim().is_empty()) {
        out.push(Arc::new(
            drivers::http::HttpEdge::new(url, client.clone()).map_err(cfg)?,
        ));
    }
    match (
        given(&args.fastly_service_id),
        given(&args.fastly_api_token),
    ) {
        (Some(service), Some(token)) => out.push(Arc::new(
            drivers::fastly::Fastly::new(&args.fastly_api_url, service, token, client.clone())
                .map_err(cfg)?,
        )),
        (None, None) => {}
        _ => {
            return Err(PurgerError::Config(
                "Fastly needs both --fastly-service-id and --fastly-api-token".into(),
            ))
        }
    }
    match (
        given(&args.cloudflare_zone_id),
        given(&args.cloudflare_api_token),
    ) {
        (Some(zone), Some(token)) => {
            let by = match args.cloudflare_purge_by {
                CloudflarePurgeBy::Tags => drivers::cloudflare::PurgeBy::Tags,
                CloudflarePurgeBy::Prefixes => drivers::cloudflare::PurgeBy::Prefixes {
                    host: args.cloudflare_prefix_host.clone().unwrap_or_default(),
                },
            };
            out.push(Arc::new(
                drivers::cloudflare::Cloudflare::new(
                    &args.cloudflare_api_url,
                    zone,
                    token,
                    by,
                    client.clone(),
                )
                .map_err(cfg)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(PurgerError::Config(
                "Cloudflare needs both --cloudflare-zone-id and --cloudflare-api-token".into(),
            ))
        }
    }
    if let Some(dist) = given(&args.cloudfront_distribution_id) {
        out.push(Arc::new(
            drivers::cloudfront::CloudFront::from_env(dist, given(&args.cloudfront_endpoint))
                .await
                .map_err(cfg)?,
        ));
    }
    let mut names: Vec<&str> = out.iter().map(|d| d.target()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(PurgerError::Config(
            "a CDN target is configured twice".into(),
        ));
    }
    Ok(out)
}

/// Runs the purger until `shutdown` completes; then the batch in flight
/// finishes and it returns.
pub async fn run(
    args: PurgerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PurgerError> {
    let drivers = drivers_from(&args).await?;
    if drivers.is_empty() && !args.allow_no_cdn {
        return Err(PurgerError::Config(
            "no CDN configured: set VODFARM_PURGE_URLS, --fastly-service-id, \
             --cloudflare-zone-id or --cloudfront-distribution-id \
             (or --allow-no-cdn to mark purges done without sending them)"
                .into(),
        ));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.db_max_connections.max(2))
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| PurgerError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let targets: Vec<&str> = drivers.iter().map(|d| d.target()).collect();
    if targets.is_empty() {
        tracing::info!(%addr, "purger listening; no CDN configured (--allow-no-cdn): purges are marked done without being sent");
    } else {
        tracing::info!(%addr, targets = ?targets, "purger listening");
    }
    let metrics = metrics::PurgerMetrics::new()?;
    let batch_size = args.batch_size.clamp(1, 10_000);
    // Long enough for the slowest target to send a whole batch one request
    // after another (CloudFront takes 5 videos a request).
    let requests_per_batch = u32::try_from(batch_size / 5 + 2).unwrap_or(u32::MAX);
    let runner = runner::Runner::new(
        outbox::Outbox::new(pool.clone()),
        drivers,
        metrics.clone(),
        runner::RunSettings {
            batch_size,
            lease: args
                .request_timeout
                .saturating_mul(requests_per_batch)
                .max(Duration::from_secs(30)),
            retry_base: args.retry_base,
            retry_max: args.retry_max.max(args.retry_base),
            confirm_after: args.confirm_after,
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
        name: "purger",
    };
    outbox_role::run(runner, backlog, settings, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: PurgerArgs,
    }

    #[tokio::test]
    async fn defaults_parse_and_targets_are_built_from_flags() {
        let cli = Cli::try_parse_from(["purger"]).expect("defaults parse");
        assert!(drivers_from(&cli.args).await.unwrap().is_empty());
        let cli = Cli::try_parse_from([
            "purger",
            "--purge-urls",
            "http://edge-1:6081,http://u:secret@edge-2:6081/",
            "--fastly-service-id",
            "abc",
            "--fastly-api-token",
            "fastly-secret",
            "--cloudflare-zone-id",
            "zone1",
            "--cloudflare-api-token",
            "cf-secret",
        ])
        .unwrap();
        let names: Vec<String> = drivers_from(&cli.args)
            .await
            .unwrap()
            .iter()
            .map(|d| d.target().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "http://edge-1:6081/",
                "http://edge-2:6081/",
                "fastly:abc",
                "cloudflare:zone1"
            ]
        );
        let shown = format!("{:?}", cli.args);
        assert!(!shown.contains("secret"), "{shown}");
        // Half a driver's settings is an error, not a silent skip.
        let cli = Cli::try_parse_from(["purger", "--fastly-service-id", "abc"]).unwrap();
        assert!(drivers_from(&cli.args).await.is_err());
        let cli = Cli::try_parse_from([
            "purger",
            "--purge-urls",
            "http://edge:6081,http://edge:6081/",
        ])
        .unwrap();
        assert!(drivers_from(&cli.args).await.is_err());
    }
}
