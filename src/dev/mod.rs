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
    /// Upload this video as the demo instead of the generated 30-second
    /// test pattern.
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// Do not create the demo creator, channel and video.
    #[arg(long)]
    pub no_demo: bool,
}

/// Secrets made on the first run and kept in `DIR/secrets.env`.
#[derive(Debug, Clone)]
pub struct DevSecrets {
    /// Workers' bearer token.
    pub worker_token: String,
    /// HMAC secret of playback tokens.
    pub signing_secret: String,
    /// Password of the demo creator.
    pub demo_password: String,
}

/// Sets `key` in a `KEY=VALUE` file, keeping its other lines.
fn update_env_file(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let mut vars = read_env_file(path);
    vars.insert(key.to_owned(), value.to_owned());
    let pairs: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    write_env_file(path, &pairs)
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
            demo_password: get("VODFARM_DEMO_PASSWORD"),
        };
        write_env_file(
            &path,
            &[
                ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
                ("VODFARM_SIGNING_SECRET", secrets.signing_secret.clone()),
                ("VODFARM_DEMO_PASSWORD", secrets.demo_password.clone()),
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

/// Builds a role's flags the way its command line would, so dev passes
/// exactly what an operator would (and every other setting keeps its
/// default or environment value).
fn role_args<T: clap::Args>(argv: &[String]) -> anyhow::Result<T> {
    #[derive(clap::Parser)]
    struct Wrap<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once("vodfarm".to_owned()).chain(argv.iter().cloned());
    Ok(<Wrap<T> as clap::Parser>::try_parse_from(argv)?.inner)
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()])
        .collect()
}

/// The demo creator, as the page and dev.env see it.
#[derive(Debug, Clone, serde::Serialize)]
struct DemoSession {
    username: String,
    token: String,
    channel_id: String,
}

