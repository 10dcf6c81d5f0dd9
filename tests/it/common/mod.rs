//! Test harness: a fresh database per test on the machine's PostgreSQL,
//! and real `vodfarm` processes started from the built binary.

#![allow(dead_code)]

use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use vodfarm_coordinator::{JobQueue, NewJob};
use vodfarm_core::ids::{new_public_id, IdKind};
use vodfarm_core::jobs::JobType;

/// The worker token every test coordinator uses.
pub(crate) const WORKER_TOKEN: &str = "test-worker-token";
/// The operator token every test coordinator uses (never the workers').
pub(crate) const OPERATOR_TOKEN: &str = "test-operator-token";

/// The server tests run against (`VODFARM_TEST_PG`, default the machine's).
pub(crate) fn pg_base() -> String {
    std::env::var("VODFARM_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own for one test, migrated, dropped at the end.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) pool: PgPool,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let name = format!("vodfarm_t_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{name}", pg_base());
        Postgres::create_database(&url)
            .await
            .expect("create test database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect test database");
        vodfarm::MIGRATOR.run(&pool).await.expect("migrate");
        TestDb { url, name, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Leave nothing behind: FORCE ends the coordinators' connections.
        let _ = Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Sends SIGTERM to `child` and waits up to `timeout` for its exit status.
pub(crate) fn terminate_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on loopback.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits up to 30 s until `base/readyz` answers 2xx; panics naming `what`.
pub(crate) async fn wait_readyz(base: &str, what: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `vodfarm coordinator` process.
pub(crate) struct CoordinatorProcess {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl CoordinatorProcess {
    /// Starts a coordinator on `db` with extra flags and waits until it
    /// answers `/readyz`.
    pub(crate) async fn start(db: &TestDb, extra: &[&str]) -> CoordinatorProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("coordinator")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(["--worker-token", WORKER_TOKEN])
            .args(["--operator-token", OPERATOR_TOKEN])
            .args(["--db-max-connections", "8"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm coordinator");
        let base = format!("http://127.0.0.1:{port}");
        wait_readyz(&base, "coordinator").await;
        CoordinatorProcess { child, base }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        terminate_child(&mut self.child, timeout)
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A creator, a channel and a video in `processing`; returns the video's
/// row id and public id.
pub(crate) async fn insert_video(pool: &PgPool) -> (i64, String) {
    let user_pub = new_public_id(IdKind::User);
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (user_id, email, username, password_hash)
         VALUES ($1, $2, $3, 'x') RETURNING id",
    )
    .bind(&user_pub)
    .bind(format!("{user_pub}@example.com"))
    .bind(format!("user{}", &user_pub[2..]))
    .fetch_one(pool)
    .await
    .expect("insert user");
    let channel: i64 = sqlx::query_scalar(
        "INSERT INTO channels (channel_id, user_id, name) VALUES ($1, $2, 'test channel') RETURNING id",
    )
    .bind(new_public_id(IdKind::Channel))
    .bind(user)
    .fetch_one(pool)
    .await
    .expect("insert channel");
    let video_pub = new_public_id(IdKind::Video);
    let video: i64 = sqlx::query_scalar(
        "INSERT INTO videos (video_id, channel_id, title, status) VALUES ($1, $2, 'test', 'processing') RETURNING id",
    )
    .bind(&video_pub)
    .bind(channel)
    .fetch_one(pool)
    .await
    .expect("insert video");
    (video, video_pub)
}

/// A job of `job_type` with `priority`, no dependencies.
pub(crate) fn job(job_type: JobType, priority: i32) -> NewJob {
    NewJob {
        job_type,
        input_path: "originals/x/original.mp4".into(),
        output_path: None,
        parameters: serde_json::json!({}),
        priority,
        max_attempts: 5,
        depends_on: vec![],
        required_capabilities: vec![],
    }
}

/// Inserts `jobs` for `video` in one transaction; returns their ids.
pub(crate) async fn enqueue(pool: &PgPool, video: i64, jobs: &[NewJob]) -> Vec<i64> {
    let mut tx = pool.begin().await.expect("begin");
    let ids = JobQueue::enqueue(&mut tx, video, jobs)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    ids
}

/// A job row's status, attempts and error.
pub(crate) async fn job_row(pool: &PgPool, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempts, error_message FROM processing_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job row")
}

/// A video row's status, progress and processing error.
pub(crate) async fn video_row(pool: &PgPool, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, processing_progress, processing_error FROM videos WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("video row")
}

/// The coordinator's `/metrics` text.
pub(crate) async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one sample of a Prometheus text exposition, if present.
pub(crate) fn metric(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_with_labels) && l[name_with_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
