//! Secrets made on the first run and reused by every later one.

use super::envfile::{read_env_file, write_env_file};
use std::path::Path;

/// Secrets made on the first run and kept in `DIR/secrets.env`.
#[derive(Clone)]
pub struct DevSecrets {
    /// Workers' bearer token.
    pub worker_token: String,
    /// Operators' bearer token (the coordinator's operator routes and
    /// `vodfarm jobs`); distinct from the workers' so a worker cannot
    /// retry or cancel jobs.
    pub operator_token: String,
    /// HMAC secret of playback tokens.
    pub signing_secret: String,
    /// Password of the demo creator.
    pub demo_password: String,
    /// Password of the private PostgreSQL's superuser.
    pub pg_password: String,
    /// Password of the private redis-server.
    pub redis_password: String,
}

// By hand: secrets stay out of logs.
impl std::fmt::Debug for DevSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSecrets").finish_non_exhaustive()
    }
}

impl DevSecrets {
    /// Loads the secrets, making (and saving) any that are missing.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("secrets.env");
        let mut vars = read_env_file(&path);
        // Data directories made before the rename keep their token.
        if let Some(old) = vars.remove("VODFARM_ADMIN_TOKEN") {
            vars.entry("VODFARM_OPERATOR_TOKEN".to_owned())
                .or_insert(old);
        }
        let mut get = |k: &str| {
            vars.entry(k.to_owned())
                .or_insert_with(vodfarm_core::ids::new_secret_token)
                .clone()
        };
        let secrets = DevSecrets {
            worker_token: get("VODFARM_WORKER_TOKEN"),
            operator_token: get("VODFARM_OPERATOR_TOKEN"),
            signing_secret: get("VODFARM_SIGNING_SECRET"),
            demo_password: get("VODFARM_DEMO_PASSWORD"),
            pg_password: get("VODFARM_PG_PASSWORD"),
            redis_password: get("VODFARM_REDIS_PASSWORD"),
        };
        write_env_file(
            &path,
            &[
                ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
                ("VODFARM_OPERATOR_TOKEN", secrets.operator_token.clone()),
                ("VODFARM_SIGNING_SECRET", secrets.signing_secret.clone()),
                ("VODFARM_DEMO_PASSWORD", secrets.demo_password.clone()),
                ("VODFARM_PG_PASSWORD", secrets.pg_password.clone()),
                ("VODFARM_REDIS_PASSWORD", secrets.redis_password.clone()),
            ],
        )?;
        Ok(secrets)
    }
}
