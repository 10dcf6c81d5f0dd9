//! Edge test harness: a PostgreSQL cluster the test owns (so it can stop
//! it), and real processes in front of it: Varnish running
//! `deploy/varnish/vodfarm.vcl` → a shield → an origin → a local store,
//! the api, the purger (purging that Varnish) and a coordinator.

#![allow(dead_code)]

use crate::api_support::ApiProcess;
use crate::common::free_port;
use crate::origin_support::{put_video, LocalDir, OriginProcess, SECRET};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfarm::dev::servers::PrivatePostgres;
use vodfarm_core::ids::{new_public_id, IdKind};

/// The VCL users deploy; the tests run it as is, pointed at their shield.
const VCL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/varnish/vodfarm.vcl");

/// The `vodfarm` binary (VODFARM_BIN overrides cargo's, as in
/// `origin_support`).
fn vodfarm_bin() -> PathBuf {
    std::env::var_os("VODFARM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vodfarm").into())
}

fn log_level() -> String {
    std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into())
}

/// A fresh directory under the temp dir that other users (postgres,
/// varnish's jail) can traverse; removed by its owner.
fn shared_dir(what: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "vodfarm-edge-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A private PostgreSQL cluster (initdb/pg_ctl, as `vodfarm dev` runs
/// one) with the schema applied. Never the machine's shared server: this
/// one is stopped and started by the tests.
pub(crate) struct Cluster {
    pg: PrivatePostgres,
    dir: PathBuf,
    port: u16,
    /// The `vodfarm` database.
    pub(crate) url: String,
}

/// The test cluster's superuser password (dev's clusters require one).
const CLUSTER_PASSWORD: &str = "edge-test-password";

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        let dir = shared_dir("pg");
        let port = free_port();
        let pg = PrivatePostgres::start(&dir, port, CLUSTER_PASSWORD)
            .await
            .expect("start a private PostgreSQL cluster (initdb/pg_ctl)");
        let url = pg.url("vodfarm");
        vodfarm::migrate::migrate(&url).await.expect("migrate");
        Cluster { pg, dir, port, url }
    }

    /// A short-lived pool (the cluster may be stopped later).
    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.url)
            .await
            .expect("connect to the test cluster")
    }

    /// `pg_ctl stop -m fast`: every session ends, the port closes.
    pub(crate) async fn stop(&self) {
        self.pg.stop().await.expect("pg_ctl stop");
    }

    /// Starts the stopped cluster again on the same port.
    pub(crate) async fn restart(&self) {
        PrivatePostgres::start(&self.dir, self.port, CLUSTER_PASSWORD)
            .await
            .expect("pg_ctl start");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg.stop_blocking();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `varnishd` of the test's own (`-n` its own directory), running the
/// repository's VCL with the backend set to `backend_port`.
pub(crate) struct Varnish {
    child: Child,
    /// Its listen port.
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Varnish {
    pub(crate) async fn start(backend_port: u16) -> Varnish {
        Self::start_on(free_port(), backend_port).await
    }

    /// Starts Varnish on `port`.
    pub(crate) async fn start_on(port: u16, backend_port: u16) -> Varnish {
        let dir = shared_dir("varnish");
        let vcl = std::fs::read_to_string(VCL).expect("read deploy/varnish/vodfarm.vcl");
        let backend = "    .port = \"8084\";";
        assert!(vcl.contains(backend), "the VCL's backend port moved");
        let vcl = vcl.replace(backend, &format!("    .port = \"{backend_port}\";"));
        let vcl_path = dir.join("vodfarm.vcl");
        std::fs::write(&vcl_path, vcl).expect("write VCL");
        let child = Command::new(varnishd())
            .arg("-F")
            .arg("-n")
            .arg(dir.join("n"))
            .args(["-a", &format!("127.0.0.1:{port}")])
            .arg("-f")
            .arg(&vcl_path)
            .args(["-s", "malloc,64m"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn varnishd");
        let v = Varnish { child, port, dir };
        // A PURGE without a key is answered by the VCL itself (400): the
        // VCL is loaded and the port open.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let purge = reqwest::Method::from_bytes(b"PURGE").expect("method");
            if let Ok(r) = client.request(purge, v.url("/")).send().await {
                if r.status() == 400 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "varnishd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        v
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `varnishadm ban.list`.
    pub(crate) fn bans(&self) -> String {
        let out = Command::new("varnishadm")
            .arg("-n")
            .arg(self.dir.join("n"))
            .arg("ban.list")
            .output()
            .expect("varnishadm");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGSTOP to the manager and its cache process: the port stays open
    /// (connections queue) but nothing is answered, and the cache is kept.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: answers again, with the cache it had.
    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let manager = self.child.id().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &manager])
            .output()
            .expect("pgrep");
        let mut pids = vec![manager];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        let status = Command::new("kill")
            .arg(sig)
            .args(&pids)
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pids:?}");
    }

    /// Stops it (SIGKILL to the manager and its cache process).
    pub(crate) fn kill(&mut self) {
        self.signal("-CONT");
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn varnishd() -> PathBuf {
    ["/usr/sbin/varnishd", "/usr/local/sbin/varnishd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("varnishd not found: install Debian's varnish (scripts/services.sh does)")
}

/// A role process of ours (purger, coordinator), killed on drop.
pub(crate) struct Role {
    pub(crate) child: Child,
    pub(crate) base: String,
    what: &'static str,
}

impl Role {
    async fn spawn(what: &'static str, args: &[String], ready: &str) -> Role {
        let port = free_port();
        let child = Command::new(vodfarm_bin())
            .arg(what)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", log_level())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn vodfarm {what}: {e}"));
        let mut r = Role {
            child,
            base: format!("http://127.0.0.1:{port}"),
            what,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = reqwest::get(format!("{}{ready}", r.base)).await {
                if resp.status().is_success() {
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if ready != "/healthz" || v["listening"] == true {
                        break;
                    }
                }
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("vodfarm {what} exited: {status}");
            }
            assert!(Instant::now() < deadline, "{what} did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    }

    /// Still running?
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything, wired as in production. Fields drop in order: the
/// processes stop before the cluster.
pub(crate) struct Edge {
    pub(crate) varnish: Varnish,
    pub(crate) purger: Role,
    pub(crate) coordinator: Role,
    pub(crate) shield: OriginProcess,
    pub(crate) origin: OriginProcess,
    pub(crate) api: ApiProcess,
    pub(crate) store: LocalDir,
    pub(crate) http: reqwest::Client,
    /// The creator's token and channel.
    pub(crate) token: String,
    pub(crate) channel: String,
    pub(crate) cluster: Cluster,
}

impl Edge {
    pub(crate) async fn start() -> Edge {
        let cluster = Cluster::start().await;
        let store = LocalDir::new().await;
        let store_url = format!("file://{}", store.dir.display());
        let origin =
            OriginProcess::start_with_url(free_port(), &cluster.url, "store", &store.env(), &[])
                .await;
        let shield =
            OriginProcess::start_with_url(free_port(), &cluster.url, &origin.base, &[], &[]).await;
        let varnish_port = free_port();
        let varnish = Varnish::start_on(varnish_port, shield.port).await;
        let s = |v: &str| v.to_owned();
        let purger = Role::spawn(
            "purger",
            &[
                s("--database-url"),
                cluster.url.clone(),
                s("--purge-urls"),
                varnish.url("/"),
                s("--retry-base"),
                s("200ms"),
                s("--retry-max"),
                s("1s"),
                s("--request-timeout"),
                s("1s"),
                s("--confirm-after"),
                s("1s"),
                s("--poll-interval"),
                s("1s"),
            ],
            "/healthz",
        )
        .await;
        let coordinator = Role::spawn(
            "coordinator",
            &[
                s("--database-url"),
                cluster.url.clone(),
                s("--worker-token"),
                s("edge-test-worker-token"),
                s("--operator-token"),
                s("edge-test-operator-token"),
            ],
            "/readyz",
        )
        .await;
        let api = ApiProcess::start(
            free_port(),
            vec![
                s("--database-url"),
                cluster.url.clone(),
                s("--store"),
                store_url,
                s("--signing-secret"),
                s(SECRET),
                s("--public-origin-url"),
                varnish.url(""),
                s("--db-max-connections"),
                s("4"),
            ],
            vec![],
        )
        .await;
        let http = reqwest::Client::new();
        let name = format!("edge{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let r = http
            .post(format!("{}/v1/users", api.base))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse"}))
            .send()
            .await
            .expect("signup");
        assert_eq!(r.status(), 201);
        let token = r.json::<Value>().await.expect("signup json")["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let r = http
            .post(format!("{}/v1/channels", api.base))
            .bearer_auth(&token)
            .json(&json!({"name": "Edge channel"}))
            .send()
            .await
            .expect("channel");
        assert_eq!(r.status(), 201);
        let channel = r.json::<Value>().await.expect("channel json")["channel_id"]
            .as_str()
            .expect("channel_id")
            .to_owned();
        Edge {
            varnish,
            purger,
            coordinator,
            shield,
            origin,
            api,
            store,
            http,
            token,
            channel,
            cluster,
        }
    }

    /// A ready video of the creator's channel with its files in the
    /// store (as a worker would leave it); returns its public id.
    pub(crate) async fn ready_video(&self, privacy: &str) -> String {
        let id = new_public_id(IdKind::Video);
        let pool = self.cluster.pool().await;
        sqlx::query(
            "INSERT INTO videos (video_id, channel_id, title, status, privacy)
             SELECT $1, id, 'edge test', 'ready', $2 FROM channels WHERE channel_id = $3",
        )
        .bind(&id)
        .bind(privacy)
        .bind(&self.channel)
        .execute(&pool)
        .await
        .expect("insert video");
        pool.close().await;
        put_video(&self.store.store, &id, 4096).await;
        id
    }

    /// `DELETE /v1/videos/{id}` as the owner.
    pub(crate) async fn delete(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/v1/videos/{id}", self.api.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), 204, "delete {id}");
    }

    /// `PATCH /v1/videos/{id}` `{"privacy": …}` as the owner.
    pub(crate) async fn set_privacy(&self, id: &str, privacy: &str) {
        let r = self
            .http
            .patch(format!("{}/v1/videos/{id}", self.api.base))
            .bearer_auth(&self.token)
            .json(&json!({ "privacy": privacy }))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), 200, "patch {id}");
    }

    /// The `?token=…` of the owner's playback URLs of a private video.
    pub(crate) async fn playback_query(&self, id: &str) -> String {
        let v: Value = self
            .http
            .get(format!("{}/v1/videos/{id}", self.api.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get video")
            .json()
            .await
            .expect("video json");
        let url = v["playback"]["hls_url"].as_str().expect("hls_url");
        let q = url.split_once('?').expect("a private URL has a token").1;
        format!("?{q}")
    }

    /// Status and `X-Cache` of a GET through `base`.
    pub(crate) async fn get(&self, base: &str, path: &str) -> (u16, String) {
        match self.http.get(format!("{base}{path}")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let cache = r
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let _ = r.bytes().await;
                (status, cache)
            }
            Err(_) => (0, "-".into()),
        }
    }

    /// The edge's base URL.
    pub(crate) fn edge(&self) -> String {
        self.varnish.url("")
    }

    /// The outbox rows of a video: (reason, done, acknowledged rounds of
    /// the edge, last error).
    pub(crate) async fn purges(&self, id: &str) -> Vec<(String, bool, i64, Option<String>)> {
        let pool = self.cluster.pool().await;
        let rows = sqlx::query_as(
            "SELECT p.reason, p.done_at IS NOT NULL,
                    (SELECT count(*) FROM cdn_purge_acks a WHERE a.purge_id = p.id),
                    p.last_error
             FROM cdn_purges p WHERE p.video_id = $1 ORDER BY p.id",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .expect("purges");
        pool.close().await;
        rows
    }

    /// Asserts that every role process still runs.
    pub(crate) fn assert_all_alive(&mut self) {
        for (what, alive) in [
            ("purger", self.purger.alive()),
            ("coordinator", self.coordinator.alive()),
            ("origin", matches!(self.origin.child.try_wait(), Ok(None))),
            ("shield", matches!(self.shield.child.try_wait(), Ok(None))),
            ("api", matches!(self.api.child.try_wait(), Ok(None))),
        ] {
            assert!(alive, "{what} exited");
        }
    }
}

/// Waits until `url`'s `/healthz` says `listening` (the LISTEN
/// connection is back) and not `degraded`.
pub(crate) async fn wait_listening(base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if let Ok(v) = r.json::<Value>().await {
                if v["listening"] == true && v["degraded"] != true {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "{base} did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP edge stand-in that counts the purges it acknowledges, by
/// `Surrogate-Key` (for counting, not caching: the Varnish tests cover
/// the cache).
pub(crate) struct CountingEdge {
    pub(crate) port: u16,
    pub(crate) purges: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingEdge {
    /// Serves on `port`.
    pub(crate) async fn start_on(port: u16) -> CountingEdge {
        let purges: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> =
            Default::default();
        let seen = purges.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let seen = seen.clone();
            async move {
                if req.method().as_str() != "PURGE" {
                    return axum::http::StatusCode::METHOD_NOT_ALLOWED;
                }
                let key = req
                    .headers()
                    .get("surrogate-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                *seen.lock().expect("purges").entry(key).or_default() += 1;
                axum::http::StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind counting edge");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingEdge { port, purges, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Purges received per key.
    pub(crate) fn counts(&self) -> std::collections::HashMap<String, u32> {
        self.purges.lock().expect("purges").clone()
    }
}

impl Drop for CountingEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `vodfarm purger` on `database_url` purging `urls`, with short
/// retries and one round.
pub(crate) async fn purger(database_url: &str, urls: &[String]) -> Role {
    let s = |v: &str| v.to_owned();
    Role::spawn(
        "purger",
        &[
            s("--database-url"),
            database_url.to_owned(),
            s("--purge-urls"),
            urls.join(","),
            s("--retry-base"),
            s("100ms"),
            s("--retry-max"),
            s("500ms"),
            s("--request-timeout"),
            s("1s"),
            s("--confirm-after"),
            s("0s"),
            s("--batch-size"),
            s("7"),
        ],
        "/healthz",
    )
    .await
}
