//! Harness for the creator API's tests: a real `vodfarm api` process on a
//! fresh database and a real S3 server (s3s-fs), plus small helpers.

#![allow(dead_code)]

use crate::common::{free_port, TestDb};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfarm_core::testing::S3Server;

/// The bucket every test api stores into.
pub(crate) const BUCKET: &str = "vodfarm-api-test";
/// The playback signing secret of the test api.
pub(crate) const SIGNING_SECRET: &str = "test-signing-secret";
/// The origin base URL of the test api.
pub(crate) const ORIGIN: &str = "http://origin.test";
/// The password of every account [`ApiEnv::signup`] makes.
pub(crate) const SIGNUP_PASSWORD: &str = "correct horse";

/// A database, an S3 server and a `vodfarm api` on them.
///
/// Fields drop in order: the api stops before its database is dropped.
pub(crate) struct ApiEnv {
    pub(crate) api: ApiProcess,
    pub(crate) http: reqwest::Client,
    pub s3c: aws_sdk_s3::Client,
    pub s3: S3Server,
    pub(crate) db: TestDb,
}

/// A `vodfarm api` process.
pub(crate) struct ApiProcess {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) base: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl ApiEnv {
    /// Starts everything; `extra` flags go to `vodfarm api`.
    pub(crate) async fn start(extra: &[&str]) -> ApiEnv {
        let db = TestDb::new().await;
        let s3 = S3Server::start().await;
        let s3c = s3.client();
        s3c.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("create bucket");
        let mut args: Vec<String> = vec![
            "--database-url".into(),
            db.url.clone(),
            "--store".into(),
            format!("s3://{BUCKET}"),
            "--signing-secret".into(),
            SIGNING_SECRET.into(),
            "--public-origin-url".into(),
            ORIGIN.into(),
            "--db-max-connections".into(),
            "8".into(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        let api = ApiProcess::start(free_port(), args, s3.env()).await;
        ApiEnv {
            db,
            s3,
            s3c,
            api,
            http: reqwest::Client::new(),
        }
    }

    /// `{base}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base)
    }

    /// Another `vodfarm api` on the same database and store, with the
    /// same flags (a second replica behind the load balancer).
    pub(crate) async fn replica(&self) -> ApiProcess {
        ApiProcess::start(free_port(), self.api.args.clone(), self.api.env.clone()).await
    }

    /// Creates an account (password [`SIGNUP_PASSWORD`]); returns
    /// (user_id, token).
    pub(crate) async fn signup(&self, name: &str) -> (String, String) {
        let r = self
            .http
            .post(self.url("/v1/users"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": SIGNUP_PASSWORD}))
            .send()
            .await
            .expect("signup");
        assert_eq!(r.status(), 201, "signup {name}");
        let v: Value = r.json().await.expect("signup json");
        (
            v["user_id"].as_str().expect("user_id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    /// Creates a channel for `token`; returns its id.
    pub(crate) async fn channel(&self, token: &str) -> String {
        let r = self
            .http
            .post(self.url("/v1/channels"))
            .bearer_auth(token)
            .json(&json!({"name": "My channel", "description": "videos"}))
            .send()
            .await
            .expect("channel");
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("channel json");
        v["channel_id"].as_str().expect("channel_id").to_owned()
    }

    /// `POST /v1/videos`; returns the answer's JSON.
    pub(crate) async fn initiate(
        &self,
        token: &str,
        channel: &str,
        size: u64,
        privacy: &str,
    ) -> Value {
        let r = self
            .http
            .post(self.url("/v1/videos"))
            .bearer_auth(token)
            .json(
                &json!({"channel_id": channel, "title": "A video", "tags": ["a", "b"],
                          "privacy": privacy, "filename": "clip.MP4", "size_bytes": size}),
            )
            .send()
            .await
            .expect("initiate");
        assert_eq!(r.status(), 201, "initiate");
        r.json().await.expect("initiate json")
    }

    /// A tus PATCH of `data` at `offset`.
    pub(crate) async fn patch(
        &self,
        url: &str,
        token: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .patch(url)
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(data)
            .send()
            .await
            .expect("patch")
    }

    /// The upload's offset by HEAD.
    pub(crate) async fn head_offset(&self, url: &str, token: &str) -> u64 {
        let r = self
            .http
            .head(url)
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("head");
        assert_eq!(r.status(), 200, "HEAD {url}");
        header_u64(&r, "upload-offset")
    }

    /// SHA-256 (hex) of a stored object, read from the S3 server.
    pub(crate) async fn stored_sha256(&self, key: &str) -> String {
        let out = self
            .s3c
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        let bytes = out.body.collect().await.expect("object body").into_bytes();
        sha256_hex(&bytes)
    }

    /// Keys stored under `prefix`.
    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3c
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// Waits (polling, generously bounded) until nothing is stored under `prefix`.
    pub(crate) async fn wait_empty(&self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.keys(prefix).await.is_empty() {
            assert!(Instant::now() < deadline, "{prefix} still has objects");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A video row's status, size and row id.
    pub(crate) async fn video_row(&self, video_id: &str) -> (String, Option<i64>, i64) {
        sqlx::query_as("SELECT status, original_size_bytes, id FROM videos WHERE video_id = $1")
            .bind(video_id)
            .fetch_one(&self.db.pool)
            .await
            .expect("video row")
    }

    /// The video's jobs: (job_type, status, depends_on count), by id.
    pub(crate) async fn jobs(&self, video_id: &str) -> Vec<(String, String, i32)> {
        sqlx::query_as(
            "SELECT j.job_type, j.status, cardinality(j.depends_on) FROM processing_jobs j
             JOIN videos v ON v.id = j.video_id WHERE v.video_id = $1 ORDER BY j.id",
        )
        .bind(video_id)
        .fetch_all(&self.db.pool)
        .await
        .expect("jobs")
    }
}

/// A numeric response header.
pub(crate) fn header_u64(r: &reqwest::Response, name: &str) -> u64 {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} header in {:?}", r.headers()))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl ApiProcess {
    /// Spawns `vodfarm api` on `port` and waits for `/readyz`.
    pub(crate) async fn start(
        port: u16,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
    ) -> ApiProcess {
        let mut p = ApiProcess {
            child: Self::spawn(port, &args, &env),
            port,
            base: format!("http://127.0.0.1:{port}"),
            args,
            env,
        };
        p.wait_ready().await;
        p
    }

    fn spawn(port: u16, args: &[String], env: &[(&'static str, String)]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("api")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm api")
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Lost a race for the port (e.g. just after a kill): retry.
                assert!(Instant::now() < deadline, "api exited: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.child = Self::spawn(self.port, &self.args, &self.env);
                continue;
            }
            assert!(Instant::now() < deadline, "api did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no clean shutdown, requests in flight are cut.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the api again on the same port with the same settings.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.args, &self.env);
        self.wait_ready().await;
    }

    /// The api's peak resident memory (VmHWM, KiB), from /proc.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
