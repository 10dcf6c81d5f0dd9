//! `cargo bench --bench queue`: the leased job queue against its floor.
//!
//! 1. Throughput: 32 concurrent workers lease + complete 20,000 jobs
//!    through a real `vodfarm coordinator` process over HTTP (ours), and
//!    the same claim and complete statements sent straight to PostgreSQL
//!    over 32 connections (the floor: no HTTP, no coordinator).
//! 2. Pickup latency: enqueue → a waiting long poll holds the job.
//! 3. Idle cost: database transactions per second while 1,000 workers
//!    long-poll an empty queue.
//!
//! Environment: `VODFARM_BENCH_PG` (server, default the local one),
//! `BENCH_JOBS` (20000), `BENCH_WORKERS` (32), `BENCH_IDLE_WORKERS` (1000),
//! `BENCH_IDLE_SECS` (30). The last line is
//! `queue: ours=<jobs/s> floor=<jobs/s> ratio=<ours/floor> pickup_p99_ms=<x>`.

use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vodfarm_coordinator::{JobQueue, LeaseFilter, QueueSettings};
use vodfarm_core::jobs::{JobOutputs, JobType};
use vodfarm_gpu_worker::CoordinatorClient;

const TOKEN: &str = "bench-worker-token";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Coordinator(Child, String);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_coordinator(db_url: &str, connections: usize) -> anyhow::Result<Coordinator> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            db_url,
        ])
        .args([
            "--worker-token",
            TOKEN,
            "--operator-token",
            "bench-operator-token",
            "--db-max-connections",
            &connections.to_string(),
        ])
        .args(["--max-wait", "60s"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Coordinator(child, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("coordinator did not start")
}

/// One user, one channel, `videos` videos, and `jobs` thumbnail jobs
/// spread over them (independent, so only the queue is measured).
async fn seed(pool: &PgPool, videos: usize, jobs: usize) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO users (user_id, email, username, password_hash) VALUES ('u_bench', 'b@example.com', 'bench', 'x')")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO channels (channel_id, user_id, name) SELECT 'c_bench', id, 'bench' FROM users",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO videos (video_id, channel_id, title, status)
         SELECT 'v_bench' || g, c.id, 'bench', 'processing' FROM channels c, generate_series(1, $1) g",
    )
    .bind(videos as i32)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO processing_jobs (video_id, job_type, input_path, parameters)
         SELECT v.id, 'thumbnail', 'originals/' || v.video_id || '/original.mp4', '{}'
         FROM generate_series(1, $1) g JOIN videos v ON v.video_id = 'v_bench' || (1 + g % $2)",
    )
    .bind(jobs as i32)
    .bind(videos as i32)
    .execute(pool)
    .await?;
    Ok(())
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE processing_jobs SET status = 'pending', attempts = 0, lease_token = NULL,
                lease_expires_at = NULL, worker_id = NULL, progress = 0, completed_at = NULL",
    )
    .execute(pool)
    .await?;
    sqlx::query("UPDATE videos SET status = 'processing', processing_progress = 0")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE processing_jobs")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE videos").execute(pool).await?;
    Ok(())
}

async fn completed(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM processing_jobs WHERE status = 'completed'")
            .fetch_one(pool)
            .await?,
    )
}

