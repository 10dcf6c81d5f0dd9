//! Every role of the farm, configured the way an operator's command line
//! would configure it, and run as tasks of this one process.

use super::args::DevArgs;
use super::secrets::DevSecrets;
use super::services::DevServices;
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// Builds a role's flags the way its command line would, so dev passes
/// exactly what an operator would (and every other setting keeps its
/// default or environment value).
pub(crate) fn role_args<T: clap::Args>(argv: &[String]) -> anyhow::Result<T> {
    #[derive(clap::Parser)]
    struct Wrap<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once("vodfarm".to_owned()).chain(argv.iter().cloned());
    Ok(<Wrap<T> as clap::Parser>::try_parse_from(argv)?.inner)
}

/// `[("k", "v")]` → `["--k=v"]`.
pub(crate) fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    // `--key=value`, never `--key value`: a generated secret may start
    // with `-` (the id alphabet has it), which clap would take for a flag.
    pairs.iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

/// The base URL of a local port.
pub(crate) fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Connections each dev server takes at once (they share one process).
const DEV_MAX_CONNECTIONS: &str = "512";

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// What dev allows webhook URLs (api and sender agree).
const DEV_WEBHOOK_FLAGS: [&str; 2] = ["--webhook-allow-http", "--webhook-allow-private"];

/// The flags of every role dev runs.
#[derive(Debug)]
pub(crate) struct Roles {
    coordinator: vodfarm_coordinator::CoordinatorArgs,
    api: crate::api::ApiArgs,
    worker: vodfarm_gpu_worker::worker::WorkerArgs,
    origin: vodfarm_origin::OriginArgs,
    shield: vodfarm_origin::OriginArgs,
    purger: vodfarm_purger::PurgerArgs,
    search_indexer: vodfarm_search::args::IndexerArgs,
    webhooks: vodfarm_webhooks::WebhookArgs,
    counts: vodfarm_counts::CountsArgs,
    recs: vodfarm_counts::recs::RecsArgs,
}

impl Roles {
    /// Every role's flags: one database, one store, the ports of `args`,
    /// the shield in front of the origin, the page pointing at the shield.
    pub(crate) fn configure(
        args: &DevArgs,
        dir: &Path,
        secrets: &DevSecrets,
        services: &DevServices,
    ) -> anyhow::Result<Self> {
        // Every server shares this process's open-file limit.
        let conns = ("http-max-connections", DEV_MAX_CONNECTIONS);
        let common = flags(&[("database-url", services.database_url.as_str()), conns]);
        let with_common = |extra: &[(&str, &str)]| [common.clone(), flags(extra)].concat();
        // The embedded Redis carries live counts, the event bus (a
        // stream) and recommendations; watch history lives in PostgreSQL.
        let redis = ("redis-url", services.redis_url.as_str());
        let origin = |port: u16, upstream: &str| {
            role_args::<vodfarm_origin::OriginArgs>(&with_common(&[
                ("listen", &local(port)),
                ("upstream", upstream),
                ("store", &services.store_url),
                ("signing-secret", &secrets.signing_secret),
            ]))
        };
        Ok(Roles {
            coordinator: role_args(&with_common(&[
                ("listen", &local(args.coordinator_port)),
                ("worker-token", &secrets.worker_token),
                ("operator-token", &secrets.operator_token),
            ]))?,
            api: role_args(
                &[
                    with_common(&[
                        redis,
                        ("listen", &local(args.api_port)),
                        ("store", &services.store_url),
                        ("public-url", &local_url(args.api_port)),
                        ("public-origin-url", &local_url(args.shield_port)),
                        ("signing-secret", &secrets.signing_secret),
                    ]),
                    DEV_WEBHOOK_FLAGS.map(str::to_owned).to_vec(),
                ]
                .concat(),
            )?,
            worker: role_args(&flags(&[
                ("coordinator", &local_url(args.coordinator_port)),
                ("worker-token", &secrets.worker_token),
                ("store", &services.store_url),
                ("listen", &local(args.worker_port)),
                ("scratch-dir", &dir.join("scratch").display().to_string()),
                ("worker-id", "dev-worker"),
                conns,
            ]))?,
            origin: origin(args.origin_port, "store")?,
            shield: origin(args.shield_port, &local_url(args.origin_port))?,
            // Edges to purge come from VODFARM_PURGE_URLS (and the other
            // drivers' variables); without any, purges are marked done.
            purger: role_args(
                &[
                    with_common(&[("listen", &local(args.purger_port))]),
                    vec!["--allow-no-cdn".to_owned()],
                ]
                .concat(),
            )?,
            search_indexer: role_args(&with_common(&[(
                "listen",
                &local(args.search_indexer_port),
            )]))?,
            // Creators try webhooks against receivers on their machine:
            // http and loopback/private addresses are allowed (link-local
            // and cloud metadata never are).
            webhooks: role_args(
                &[
                    with_common(&[("listen", &local(args.webhooks_port))]),
                    DEV_WEBHOOK_FLAGS.map(str::to_owned).to_vec(),
                ]
                .concat(),
            )?,
            // Flushed every minute, so a demo's views reach PostgreSQL
            // while one watches (the page shows live counts anyway).
            counts: role_args(&with_common(&[
                redis,
                ("listen", &local(args.counts_port)),
                ("consumer-name", "dev-counts"),
                ("flush-interval", "1m"),
            ]))?,
            recs: role_args(&with_common(&[
                redis,
                ("listen", &local(args.recs_port)),
                ("every", "10m"),
            ]))?,
        })
    }