/// Routes only dev serves: the page's demo session and a queue view
/// (the coordinator's operator API needs a token the browser lacks).
fn dev_routes_lazy(
    session: std::sync::Arc<tokio::sync::OnceCell<DemoSession>>,
    coordinator: String,
    token: String,
) -> axum::Router {
    use axum::routing::get;
    let http = reqwest::Client::new();
    axum::Router::new()
        .route(
            "/v1/dev/session",
            get(move || {
                let session = session.get().cloned();
                async move {
                    match session {
                        Some(s) => axum::Json(s).into_response(),
                        None => {
                            vodfarm_core::http::ApiError::not_found("no demo session (--no-demo)")
                                .into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/v1/dev/queue",
            get(move || {
                let (http, url, token) = (
                    http.clone(),
                    format!("{coordinator}/v1/queue/stats"),
                    token.clone(),
                );
                async move {
                    match http.get(url).bearer_auth(token).send().await {
                        Ok(r) => match r.json::<serde_json::Value>().await {
                            Ok(v) => axum::Json(v).into_response(),
                            Err(e) => vodfarm_core::http::ApiError::internal(&e).into_response(),
                        },
                        Err(e) => {
                            vodfarm_core::http::ApiError::unavailable(e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
}

use axum::response::IntoResponse;

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{url} did not become ready");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Creates (or logs in) the demo creator and its channel.
async fn demo_session(api: &str, dir: &Path, secrets: &DevSecrets) -> anyhow::Result<DemoSession> {
    let http = reqwest::Client::new();
    let username = "demo".to_owned();
    let state_path = dir.join("demo.env");
    let state = read_env_file(&state_path);
    let created = http
        .post(format!("{api}/v1/users"))
        .json(&serde_json::json!({
            "username": username, "email": "demo@vodfarm.invalid", "password": secrets.demo_password
        }))
        .send()
        .await?;
    let token = if created.status().is_success() {
        created.json::<serde_json::Value>().await?["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        let login = http
            .post(format!("{api}/v1/tokens"))
            .json(&serde_json::json!({"username": username, "password": secrets.demo_password}))
            .send()
            .await?;
        anyhow::ensure!(
            login.status().is_success(),
            "cannot log the demo creator in: {}",
            login.text().await?
        );
        login.json::<serde_json::Value>().await?["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    anyhow::ensure!(!token.is_empty(), "the api gave the demo creator no token");
    let channel_id = match state.get("VODFARM_CHANNEL") {
        Some(c)
            if http
                .get(format!("{api}/v1/channels/{c}"))
                .send()
                .await?
                .status()
                .is_success() =>
        {
            c.clone()
        }
        _ => {
            let r = http
                .post(format!("{api}/v1/channels"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": "vodfarm demo", "description": "Made by vodfarm dev"}))
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "cannot create the demo channel: {}",
                r.text().await?
            );
            r.json::<serde_json::Value>().await?["channel_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    update_env_file(&state_path, "VODFARM_CHANNEL", &channel_id)?;
    Ok(DemoSession {
        username,
        token,
        channel_id,
    })
}

/// A 30-second 1280x720 test pattern with moving content and a tone,
/// made with libavfilter (through the ffmpeg CLI).
async fn make_sample(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.mp4");
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=30",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&tmp)
        .status()
        .await
        .context("running ffmpeg to make the demo video (install ffmpeg, or pass --sample FILE)")?;
    anyhow::ensure!(status.success(), "ffmpeg could not make the demo video");
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether the demo video recorded in `demo.env` still exists.
async fn demo_video(api: &str, dir: &Path, token: &str) -> Option<String> {
    let id = read_env_file(&dir.join("demo.env"))
        .get("VODFARM_DEMO_VIDEO")
        .cloned()?;
    let r = reqwest::Client::new()
        .get(format!("{api}/v1/videos/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    matches!(v["status"].as_str(), Some("ready" | "processing")).then_some(id)
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
    let local = |port: u16| format!("127.0.0.1:{port}");
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let (api_url, coordinator_url, origin_url, shield_url) = (
        url(args.api_port),
        url(args.coordinator_port),
        url(args.origin_port),
        url(args.shield_port),
    );
    let common = [("database-url", b.database_url.as_str())];

    let coordinator: vodfarm_coordinator::CoordinatorArgs = role_args(
        &[
            flags(&common),
            flags(&[
                ("listen", &local(args.coordinator_port)),
                ("worker-token", &secrets.worker_token),
            ]),
        ]
        .concat(),
    )?;
    let api: crate::api::ApiArgs = role_args(
        &[
            flags(&common),
            flags(&[
                ("listen", &local(args.api_port)),
                ("store", &b.store_url),
                ("public-url", &api_url),
                ("public-origin-url", &shield_url),
                ("signing-secret", &secrets.signing_secret),
            ]),
        ]
        .concat(),
    )?;
    let origin_flags = |port: u16, upstream: &str| -> anyhow::Result<vodfarm_origin::OriginArgs> {
        role_args(
            &[
                flags(&common),
                flags(&[
                    ("listen", &local(port)),
                    ("upstream", upstream),
                    ("store", &b.store_url),
                    ("signing-secret", &secrets.signing_secret),
                ]),
            ]
            .concat(),
        )
    };
    let worker: vodfarm_gpu_worker::worker::WorkerArgs = role_args(&flags(&[
        ("coordinator", &coordinator_url),
        ("worker-token", &secrets.worker_token),
        ("store", &b.store_url),
        ("listen", &local(args.worker_port)),
        ("scratch-dir", &dir.join("scratch").display().to_string()),
        ("worker-id", "dev-worker"),
    ]))?;
    let origin = origin_flags(args.origin_port, "store")?;
    let shield = origin_flags(args.shield_port, &origin_url)?;

    let mut roles = tokio::task::JoinSet::new();
    let s = stop.clone();
    roles.spawn(async move {
        vodfarm_coordinator::run(coordinator, s.cancelled_owned())
            .await
            .context("coordinator")
    });
    let s = stop.clone();
    roles.spawn(async move {
        vodfarm_gpu_worker::worker::run(worker, s.cancelled_owned())
            .await
            .context("worker")
    });
    let s = stop.clone();
    roles.spawn(async move {
        vodfarm_origin::run(origin, s.cancelled_owned())
            .await
            .context("origin")
    });
    let s = stop.clone();
    roles.spawn(async move {
        vodfarm_origin::run(shield, s.cancelled_owned())
            .await
            .context("shield origin")
    });

    // The api starts last: its dev routes need the demo session, which
    // needs the api. Start it without, make the session, restart is not
    // needed: the session is shared through a OnceLock-like slot.
    let session_slot: std::sync::Arc<tokio::sync::OnceCell<DemoSession>> = Default::default();
    let slot = session_slot.clone();
    let extra = dev_routes_lazy(slot, coordinator_url.clone(), secrets.worker_token.clone());
    let s = stop.clone();
    roles.spawn(async move {
        crate::api::run_with(api, extra, s.cancelled_owned())
            .await
            .context("api")
    });

    let startup = async {
        for u in [
            &api_url,
            &coordinator_url,
            &origin_url,
            &shield_url,
            &url(args.worker_port),
        ] {
            wait_ready(&format!("{u}/healthz")).await?;
        }
        let mut env = vec![
            ("DATABASE_URL", b.database_url.clone()),
            ("REDIS_URL", b.redis_url.clone()),
            ("VODFARM_STORE", b.store_url.clone()),
            ("VODFARM_API", api_url.clone()),
            ("VODFARM_COORDINATOR_URL", coordinator_url.clone()),
            ("VODFARM_ORIGIN", shield_url.clone()),
            ("VODFARM_WORKER_TOKEN", secrets.worker_token.clone()),
        ];
        if args.no_demo {
            write_env_file(&dir.join("dev.env"), &env)?;
            return anyhow::Ok(None);
        }
        let session = demo_session(&api_url, dir, secrets).await?;
        let _ = session_slot.set(session.clone());
        env.push(("VODFARM_TOKEN", session.token.clone()));
        env.push(("VODFARM_CHANNEL", session.channel_id.clone()));
        write_env_file(&dir.join("dev.env"), &env)?;
        let video = match demo_video(&api_url, dir, &session.token).await {
            Some(id) => {
                println!("demo video {id} is already uploaded");
                id
            }
            None => {
                let sample = match &args.sample {
                    Some(p) => p.clone(),
                    None => {
                        let p = dir.join("demo-sample.mp4");
                        println!("making a 30-second demo video with libavfilter…");
                        make_sample(&p).await?;
                        p
                    }
                };
                println!("uploading {} through tus…", sample.display());
                let mut argv = flags(&[
                    ("title", "vodfarm demo"),
                    ("channel", &session.channel_id),
                    ("api", &api_url),
                    ("token", &session.token),
                    (
                        "state-file",
                        &dir.join("uploads.json").display().to_string(),
                    ),
                ]);
                argv.push("--wait".into());
                argv.push(sample.display().to_string());
                let upload: crate::upload::UploadArgs = role_args(&argv)?;
                let id = crate::upload::run(upload).await?;
                update_env_file(&dir.join("demo.env"), "VODFARM_DEMO_VIDEO", &id)?;
                id
            }
        };
        anyhow::Ok(Some(video))
    };

    let outcome = tokio::select! {
        _ = crate::shutdown_signal() => Ok(()),
        started = startup => match started {
            Ok(video) => {
                println!("\nvodfarm dev is running (Ctrl-C stops it)");
                println!("  open the page:  {api_url}/");
                if let Some(id) = &video {
                    println!("  demo playlist:  {shield_url}/v/{id}/master.m3u8");
                }
                println!("  api:            {api_url}   (OpenAPI: {api_url}/v1/openapi.json)");
                println!("  coordinator:    {coordinator_url}");
                println!("  origin, shield: {origin_url}, {shield_url}");
                println!("  settings:       {} (source it to use `vodfarm upload`)", dir.join("dev.env").display());
                tokio::select! {
                    _ = crate::shutdown_signal() => Ok(()),
                    Some(done) = roles.join_next() => role_ended(done),
                }
            }
            Err(e) => Err(e),
        },
        Some(done) = roles.join_next() => role_ended(done),
    };
    stop.cancel();
    while let Some(done) = roles.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "role ended with an error");
        }
    }
    outcome
}

fn role_ended(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match done {
        Ok(Ok(())) => Err(anyhow::anyhow!("a role stopped unexpectedly")),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.into()),
    }
}
