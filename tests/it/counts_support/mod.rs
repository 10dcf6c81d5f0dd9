//! Harness of the analytics tests: an api (`ApiEnv`) whose Redis keys
//! carry a per-test prefix, the `tansu` Kafka broker when a test asks
//! for Kafka, `vodfarm counts` processes to kill, and helpers that make
//! ready videos, signed-in viewers and beacons.

#![allow(dead_code)]

use crate::api_support::ApiEnv;
use crate::common::{free_port, metric, metrics_text, TestDb};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfarm_core::ids::{new_public_id, IdKind};

/// The machine's Redis (shared: every key a test writes has its prefix).
pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";

/// A `tansu` broker (Kafka protocol, in-memory storage) on a free port.
pub(crate) struct Tansu {
    child: Child,
    pub(crate) brokers: String,
}

/// Where `tansu` is: on PATH or in cargo's bin directory.
fn tansu_bin() -> String {
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !p.is_empty() {
            return p;
        }
    }
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let p = format!("{home}/bin/tansu");
    assert!(
        std::path::Path::new(&p).exists(),
        "the tansu Kafka broker is not installed (scripts/services.sh installs it)"
    );
    p
}

impl Tansu {
    pub(crate) async fn start() -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "tansu did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An api, its database, a Redis prefix, maybe a Kafka broker.
pub(crate) struct AnalyticsEnv {
    pub(crate) api: ApiEnv,
    pub(crate) prefix: String,
    pub(crate) kafka: Option<Tansu>,
    pub(crate) redis: redis::aio::MultiplexedConnection,
}

impl AnalyticsEnv {
    pub(crate) async fn start(kafka: bool) -> AnalyticsEnv {
        // The tests send hundreds of beacons from one address in seconds:
        // a budget far above that (one test checks the budget itself).
        AnalyticsEnv::start_with(kafka, &["--beacons-per-client", "100000"]).await
    }

    /// An env whose api also takes `api_args`.
    pub(crate) async fn start_with(kafka: bool, api_args: &[&str]) -> AnalyticsEnv {
        let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
        let kafka = if kafka {
            Some(Tansu::start().await)
        } else {
            None
        };
        let mut extra = vec!["--redis-prefix".to_owned(), prefix.clone()];
        if let Some(k) = &kafka {
            extra.extend([
                "--kafka-brokers".to_owned(),
                k.brokers.clone(),
                "--kafka-partitions".to_owned(),
                "3".to_owned(),
            ]);
        }
        extra.extend(api_args.iter().map(|a| (*a).to_owned()));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let api = ApiEnv::start(&extra).await;
        let redis = redis::Client::open(REDIS)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        AnalyticsEnv {
            api,
            prefix,
            kafka,
            redis,
        }
    }

    pub(crate) fn db(&self) -> &TestDb {
        &self.api.db
    }

    /// The flags every `vodfarm counts|recs` of this env takes.
    pub(crate) fn role_args(&self) -> Vec<String> {
        let mut a = vec![
            "--database-url".to_owned(),
            self.api.db.url.clone(),
            "--redis-url".to_owned(),
            REDIS.to_owned(),
            "--redis-prefix".to_owned(),
            self.prefix.clone(),
        ];
        if let Some(k) = &self.kafka {
            a.extend([
                "--kafka-brokers".to_owned(),
                k.brokers.clone(),
                "--kafka-partitions".to_owned(),
                "3".to_owned(),
                "--kafka-session-timeout".to_owned(),
                "6s".to_owned(),
            ]);
        }
        a
    }

