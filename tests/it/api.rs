//! The creator API's rules through a real `vodfarm api`: accounts,
//! tokens, channels, videos (visibility, edits, deletion), pages, the
//! uploader CLI, and schemathesis fuzzing from the OpenAPI document.

use crate::api_support;

use api_support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vodfarm_core::signing::verify_playback_token;

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_and_tokens() {
    let env = ApiEnv::start(&[]).await;
    let (user_id, token) = env.signup("Alice").await;
    assert!(user_id.starts_with("u_"));
    // Tokens are stored hashed.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&env.db.pool)
        .await
        .expect("tokens");
    assert_eq!(
        stored,
        vec![vodfarm_core::ids::token_digest(&token).to_vec()]
    );
    let phc: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&env.db.pool)
        .await
        .expect("hash");
    assert!(phc.starts_with("$argon2id$"), "{phc}");

    let post = |path: &str, body: Value| env.http.post(env.url(path)).json(&body).send();
    let r = post(
        "/v1/users",
        json!({"username": "alice", "email": "x@example.com", "password": "a long secret"}),
    )
    .await
    .expect("dup");
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["error"]["code"], "username_taken");
    let r = post(
        "/v1/users",
        json!({"username": "bob", "email": "ALICE@example.com", "password": "a long secret"}),
    )
    .await
    .expect("dup");
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["error"]["code"], "email_taken");
    for bad in [
        json!({"username": "x", "email": "x@e.com", "password": "a long secret"}),
        json!({"username": "bob", "email": "nope", "password": "a long secret"}),
        json!({"username": "bob", "email": "b@e.com", "password": "short"}),
        json!({"username": "bob", "email": "b@e.com"}),
    ] {
        assert_eq!(
            post("/v1/users", bad.clone()).await.expect("bad").status(),
            422,
            "{bad}"
        );
    }
    let r = env
        .http
        .post(env.url("/v1/users"))
        .body("not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["code"], "malformed_json");

    // Log in by username (any case) or email; wrong passwords get 401.
    let r = post(
        "/v1/tokens",
        json!({"username": "ALICE", "password": "correct horse"}),
    )
    .await
    .expect("login");
    assert_eq!(r.status(), 201);
    let login = json_of(r).await;
    assert_eq!(login["user_id"], user_id.as_str());
    let t2 = login["token"].as_str().expect("token").to_owned();
    assert_ne!(t2, token);
    let r = post(
        "/v1/tokens",
        json!({"email": "alice@example.com", "password": "correct horse"}),
    )
    .await
    .expect("login");
    assert_eq!(r.status(), 201);
    for bad in [
        json!({"username": "alice", "password": "wrong horse"}),
        json!({"username": "nobody", "password": "correct horse"}),
    ] {
        let r = post("/v1/tokens", bad).await.expect("login");
        assert_eq!(r.status(), 401);
        assert_eq!(json_of(r).await["error"]["code"], "invalid_credentials");
    }
    // The new token works; a revoked one does not.
    let create = |t: String| {
        env.http
            .post(env.url("/v1/channels"))
            .bearer_auth(t)
            .json(&json!({"name": "c"}))
            .send()
    };
    assert_eq!(create(t2.clone()).await.expect("channel").status(), 201);
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1")
        .bind(vodfarm_core::ids::token_digest(&t2).to_vec())
        .execute(&env.db.pool)
        .await
        .expect("revoke");
    assert_eq!(create(t2).await.expect("channel").status(), 401);
    let r = env
        .http
        .post(env.url("/v1/channels"))
        .json(&json!({"name": "c"}))
        .send()
        .await
        .expect("anon");
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_videos_visibility_edits_and_pages() {
    let env = ApiEnv::start(&[]).await;
    let (alice_id, alice) = env.signup("alice").await;
    let (_, bob) = env.signup("bob").await;
    let channel = env.channel(&alice).await;
    let c: Value = json_of(
        env.http
            .get(env.url(&format!("/v1/channels/{channel}")))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(c["owner_id"], alice_id.as_str());
    assert_eq!(c["name"], "My channel");
    assert_eq!(
        env.http
            .get(env.url("/v1/channels/c_nope"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
    assert_eq!(
        env.http
            .get(env.url("/v1/channels/..%2F"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );

    // Only the owner may upload to a channel.
    let r = env
        .http
        .post(env.url("/v1/videos"))
        .bearer_auth(&bob)
        .json(&json!({"channel_id": channel, "title": "t", "size_bytes": 10}))
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 403);
    let r = env
        .http
        .post(env.url("/v1/videos"))
        .bearer_auth(&alice)
        .json(&json!({"channel_id": "c_missing", "title": "t", "size_bytes": 10}))
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 404);
    let r = env
        .http
        .post(env.url("/v1/videos"))
        .bearer_auth(&alice)
        .json(&json!({"channel_id": channel, "title": "", "size_bytes": 10}))
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 422);
    let r = env
        .http
        .post(env.url("/v1/videos"))
        .json(&json!({"channel_id": channel, "title": "t", "size_bytes": 10}))
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 401);

    let up = env.initiate(&alice, &channel, 10, "public").await;
    let vid = up["video_id"].as_str().expect("vid").to_owned();
    assert!(up["upload_url"]
        .as_str()
        .expect("url")
        .starts_with(&format!("{}/v1/uploads/", env.api.base)));
    assert!(up["upload_expires_at"].is_string());
    let get = |t: Option<&str>, id: &str| {
        let mut r = env.http.get(env.url(&format!("/v1/videos/{id}")));
        if let Some(t) = t {
            r = r.bearer_auth(t.to_owned());
        }
        r.send()
    };
    let v = json_of(get(Some(&alice), &vid).await.expect("get")).await;
    assert_eq!(v["status"], "uploading");
    assert_eq!(v["upload"]["length"], 10);
    assert_eq!(v["tags"], json!(["a", "b"]));
    let v = json_of(get(None, &vid).await.expect("get")).await;
    assert!(v["upload"].is_null(), "only the owner sees the upload");
    assert_eq!(get(Some("garbage"), &vid).await.expect("get").status(), 401);

    // A private, ready video: owner only, with signed playback URLs.
    let private = env.initiate(&alice, &channel, 10, "private").await;
    let pid = private["video_id"].as_str().expect("vid").to_owned();
    sqlx::query("UPDATE videos SET status = 'ready' WHERE video_id = $1")
        .bind(&pid)
        .execute(&env.db.pool)
        .await
        .expect("ready");
    let (_, _, prow) = env.video_row(&pid).await;
    sqlx::query("INSERT INTO video_encodings (video_id, resolution, codec, container, bitrate, storage_path, file_size_bytes, width, height)
                 VALUES ($1, '720p', 'h264', 'ts', 2500000, 'encoded/x/720p/', 1, 1280, 720)")
        .bind(prow).execute(&env.db.pool).await.expect("encoding");
    assert_eq!(get(None, &pid).await.expect("get").status(), 404);
    assert_eq!(get(Some(&bob), &pid).await.expect("get").status(), 404);
    let v = json_of(get(Some(&alice), &pid).await.expect("get")).await;
    let hls = v["playback"]["hls_url"]
        .as_str()
        .expect("hls url")
        .to_owned();
    let prefix = format!("{ORIGIN}/v/{pid}/master.m3u8?token=");
    assert!(hls.starts_with(&prefix), "{hls}");
    let now = chrono::Utc::now().timestamp();
    verify_playback_token(SIGNING_SECRET.as_bytes(), &pid, &hls[prefix.len()..], now)
        .expect("valid token");
    let pl = v["encodings"][0]["playlist_url"]
        .as_str()
        .expect("playlist");
    assert!(
        pl.starts_with(&format!("{ORIGIN}/v/{pid}/720p/playlist.m3u8?token=")),
        "{pl}"
    );

    // Edits: owner only, validated.
    let patch = |t: &str, id: &str, body: Value| {
        env.http
            .patch(env.url(&format!("/v1/videos/{id}")))
            .bearer_auth(t.to_owned())
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(&bob, &vid, json!({"title": "mine"}))
            .await
            .expect("patch")
            .status(),
        403
    );
    assert_eq!(
        patch(&bob, &pid, json!({"title": "mine"}))
            .await
            .expect("patch")
            .status(),
        404
    );
    assert_eq!(
        patch(&alice, &vid, json!({"privacy": "secret"}))
            .await
            .expect("patch")
            .status(),
        422
    );
    assert_eq!(
        patch(&alice, &vid, json!({"views": 5}))
            .await
            .expect("patch")
            .status(),
        422
    );
    let r = patch(
        &alice,
        &pid,
        json!({"title": "Now public", "privacy": "public", "publish": true, "tags": ["x"]}),
    )
    .await
    .expect("patch");
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["title"], "Now public");
    assert!(v["published_at"].is_string());
    assert_eq!(
        v["playback"]["hls_url"],
        format!("{ORIGIN}/v/{pid}/master.m3u8")
    );
    let v = json_of(get(None, &pid).await.expect("get")).await;
    assert_eq!(v["tags"], json!(["x"]));

    // Keyset pages: others see public ready videos, the owner everything.
    let mut ids = vec![vid.clone(), pid.clone()];
    for _ in 0..5 {
        ids.push(
            env.initiate(&alice, &channel, 10, "public").await["video_id"]
                .as_str()
                .expect("vid")
                .to_owned(),
        );
    }
    sqlx::query("UPDATE videos SET status = 'ready' WHERE video_id = ANY($1)")
        .bind(&ids[2..4])
        .execute(&env.db.pool)
        .await
        .expect("ready");
    let page_all = |t: Option<String>| {
        let env = &env;
        let channel = channel.clone();
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut url = format!("/v1/channels/{channel}/videos?limit=2");
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let mut req = env.http.get(env.url(&url));
                if let Some(t) = &t {
                    req = req.bearer_auth(t);
                }
                let page = json_of(req.send().await.expect("page")).await;
                let videos = page["videos"].as_array().expect("videos").clone();
                assert!(videos.len() <= 2);
                seen.extend(
                    videos
                        .iter()
                        .map(|v| v["video_id"].as_str().expect("id").to_owned()),
                );
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return seen,
                }
            }
        }
    };
    let mut expected: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        page_all(Some(alice.clone())).await,
        expected,
        "owner: all, newest first"
    );
    expected.retain(|i| *i == pid || ids[2..4].contains(i));
    assert_eq!(page_all(None).await, expected, "others: public and ready");
    assert_eq!(page_all(Some(bob.clone())).await, expected);
    let r = env
        .http
        .get(env.url(&format!("/v1/channels/{channel}/videos?cursor=v_nope")))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .get(env.url(&format!("/v1/channels/{channel}/videos?limit=0")))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 400);
    let c: Value = json_of(
        env.http
            .get(env.url(&format!("/v1/channels/{channel}")))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(c["video_count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_cancels_jobs_and_removes_objects() {
    let env = ApiEnv::start(&["--sweep-interval", "200ms"]).await;
    let (_, alice) = env.signup("alice").await;
    let (_, bob) = env.signup("bob").await;
    let channel = env.channel(&alice).await;
    let data = bytes(1000, 3);
    let up = env
        .initiate(&alice, &channel, data.len() as u64, "public")
        .await;
    let vid = up["video_id"].as_str().expect("vid").to_owned();
    let r = env
        .patch(
            up["upload_url"].as_str().expect("url"),
            up["upload_token"].as_str().expect("t"),
            0,
            data,
        )
        .await;
    assert_eq!(r.headers()["vodfarm-video-status"], "processing");
    // Something the worker would have written.
    env.s3c
        .put_object()
        .bucket(BUCKET)
        .key(format!("encoded/{vid}/720p/segment_0.ts"))
        .body(vec![1u8; 10].into())
        .send()
        .await
        .expect("put");
    assert_eq!(env.keys(&format!("originals/{vid}/")).await.len(), 1);

    let del = |t: &str| {
        env.http
            .delete(env.url(&format!("/v1/videos/{vid}")))
            .bearer_auth(t.to_owned())
            .send()
    };
    assert_eq!(del(&bob).await.expect("delete").status(), 403);
    assert_eq!(
        env.http
            .delete(env.url(&format!("/v1/videos/{vid}")))
            .send()
            .await
            .expect("delete")
            .status(),
        401
    );
    assert_eq!(del(&alice).await.expect("delete").status(), 204);
    // At once: gone for everyone, jobs cancelled.
    assert_eq!(env.video_row(&vid).await.0, "deleted");
    let r = env
        .http
        .get(env.url(&format!("/v1/videos/{vid}")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let jobs = env.jobs(&vid).await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.1 == "cancelled"), "{jobs:?}");
    assert_eq!(del(&alice).await.expect("delete").status(), 404);
    // In the background: objects removed, purge recorded.
    env.wait_empty(&format!("originals/{vid}/")).await;
    env.wait_empty(&format!("encoded/{vid}/")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let purged: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT objects_purged_at FROM videos WHERE video_id = $1")
                .bind(&vid)
                .fetch_one(&env.db.pool)
                .await
                .expect("purged");
        if purged.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "purge not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A worker still running a job when the video was deleted uploads a
    // segment after that removal: the final purge, once --purge-settle
    // (10 minutes) has passed since the deletion, removes it.
    let late = format!("encoded/{vid}/240p/segment_7.ts");
    env.s3c
        .put_object()
        .bucket(BUCKET)
        .key(&late)
        .body(vec![2u8; 10].into())
        .send()
        .await
        .expect("put");
    let settled = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT objects_settled_at FROM videos WHERE video_id = $1",
        )
        .bind(&vid)
        .fetch_one(&env.db.pool)
        .await
        .expect("settled")
    };
    assert!(settled().await.is_none(), "settled before --purge-settle");
    assert_eq!(env.keys(&late).await.len(), 1);
    // The settle time passes (moved, not waited for).
    sqlx::query("UPDATE videos SET deleted_at = now() - interval '11 minutes' WHERE video_id = $1")
        .bind(&vid)
        .execute(&env.db.pool)
        .await
        .expect("age");
    env.wait_empty(&format!("encoded/{vid}/")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled().await.is_none() {
        assert!(Instant::now() < deadline, "final purge not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_metrics_and_openapi() {
    let env = ApiEnv::start(&[]).await;
    env.signup("alice").await;
    assert_eq!(
        env.http
            .get(env.url("/healthz"))
            .send()
            .await
            .expect("h")
            .status(),
        200
    );
    assert_eq!(
        env.http
            .get(env.url("/readyz"))
            .send()
            .await
            .expect("r")
            .status(),
        200
    );
    let r = env.http.get(env.url("/nope")).send().await.expect("404");
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await["error"]["code"], "not_found");
    let doc = json_of(
        env.http
            .get(env.url("/v1/openapi.json"))
            .send()
            .await
            .expect("doc"),
    )
    .await;
    assert_eq!(doc["openapi"], "3.0.3");
    let m = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains(r#"vodfarm_http_requests_total{route="/v1/users",status="201"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"route="unmatched",status="404""#), "{m}");
    assert!(m.contains("vodfarm_upload_bytes_total 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_uploader_cli_resumes_and_waits_for_ready() {
    let env = ApiEnv::start(&[]).await;
    let (_, alice) = env.signup("alice").await;
    let channel = env.channel(&alice).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("movie.mkv");
    let data = bytes(7 * 1024 * 1024 + 5, 9);
    std::fs::write(&file, &data).expect("write");
    let state = dir.path().join("state.json");
    let cli = |extra: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"));
        c.arg("upload")
            .arg(&file)
            .args([
                "--title",
                "My movie",
                "--channel",
                &channel,
                "--privacy",
                "unlisted",
                "--chunk-size",
                "2MiB",
            ])
            .args(extra)
            .env("VODFARM_API", &env.api.base)
            .env("VODFARM_TOKEN", &alice)
            .env("VODFARM_UPLOAD_STATE", &state)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    };
    // A first run interrupted (killed) once the server stored bytes.
    let mut first = cli(&["--retries", "0"]).spawn().expect("spawn upload");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let off: Option<i64> = sqlx::query_scalar("SELECT max(upload_offset) FROM upload_sessions")
            .fetch_one(&env.db.pool)
            .await
            .expect("offset");
        if off.unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await.expect("kill uploader");
    let remembered: Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state file")).expect("state json");
    let entry = remembered
        .as_object()
        .expect("map")
        .values()
        .next()
        .expect("entry")
        .clone();
    let vid = entry["video_id"].as_str().expect("vid").to_owned();

    // The second run resumes the same upload, then --wait follows it.
    let second = cli(&["--wait"]).spawn().expect("spawn upload");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.video_row(&vid).await.0 != "processing" {
        assert!(Instant::now() < deadline, "upload did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the coordinator does once the jobs complete.
    sqlx::query(
        "UPDATE videos SET status = 'ready', processing_progress = 100 WHERE video_id = $1",
    )
    .bind(&vid)
    .execute(&env.db.pool)
    .await
    .expect("ready");
    let out = tokio::time::timeout(Duration::from_secs(60), second.wait_with_output())
        .await
        .expect("cli finished")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("resuming {vid}")), "{stderr}");
    assert!(stdout.contains(&format!("video_id: {vid}")), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("{ORIGIN}/v/{vid}/master.m3u8")),
        "{stdout}"
    );
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_sessions")
        .fetch_one(&env.db.pool)
        .await
        .expect("n");
    assert_eq!(sessions, 1, "resumed, not restarted");
    assert_eq!(
        env.stored_sha256(&format!("originals/{vid}/original.mkv"))
            .await,
        sha256_hex(&data)
    );
    let left: Value = serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(left, json!({}), "a finished upload is forgotten");
}

/// The OpenAPI document is the API's contract, both ways: schemathesis
/// runs every check but `positive_data_acceptance` (the document cannot
/// say everything the server refuses, e.g. an email without `@`, a blank
/// title) through every phase (examples, coverage, fuzzing, stateful over
/// the document's links) and any finding fails the test: a 5xx, an
/// undocumented status, header or body, a schema-violating request
/// accepted, a missing required header not refused, a created resource
/// not found, a deleted one still there, auth ignored, etc. Deterministic:
/// fixed seed, one worker, no example database. The few readings of the
/// tus protocol schemathesis gets wrong are in `tests/tus/schemathesis_hooks.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_contract_violations() {
    // Budgets the fuzzer cannot spend, so every log-in, sign-up, password
    // change and upload token it sends reaches the code behind the
    // throttle (whose 429s `security::` tests).
    let unbounded = "1000000000";
    let env = ApiEnv::start(&[
        "--login-failures-per-account",
        unbounded,
        "--auth-failures-per-address",
        unbounded,
        "--signups-per-address",
        unbounded,
    ])
    .await;
    let (_, token) = env.signup("fuzzer").await;
    let mine: Value = env
        .http
        .get(env.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("tokens")
        .json()
        .await
        .expect("tokens json");
    let token_id = mine["tokens"][0]["token_id"]
        .as_str()
        .expect("token_id")
        .to_owned();
    env.channel(&token).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let started = Instant::now();
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(scratch.path())
        .arg("run")
        .arg(env.url("/v1/openapi.json"))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "1"])
        .args(["--generation-database", "none", "--request-timeout", "30"])
        // `--checks all` includes a 10 s response-time check: a speed
        // assertion that fails on a loaded CI machine (argon2 under load).
        // Only hangs are errors here, and the request timeout bounds them.
        .args(["--max-response-time", "30"])
        .arg("--no-color")
        .env("VODFARM_FUZZ_API", &env.api.base)
        .env("VODFARM_FUZZ_USER", "fuzzer")
        .env("VODFARM_FUZZ_PASSWORD", SIGNUP_PASSWORD)
        .env("VODFARM_FUZZ_TOKEN", &token)
        .env("VODFARM_FUZZ_TOKEN_ID", &token_id)
        .env("NO_COLOR", "1")
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tus"),
        )
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .output()
        .await
        .expect("run schemathesis (pip install schemathesis)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found disagreements between /v1/openapi.json and the api \
         ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every phase ran, and found nothing (no failure, no error).
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            stdout.contains(&format!("\u{2705} {phase}")),
            "{phase} did not pass:\n{stdout}"
        );
    }
    assert!(!stdout.contains("Server error"), "{stdout}");
    eprintln!("schemathesis passed in {:?}", started.elapsed());
    // It did exercise the API, uploads included.
    let m = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("text");
    assert!(m.contains(r#"route="/v1/videos/{video_id}""#), "{m}");
    let still = env
        .http
        .get(env.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("tokens");
    assert_eq!(still.status(), 200, "the fuzzer's own token was revoked");
    // The token routes were exercised without ending the fuzzer's session.
    for route in [
        "/v1/tokens/current",
        "/v1/me/password",
        "/v1/tokens/{token_id}",
    ] {
        assert!(m.contains(&format!(r#"route="{route}""#)), "{route}: {m}");
    }
    // The search routes are in the document, so they are fuzzed too.
    assert!(m.contains(r#"route="/v1/search""#), "{m}");
    assert!(m.contains(r#"route="/v1/search/suggest""#), "{m}");
    assert!(
        m.contains(r#"route="/v1/uploads/{upload_id}""#)
            || m.contains(r#"route="/v1/uploads/{id}""#),
        "{m}"
    );
}