/// Runs `workers` tasks that each repeat `step` (one lease + its
/// completions, returning how many jobs it completed) until `total` jobs
/// are done; returns jobs per second.
async fn drain<F, Fut>(workers: usize, total: usize, step: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let step = Arc::new(step);
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (step, done) = (step.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < total {
                match step(w).await? {
                    0 => tokio::time::sleep(Duration::from_millis(5)).await,
                    n => {
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Ours: lease + complete over HTTP through the coordinator.
async fn run_ours(base: &str, workers: usize, total: usize) -> anyhow::Result<f64> {
    let clients = (0..workers)
        .map(|w| CoordinatorClient::new(base, TOKEN, &format!("bench-{w}")))
        .collect::<Result<Vec<_>, _>>()?;
    let clients = Arc::new(clients);
    drain(workers, total, move |w| {
        let clients = clients.clone();
        async move {
            let client = &clients[w];
            let jobs = client.lease(&[], &[], 1, Duration::ZERO).await?;
            for j in &jobs {
                client
                    .complete(j.id, j.lease_token, JobOutputs::default())
                    .await?;
            }
            Ok(jobs.len())
        }
    })
    .await
}

/// The floor: the same claim and complete statements, straight to Postgres.
async fn run_floor(db_url: &str, workers: usize, total: usize) -> anyhow::Result<f64> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(workers as u32)
        .min_connections(workers as u32)
        .connect(db_url)
        .await?;
    let queue = JobQueue::new(pool.clone(), QueueSettings::default());
    let filter = Arc::new(LeaseFilter::any());
    let rate = drain(workers, total, move |w| {
        let (queue, filter) = (queue.clone(), filter.clone());
        async move {
            let jobs = queue.claim(&format!("floor-{w}"), &filter, 1).await?;
            for j in &jobs {
                queue
                    .complete(j.id, j.lease_token, &JobOutputs::default())
                    .await?;
            }
            Ok(jobs.len())
        }
    })
    .await?;
    pool.close().await;
    Ok(rate)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Enqueue → held by a waiting poll, `rounds` times, 32 pollers waiting.
async fn pickup_latency(
    pool: &PgPool,
    base: &str,
    pollers: usize,
    rounds: usize,
) -> anyhow::Result<Vec<f64>> {
    let video: i64 = sqlx::query_scalar("SELECT min(id) FROM videos")
        .fetch_one(pool)
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..pollers {
        let client = CoordinatorClient::new(base, TOKEN, &format!("pickup-{w}"))?;
        let tx = tx.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let jobs = client
                    .lease(&[JobType::Transcode], &[], 1, Duration::from_millis(2000))
                    .await?;
                for j in jobs {
                    let _ = tx.send((j.id, Instant::now()));
                    client
                        .complete(j.id, j.lease_token, JobOutputs::default())
                        .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO processing_jobs (video_id, job_type, input_path) VALUES ($1, 'transcode', 'x') RETURNING id",
        )
        .bind(video)
        .fetch_one(pool)
        .await?;
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("pollers stopped"))?;
            if got == id {
                latencies.push((at - t0).as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await??;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

async fn db_transactions(pool: &PgPool, db: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(pool)
    .await?)
}

/// Transactions per second in the bench database while `n` workers
/// long-poll an empty queue (reconnecting every 20 s, as workers do).
async fn idle_cost(
    admin: &PgPool,
    db: &str,
    base: &str,
    n: usize,
    secs: u64,
) -> anyhow::Result<(f64, usize)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..n {
        let client = CoordinatorClient::new(base, TOKEN, &format!("idle-{w}"))?;
        let stop = stop.clone();
        let polls = polls.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client.lease(&[], &[], 1, Duration::from_secs(20)).await?;
                polls.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    // Let the first polls (which may each claim once) pass and their
    // statistics reach pg_stat_database (flushed within ~10 s of idling).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = db_transactions(admin, db).await?;
    let polls_before = polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = db_transactions(admin, db).await?;
    let polled = polls.load(Ordering::Relaxed) - polls_before;
    stop.store(true, Ordering::Relaxed);
    // The pollers end with their current long poll; do not wait for them.
    for h in handles {
        h.abort();
    }
    // Our own two statistics reads count as transactions too.
    Ok((((after - before - 1).max(0)) as f64 / secs as f64, polled))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_num("BENCH_JOBS", 20_000);
    let workers = env_num("BENCH_WORKERS", 32);
    let idle_workers = env_num("BENCH_IDLE_WORKERS", 1000);
    let idle_secs = env_num("BENCH_IDLE_SECS", 30) as u64;
    let base = std::env::var("VODFARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("vodfarm_bench_{}", std::process::id());
    let url = format!("{base}/{db}");
    Postgres::create_database(&url).await?;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&format!("{base}/postgres"))
        .await?;
    let result = async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await?;
        vodfarm::MIGRATOR.run(&pool).await?;
        seed(&pool, 200, total).await?;
        println!("queue bench: {total} jobs, {workers} workers, PostgreSQL {}", server_version(&pool).await?);

        reset(&pool).await?;
        let floor = run_floor(&url, workers, total).await?;
        anyhow::ensure!(completed(&pool).await? == total as i64, "floor did not complete every job");
        println!("floor (claim + complete SQL, {workers} connections): {floor:.0} jobs/s");

        reset(&pool).await?;
        let coord = start_coordinator(&url, workers).await?;
        let ours = run_ours(&coord.1, workers, total).await?;
        anyhow::ensure!(completed(&pool).await? == total as i64, "ours did not complete every job");
        println!("ours (HTTP lease + complete via vodfarm coordinator): {ours:.0} jobs/s");

        let lat = pickup_latency(&pool, &coord.1, workers, 200).await?;
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!("pickup latency (enqueue → waiting poll holds it), {} samples: p50={p50:.2} ms p99={p99:.2} ms", lat.len());

        let (qps, polls) = idle_cost(&admin, &db, &coord.1, idle_workers, idle_secs).await?;
        println!("idle: {idle_workers} long-polling workers, {polls} polls answered in {idle_secs} s, database cost {qps:.2} transactions/s (target < 1)");
        drop(coord);
        pool.close().await;
        println!(
            "queue: ours={ours:.0} floor={floor:.0} ratio={:.2} pickup_p99_ms={p99:.1}",
            ours / floor
        );
        anyhow::Ok(())
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    result
}

async fn server_version(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?)
}