    /// Starts every role as a task that stops when `stop` is cancelled.
    /// The api also serves `extra` (dev's own routes).
    pub(crate) fn spawn(
        self,
        extra: axum::Router,
        stop: &CancellationToken,
    ) -> JoinSet<anyhow::Result<()>> {
        let mut roles = JoinSet::new();
        let until = || stop.clone().cancelled_owned();
        spawn_role(
            &mut roles,
            "coordinator",
            vodfarm_coordinator::run(self.coordinator, until()),
        );
        spawn_role(
            &mut roles,
            "worker",
            vodfarm_gpu_worker::worker::run(self.worker, until()),
        );
        spawn_role(
            &mut roles,
            "origin",
            vodfarm_origin::run(self.origin, until()),
        );
        spawn_role(
            &mut roles,
            "shield origin",
            vodfarm_origin::run(self.shield, until()),
        );
        spawn_role(
            &mut roles,
            "purger",
            vodfarm_purger::run(self.purger, until()),
        );
        spawn_role(
            &mut roles,
            "api",
            crate::api::run_with(self.api, extra, until()),
        );
        spawn_role(
            &mut roles,
            "search indexer",
            vodfarm_search::indexer::run(self.search_indexer, until()),
        );
        spawn_role(
            &mut roles,
            "webhook sender",
            vodfarm_webhooks::run(self.webhooks, until()),
        );
        spawn_role(
            &mut roles,
            "counts",
            vodfarm_counts::run(self.counts, until()),
        );
        spawn_role(
            &mut roles,
            "recs",
            vodfarm_counts::recs::run(self.recs, until()),
        );
        roles
    }
}

/// Runs one role as a task of `roles`; its error is labelled `name`.
fn spawn_role<E>(
    roles: &mut JoinSet<anyhow::Result<()>>,
    name: &'static str,
    run: impl Future<Output = Result<(), E>> + Send + 'static,
) where
    E: Into<anyhow::Error>,
{
    roles.spawn(async move { run.await.map_err(Into::into).context(name) });
}

/// Waits until every role answers its `/healthz`.
pub(crate) async fn wait_healthy(args: &DevArgs) -> anyhow::Result<()> {
    for port in [
        args.api_port,
        args.coordinator_port,
        args.origin_port,
        args.shield_port,
        args.worker_port,
        args.purger_port,
        args.search_indexer_port,
        args.webhooks_port,
        args.counts_port,
        args.recs_port,
    ] {
        wait_ready(&format!("{}/healthz", local_url(port))).await?;
    }
    Ok(())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{url} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a role task ending before Ctrl-C means: roles run until stopped,
/// so any end (even a clean one) stops dev with an error.
pub(crate) fn role_ended(done: Result<anyhow::Result<()>, JoinError>) -> anyhow::Result<()> {
    match done {
        Ok(Ok(())) => Err(anyhow::anyhow!("a role stopped unexpectedly")),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_look_like_flags_stay_values() {
        #[derive(clap::Args, Debug)]
        struct Secret {
            #[arg(long)]
            token: String,
        }
        let argv = flags(&[("token", "-gX_y-z")]);
        let parsed: Secret = role_args(&argv).expect("a leading dash is a value");
        assert_eq!(parsed.token, "-gX_y-z");
    }
}
