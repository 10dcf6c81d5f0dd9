//! `vodfarm dev`: the whole system in one process on embedded defaults.
//!
//! Without `DATABASE_URL` it runs a private PostgreSQL cluster, without
//! `REDIS_URL` a private redis-server, without `VODFARM_STORE` a local
//! object directory, all under `--data-dir`. Secrets are made once and
//! kept in `DIR/secrets.env`, so a second run reuses everything.

pub mod servers;

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

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
}

/// Secrets made on the first run and kept in `DIR/secrets.env`.
#[derive(Debug, Clone)]
pub struct DevSecrets {
    /// Workers' bearer token.
    pub worker_token: String,
    /// HMAC secret of playback tokens.
    pub signing_secret: String,
}

/// Reads `KEY=VALUE` lines.
fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Writes `KEY=VALUE` lines, readable by the owner only.
pub fn write_env_file(path: &Path, vars: &[(&str, String)]) -> anyhow::Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

impl DevSecrets {
    /// Loads the secrets, making (and saving) any that are missing.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("secrets.env");
        let mut vars = read_env_file(&path);
        let mut get = |k: &str| {
            vars.entry(k.to_owned())
                .or_insert_with(vodfarm_core::ids::new_secret_token)
                .clone()
        };
        let secrets = DevSecrets {
            worker_token: get("VODFARM_WORKER_TOKEN"),
            signing_secret: get("VODFARM_SIGNING_SECRET"),
        };
        write_env_file(
            &path,
            &[
                ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
                ("VODFARM_SIGNING_SECRET", secrets.signing_secret.clone()),
            ],
        )?;
        Ok(secrets)
    }
}

/// The servers dev runs or was pointed at.
pub struct Backends {
    /// The database URL every role uses.
    pub database_url: String,
    /// The Redis URL.
    pub redis_url: String,
    /// The object store URL.
    pub store_url: String,
    postgres: Option<servers::PrivatePostgres>,
    redis: Option<servers::PrivateRedis>,
}

impl Backends {
    /// Starts what is not configured.
    pub async fn start(args: &DevArgs, dir: &Path) -> anyhow::Result<Self> {
        let (database_url, postgres) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = servers::PrivatePostgres::start(dir, args.pg_port).await?;
                (pg.url("vodfarm"), Some(pg))
            }
        };
        let (redis_url, redis) = match &args.redis_url {
            Some(url) => (url.clone(), None),
            None => {
                let r = servers::PrivateRedis::start(dir, args.redis_port).await?;
                (r.url(), Some(r))
            }
        };
        let store_url = match &args.store {
            Some(s) => s.clone(),
            None => {
                let store = dir.join("store");
                std::fs::create_dir_all(&store)?;
                format!("file://{}", store.display())
            }
        };
        Ok(Backends {
            database_url,
            redis_url,
            store_url,
            postgres,
            redis,
        })
    }

    /// Stops what dev started.
    pub async fn stop(self) {
        if let Some(r) = self.redis {
            r.stop().await;
        }
        if let Some(pg) = self.postgres {
            if let Err(e) = pg.stop().await {
                tracing::warn!(error = %e, "stopping the private PostgreSQL");
            }
        }
    }
}

/// Runs dev until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let secrets = DevSecrets::load_or_create(&dir)?;
    let backends = Backends::start(&args, &dir).await?;
    let result = run_roles(&args, &dir, &secrets, &backends).await;
    backends.stop().await;
    result
}

async fn run_roles(
    args: &DevArgs,
    dir: &Path,
    secrets: &DevSecrets,
    b: &Backends,
) -> anyhow::Result<()> {
    let applied = crate::migrate::migrate(&b.database_url).await?;
    tracing::info!(applied, "schema up to date");
    let stop = CancellationToken::new();
    let coordinator_url = format!("http://127.0.0.1:{}", args.coordinator_port);
    let coordinator = vodfarm_coordinator::CoordinatorArgs {
        listen: ([127, 0, 0, 1], args.coordinator_port).into(),
        database_url: b.database_url.clone(),
        worker_token: secrets.worker_token.clone(),
        admin_token: None,
        lease_ttl: std::time::Duration::from_secs(60),
        reap_interval: std::time::Duration::from_secs(5),
        retry_base: std::time::Duration::from_secs(5),
        retry_max: std::time::Duration::from_secs(600),
        idle_recheck: std::time::Duration::from_secs(10),
        max_wait: std::time::Duration::from_secs(60),
        db_max_connections: 16,
    };
    let mut roles = tokio::task::JoinSet::new();
    let s = stop.clone();
    roles.spawn(async move {
        vodfarm_coordinator::run(coordinator, s.cancelled_owned())
            .await
            .context("coordinator")
    });
    write_env_file(
        &dir.join("dev.env"),
        &[
            ("DATABASE_URL", b.database_url.clone()),
            ("REDIS_URL", b.redis_url.clone()),
            ("VODFARM_STORE", b.store_url.clone()),
            ("VODFARM_COORDINATOR", coordinator_url.clone()),
            ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
        ],
    )?;
    println!("\nvodfarm dev is running (Ctrl-C stops it)");
    println!("  coordinator: {coordinator_url}  (queue: {coordinator_url}/v1/queue/stats)");
    println!("  settings:    {}", dir.join("dev.env").display());

    let outcome = tokio::select! {
        _ = crate::shutdown_signal() => Ok(()),
        Some(done) = roles.join_next() => match done {
            Ok(Ok(())) => Err(anyhow::anyhow!("a role stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
    };
    stop.cancel();
    while let Some(done) = roles.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "role ended with an error");
        }
    }
    outcome
}
