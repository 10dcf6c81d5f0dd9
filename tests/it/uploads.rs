//! tus uploads through a real `vodfarm api`, a real S3 server (s3s-fs),
//! the machine's PostgreSQL, and a stock tus client (tuspy).

use crate::api_support;

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
        assert_eq!(
            expect_line(&mut lines, "offset").await,
            (i * 5 * MIB as u64).to_string()
        );
    }
    let url = expect_line(&mut lines, "url").await;
    expect_line(&mut lines, "midway").await;
    // The api holds half a PATCH (and the upload's row lock): kill it.
    env.api.restart().await;
    stdin.write_all(b"go\n").await.expect("tell tuspy to go on");
    stdin.flush().await.expect("flush");
    let resumed = expect_line(&mut lines, "resumed-at").await;
    assert_eq!(
        resumed,
        (15 * MIB).to_string(),
        "the cut PATCH committed nothing"
    );
    assert_eq!(
        expect_line(&mut lines, "done").await,
        (50 * MIB).to_string()
    );
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
    let video_id = r.headers()["vodfarm-video-id"]
        .to_str()
        .expect("id")
        .to_owned();
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
    let up = env
        .initiate(&token, &channel, data.len() as u64, "public")
        .await;
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
    assert!(
        metrics.contains("vodfarm_uploads_completed_total 1"),
        "{metrics}"
    );
}

