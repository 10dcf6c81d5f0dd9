//! `vodfarm dev`: the whole system in one process on embedded defaults.
//!
//! Without `DATABASE_URL` it runs a private PostgreSQL cluster, without
//! `REDIS_URL` a private redis-server, without `VODFARM_STORE` a local
//! object directory, all under `--data-dir`. Secrets are made once and
//! kept in `DIR/secrets.env`, so a second run reuses everything.
//!
//! - `args.rs`: the flags; `secrets.rs`, `envfile.rs`: what is kept
//!   between runs; `services.rs` + `servers.rs`: the servers dev starts.
//! - `roles.rs`: every role configured as an operator would and run as a
//!   task; `routes.rs`: routes only dev serves (loopback `Host` only);
//!   `demo.rs`: the demo creator, channel and video; `private.rs`:
//!   owner-only files and directories (the data directory, the store,
//!   secrets, logs).

mod args;
mod demo;
mod envfile;
mod private;
mod roles;
mod routes;
mod secrets;
pub mod servers;
mod services;

pub use args::DevArgs;
pub use secrets::DevSecrets;
pub use services::DevServices;

use demo::DemoSession;
use envfile::write_env_file;
use roles::{local_url, role_ended, Roles};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// Runs dev until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    private::create_dir_with_mode(&args.data_dir, private::data_dir_mode(servers::is_root()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    private::create_private_dir(&dir.join("scratch"))?;
    let secrets = DevSecrets::load_or_create(&dir)?;
    let services = DevServices::start(&args, &dir, &secrets).await?;
    let result = run_roles(&args, &dir, &secrets, &services).await;
    services.stop().await;
    result
}

/// Migrates, starts every role, makes the demo, and waits for Ctrl-C (or
/// for a role to fail, which stops the others).
async fn run_roles(
    args: &DevArgs,
    dir: &Path,
    secrets: &DevSecrets,
    services: &DevServices,
) -> anyhow::Result<()> {
    let applied = crate::migrate::migrate(&services.database_url).await?;
    tracing::info!(applied, "schema up to date");
    let roles = Roles::configure(args, dir, secrets, services)?;
    // The api's dev routes need the demo session, which needs the api:
    // the session reaches the routes through a slot filled once it exists.
    let session_slot: Arc<OnceCell<DemoSession>> = Default::default();
    let extra = routes::dev_routes(
        session_slot.clone(),
        local_url(args.coordinator_port),
        secrets.operator_token.clone(),
    );
    let stop = CancellationToken::new();
    let mut tasks = roles.spawn(extra, &stop);

    // One shutdown future for the whole run, polled from the start: a
    // SIGTERM that arrives between two listeners would otherwise be lost
    // (once tokio handles SIGTERM, the default action is gone), e.g. one
    // sent right after the banner.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        started = startup(args, dir, secrets, services, &session_slot) => match started {
            Ok(video) => {
                print_banner(args, dir, video.as_deref());
                tokio::select! {
                    () = &mut shutdown => Ok(()),
                    Some(done) = tasks.join_next() => role_ended(done),
                }
            }
            Err(e) => Err(e),
        },
        Some(done) = tasks.join_next() => role_ended(done),
    };
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "role ended with an error");
        }
    }
    outcome
}

/// Waits for every role, writes `dev.env`, and makes the demo (unless
/// `--no-demo`). Answers the demo video's id.
async fn startup(
    args: &DevArgs,
    dir: &Path,
    secrets: &DevSecrets,
    services: &DevServices,
    session_slot: &OnceCell<DemoSession>,
) -> anyhow::Result<Option<String>> {
    roles::wait_healthy(args).await?;
    let api_url = local_url(args.api_port);
    let mut env = vec![
        ("DATABASE_URL", services.database_url.clone()),
        ("REDIS_URL", services.redis_url.clone()),
        ("VODFARM_STORE", services.store_url.clone()),
        ("VODFARM_API", api_url.clone()),
        ("VODFARM_COORDINATOR_URL", local_url(args.coordinator_port)),
        ("VODFARM_ORIGIN", local_url(args.shield_port)),
        ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
        ("VODFARM_OPERATOR_TOKEN", secrets.operator_token.clone()),
    ];
    if args.no_demo {
        write_env_file(&dir.join("dev.env"), &env)?;
        return Ok(None);
    }
    let session = demo::demo_session(&api_url, dir, secrets).await?;
    let _ = session_slot.set(session.clone());
    env.push(("VODFARM_TOKEN", session.token.clone()));
    env.push(("VODFARM_CHANNEL", session.channel_id.clone()));
    write_env_file(&dir.join("dev.env"), &env)?;
    Ok(Some(demo::demo_video(args, &api_url, dir, &session).await?))
}

/// What the operator sees once everything runs.
fn print_banner(args: &DevArgs, dir: &Path, video: Option<&str>) {
    let (api, coordinator, origin, shield) = (
        local_url(args.api_port),
        local_url(args.coordinator_port),
        local_url(args.origin_port),
        local_url(args.shield_port),
    );
    println!("\nvodfarm dev is running (Ctrl-C stops it)");
    println!("  open the page:  {api}/");
    if let Some(id) = video {
        println!("  demo playlist:  {shield}/v/{id}/master.m3u8");
    }
    println!("  api:            {api}   (OpenAPI: {api}/v1/openapi.json)");
    println!("  search:         {api}/v1/search?q=vodfarm+demo");
    println!("  coordinator:    {coordinator}");
    println!("  origin, shield: {origin}, {shield}");
    let edges = std::env::var("VODFARM_PURGE_URLS").unwrap_or_default();
    println!(
        "  CDN purger:     {}/metrics ({})",
        local_url(args.purger_port),
        if edges.trim().is_empty() {
            "no edge: set VODFARM_PURGE_URLS to purge one"
        } else {
            "purging VODFARM_PURGE_URLS"
        }
    );
    println!(
        "  views, recs:    {}/metrics, {}/metrics (flush now: `vodfarm counts --flush-now`)",
        local_url(args.counts_port),
        local_url(args.recs_port)
    );
    println!(
        "  settings:       {} (source it to use `vodfarm upload`, `vodfarm jobs`)",
        dir.join("dev.env").display()
    );
}
