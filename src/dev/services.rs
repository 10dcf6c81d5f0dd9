//! The servers dev needs: a private PostgreSQL and redis-server (see
//! `servers.rs`) and a local object directory, each unless configured.

use super::args::DevArgs;
use super::servers;
use std::path::Path;

/// The servers dev runs or was pointed at.
pub struct DevServices {
    /// The database URL every role uses.
    pub database_url: String,
    /// The Redis URL.
    pub redis_url: String,
    /// The object store URL.
    pub store_url: String,
    postgres: Option<servers::PrivatePostgres>,
    redis: Option<servers::PrivateRedis>,
}

// By hand: the URLs may carry passwords.
impl std::fmt::Debug for DevServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevServices")
            .field("store_url", &self.store_url)
            .finish_non_exhaustive()
    }
}

impl DevServices {
    /// Starts what is not configured.
    pub async fn start(
        args: &DevArgs,
        dir: &Path,
        secrets: &super::DevSecrets,
    ) -> anyhow::Result<Self> {
        let (database_url, postgres) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = servers::PrivatePostgres::start(dir, args.pg_port, &secrets.pg_password)
                    .await?;
                (pg.url("vodfarm"), Some(pg))
            }
        };
        let (redis_url, redis) = match &args.redis_url {
            Some(url) => (url.clone(), None),
            None => {
                let r = servers::PrivateRedis::start(dir, args.redis_port, &secrets.redis_password)
                    .await?;
                (r.url(), Some(r))
            }
        };
        let store_url = match &args.store {
            Some(s) => s.clone(),
            None => {
                // Originals of private videos live here: owner-only.
                let store = dir.join("store");
                super::private::create_private_dir(&store)?;
                format!("file://{}", store.display())
            }
        };
        Ok(DevServices {
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