    /// Runs `vodfarm counts --flush-now` to completion; returns stdout.
    pub(crate) fn flush_now(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("counts")
            .args(self.role_args())
            .arg("--flush-now")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run flush");
        assert!(
            out.status.success(),
            "flush failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `vodfarm recs --once` to completion.
    pub(crate) fn recs_once(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("recs")
            .args(self.role_args())
            .arg("--once")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run recs");
        assert!(
            out.status.success(),
            "recs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A ready public video of `duration` seconds in a new channel;
    /// returns (video row id, public id, channel row id).
    pub(crate) async fn ready_video(&self, duration: i32) -> (i64, String, i64) {
        let (id, vid) = crate::common::insert_video(&self.db().pool).await;
        let channel: i64 = sqlx::query_scalar(
            "UPDATE videos SET status = 'ready', privacy = 'public', duration_seconds = $2,
                    published_at = now()
             WHERE id = $1 RETURNING channel_id",
        )
        .bind(id)
        .bind(duration)
        .fetch_one(&self.db().pool)
        .await
        .expect("ready video");
        (id, vid, channel)
    }

    /// Another ready public video in `channel`.
    pub(crate) async fn video_in(&self, channel: i64, title: &str, duration: i32) -> (i64, String) {
        let vid = new_public_id(IdKind::Video);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO videos (video_id, channel_id, title, status, privacy, duration_seconds, published_at)
             VALUES ($1, $2, $3, 'ready', 'public', $4, now()) RETURNING id",
        )
        .bind(&vid)
        .bind(channel)
        .bind(title)
        .bind(duration)
        .fetch_one(&self.db().pool)
        .await
        .expect("insert video");
        (id, vid)
    }

    /// A user with a token (no password round: sign-ups are throttled);
    /// returns (row id, public id, token).
    pub(crate) async fn viewer(&self) -> (i64, String, String) {
        let user_pub = new_public_id(IdKind::User);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (user_id, email, username, password_hash)
             VALUES ($1, $2, $3, 'x') RETURNING id",
        )
        .bind(&user_pub)
        .bind(format!("{user_pub}@example.com"))
        .bind(format!("viewer{}", &user_pub[2..]))
        .fetch_one(&self.db().pool)
        .await
        .expect("insert user");
        let mut conn = self.db().pool.acquire().await.expect("conn");
        let t = vodfarm_core::auth::issue_token(&mut conn, id, None, Duration::from_secs(3600))
            .await
            .expect("token");
        (id, user_pub, t.token)
    }

    /// `POST /v1/videos/{video}/beacons`; returns (status, body).
    pub(crate) async fn beacons(
        &self,
        video: &str,
        body: &Value,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .api
            .http
            .post(self.api.url(&format!("/v1/videos/{video}/beacons")))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("beacons");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A GET of the api as `token`; returns (status, body).
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.api.http.get(self.api.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The video's `view_count` as `GET /v1/videos/{id}` shows it.
    pub(crate) async fn shown_views(&self, video: &str) -> i64 {
        let (status, v) = self.get(&format!("/v1/videos/{video}"), None).await;
        assert_eq!(status, 200, "{v}");
        v["view_count"].as_i64().expect("view_count")
    }

    /// Redis keys of this test.
    pub(crate) fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }
}

impl Drop for AnalyticsEnv {
    fn drop(&mut self) {
        delete_keys_now(&self.prefix);
    }
}

/// Deletes every key under `prefix` in the shared Redis.
fn delete_keys_now(prefix: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -h 127.0.0.1 --scan --pattern '{prefix}*' | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null"
        ))
        .status();
}

/// Leaves nothing under `prefix` in the shared Redis.
pub(crate) async fn delete_keys(prefix: &str) {
    let prefix = prefix.to_owned();
    let _ = tokio::task::spawn_blocking(move || delete_keys_now(&prefix)).await;
}

/// One playback session's beacon body: `n` events whose watched time
/// grows to `watched`, positions within `duration`.
pub(crate) fn session_body(session: &str, n: usize, watched: f64, duration: i32) -> Value {
    let now = chrono::Utc::now().timestamp() as f64;
    let events: Vec<Value> = (0..n)
        .map(|k| {
            let w = watched * (k + 1) as f64 / n as f64;
            let pos = if duration > 0 {
                w.min(f64::from(duration))
            } else {
                w
            };
            let kind = if k == 0 {
                "start"
            } else if k + 1 == n {
                "end"
            } else {
                "progress"
            };
            json!({
                "event_id": uuid::Uuid::new_v4(),
                "kind": kind,
                "position_seconds": pos,
                "watched_seconds": w,
                "at": now,
            })
        })
        .collect();
    json!({"session_id": session, "events": events})
}

/// A `vodfarm counts` process.
pub(crate) struct CountsProcess {
    child: Child,
    pub(crate) base: String,
    port: u16,
    args: Vec<String>,
}

impl CountsProcess {
    pub(crate) async fn start(env: &AnalyticsEnv, name: &str) -> CountsProcess {
        let port = free_port();
        let mut args = env.role_args();
        args.extend([
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--consumer-name".to_owned(),
            name.to_owned(),
            "--batch-size".to_owned(),
            "200".to_owned(),
        ]);
        let mut p = CountsProcess {
            child: Self::spawn(&args),
            base: format!("http://127.0.0.1:{port}"),
            port,
            args,
        };
        p.wait_ready().await;
        p
    }

    fn spawn(args: &[String]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("counts")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm counts")
    }

    async fn wait_ready(&mut self) {
        crate::common::wait_readyz(&self.base, "counts").await;
    }

    /// SIGKILL, then the same replica again (same consumer name).
    pub(crate) async fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.args);
        self.wait_ready().await;
    }

    /// The consumer group's uncommitted events, as the replica last saw.
    pub(crate) async fn lag(&self) -> Option<f64> {
        metric(
            &metrics_text(&self.base).await,
            "vodfarm_counts_lag_entries",
        )
    }

    /// Waits until the group has committed everything: the lag reads 0
    /// on two scrapes more than one refresh apart.
    pub(crate) async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut zeros = 0;
        loop {
            if self.lag().await == Some(0.0) {
                zeros += 1;
                if zeros == 2 {
                    return;
                }
            } else {
                zeros = 0;
            }
            assert!(
                Instant::now() < deadline,
                "the bus was not drained: lag {:?}",
                self.lag().await
            );
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }
}

impl Drop for CountsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
