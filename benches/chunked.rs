//! `cargo bench --bench chunked`: time-to-ready of one long video
//! transcoded by one worker in one job, against the same video planned
//! into chunk jobs on several workers; and, from the measured chunk
//! durations, the time-to-ready on 8, 32 and 128 workers.
//!
//! Everything is real: a `vodfarm coordinator` process, `vodfarm worker`
//! processes, PostgreSQL, an S3 server (s3s-fs). Time-to-ready runs from
//! the enqueue (the upload's last byte) to the video row's `ready`,
//! thumbnails included.
//!
//! Environment: `BENCH_SECONDS` (600: a 10-minute source), `BENCH_SIZE`
//! (`1920x1080`), `BENCH_FPS` (30), `BENCH_WORKERS` (2: chunked run),
//! `BENCH_CHUNK_SECONDS` (20), `BENCH_PRESET` (`veryfast`),
//! `BENCH_SOURCE_BITRATE` (`8M`: the original's video bitrate),
//! `VODFARM_BENCH_PG` (the local server). With 60-second chunks a
//! 10-minute video has 10 chunks, so no number of workers can bring it
//! under a tenth of the single job (the longest chunk alone is a tenth):
//! the bench cuts 20-second chunks by default.
//!
//! Projection (the model): N workers, each a machine like this one
//! running one job at a time; every job takes the duration measured in
//! the chunked run (`started_at` to `completed_at` of its row), and a
//! job that becomes runnable while a worker is idle starts after the
//! dispatch latency `d`, measured too (the longer of the plan's wait
//! after the enqueue and the stitch's wait after its last chunk: both
//! found idle workers). The plan starts at `d`, the thumbnail job beside
//! it; the chunks are list-scheduled in queue order from the plan's end
//! plus `d` (one worker joins when the thumbnail is done); the stitch
//! starts `d` after the last chunk and the thumbnail: time-to-ready =
//! that critical path + the stitch. The chunk durations were measured
//! with `BENCH_WORKERS` jobs sharing this machine's cores, so the
//! projection is pessimistic when those were fewer than the cores'
//! worth of one job each (on 2 cores, 2 workers: each chunk had about
//! one core; a worker of its own would have two).
//!
//! Last line: `chunked: single_s=… chunked_s=… ratio=… projected_32_s=…`
//! (ratio = single / chunked).

use anyhow::{bail, ensure, Context, Result};
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfarm_coordinator::pipeline::{upload_jobs_chunked, Chunking};
use vodfarm_coordinator::JobQueue;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;
use vodfarm_core::testing::S3Server;

