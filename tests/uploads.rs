//! tus uploads through a real `vodfarm api`, a real S3 server (s3s-fs),
//! the machine's PostgreSQL, and a stock tus client (tuspy).

mod api_support;
mod common;

use api_support::*;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const MIB: usize = 1024 * 1024;

/// Reads stdout lines of the tus script until one starts with `prefix`.
async fn expect_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .expect("tus client stalled")
            .expect("read tus client")
            .unwrap_or_else(|| panic!("tus client ended before {prefix:?}"));
        eprintln!("tuspy: {line}");
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
}

fn sha1_b64(data: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(data))
}

fn sha256_b64(data: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuspy_resumes_after_the_api_is_killed_mid_patch() {
    let mut env = ApiEnv::start(&[]).await;
    let (_, token) = env.signup("creator").await;
    let channel = env.channel(&token).await;
    let data = bytes(50 * MIB, 7);
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&data).expect("write source");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tus/resume.py");
    let mut py = tokio::process::Command::new("python3")
        .arg(script)
        .args([&env.api.base, &token])
        .arg(file.path())
        .arg(&channel)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with tuspy (pip install tuspy)");
    let mut stdin = py.stdin.take().expect("stdin");
    let mut lines = BufReader::new(py.stdout.take().expect("stdout")).lines();
    for i in 1..=3u64 {
        assert_eq!(expect_line(&mut lines, "offset").await, (i * 5 * MIB as u64).to_string());
    }
    let url = expect_line(&mut lines, "url").await;
    expect_line(&mut lines, "midway").await;
    // The api holds half a PATCH (and the upload's row lock): kill it.
    env.api.restart().await;
    stdin.write_all(b"go\n").await.expect("tell tuspy to go on");
    stdin.flush().await.expect("flush");
    let resumed = expect_line(&mut lines, "resumed-at").await;
    assert_eq!(resumed, (15 * MIB).to_string(), "the cut PATCH committed nothing");
    assert_eq!(expect_line(&mut lines, "done").await, (50 * MIB).to_string());
    let status = py.wait().await.expect("python exit");
    assert!(status.success(), "tuspy failed: {status}");

    // The upload names its video; it is processing with its jobs.
    let r = env
        .http
        .head(&url)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    assert_eq!(header_u64(&r, "upload-offset"), 50 * MIB as u64);
    let video_id = r.headers()["vodfarm-video-id"].to_str().expect("id").to_owned();
    let (status, size, _) = env.video_row(&video_id).await;
    assert_eq!(status, "processing");
    assert_eq!(size, Some(50 * MIB as i64));
    let jobs = env.jobs(&video_id).await;
    let types: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
    assert_eq!(types, ["transcode", "thumbnail", "manifest"]);
    assert!(jobs.iter().all(|j| j.1 == "pending"));
    assert_eq!(jobs[2].2, 1, "manifest depends on transcode");
    // The original is the source, byte for byte (metadata filename .mp4).
    let key = format!("originals/{video_id}/original.mp4");
    assert_eq!(env.stored_sha256(&key).await, sha256_hex(&data));
    let v: Value = env
        .http
        .get(env.url(&format!("/v1/videos/{video_id}")))
        .send()
        .await
        .expect("get video")
        .json()
        .await
        .expect("video json");
    assert_eq!(v["title"], "Resumed upload");
    assert_eq!(v["channel_id"], channel.as_str());
    assert_eq!(v["status"], "processing");
    env.wait_empty("uploads/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_patches_are_buffered_durably_across_a_restart() {
    let mut env = ApiEnv::start(&[]).await;
    let (_, token) = env.signup("creator").await;
    let channel = env.channel(&token).await;
    // 12 MiB + a bit: parts of 5 MiB, 5 MiB and a short last one.
    let data = bytes(12 * MIB + 123, 11);
    let up = env.initiate(&token, &channel, data.len() as u64, "public").await;
    let url = up["upload_url"].as_str().expect("url").to_owned();
    let utoken = up["upload_token"].as_str().expect("token").to_owned();
    let video_id = up["video_id"].as_str().expect("video").to_owned();
    let chunk = 1536 * 1024; // 1.5 MiB: parts never line up with chunks
    let mut offset = 0usize;
    let mut restarted = false;
    let mut mismatched = false;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let piece = data[offset..end].to_vec();
        if !mismatched && offset >= 4 * MIB {
            // A corrupt chunk: 460, nothing stored, offset unchanged.
            mismatched = true;
            let mut bad = piece.clone();
            bad[0] ^= 1;
            let r = env
                .http
                .patch(&url)
                .bearer_auth(&utoken)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset.to_string())
                .header("Upload-Checksum", format!("sha256 {}", sha256_b64(&piece)))
                .body(bad)
                .send()
                .await
                .expect("patch");
            assert_eq!(r.status().as_u16(), 460);
            assert_eq!(env.head_offset(&url, &utoken).await, offset as u64);
        }
        let r = env
            .http
            .patch(&url)
            .bearer_auth(&utoken)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Checksum", format!("sha1 {}", sha1_b64(&piece)))
            .body(piece)
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        offset = end;
        assert_eq!(header_u64(&r, "upload-offset"), offset as u64);
        if !restarted && offset > 6 * MIB {
            // Mid-part: the buffered tail must survive a kill.
            restarted = true;
            env.api.restart().await;
            assert_eq!(env.head_offset(&url, &utoken).await, offset as u64);
        }
        if offset == data.len() {
            assert_eq!(r.headers()["vodfarm-video-status"], "processing");
        }
    }
    let key = format!("originals/{video_id}/original.mp4");
    assert_eq!(env.stored_sha256(&key).await, sha256_hex(&data));
    let parts: Value = sqlx::query_scalar(
        "SELECT s.parts FROM upload_sessions s JOIN videos v ON v.id = s.video_id WHERE v.video_id = $1",
    )
    .bind(&video_id)
    .fetch_one(&env.db.pool)
    .await
    .expect("parts");
    assert_eq!(parts.as_array().map(Vec::len), Some(3));
    assert_eq!(env.video_row(&video_id).await.0, "processing");
    assert_eq!(env.jobs(&video_id).await.len(), 3);
    env.wait_empty("uploads/").await;
    let metrics = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("vodfarm_uploads_completed_total 1"), "{metrics}");
}
