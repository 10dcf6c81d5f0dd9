//! Upload bench: a generated file (1 GiB; `BENCH_UPLOAD_MIB` to change)
//! through tus into a real S3 server (s3s-fs) via `vodfarm api`, beside a
//! plain multipart PUT of the same file with aws-sdk-s3 (same part size,
//! same number of parts in flight), in the same run. Reports MiB/s for
//! both and the api's peak RSS (VmHWM). Last line:
//! `upload: ours=<MiB/s> peer=<MiB/s> ratio=<x>`.

use anyhow::Context;
use futures::TryStreamExt;
use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use vodfarm_core::store::part_size_for;
use vodfarm_core::testing::S3Server;

const BUCKET: &str = "vodfarm-bench";
const MIB: u64 = 1024 * 1024;
/// Parts in flight: the api's default `--upload-parallel-parts`.
const PARALLEL: usize = 4;

struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn generate(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn start_api(db_url: &str, s3: &S3Server) -> anyhow::Result<(Api, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .arg("api")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--database-url",
            db_url,
            "--store",
            &format!("s3://{BUCKET}"),
        ])
        .args(["--signing-secret", "bench", "--db-max-connections", "4"])
        .envs(s3.env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("spawn vodfarm api")?;
    let api = Api(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status().is_success() {
                return Ok((api, base));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "api did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ours: initiate, then one tus PATCH streaming the whole file (what
/// tus-js-client and Uppy do by default). Returns seconds.
async fn run_ours(base: &str, file: &Path, len: u64) -> anyhow::Result<(f64, String)> {
    let http = reqwest::Client::new();
    let user: Value = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "bench", "email": "bench@example.com", "password": "bench-password"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = user["token"].as_str().context("token")?.to_owned();
    http.post(format!("{base}/v1/channels"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?;
    let up: Value = http
        .post(format!("{base}/v1/videos"))
        .bearer_auth(&token)
        .json(&json!({"title": "bench", "filename": "bench.mp4", "size_bytes": len}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let url = up["upload_url"].as_str().context("upload_url")?;
    let utoken = up["upload_token"].as_str().context("upload_token")?;
    let started = Instant::now();
    let f = tokio::fs::File::open(file).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20);
    let r = http
        .patch(url)
        .bearer_auth(utoken)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", len.to_string())
        .body(reqwest::Body::wrap_stream(
            body.map_err(std::io::Error::other),
        ))
        .send()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(r.status() == 204, "PATCH answered {}", r.status());
    anyhow::ensure!(
        r.headers()
            .get("vodfarm-video-status")
            .is_some_and(|v| v == "processing"),
        "the upload did not complete"
    );
    Ok((
        secs,
        up["video_id"].as_str().context("video_id")?.to_owned(),
    ))
}

/// The peer: a plain aws-sdk-s3 multipart PUT of the file, same part size
/// and parts in flight. Returns seconds.
async fn run_peer(client: &aws_sdk_s3::Client, file: &Path, len: u64) -> anyhow::Result<f64> {
    let part = part_size_for(len);
    let started = Instant::now();
    let key = "peer/original.mp4";
    let id = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?
        .upload_id()
        .context("upload id")?
        .to_owned();
    let mut f = tokio::fs::File::open(file).await?;
    let mut set = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut n = 0i32;
    let mut off = 0u64;
    while off < len {
        let size = part.min(len - off);
        let mut buf = vec![0u8; size as usize];
        f.seek(std::io::SeekFrom::Start(off)).await?;
        f.read_exact(&mut buf).await?;
        n += 1;
        let (c, id, num) = (client.clone(), id.clone(), n);
        set.spawn(async move {
            let out = c
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(id)
                .part_number(num)
                .body(buf.into())
                .send()
                .await?;
            anyhow::Ok((num, out.e_tag().unwrap_or_default().to_owned()))
        });
        while set.len() >= PARALLEL {
            if let Some(r) = set.join_next().await {
                parts.push(r??);
            }
        }
        off += size;
    }
    while let Some(r) = set.join_next().await {
        parts.push(r??);
    }
    parts.sort();
    let completed = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .into_iter()
                .map(|(num, etag)| {
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(num)
                        .e_tag(etag)
                        .build()
                })
                .collect(),
        ))
        .build();
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(id)
        .multipart_upload(completed)
        .send()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("BENCH_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = mib * MIB;
    let base_pg = std::env::var("VODFARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("vodfarm_bench_upload_{}", std::process::id());
    let url = format!("{base_pg}/{db}");
    Postgres::create_database(&url).await?;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base_pg}/postgres"))
        .await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await?;
        vodfarm::MIGRATOR.run(&pool).await?;
        pool.close().await;
        let file = dir.path().join("bench.bin");
        generate(&file, len)?;
        let s3 = S3Server::start().await;
        let client = s3.client();
        client.create_bucket().bucket(BUCKET).send().await?;
        println!(
            "upload bench: {mib} MiB file, part size {} MiB, {PARALLEL} parts in flight, S3 = s3s-fs on loopback",
            part_size_for(len) / MIB
        );
        let (api, base) = start_api(&url, &s3).await?;
        let (ours_secs, video_id) = run_ours(&base, &file, len).await?;
        let rss = peak_rss_kib(api.0.id()).unwrap_or(0);
        let stored = client
            .head_object()
            .bucket(BUCKET)
            .key(format!("originals/{video_id}/original.mp4"))
            .send()
            .await?
            .content_length()
            .unwrap_or(0);
        anyhow::ensure!(stored as u64 == len, "stored {stored} bytes, expected {len}");
        drop(api);
        let ours = mib as f64 / ours_secs;
        println!("ours (tus PATCH through vodfarm api → S3 multipart + Postgres): {ours:.1} MiB/s ({ours_secs:.2} s), api peak RSS {:.1} MiB", rss as f64 / 1024.0);
        let peer_secs = run_peer(&client, &file, len).await?;
        let peer = mib as f64 / peer_secs;
        println!("peer (aws-sdk-s3 multipart PUT straight to S3): {peer:.1} MiB/s ({peer_secs:.2} s)");
        println!("upload: ours={ours:.1} peer={peer:.1} ratio={:.2}", ours / peer);
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