const TOKEN: &str = "bench-worker-token";
const BUCKET: &str = "media";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_num(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_coordinator(db_url: &str) -> Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", db_url, "--worker-token", TOKEN])
        .args(["--operator-token", "bench-operator-token"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let proc = Proc(child);
    for _ in 0..600 {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok((proc, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("coordinator did not start")
}

fn start_worker(base: &str, s3: &S3Server, scratch: &Path, id: &str, preset: &str) -> Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .arg("worker")
        .args(["--coordinator", base, "--store", &format!("s3://{BUCKET}")])
        .arg("--scratch-dir")
        .arg(scratch)
        .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--worker-id", id, "--x264-preset", preset, "--gpu", "off"])
        .args(["--poll-wait", "1s", "--heartbeat-interval", "2s"])
        .env("VODFARM_WORKER_TOKEN", TOKEN)
        .envs(s3.env())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A user, a channel and a `processing` video; its row id.
async fn insert_video(pool: &PgPool, public: &str) -> Result<i64> {
    sqlx::query(
        "INSERT INTO users (user_id, email, username, password_hash)
         VALUES ('u_bench', 'b@example.com', 'bench', 'x') ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO channels (channel_id, user_id, name)
         SELECT 'c_bench', id, 'bench' FROM users WHERE user_id = 'u_bench'
         ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO videos (video_id, channel_id, title, status)
         SELECT $1, id, 'bench', 'processing' FROM channels WHERE channel_id = 'c_bench'
         RETURNING id",
    )
    .bind(public)
    .fetch_one(pool)
    .await?)
}

/// Enqueues `public`'s jobs and waits for `ready`; returns the seconds.
async fn time_to_ready(
    pool: &PgPool,
    video: i64,
    public: &str,
    chunking: Option<Chunking>,
) -> Result<f64> {
    let original = layout::original(public, "mp4")?;
    let jobs = upload_jobs_chunked(
        public,
        &original,
        &RenditionLadder::default(),
        10,
        Packaging::Ts,
        0,
        chunking,
    )?;
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    JobQueue::enqueue(&mut tx, video, &jobs).await?;
    tx.commit().await?;
    loop {
        let (status, error): (String, Option<String>) =
            sqlx::query_as("SELECT status, processing_error FROM videos WHERE id = $1")
                .bind(video)
                .fetch_one(pool)
                .await?;
        match status.as_str() {
            "ready" => return Ok(started.elapsed().as_secs_f64()),
            "failed" => bail!("{public} failed: {error:?}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// One finished job of the chunked video.
#[derive(Debug, Clone)]
struct Measured {
    kind: &'static str,
    /// Started to completed.
    seconds: f64,
    /// Runnable (enqueued, or its last dependency completed) to started.
    wait: f64,
    source_bytes: Option<i64>,
}

async fn measured(pool: &PgPool, video: i64) -> Result<Vec<Measured>> {
    let rows: Vec<(String, bool, f64, f64, Option<i64>)> = sqlx::query_as(
        "SELECT j.job_type, j.parameters ? 'chunk',
                extract(epoch FROM j.completed_at - j.started_at)::float8,
                extract(epoch FROM j.started_at - greatest(j.created_at,
                    (SELECT max(d.completed_at) FROM processing_jobs d
                     WHERE d.id = ANY(j.depends_on))))::float8,
                j.source_bytes
         FROM processing_jobs j WHERE j.video_id = $1 ORDER BY j.id",
    )
    .bind(video)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, chunk, seconds, wait, source_bytes)| Measured {
            kind: match (t.as_str(), chunk) {
                ("transcode", true) => "chunk",
                ("transcode", false) => "plan",
                ("thumbnail", _) => "thumbnail",
                _ => "stitch",
            },
            seconds,
            wait,
            source_bytes,
        })
        .collect())
}

/// The measured durations the projection uses.
struct Model {
    plan: f64,
    thumbnail: f64,
    stitch: f64,
    chunks: Vec<f64>,
    /// Dispatch latency: a runnable job's wait for an idle worker.
    dispatch: f64,
}

impl Model {
    fn of(jobs: &[Measured]) -> Model {
        let of = |k: &'static str| jobs.iter().filter(move |j| j.kind == k);
        let sum = |k| of(k).map(|j| j.seconds).sum::<f64>();
        Model {
            plan: sum("plan"),
            thumbnail: sum("thumbnail"),
            stitch: sum("stitch"),
            chunks: of("chunk").map(|j| j.seconds).collect(),
            dispatch: of("plan")
                .chain(of("stitch"))
                .map(|j| j.wait)
                .fold(0.0, f64::max),
        }
    }

    /// Time-to-ready on `workers` workers (see the module's doc).
    fn project(&self, workers: usize) -> f64 {
        let d = self.dispatch;
        let plan_end = d + self.plan;
        // Free-at times; worker 0 runs the thumbnail (or, alone, the plan
        // and then the thumbnail).
        let mut free = vec![plan_end + d; workers.max(1)];
        free[0] = if workers > 1 {
            (d + self.thumbnail).max(plan_end + d)
        } else {
            plan_end + self.thumbnail + d
        };
        let thumbnail_end = if workers > 1 {
            d + self.thumbnail
        } else {
            plan_end + self.thumbnail
        };
        let mut end = plan_end.max(thumbnail_end);
        for c in &self.chunks {
            let (i, start) = free
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, plan_end + d));
            free[i] = start + c;
            end = end.max(start + c);
        }
        end + d + self.stitch
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let seconds = env_num("BENCH_SECONDS", 600);
    let size = env_or("BENCH_SIZE", "1920x1080");
    let fps = env_num("BENCH_FPS", 30);
    let workers = env_num("BENCH_WORKERS", 2) as usize;
    let chunk_seconds = env_num("BENCH_CHUNK_SECONDS", 20);
    let preset = env_or("BENCH_PRESET", "veryfast");
    let source_rate = env_or("BENCH_SOURCE_BITRATE", "8M");
    let pg = env_or("VODFARM_BENCH_PG", "postgres://postgres@127.0.0.1:5432");
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    println!("making a {seconds} s {size} {fps} fps source with motion, noise and a tone …");
    run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "testsrc2=size={size}:rate={fps}:duration={seconds},noise=alls=10:allf=t+u"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        // An upload-like bitrate (noise at a constant quality would make
        // a 10-minute 1080p original tens of gigabytes).
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            &source_rate,
        ])
        .args(["-maxrate", &source_rate, "-bufsize", &source_rate])
        .args([
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&source))?;
    let original_bytes = std::fs::metadata(&source)?.len();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "source: {original_bytes} bytes; {cores} cores, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let s3 = S3Server::start().await;
    s3.client().create_bucket().bucket(BUCKET).send().await?;
    let db = format!("vodfarm_bench_chunked_{}", std::process::id());
    let url = format!("{pg}/{db}");
    Postgres::create_database(&url).await?;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{pg}/postgres"))
        .await?;
    let result = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        vodfarm::MIGRATOR.run(&pool).await?;
        let (_coordinator, base) = start_coordinator(&url).await?;
        let put = |public: &'static str| {
            let client = s3.client();
            let source = source.clone();
            async move {
                let key = layout::original(public, "mp4")?;
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key.as_str())
                    .body(aws_sdk_s3::primitives::ByteStream::from_path(&source).await?)
                    .send()
                    .await?;
                anyhow::Ok(())
            }
        };

        // 1 worker, one job.
        put("v_single").await?;
        let single_video = insert_video(&pool, "v_single").await?;
        let single = {
            let _w = start_worker(&base, &s3, &dir.path().join("w0"), "single", &preset)?;
            time_to_ready(&pool, single_video, "v_single", None).await?
        };
        println!("unchunked, 1 worker: ready in {single:.1} s");

        // N workers, chunks.
        put("v_chunked").await?;
        let chunked_video = insert_video(&pool, "v_chunked").await?;
        let chunked = {
            let _ws = (0..workers)
                .map(|i| {
                    start_worker(
                        &base,
                        &s3,
                        &dir.path().join(format!("w{}", i + 1)),
                        &format!("chunk-{i}"),
                        &preset,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            time_to_ready(
                &pool,
                chunked_video,
                "v_chunked",
                Some(Chunking {
                    min_seconds: 120,
                    chunk_seconds,
                }),
            )
            .await?
        };
        let jobs = measured(&pool, chunked_video).await?;
        let chunks: Vec<&Measured> = jobs.iter().filter(|j| j.kind == "chunk").collect();
        println!(
            "chunked, {workers} workers, {} chunks of ~{chunk_seconds} s: ready in {chunked:.1} s",
            chunks.len()
        );
        for j in &jobs {
            if j.kind != "chunk" {
                let read = j
                    .source_bytes
                    .map_or_else(|| "nothing of the original".to_owned(), |b| format!("{b} bytes"));
                println!(
                    "  {:9} {:7.1} s  waited {:5.1} s  read {read}",
                    j.kind, j.seconds, j.wait
                );
            }
        }
        for (k, j) in chunks.iter().enumerate() {
            println!(
                "  chunk {k:3} {:7.1} s  waited {:5.1} s  read {} bytes ({:.1} % of the original)",
                j.seconds,
                j.wait,
                j.source_bytes.unwrap_or(0),
                100.0 * j.source_bytes.unwrap_or(0) as f64 / original_bytes as f64
            );
        }
        let total_read: i64 = chunks.iter().filter_map(|j| j.source_bytes).sum();
        println!(
            "  chunks read {total_read} bytes in all ({:.2} x the original)",
            total_read as f64 / original_bytes as f64
        );
        let model = Model::of(&jobs);
        let longest = model.chunks.iter().copied().fold(0.0, f64::max);
        println!(
            "model: dispatch {:.2} s, plan {:.1} s, thumbnail {:.1} s, longest chunk {longest:.1} s, \
             stitch {:.1} s",
            model.dispatch, model.plan, model.thumbnail, model.stitch
        );
        for n in [8usize, 32, 128] {
            println!(
                "projected time-to-ready on {n} workers: {:.1} s ({:.3} of single)",
                model.project(n),
                model.project(n) / single
            );
        }
        pool.close().await;
        println!(
            "chunked: single_s={single:.1} chunked_s={chunked:.1} ratio={:.2} projected_32_s={:.1}",
            single / chunked,
            model.project(32)
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
