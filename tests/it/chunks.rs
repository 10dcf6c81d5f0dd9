//! Chunk-parallel transcoding end to end: a real coordinator, real
//! `vodfarm worker` processes and an S3 server (s3s-fs). A 5-minute
//! source is planned into 5 chunk jobs that two workers share; the
//! stitched ladder is compared with the unchunked transcode of the same
//! source frame by frame (PSNR), timestamp by timestamp and sample by
//! sample (decoded PCM); a worker SIGKILLed mid-chunk costs only that
//! chunk; chunks yield to other creators' short videos and die with
//! their video.

use crate::api_support::ApiEnv;
use crate::common;
use crate::media_support;

use common::*;
use media_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vodfarm_coordinator::pipeline::{upload_jobs, upload_jobs_chunked, Chunking};
use vodfarm_core::jobs::{ChunkJob, JobOutputs, JobType};
use vodfarm_core::ladder::{RenditionLadder, Rung};
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;
use vodfarm_gpu_worker::{ClientError, CoordinatorClient};

const BUCKET: &str = "media";
const FPS: f64 = 10.0;

/// Two small rungs at generous bitrates: both transcodes are close to the
/// source, so what differs between them is the chunking, not the codec.
fn ladder() -> RenditionLadder {
    RenditionLadder {
        rungs: vec![
            Rung {
                name: "90p".into(),
                height: 90,
                video_bitrate: 800_000,
            },
            Rung {
                name: "180p".into(),
                height: 180,
                video_bitrate: 2_000_000,
            },
        ],
        audio_bitrate: 128_000,
    }
}

/// A 320x180, 10 fps source of `secs` with a 48 kHz tone; keyframes every
/// 2.5 s (never on a chunk boundary) and B-frames.
fn source(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let path = dir.join(format!("{name}.mp4"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=320x180:rate=10:duration={secs}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        path.to_str().expect("utf-8 path"),
    ]);
    path
}

/// An S3 server with the bucket.
async fn s3() -> (vodfarm_core::testing::S3Server, aws_sdk_s3::Client) {
    let s3 = vodfarm_core::testing::S3Server::start().await;
    let client = s3.client();
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    (s3, client)
}

/// Inserts a video, uploads `path` as its original and enqueues its jobs.
async fn submit(
    db: &TestDb,
    client: &aws_sdk_s3::Client,
    path: &Path,
    chunking: Option<Chunking>,
) -> (i64, String) {
    let (video, public) = insert_video(&db.pool).await;
    let original = layout::original(&public, "mp4").unwrap();
    client
        .put_object()
        .bucket(BUCKET)
        .key(original.as_str())
        .body(std::fs::read(path).unwrap().into())
        .send()
        .await
        .unwrap();
    let jobs = upload_jobs_chunked(
        &public,
        &original,
        &ladder(),
        10,
        Packaging::Ts,
        0,
        chunking,
    )
    .unwrap();
    enqueue(&db.pool, video, &jobs).await;
    (video, public)
}

