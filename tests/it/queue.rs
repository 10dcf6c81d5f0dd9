//! The coordinator's leased job queue, through real `vodfarm coordinator`
//! processes and the real PostgreSQL.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vodfarm_coordinator::pipeline::upload_jobs;
use vodfarm_core::jobs::{EncodingOutput, JobOutputs, JobStatus, JobType, SourceMetadata};
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout;
use vodfarm_gpu_worker::worker::lease_capabilities;
use vodfarm_gpu_worker::{ClientError, CoordinatorClient};

fn worker(c: &CoordinatorProcess, name: &str) -> CoordinatorClient {
    CoordinatorClient::new(&c.base, WORKER_TOKEN, name).expect("client")
}

fn encoding(video_id: &str, rung: &str) -> EncodingOutput {
    EncodingOutput {
        resolution: rung.into(),
        codec: "h264".into(),
        container: "ts".into(),
        bitrate: 400_000,
        peak_bitrate: Some(500_000),
        width: Some(426),
        height: Some(240),
        storage_path: layout::rendition_prefix(video_id, rung)
            .unwrap()
            .to_string(),
        file_size_bytes: 1234,
        manifest_path: Some(
            layout::rendition_playlist(video_id, rung)
                .unwrap()
                .to_string(),
        ),
        segment_duration: 6,
        segment_count: Some(3),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_completion_with_32_workers_over_two_replicas() {
    let db = TestDb::new().await;
    let a = CoordinatorProcess::start(&db, &[]).await;
    let b = CoordinatorProcess::start(&db, &[]).await;
    const VIDEOS: usize = 30;
    const PER_VIDEO: usize = 10;
    let mut all = Vec::new();
    for _ in 0..VIDEOS {
        let (video, _) = insert_video(&db.pool).await;
        let jobs: Vec<_> = (0..PER_VIDEO).map(|_| job(JobType::Thumbnail, 0)).collect();
        all.extend(enqueue(&db.pool, video, &jobs).await);
    }
    let total = all.len();
    let completions: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let mut handles = Vec::new();
    for w in 0..32 {
        let client = worker(if w % 2 == 0 { &a } else { &b }, &format!("w{w}"));
        let completions = completions.clone();
        handles.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 3 {
                let jobs = client
                    .lease(&[], &[], 1 + (w % 3), Duration::from_millis(200))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for j in jobs {
                    let r = client
                        .complete(j.id, j.lease_token, JobOutputs::default())
                        .await
                        .unwrap();
                    assert!(!r.already_completed);
                    *completions.lock().unwrap().entry(j.id).or_default() += 1;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let completions = completions.lock().unwrap().clone();
    assert_eq!(completions.len(), total, "every job completed");
    assert!(
        completions.values().all(|&n| n == 1),
        "no job completed twice"
    );
    let (completed, once): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE attempts = 1)
         FROM processing_jobs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(completed as usize, total);
    assert_eq!(once as usize, total, "no job was leased twice");
    let ready: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM videos WHERE status = 'ready' AND processing_progress = 100",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        ready as usize, VIDEOS,
        "every video became ready exactly when its last job completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_loses_its_job_and_its_late_writes_get_409() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(
        &db,
        &[
            "--lease-ttl",
            "1s",
            "--reap-interval",
            "200ms",
            "--retry-base",
            "100ms",
            "--retry-max",
            "200ms",
        ],
    )
    .await;
    let (video, video_pub) = insert_video(&db.pool).await;
    let ids = enqueue(&db.pool, video, &[job(JobType::Transcode, 0)]).await;

    let stalled = worker(&c, "stalled");
    let taker = worker(&c, "taker");
    let first = stalled.lease(&[], &[], 1, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].id, ids[0]);

    // The stalled worker never heartbeats; the taker's long poll gets the
    // job once the reaper returns it.
    let started = Instant::now();
    let second = taker
        .lease(&[], &[], 1, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "job handed to another worker");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the lease expired"
    );
    assert_eq!(second[0].id, ids[0]);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(second[0].lease_token, first[0].lease_token);
    let (_, _, reason) = job_row(&db.pool, ids[0]).await;
    assert!(reason
        .unwrap_or_default()
        .contains("stopped sending heartbeats"));

    // The stalled worker's late writes change nothing.
    let late = stalled
        .complete(
            first[0].id,
            first[0].lease_token,
            JobOutputs {
                encodings: vec![encoding(&video_pub, "240p")],
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(late, Err(ClientError::LeaseLost(_))), "{late:?}");
    let hb = stalled
        .heartbeat(first[0].id, first[0].lease_token, 50)
        .await;
    assert!(matches!(hb, Err(ClientError::LeaseLost(_))), "{hb:?}");
    let f = stalled
        .fail(first[0].id, first[0].lease_token, "boom", false)
        .await;
    assert!(matches!(f, Err(ClientError::LeaseLost(_))), "{f:?}");
    let encodings: i64 = sqlx::query_scalar("SELECT count(*) FROM video_encodings")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(encodings, 0);
    assert_eq!(job_row(&db.pool, ids[0]).await.0, "processing");

    // A heartbeating worker keeps its lease well past the TTL.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        taker
            .heartbeat(second[0].id, second[0].lease_token, 40)
            .await
            .unwrap();
    }
    assert_eq!(
        video_row(&db.pool, video).await.1,
        40,
        "video progress follows the job"
    );
    let r = taker
        .complete(
            second[0].id,
            second[0].lease_token,
            JobOutputs {
                encodings: vec![encoding(&video_pub, "240p")],
                video: Some(SourceMetadata {
                    duration_seconds: Some(12.4),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.video_status, "ready");
    // A retried completion by the same lease is answered, not repeated.
    let again = taker
        .complete(second[0].id, second[0].lease_token, JobOutputs::default())
        .await
        .unwrap();
    assert!(again.already_completed);
    let (status, attempts, _) = job_row(&db.pool, ids[0]).await;
    assert_eq!((status.as_str(), attempts), ("completed", 2));
    let (res, dur): (String, i32) = sqlx::query_as(
        "SELECT e.resolution, v.duration_seconds FROM video_encodings e JOIN videos v ON v.id = e.video_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((res.as_str(), dur), ("240p", 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_and_stop_at_max_attempts() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &["--retry-base", "400ms", "--retry-max", "10s"]).await;
    let (video, _) = insert_video(&db.pool).await;
    let mut j = job(JobType::Transcode, 0);
    j.max_attempts = 3;
    let id = enqueue(&db.pool, video, &[j]).await[0];
    let w = worker(&c, "w");

    // Attempt 1 fails (retryable): back to pending after ~400 ms.
    let l = w
        .lease(&[], &[], 1, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let before = chrono::Utc::now();
    let r = w
        .fail(
            id,
            l.lease_token,
            "network error reading the original",
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.status, JobStatus::Pending);
    let due = r.run_after.expect("retry time");
    assert!(
        due >= before + chrono::Duration::milliseconds(300),
        "backoff {:?}",
        due - before
    );
    assert!(
        w.lease(&[], &[], 1, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    // A waiting poll is woken when the backoff ends (no notification).
    let t = Instant::now();
    let l = w
        .lease(&[], &[], 1, Duration::from_secs(10))
        .await
        .unwrap()
        .remove(0);
    assert!(chrono::Utc::now() >= due);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(l.attempt, 2);

    // Attempt 2: the backoff doubles.
    let before = chrono::Utc::now();
    let r = w
        .fail(id, l.lease_token, "network error again", true)
        .await
        .unwrap();
    let due2 = r.run_after.unwrap();
    assert!(
        due2 >= before + chrono::Duration::milliseconds(600),
        "backoff {:?}",
        due2 - before
    );
    let l = w
        .lease(&[], &[], 1, Duration::from_secs(10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(l.attempt, 3);

    // Attempt 3 is the last: the job and its video fail, with the reason.
    let r = w
        .fail(id, l.lease_token, "network error a third time", true)
        .await
        .unwrap();
    assert_eq!(r.status, JobStatus::Failed);
    let (status, attempts, err) = job_row(&db.pool, id).await;
    assert_eq!((status.as_str(), attempts), ("failed", 3));
    assert_eq!(err.as_deref(), Some("network error a third time"));
    let (vstatus, _, verr) = video_row(&db.pool, video).await;
    assert_eq!(vstatus, "failed");
    assert!(verr.unwrap().contains("gave up after 3 attempts"));

    // An operator retry reopens it with fresh attempts.
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{}/v1/jobs/{id}/retry", c.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["attempts"], 0);
    assert_eq!(video_row(&db.pool, video).await.0, "processing");

    // A permanent error fails at once, whatever attempts are left.
    let l = w
        .lease(&[], &[], 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    let r = w
        .fail(id, l.lease_token, "the file is not a video", false)
        .await
        .unwrap();
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(job_row(&db.pool, id).await.1, 1);
    let (vstatus, _, verr) = video_row(&db.pool, video).await;
    assert_eq!(
        (vstatus.as_str(), verr.as_deref()),
        ("failed", Some("the file is not a video"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_waits_for_transcode_and_the_video_becomes_ready_last() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, video_pub) = insert_video(&db.pool).await;
    let original = layout::original(&video_pub, "mp4").unwrap();
    let plan = upload_jobs(
        &video_pub,
        &original,
        &RenditionLadder::default(),
        6,
        vodfarm_core::playlists::Packaging::Ts,
        0,
    )
    .unwrap();
    let ids = enqueue(&db.pool, video, &plan).await;
    let (transcode, thumbnail, manifest) = (ids[0], ids[1], ids[2]);

    let w = worker(&c, "any");
    let mut leased = w.lease(&[], &[], 10, Duration::ZERO).await.unwrap();
    leased.sort_by_key(|j| j.id);
    assert_eq!(
        leased.iter().map(|j| j.id).collect::<Vec<_>>(),
        [transcode, thumbnail]
    );
    assert_eq!(leased[0].parameters["segment_duration"], 6);
    assert_eq!(leased[0].input_path, original.as_str());

    // A manifest-only worker waits; completing the thumbnail does not wake it
    // with work, completing the transcode does.
    let mw = worker(&c, "manifest-only");
    let waiting = tokio::spawn(async move {
        mw.lease(&[JobType::Manifest], &[], 1, Duration::from_secs(20))
            .await
    });
    w.complete(thumbnail, leased[1].lease_token, JobOutputs::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "manifest leased before its transcode completed"
    );
    assert!(w
        .lease(&[], &[], 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(video_row(&db.pool, video).await.0, "processing");

    let r = w
        .complete(
            transcode,
            leased[0].lease_token,
            JobOutputs {
                encodings: vec![encoding(&video_pub, "240p"), encoding(&video_pub, "720p")],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.video_status, "processing", "manifest still open");
    assert_eq!(
        video_row(&db.pool, video).await.1,
        67,
        "progress follows the jobs"
    );
    let m = waiting.await.unwrap().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].id, manifest);
    let mw = worker(&c, "manifest-only");
    let r = mw
        .complete(manifest, m[0].lease_token, JobOutputs::default())
        .await
        .unwrap();
    assert_eq!(r.video_status, "ready");
    assert_eq!(
        video_row(&db.pool, video).await,
        ("ready".into(), 100, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_leased_by_priority_then_age() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, _) = insert_video(&db.pool).await;
    let mut expected = Vec::new();
    for (p, n) in [(0, 3), (10, 2), (5, 2)] {
        for _ in 0..n {
            let id = enqueue(&db.pool, video, &[job(JobType::Thumbnail, p)]).await[0];
            expected.push((p, id));
        }
    }
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let w = worker(&c, "w");
    let mut got = Vec::new();
    loop {
        let jobs = w.lease(&[], &[], 1, Duration::ZERO).await.unwrap();
        if jobs.is_empty() {
            break;
        }
        got.push(jobs[0].id);
    }
    assert_eq!(got, expected.iter().map(|e| e.1).collect::<Vec<_>>());

    // A batch lease returns them in the same order too.
    sqlx::query("UPDATE processing_jobs SET status = 'pending', lease_token = NULL, lease_expires_at = NULL")
        .execute(&db.pool)
        .await
        .unwrap();
    let batch = w.lease(&[], &[], 100, Duration::ZERO).await.unwrap();
    assert_eq!(batch.iter().map(|j| j.id).collect::<Vec<_>>(), got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_and_job_types_filter_leases() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, _) = insert_video(&db.pool).await;
    let mut gpu = job(JobType::Transcode, 0);
    gpu.required_capabilities = vec!["nvdec".into()];
    let ids = enqueue(&db.pool, video, &[gpu, job(JobType::Thumbnail, 0)]).await;
    let cpu = worker(&c, "cpu");
    assert!(cpu
        .lease(&[JobType::Transcode], &[], 5, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let t = cpu.lease(&[], &[], 5, Duration::ZERO).await.unwrap();
    assert_eq!(t.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]]);
    let g = worker(&c, "gpu")
        .lease(&[], &["cuda".into(), "nvdec".into()], 5, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(g.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_encode_job_goes_only_to_a_worker_with_a_free_nvenc_session() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, _) = insert_video(&db.pool).await;
    let mut needs_nvenc = job(JobType::Transcode, 0);
    needs_nvenc.required_capabilities = vec!["gpu-encode".into()];
    let ids = enqueue(&db.pool, video, &[needs_nvenc]).await;
    let all: Vec<String> = [
        "cuda",
        "nvdec",
        "nvenc",
        "gpu-decode",
        "gpu-scale",
        "gpu-encode",
    ]
    .map(String::from)
    .to_vec();
    // What a worker sends with every NVENC session taken, then with one free.
    let busy = lease_capabilities(&all, 0);
    let free = lease_capabilities(&all, 2);
    let w = worker(&c, "gpu");
    assert!(w
        .lease(&[], &busy, 5, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let got = w.lease(&[], &free, 5, Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
}

async fn snapshot(db: &TestDb) -> Vec<(i64, String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT id, status, attempts, lease_token::text FROM processing_jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message"
    );
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, _) = insert_video(&db.pool).await;
    let id = enqueue(
        &db.pool,
        video,
        &[job(JobType::Transcode, 0), job(JobType::Thumbnail, 0)],
    )
    .await[0];
    let w = worker(&c, "w");
    let leased = w
        .lease(&[JobType::Transcode], &[], 1, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let before = snapshot(&db).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str, token: Option<&str>| {
        let mut r = http
            .post(format!("{}{path}", c.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let lease_body = r#"{"worker_id":"x","max_jobs":1}"#;
    let cases: Vec<(String, String, Option<&str>, u16, &str)> = vec![
        (
            "/v1/worker/lease".into(),
            "{not json".into(),
            Some(WORKER_TOKEN),
            400,
            "malformed_json",
        ),
        (
            "/v1/worker/lease".into(),
            lease_body.into(),
            None,
            401,
            "unauthorized",
        ),
        (
            "/v1/worker/lease".into(),
            lease_body.into(),
            Some("wrong-token"),
            401,
            "unauthorized",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"worker_id":"x","max_jobs":-1}"#.into(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"worker_id":"x","max_jobs":0}"#.into(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"worker_id":"x","wait_ms":-5}"#.into(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"worker_id":""}"#.into(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"worker_id":"x","job_types":["encode"]}"#.into(),
            Some(WORKER_TOKEN),
            422,
            "invalid_request",
        ),
        (
            "/v1/worker/lease".into(),
            r#"{"max_jobs":1}"#.into(),
            Some(WORKER_TOKEN),
            422,
            "invalid_request",
        ),
        (
            "/v1/worker/jobs/999999/complete".into(),
            json!({"lease_token": leased.lease_token}).to_string(),
            Some(WORKER_TOKEN),
            404,
            "job_not_found",
        ),
        (
            "/v1/worker/jobs/abc/heartbeat".into(),
            json!({"lease_token": leased.lease_token}).to_string(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            format!("/v1/worker/jobs/{id}/complete"),
            json!({"lease_token": uuid::Uuid::new_v4()}).to_string(),
            Some(WORKER_TOKEN),
            409,
            "lease_lost",
        ),
        (
            format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": leased.lease_token, "progress": 101}).to_string(),
            Some(WORKER_TOKEN),
            422,
            "invalid_request",
        ),
        (
            format!("/v1/worker/jobs/{id}/complete"),
            json!({"lease_token": "not-a-uuid"}).to_string(),
            Some(WORKER_TOKEN),
            422,
            "invalid_request",
        ),
        (
            format!("/v1/worker/jobs/{id}/complete"),
            json!({"lease_token": leased.lease_token, "outputs": {"encodings": [{
                "resolution": "../../etc", "codec": "h264", "container": "ts", "bitrate": 1,
                "storage_path": "elsewhere/", "file_size_bytes": 1, "segment_duration": 6}]}})
            .to_string(),
            Some(WORKER_TOKEN),
            422,
            "invalid_request",
        ),
        (
            format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": leased.lease_token, "error": "  "}).to_string(),
            Some(WORKER_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "/v1/jobs/1/retry".into(),
            "".into(),
            Some("wrong-token"),
            401,
            "unauthorized",
        ),
        (
            "/v1/nothing-here".into(),
            "{}".into(),
            Some(WORKER_TOKEN),
            404,
            "not_found",
        ),
    ];
    for (path, body, token, status, code) in cases {
        let resp = post(&path, &body, token).await.unwrap();
        assert_eq!(
            error_of(resp).await,
            (status, code.to_owned()),
            "POST {path} {body}"
        );
    }
    // Not JSON at all.
    let resp = http
        .post(format!("{}/v1/worker/lease", c.base))
        .bearer_auth(WORKER_TOKEN)
        .body(lease_body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (415, "unsupported_media_type".into()));
    // Over the body limit.
    let resp = post(
        "/v1/worker/lease",
        &format!(r#"{{"worker_id":"{}"}}"#, "x".repeat(2 << 20)),
        Some(WORKER_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(snapshot(&db).await, before, "nothing changed");
    // The real lease still works after all that.
    w.complete(id, leased.lease_token, JobOutputs::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_inspect_cancel_and_see_metrics() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let (video, video_pub) = insert_video(&db.pool).await;
    let ids = enqueue(
        &db.pool,
        video,
        &[job(JobType::Transcode, 0), job(JobType::Thumbnail, 0)],
    )
    .await;
    let (other, _) = insert_video(&db.pool).await;
    enqueue(&db.pool, other, &[job(JobType::Transcode, 0)]).await;
    let http = reqwest::Client::new();
    let get = |path: String, token: &'static str| {
        http.get(format!("{}{path}", c.base))
            .bearer_auth(token)
            .send()
    };

    // The worker token does not open the operator routes (403: the
    // caller learns it holds the wrong role's token), nor the operator's
    // the worker routes; an unknown token is 401.
    assert_eq!(
        get("/v1/jobs".into(), WORKER_TOKEN).await.unwrap().status(),
        403
    );
    assert_eq!(
        get("/v1/jobs".into(), "not-a-token")
            .await
            .unwrap()
            .status(),
        401
    );
    let lease = http
        .post(format!("{}/v1/worker/lease", c.base))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({"worker_id": "w", "job_types": ["transcode"], "max_jobs": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(lease.status(), 403);
    let all: Value = get("/v1/jobs".into(), OPERATOR_TOKEN)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 3);
    let mine: Value = get(
        format!("/v1/jobs?video_id={video_pub}&status=pending"),
        OPERATOR_TOKEN,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(mine["jobs"].as_array().unwrap().len(), 2);
    assert!(mine["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["video_id"] == video_pub.as_str()));
    let bad = get("/v1/jobs?status=sleeping".into(), OPERATOR_TOKEN)
        .await
        .unwrap();
    assert_eq!(error_of(bad).await, (400, "invalid_request".into()));
    let one: Value = get(format!("/v1/jobs/{}", ids[0]), OPERATOR_TOKEN)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["job_type"], "transcode");
    assert_eq!(
        error_of(get("/v1/jobs/424242".into(), OPERATOR_TOKEN).await.unwrap())
            .await
            .0,
        404
    );

    // A lease, then stats and metrics reflect it.
    let w = worker(&c, "gpu-node-1");
    let leased = w
        .lease(&[JobType::Transcode], &["nvdec".into()], 1, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(leased.video_id, video_pub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = metrics_text(&c.base).await;
    assert_eq!(
        metric(&metrics, r#"vodfarm_jobs_pending{job_type="transcode"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"vodfarm_jobs_pending{job_type="thumbnail"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, r#"vodfarm_jobs_pending{job_type="manifest"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, r#"vodfarm_jobs_processing{job_type="transcode"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vodfarm_leases_granted_total{job_type="transcode"}"#
        ),
        Some(1.0)
    );
    assert!(metrics.contains("vodfarm_job_duration_seconds"));

    // Cancel: the holder's next write is refused; the video fails; the
    // other job of the video is cancelled too; retry reopens both.
    let cancelled: Value = http
        .post(format!("{}/v1/jobs/{}/cancel", c.base, ids[0]))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let late = w
        .complete(ids[0], leased.lease_token, JobOutputs::default())
        .await;
    assert!(matches!(late, Err(ClientError::LeaseLost(_))));
    assert_eq!(job_row(&db.pool, ids[1]).await.0, "cancelled");
    let (vs, _, verr) = video_row(&db.pool, video).await;
    assert_eq!(vs, "failed");
    assert!(verr.unwrap().contains("cancelled by an operator"));
    let again = http
        .post(format!("{}/v1/jobs/{}/cancel", c.base, ids[0]))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(again).await, (409, "invalid_state".into()));
    let retried = http
        .post(format!("{}/v1/jobs/{}/retry", c.base, ids[1]))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(job_row(&db.pool, ids[0]).await.0, "pending");
    assert_eq!(video_row(&db.pool, video).await.0, "processing");

    // Stats: counts by type and status, oldest pending age, workers seen
    // (flushed by the coordinator every 15 s).
    let deadline = Instant::now() + Duration::from_secs(25);
    let stats = loop {
        let stats: Value = get("/v1/queue/stats".into(), OPERATOR_TOKEN)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["workers_seen"] == 1 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(stats["workers_seen"], 1, "{stats}");
    assert_eq!(stats["workers"][0]["worker_id"], "gpu-node-1");
    assert_eq!(stats["workers"][0]["capabilities"], json!(["nvdec"]));
    let pending_transcodes = stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["job_type"] == "transcode" && c["status"] == "pending")
        .map(|c| c["count"].as_i64().unwrap());
    assert_eq!(pending_transcodes, Some(2));
    assert!(stats["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        http.get(format!("{}/healthz", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_long_polls_do_not_query_the_database_and_sigterm_answers_them() {
    let db = TestDb::new().await;
    let mut c = CoordinatorProcess::start(&db, &["--idle-recheck", "30s"]).await;
    let (video, _) = insert_video(&db.pool).await;
    let claims = || async {
        let text = metrics_text(&c.base).await;
        metric(&text, "vodfarm_claim_queries_total").unwrap_or(0.0)
    };
    // 100 workers long-poll 6 rounds of 300 ms each: 600 polls (a count,
    // not a time, so a loaded machine cannot make fewer).
    let mut handles = Vec::new();
    for i in 0..100 {
        let w = worker(&c, &format!("idle{i}"));
        handles.push(tokio::spawn(async move {
            for _ in 0..6 {
                assert!(w
                    .lease(&[], &[], 1, Duration::from_millis(300))
                    .await
                    .unwrap()
                    .is_empty());
            }
            6
        }));
    }
    let mut polls = 0;
    for h in handles {
        polls += h.await.unwrap();
    }
    let spent = claims().await;
    assert_eq!(polls, 600);
    // The first polls of each worker may race to claim before anyone waits;
    // after that, waiting polls are answered without the database.
    assert!(
        spent < 150.0,
        "{spent} claim queries for {polls} idle polls"
    );

    // New work reaches a waiting poll through NOTIFY, not a recheck.
    let w = worker(&c, "waiting");
    let waiting = tokio::spawn(async move { w.lease(&[], &[], 1, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let id = enqueue(&db.pool, video, &[job(JobType::Thumbnail, 0)]).await[0];
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(got[0].id, id);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "woken by the notification, not the 30 s recheck"
    );

    // SIGTERM: a waiting poll is answered at once and the process exits 0.
    let w = worker(&c, "last");
    let waiting = tokio::spawn(async move { w.lease(&[], &[], 1, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let status = c
        .terminate(Duration::from_secs(10))
        .expect("exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    let answer = waiting.await.unwrap().unwrap();
    assert!(answer.is_empty());
    assert!(t.elapsed() < Duration::from_secs(10));
    // The leased job was not lost: it is still leased to its worker.
    assert_eq!(job_row(&db.pool, id).await.0, "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_job_is_due_at_once_and_costs_no_attempt() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &["--retry-base", "1h"]).await;
    let (video, _) = insert_video(&db.pool).await;
    let id = enqueue(&db.pool, video, &[job(JobType::Transcode, 0)]).await[0];
    let draining = worker(&c, "draining");
    let l = draining
        .lease(&[], &[], 1, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(l.attempt, 1);
    draining
        .release(id, l.lease_token, "worker stopping")
        .await
        .unwrap();
    assert_eq!(
        job_row(&db.pool, id).await,
        ("pending".into(), 0, Some("worker stopping".into()))
    );
    // Its late writes are refused like any lost lease's.
    let late = draining.release(id, l.lease_token, "again").await;
    assert!(matches!(late, Err(ClientError::LeaseLost(_))), "{late:?}");
    let late = draining
        .complete(id, l.lease_token, JobOutputs::default())
        .await;
    assert!(matches!(late, Err(ClientError::LeaseLost(_))), "{late:?}");
    assert!(matches!(
        draining.release(424242, l.lease_token, "x").await,
        Err(ClientError::NotFound(_))
    ));
    // Due at once (no backoff, although retries back off for an hour),
    // and still on its first attempt.
    let again = worker(&c, "next")
        .lease(&[], &[], 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (id, 1));
}