/// A PATCH request with the tus headers but no body yet.
fn tus_patch(env: &ApiEnv, url: &str, token: &str, offset: u64) -> reqwest::RequestBuilder {
    env.http
        .patch(url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tus_error() {
    let env = ApiEnv::start(&["--max-upload-size", "64MiB"]).await;
    let (_, token) = env.signup("creator").await;
    let (_, other) = env.signup("stranger").await;
    let channel = env.channel(&token).await;
    let size = 6 * MIB as u64;
    let up = env.initiate(&token, &channel, size, "public").await;
    let url = up["upload_url"].as_str().expect("url").to_owned();
    let ut = up["upload_token"].as_str().expect("token").to_owned();

    // Discovery.
    let r = env
        .http
        .request(reqwest::Method::OPTIONS, env.url("/v1/uploads"))
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    assert_eq!(r.headers()["tus-max-size"], (64 * MIB).to_string().as_str());
    assert_eq!(r.headers()["tus-checksum-algorithm"], "sha1,sha256");
    let ext = r.headers()["tus-extension"]
        .to_str()
        .expect("ext")
        .to_owned();
    for e in [
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e} missing from {ext}");
    }

    // Protocol errors.
    let r = env
        .http
        .patch(&url)
        .bearer_auth(&ut)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 412, "no Tus-Resumable");
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    let r = env
        .http
        .patch(&url)
        .bearer_auth(&ut)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 415);
    let r = env
        .http
        .patch(&url)
        .bearer_auth(&ut)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 400, "no Upload-Offset");
    let r = tus_patch(&env, &url, &ut, 0)
        .header("Upload-Checksum", "md5 AAAA")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 400, "unsupported checksum");

    // Auth: none, wrong, someone else's; the owner's user token works.
    let r = env
        .http
        .patch(&url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("error json");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        tus_patch(&env, &url, "not-a-token", 0)
            .body(vec![1u8; 10])
            .send()
            .await
            .expect("p")
            .status(),
        401
    );
    assert_eq!(
        tus_patch(&env, &url, &other, 0)
            .body(vec![1u8; 10])
            .send()
            .await
            .expect("p")
            .status(),
        401
    );
    assert_eq!(env.head_offset(&url, &token).await, 0);

    // Offsets and sizes.
    let r = env.patch(&url, &ut, 0, vec![7u8; 1000]).await;
    assert_eq!(r.status(), 204);
    let r = env.patch(&url, &ut, 0, vec![7u8; 10]).await;
    assert_eq!(r.status(), 409, "stale offset");
    let r = env.patch(&url, &ut, 5000, vec![7u8; 10]).await;
    assert_eq!(r.status(), 409, "offset ahead");
    // Past the declared size (small bodies, so the client has sent them
    // whole before the early answer arrives).
    let small = env.initiate(&token, &channel, 100, "public").await;
    let (surl, sut) = (
        small["upload_url"].as_str().expect("url").to_owned(),
        small["upload_token"].as_str().expect("token").to_owned(),
    );
    assert_eq!(env.patch(&surl, &sut, 0, vec![7u8; 40]).await.status(), 204);
    let r = env.patch(&surl, &sut, 40, vec![7u8; 61]).await;
    assert_eq!(r.status(), 413, "Content-Length past Upload-Length");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..3).map(|_| Ok(vec![9u8; 30])).collect();
    let r = tus_patch(&env, &surl, &sut, 40)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("chunked patch");
    assert_eq!(r.status(), 413, "chunked body past Upload-Length");
    assert_eq!(
        env.head_offset(&surl, &sut).await,
        40,
        "refused bodies store nothing"
    );
    assert_eq!(
        env.head_offset(&url, &ut).await,
        1000,
        "refused bodies store nothing"
    );
    let r = env
        .http
        .post(env.url("/v1/uploads"))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (65 * MIB).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 413, "Upload-Length over Tus-Max-Size");
    let r = env
        .http
        .post(env.url("/v1/videos"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"channel_id": channel, "title": "big", "size_bytes": 65 * MIB}))
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 413);

    // Unknown uploads.
    let unknown = env.url("/v1/uploads/00000000-0000-4000-8000-000000000000");
    assert_eq!(env.patch(&unknown, &ut, 0, vec![1]).await.status(), 404);
    assert_eq!(
        env.patch(&env.url("/v1/uploads/..%2f"), &ut, 0, vec![1])
            .await
            .status(),
        404
    );

    // Two PATCHes racing: the second finds the row locked (423) while the
    // first is mid-body; once the first commits, a replay gets 409.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let first = tus_patch(&env, &url, &ut, 1000)
        .header("Content-Length", (2 * MIB).to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let first = tokio::spawn(first);
    tx.send(Ok(bytes(MIB, 1))).await.expect("send half");
    // Wait until the first PATCH holds the session's row lock. Look
    // without locking: a probe that took the lock, even for an instant,
    // could make the first PATCH itself meet a 423 (then nobody would
    // ever hold it). Its transaction, which takes the lock first, sits
    // idle while the body arrives; nothing else of this test's database
    // stays idle in a transaction.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let holders: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state = 'idle in transaction'",
        )
        .fetch_one(&env.db.pool)
        .await
        .expect("pg_stat_activity");
        if holders > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first PATCH never took the upload's lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = env.patch(&url, &ut, 1000, vec![5u8; 100]).await;
    assert_eq!(
        r.status(),
        423,
        "second writer while the first holds the upload"
    );
    tx.send(Ok(bytes(MIB, 2))).await.expect("send rest");
    drop(tx);
    let r = first.await.expect("join").expect("first patch");
    assert_eq!(r.status(), 204);
    assert_eq!(header_u64(&r, "upload-offset"), 1000 + 2 * MIB as u64);
    assert_eq!(
        env.patch(&url, &ut, 1000, vec![5u8; 100]).await.status(),
        409
    );

    // Finish; then the complete upload takes nothing more.
    let done = 1000 + 2 * MIB;
    let r = env
        .patch(&url, &ut, done as u64, vec![3u8; size as usize - done])
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["vodfarm-video-status"], "processing");
    assert_eq!(env.patch(&url, &ut, size, vec![]).await.status(), 204);
    assert_eq!(env.patch(&url, &ut, 0, vec![1]).await.status(), 409);
    let mut expected = vec![7u8; 1000];
    expected.extend(bytes(MIB, 1));
    expected.extend(bytes(MIB, 2));
    expected.extend(vec![3u8; size as usize - done]);
    let vid = up["video_id"].as_str().expect("vid");
    assert_eq!(
        env.stored_sha256(&format!("originals/{vid}/original.mp4"))
            .await,
        sha256_hex(&expected)
    );
    let r = env
        .http
        .delete(&url)
        .bearer_auth(&ut)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 409, "a completed upload is not terminated");

    // Expiry: 410 on HEAD and PATCH; the sweep fails the video.
    let up2 = env.initiate(&token, &channel, 100, "public").await;
    let url2 = up2["upload_url"].as_str().expect("url").to_owned();
    let ut2 = up2["upload_token"].as_str().expect("token").to_owned();
    sqlx::query(
        "UPDATE upload_sessions SET expires_at = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(
        url2.rsplit('/')
            .next()
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
            .expect("uuid"),
    )
    .execute(&env.db.pool)
    .await
    .expect("expire");
    assert_eq!(env.patch(&url2, &ut2, 0, vec![1u8; 10]).await.status(), 410);
    let r = env
        .http
        .head(&url2)
        .bearer_auth(&ut2)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 410);

    // Termination.
    let up3 = env.initiate(&token, &channel, 100, "public").await;
    let url3 = up3["upload_url"].as_str().expect("url").to_owned();
    let ut3 = up3["upload_token"].as_str().expect("token").to_owned();
    assert_eq!(env.patch(&url3, &ut3, 0, vec![1u8; 10]).await.status(), 204);
    let del = |t: &str| {
        env.http
            .delete(&url3)
            .bearer_auth(t.to_owned())
            .header("Tus-Resumable", "1.0.0")
            .send()
    };
    assert_eq!(del(&other).await.expect("delete").status(), 401);
    assert_eq!(del(&ut3).await.expect("delete").status(), 204);
    let r = env
        .http
        .head(&url3)
        .bearer_auth(&ut3)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 404);
    assert_eq!(
        env.patch(&url3, &ut3, 10, vec![1u8; 10]).await.status(),
        404
    );
    let vid3 = up3["video_id"].as_str().expect("vid");
    assert_eq!(env.video_row(vid3).await.0, "deleted");
    assert_eq!(
        env.http
            .get(env.url(&format!("/v1/videos/{vid3}")))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creation_with_upload_metadata_cors_and_expiry_sweep() {
    let env = ApiEnv::start(&["--sweep-interval", "100ms"]).await;
    let (_, token) = env.signup("creator").await;
    let (_, other) = env.signup("stranger").await;
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let create = |t: &str, meta: String, body: Option<Vec<u8>>, len: usize| {
        let mut req = env
            .http
            .post(env.url("/v1/uploads"))
            .bearer_auth(t.to_owned())
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", meta);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/offset+octet-stream")
                .body(b);
        }
        req.send()
    };
    // No channel yet: 422; someone else's channel: 403.
    let r = create(&token, format!("filename {}", b64("a.mov")), None, 10)
        .await
        .expect("create");
    assert_eq!(r.status(), 422);
    let channel = env.channel(&token).await;
    let r = create(
        &other,
        format!("filename {},channel_id {}", b64("a.mov"), b64(&channel)),
        None,
        10,
    )
    .await
    .expect("create");
    assert_eq!(r.status(), 403);
    let r = create(&token, "filename !!!".into(), None, 10)
        .await
        .expect("create");
    assert_eq!(r.status(), 400, "bad metadata");
    assert_eq!(
        env.http
            .post(env.url("/v1/uploads"))
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("create")
            .status(),
        400,
        "no Upload-Length"
    );

    // creation-with-upload of a whole small file, private.
    let data = bytes(300 * 1024, 5);
    let meta = format!(
        "filename {},title {},channel_id {},privacy {}",
        b64("Holiday.MOV"),
        b64("Holiday ☀"),
        b64(&channel),
        b64("private")
    );
    let r = create(&token, meta, Some(data.clone()), data.len())
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(&env.api.base), "{location}");
    assert_eq!(header_u64(&r, "upload-offset"), data.len() as u64);
    assert_eq!(r.headers()["vodfarm-video-status"], "processing");
    let vid = r.headers()["vodfarm-video-id"]
        .to_str()
        .expect("vid")
        .to_owned();
    assert_eq!(
        env.stored_sha256(&format!("originals/{vid}/original.mov"))
            .await,
        sha256_hex(&data)
    );
    let v: Value = env
        .http
        .get(env.url(&format!("/v1/videos/{vid}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v["title"], "Holiday ☀");
    assert_eq!(v["original_filename"], "Holiday.MOV");
    assert_eq!(v["privacy"], "private");
    assert_eq!(v["status"], "processing");
    assert_eq!(env.jobs(&vid).await.len(), 3);
    // HEAD echoes the metadata.
    let r = env
        .http
        .head(&location)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert!(r.headers()["upload-metadata"]
        .to_str()
        .expect("meta")
        .contains(&format!("title {}", b64("Holiday ☀"))));

    // Creation, then PATCH through X-HTTP-Method-Override.
    let r = create(&token, format!("filename {}", b64("b.webm")), None, 4)
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    assert!(r.headers().contains_key("upload-expires"));
    let r = env
        .http
        .post(&loc)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8, 2, 3, 4])
        .send()
        .await
        .expect("override");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["vodfarm-video-status"], "processing");

    // CORS for the browser tus-js-client.
    let r = env
        .http
        .request(reqwest::Method::OPTIONS, &loc)
        .header("Origin", "https://studio.example")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "upload-offset,tus-resumable,content-type,authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .expect("methods")
        .to_ascii_uppercase();
    assert!(methods.contains("PATCH"), "{methods}");
    let r = env
        .http
        .head(&loc)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Origin", "https://studio.example")
        .send()
        .await
        .expect("head");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .expect("expose")
        .to_ascii_lowercase();
    for h in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-expires",
        "tus-resumable",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }

    // The sweep expires idle uploads: video failed.
    let r = create(&token, format!("filename {}", b64("c.mp4")), None, 100)
        .await
        .expect("create");
    let vid = r.headers()["vodfarm-video-id"]
        .to_str()
        .expect("vid")
        .to_owned();
    sqlx::query(
        "UPDATE upload_sessions SET expires_at = now() - interval '1 second'
                 WHERE video_id = (SELECT id FROM videos WHERE video_id = $1)",
    )
    .bind(&vid)
    .execute(&env.db.pool)
    .await
    .expect("expire");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.video_row(&vid).await.0 != "failed" {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not expire the upload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st: String = sqlx::query_scalar("SELECT s.status FROM upload_sessions s JOIN videos v ON v.id = s.video_id WHERE v.video_id = $1")
        .bind(&vid).fetch_one(&env.db.pool).await.expect("status");
    assert_eq!(st, "expired");
}