/// Waits until the video is ready (fails on `failed`; a safety deadline only).
async fn wait_ready(db: &TestDb, video: i64) {
    let end = Instant::now() + Duration::from_secs(900);
    loop {
        let (status, _, err) = video_row(&db.pool, video).await;
        match status.as_str() {
            "ready" => return,
            "failed" => panic!("video {video} failed: {err:?}"),
            _ => {}
        }
        assert!(Instant::now() < end, "video {video} not ready: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every key under `prefix`, sorted.
async fn keys(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = r.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    out.sort();
    out
}

/// Copies every object under `prefix` into `dest` (same relative paths).
async fn mirror(client: &aws_sdk_s3::Client, prefix: &str, dest: &Path) {
    for key in keys(client, prefix).await {
        let o = client
            .get_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .unwrap();
        let bytes = o.body.collect().await.unwrap().into_bytes();
        let path = dest.join(&key[prefix.len()..]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// The objects a ready TS video must have, and nothing else.
fn expected_keys(public: &str, rungs: &[&str], segments: u32) -> Vec<String> {
    let mut want = BTreeSet::new();
    want.insert(layout::master_playlist(public).unwrap().to_string());
    want.insert(layout::renditions_sidecar(public).unwrap().to_string());
    for r in rungs {
        want.insert(layout::rendition_playlist(public, r).unwrap().to_string());
        for n in 0..segments {
            want.insert(layout::segment(public, r, n).unwrap().to_string());
        }
    }
    want.into_iter().collect()
}

/// `ffmpeg -xerror` decodes every stream of `playlist` without a word.
fn plays_cleanly(playlist: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-xerror", "-i"])
        .arg(playlist)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{}: {err}",
        playlist.display()
    );
}

/// One column of ffprobe's CSV for stream `select` of `playlist`.
fn probe_column(playlist: &Path, select: &str, entries: &str) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", select, "-show_entries"])
        .arg(entries)
        .args(["-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Presentation times of the decoded video frames, seconds.
fn frame_times(playlist: &Path) -> Vec<f64> {
    probe_column(playlist, "v:0", "frame=best_effort_timestamp_time")
        .iter()
        .map(|v| v.parse().expect("frame time"))
        .collect()
}

/// PSNR (dB, `inf` when identical) of each frame of `a` against `b`.
fn psnr_per_frame(a: &Path, b: &Path, stats: &Path) -> Vec<f64> {
    let graph = format!(
        "[0:v][1:v]psnr=stats_file={}",
        stats.to_str().expect("utf-8 path")
    );
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .expect("run ffmpeg psnr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(stats)
        .unwrap()
        .lines()
        .map(|l| {
            let v = l
                .split_whitespace()
                .find_map(|f| f.strip_prefix("psnr_avg:"))
                .expect("psnr_avg");
            if v == "inf" {
                f64::INFINITY
            } else {
                v.parse().expect("psnr value")
            }
        })
        .collect()
}

/// The decoded audio of `playlist`, mono 48 kHz float samples.
fn pcm(playlist: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-i"])
        .arg(playlist)
        .args(["-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"])
        .output()
        .expect("run ffmpeg pcm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Signal-to-difference ratio (dB) of `x` against `reference`.
fn snr(reference: &[f32], x: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(x)
        .map(|(&r, &s)| (f64::from(r) - f64::from(s)).powi(2))
        .sum();
    if noise == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (signal / noise).log10()
}

/// The video's jobs: (id, type, status, attempts, worker, parameters, source bytes).
type JobRow = (i64, String, String, i32, Option<String>, Value, Option<i64>);

async fn jobs_of(db: &TestDb, video: i64) -> Vec<JobRow> {
    sqlx::query_as(
        "SELECT id, job_type, status, attempts, worker_id, parameters, source_bytes
         FROM processing_jobs WHERE video_id = $1 ORDER BY id",
    )
    .bind(video)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn chunk_jobs(jobs: &[JobRow]) -> Vec<&JobRow> {
    jobs.iter().filter(|j| !j.5["chunk"].is_null()).collect()
}

async fn encodings_count(db: &TestDb, video: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM video_encodings WHERE video_id = $1")
        .bind(video)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn start_worker(
    c: &CoordinatorProcess,
    s3: &vodfarm_core::testing::S3Server,
    scratch: &Path,
    id: &str,
    preset: &str,
) -> WorkerProcess {
    WorkerProcess::start(
        &c.base,
        &format!("s3://{BUCKET}"),
        scratch,
        &s3.env(),
        &["--x264-preset", preset, "--worker-id", id],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_source_in_five_chunks_on_two_workers_equals_the_unchunked_ladder() {
    let (s3, client) = s3().await;
    let tmp = tempfile::tempdir().unwrap();
    let long = source(tmp.path(), "long", 300);
    let short = source(tmp.path(), "short", 10);
    let original_size = std::fs::metadata(&long).unwrap().len() as i64;
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let chunking = Some(Chunking {
        min_seconds: 120,
        chunk_seconds: 60,
    });
    let (chunked, chunked_pub) = submit(&db, &client, &long, chunking).await;
    let (small, _) = submit(&db, &client, &short, chunking).await;
    let w1 = start_worker(&c, &s3, &tmp.path().join("w1"), "w1", "ultrafast");
    let w2 = start_worker(&c, &s3, &tmp.path().join("w2"), "w2", "ultrafast");
    wait_ready(&db, chunked).await;
    wait_ready(&db, small).await;
    // The reference: the same source in one job, afterwards (so the two
    // workers shared the chunks above).
    let (whole, whole_pub) = submit(&db, &client, &long, None).await;
    wait_ready(&db, whole).await;
    drop((w1, w2));

    // The DAG: one plan, five chunk jobs on both workers, the stitch.
    let jobs = jobs_of(&db, chunked).await;
    let chunks = chunk_jobs(&jobs);
    assert_eq!(chunks.len(), 5, "{jobs:?}");
    assert!(jobs.iter().all(|j| j.2 == "completed"), "{jobs:?}");
    let workers: BTreeSet<&str> = chunks.iter().filter_map(|j| j.4.as_deref()).collect();
    assert_eq!(workers.len(), 2, "both workers took chunks: {jobs:?}");
    let starts: Vec<i64> = chunks
        .iter()
        .map(|j| j.5["chunk"]["start_frame"].as_i64().unwrap())
        .collect();
    assert_eq!(
        starts,
        [0, 600, 1200, 1800, 2400],
        "60 s = 6 segments of 10 s"
    );
    // Each chunk read its own part of the original, not all of it.
    let plan = jobs
        .iter()
        .find(|j| j.1 == "transcode" && j.5["chunk"].is_null())
        .unwrap();
    // An MP4 original is planned from its index and the start of its
    // media data, and each chunk reads byte ranges of it (no chunk files).
    assert!(
        plan.6.is_some_and(|b| b > 0 && b < original_size / 2),
        "the plan read {:?} of {original_size} bytes",
        plan.6
    );
    for c in &chunks {
        assert!(c.5["chunk"]["source_read"]["ranges"].is_array(), "{c:?}");
    }
    let chunk_bytes: Vec<i64> = chunks.iter().map(|j| j.6.unwrap()).collect();
    assert!(
        chunk_bytes.iter().all(|&b| b > 0 && b < original_size / 3),
        "{chunk_bytes:?} of {original_size}"
    );
    assert!(chunk_bytes.iter().sum::<i64>() < original_size * 13 / 10);
    // A 10-second source stays one job.
    let small_jobs = jobs_of(&db, small).await;
    assert_eq!(small_jobs.len(), 3, "{small_jobs:?}");
    assert!(chunk_jobs(&small_jobs).is_empty());

    // Exactly the objects of a ready video: no chunk files, no sidecars.
    assert_eq!(
        keys(&client, &format!("encoded/{chunked_pub}/")).await,
        expected_keys(&chunked_pub, &["90p", "180p"], 30)
    );
    assert_eq!(
        keys(&client, &format!("originals/{chunked_pub}/")).await,
        [layout::original(&chunked_pub, "mp4").unwrap().to_string()]
    );
    assert_eq!(encodings_count(&db, chunked).await, 2);

    let a = tmp.path().join("chunked");
    let b = tmp.path().join("whole");
    mirror(&client, &format!("encoded/{chunked_pub}/"), &a).await;
    mirror(&client, &format!("encoded/{whole_pub}/"), &b).await;
    plays_cleanly(&a.join("master.m3u8"));
    let seams: Vec<i64> = starts[1..].to_vec();
    for rung in ["90p", "180p"] {
        let pa = a.join(rung).join("playlist.m3u8");
        let pb = b.join(rung).join("playlist.m3u8");
        plays_cleanly(&pa);
        // Same segments, same durations.
        assert_eq!(
            std::fs::read_to_string(&pa).unwrap(),
            std::fs::read_to_string(&pb).unwrap(),
            "{rung}: playlists"
        );
        // Timestamps: strictly increasing, no gap over one frame, and the
        // unchunked ones.
        let ta = frame_times(&pa);
        let tb = frame_times(&pb);
        assert_eq!(ta.len(), 3000, "{rung}: frames");
        assert_eq!(ta, tb, "{rung}: timestamps");
        for w in ta.windows(2) {
            let d = w[1] - w[0];
            assert!(
                d > 0.0 && d <= 1.0 / FPS + 0.001,
                "{rung}: step {d} at {}",
                w[0]
            );
        }
        // Pictures: the unchunked ones within 45 dB at every seam.
        let psnr = psnr_per_frame(&pa, &pb, &tmp.path().join(format!("psnr-{rung}.log")));
        assert_eq!(psnr.len(), 3000, "{rung}");
        let min = psnr.iter().copied().fold(f64::INFINITY, f64::min);
        println!("{rung}: lowest PSNR over the video {min:.1} dB");
        let low: Vec<(usize, f64)> = psnr
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, p)| *p < 45.0)
            .collect();
        println!(
            "{rung}: {} frames under 45 dB: {:?}",
            low.len(),
            &low[..low.len().min(40)]
        );
        for &s in &seams {
            for f in (s - 3)..(s + 3) {
                let p = psnr[f as usize];
                assert!(p >= 45.0, "{rung}: frame {f} (seam {s}) PSNR {p:.1} dB");
            }
        }
        // Audio: AAC packets back to back across every seam (1024 samples
        // = 1920 ticks at 90 kHz) …
        let pts: Vec<i64> = probe_column(&pa, "a:0", "packet=pts")
            .iter()
            .map(|v| v.parse().expect("pts"))
            .collect();
        for w in pts.windows(2) {
            assert_eq!(
                w[1] - w[0],
                1920,
                "{rung}: audio gap or overlap at {}",
                w[0]
            );
        }
        // … and the same sound as the unchunked transcode: as many
        // samples, and close to it around every seam.
        let (sa, sb) = (pcm(&pa), pcm(&pb));
        assert_eq!(sa.len(), sb.len(), "{rung}: audio samples");
        let whole_snr = snr(&sb, &sa);
        println!("{rung}: audio SNR against the unchunked {whole_snr:.1} dB");
        assert!(whole_snr >= 25.0, "{rung}: audio SNR {whole_snr:.1} dB");
        for &s in &seams {
            let at = (s as f64 / FPS * 48_000.0) as usize;
            for w in (at - 4800..at + 4800).step_by(960) {
                let v = snr(&sb[w..w + 960], &sa[w..w + 960]);
                assert!(
                    v >= 25.0,
                    "{rung}: seam {s}: audio SNR {v:.1} dB at sample {w}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_loses_only_that_chunk() {
    let (s3, client) = s3().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = source(tmp.path(), "kill", 150);
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(
        &db,
        &[
            "--lease-ttl",
            "3s",
            "--reap-interval",
            "500ms",
            "--retry-base",
            "100ms",
            "--retry-max",
            "200ms",
        ],
    )
    .await;
    let (video, public) = submit(
        &db,
        &client,
        &path,
        Some(Chunking {
            min_seconds: 120,
            chunk_seconds: 30,
        }),
    )
    .await;
    // A slow preset, so the kill lands while a chunk encodes.
    let mut first = start_worker(&c, &s3, &tmp.path().join("w1"), "w1", "slow");
    let end = Instant::now() + Duration::from_secs(300);
    let killed: i64 = loop {
        let running: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM processing_jobs
             WHERE video_id = $1 AND parameters ? 'chunk' AND status = 'processing' AND progress > 0",
        )
        .bind(video)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if let Some(id) = running {
            break id;
        }
        assert!(Instant::now() < end, "no chunk started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _second = start_worker(&c, &s3, &tmp.path().join("w2"), "w2", "ultrafast");
    wait_ready(&db, video).await;

    let jobs = jobs_of(&db, video).await;
    let chunks = chunk_jobs(&jobs);
    assert_eq!(chunks.len(), 5, "150 s in 30 s chunks: {jobs:?}");
    for j in &jobs {
        assert_eq!(j.2, "completed", "{j:?}");
        let want = if j.0 == killed { 2 } else { 1 };
        assert_eq!(j.3, want, "only the killed chunk ran twice: {j:?}");
    }
    assert_eq!(
        encodings_count(&db, video).await,
        2,
        "one row per rendition"
    );
    assert_eq!(
        keys(&client, &format!("encoded/{public}/")).await,
        expected_keys(&public, &["90p", "180p"], 15),
        "no stray objects"
    );
    assert_eq!(
        keys(&client, &format!("originals/{public}/")).await,
        [layout::original(&public, "mp4").unwrap().to_string()]
    );
    let dir = tmp.path().join("out");
    mirror(&client, &format!("encoded/{public}/"), &dir).await;
    plays_cleanly(&dir.join("master.m3u8"));
    assert_eq!(
        frame_times(&dir.join("180p").join("playlist.m3u8")).len(),
        1500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_yield_to_short_videos_and_die_with_their_video() {
    let env = ApiEnv::start(&[]).await;
    let c = CoordinatorProcess::start(&env.db, &[]).await;
    let w = CoordinatorClient::new(&c.base, WORKER_TOKEN, "planner").unwrap();
    // A long upload through the api: its transcode job carries chunking.
    let (_, token) = env.signup("longform").await;
    let channel = env.channel(&token).await;
    let data = b"not really a video, the plan below is reported by hand".to_vec();
    let up = env
        .initiate(&token, &channel, data.len() as u64, "public")
        .await;
    let long_pub = up["video_id"].as_str().unwrap().to_owned();
    let url = up["upload_url"].as_str().unwrap().to_owned();
    assert_eq!(env.patch(&url, &token, 0, data).await.status(), 204);
    let leased = w
        .lease(&[JobType::Transcode], &[], 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let plan = &leased[0];
    assert_eq!(plan.parameters["chunking"]["min_seconds"], 120);
    assert_eq!(plan.parameters["chunking"]["chunk_seconds"], 60);

    // A plan whose chunks read neither the video's own chunk files nor
    // the plan's own input changes nothing.
    let other_original = layout::original(&long_pub, "mov").unwrap().to_string();
    assert_ne!(other_original, plan.input_path);
    for input_path in [
        "originals/someone_else/chunks/chunk_0.nut".to_owned(),
        other_original,
    ] {
        let stray = JobOutputs {
            chunks: vec![ChunkJob {
                input_path,
                parameters: json!({}),
            }],
            ..JobOutputs::default()
        };
        let refused = w.complete(plan.id, plan.lease_token, stray).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    let outputs = JobOutputs {
        chunks: (0..3)
            .map(|k| ChunkJob {
                input_path: layout::chunk_source(&long_pub, k).unwrap().to_string(),
                parameters: json!({ "chunk": { "index": k } }),
            })
            .collect(),
        source_bytes: Some(1234),
        ..JobOutputs::default()
    };
    let done = w
        .complete(plan.id, plan.lease_token, outputs)
        .await
        .unwrap();
    assert_eq!(done.video_status, "processing");
    let (_, _, long) = env.video_row(&long_pub).await;
    let rows: Vec<(i64, String, String, i32, Vec<i64>, Value)> = sqlx::query_as(
        "SELECT id, job_type, status, priority, depends_on, parameters FROM processing_jobs
         WHERE video_id = $1 ORDER BY id",
    )
    .bind(long)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    let chunk_ids: Vec<i64> = rows
        .iter()
        .filter(|r| !r.5["chunk"].is_null())
        .map(|r| r.0)
        .collect();
    assert_eq!(chunk_ids.len(), 3, "{rows:?}");
    for r in rows.iter().filter(|r| chunk_ids.contains(&r.0)) {
        assert_eq!(
            (r.1.as_str(), r.2.as_str(), r.3),
            ("transcode", "pending", -1)
        );
    }
    let manifest = rows.iter().find(|r| r.1 == "manifest").unwrap();
    assert!(
        chunk_ids.iter().all(|id| manifest.4.contains(id)),
        "{manifest:?}"
    );
    assert_eq!(manifest.5["stitch"]["chunks"], 3);

    // Another creator's short video, uploaded after the plan: its job is
    // leased before the older chunks (equal upload priority).
    let (short, short_pub) = insert_video(&env.db.pool).await;
    let original = layout::original(&short_pub, "mp4").unwrap();
    let jobs = upload_jobs(
        &short_pub,
        &original,
        &RenditionLadder::default(),
        10,
        Packaging::Ts,
        0,
    )
    .unwrap();
    enqueue(&env.db.pool, short, &jobs).await;
    let next = w
        .lease(&[JobType::Transcode], &[], 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(next[0].video_id, short_pub, "short video first");
    let chunk = w
        .lease(&[JobType::Transcode], &[], 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(chunk[0].id, chunk_ids[0], "then the chunks, in order");

    // Deleting the video cancels its chunks, the running one included.
    let r = env
        .http
        .delete(env.url(&format!("/v1/videos/{long_pub}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM processing_jobs WHERE id = ANY($1) ORDER BY id")
            .bind(&chunk_ids)
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["cancelled", "cancelled", "cancelled"]);
    let hb = w.heartbeat(chunk[0].id, chunk[0].lease_token, 10).await;
    assert!(matches!(hb, Err(ClientError::LeaseLost(_))), "{hb:?}");
    let source_bytes: Option<i64> =
        sqlx::query_scalar("SELECT source_bytes FROM processing_jobs WHERE id = $1")
            .bind(plan.id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        source_bytes,
        Some(1234),
        "the job's bytes read are recorded"
    );
}
