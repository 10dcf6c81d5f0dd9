//! Webhooks end to end: a real `vodfarm api`, coordinator and `vodfarm
//! webhooks` sender on a fresh database, and real HTTP receivers (axum on
//! 127.0.0.1) that the tests start, stop, make fail and hold.

use crate::api_support::{bytes, ApiEnv, ApiProcess, BUCKET, ORIGIN, SIGNING_SECRET};
use crate::common::{free_port, wait_readyz, CoordinatorProcess, TestDb, WORKER_TOKEN};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use vodfarm_core::jobs::JobOutputs;
use vodfarm_core::webhook_signature;
use vodfarm_gpu_worker::CoordinatorClient;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    event_id: String,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("event body is JSON")
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    /// Status codes of the next answers (200 once empty).
    answers: Arc<Mutex<VecDeque<u16>>>,
    /// Hold the first request's answer forever (the sender is killed
    /// while it waits); `arrived` fires when it came.
    hold_first: bool,
    arrived: Arc<Notify>,
}

/// A webhook receiver: an HTTP server on 127.0.0.1.
struct Receiver {
    state: ReceiverState,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let first = {
        let mut got = s.got.lock().unwrap();
        got.push(Received {
            signature: h("vodfarm-signature"),
            event_id: h("vodfarm-event-id"),
            body,
        });
        got.len() == 1
    };
    s.arrived.notify_one();
    if first && s.hold_first {
        std::future::pending::<()>().await;
    }
    let code = s.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

impl Receiver {
    /// Starts a receiver on `port` answering `answers` first, then 200.
    async fn start(port: u16, answers: &[u16], hold_first: bool) -> Receiver {
        let state = ReceiverState {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            hold_first,
            ..ReceiverState::default()
        };
        Self::serve(port, state).await
    }

    async fn serve(port: u16, state: ReceiverState) -> Receiver {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            state,
            port,
            stop: Some(tx),
        }
    }

    fn url(&self) -> String {
        hook_url(self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until at least `n` requests arrived.
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests: {:?}",
                got.len(),
                got.iter()
                    .map(|r| r.json()["type"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn hook_url(port: u16) -> String {
    format!("http://localhost:{port}/hook")
}

/// A `vodfarm webhooks` process with test pacing (fast retries, short
/// lease).
struct SenderProcess {
    child: Child,
    base: String,
}

impl SenderProcess {
    async fn start(db: &TestDb, allow_private: bool) -> SenderProcess {
        Self::start_with(
            db,
            allow_private,
            &["--request-timeout", "2s", "--claim-lease", "3s"],
        )
        .await
    }

    /// [`start`](Self::start) with other timing flags.
    async fn start_with(db: &TestDb, allow_private: bool, timing: &[&str]) -> SenderProcess {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vodfarm"));
        cmd.arg("webhooks")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(["--retry-base", "300ms", "--retry-max", "1s"])
            .args(timing)
            .args(["--poll-interval", "500ms"])
            .arg("--webhook-allow-http");
        if allow_private {
            cmd.arg("--webhook-allow-private");
        }
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm webhooks");
        let base = format!("http://127.0.0.1:{port}");
        wait_readyz(&base, "webhook sender").await;
        SenderProcess { child, base }
    }

    /// SIGKILL: no bookkeeping after it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SenderProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The api with the flags dev uses (http, loopback receivers).
async fn env() -> ApiEnv {
    ApiEnv::start(&["--webhook-allow-http", "--webhook-allow-private"]).await
}

/// Registers a webhook; returns (webhook_id, secret).
async fn register(env: &ApiEnv, token: &str, url: &str, events: &[&str]) -> (String, String) {
    let r = env
        .http
        .post(env.url("/v1/webhooks"))
        .bearer_auth(token)
        .json(&json!({"url": url, "events": events}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: Value = r.json().await.expect("json");
    (
        v["webhook_id"].as_str().expect("webhook_id").to_owned(),
        v["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn deliveries(env: &ApiEnv, token: &str, webhook: &str) -> Vec<Value> {
    let r = env
        .http
        .get(env.url(&format!("/v1/webhooks/{webhook}/deliveries")))
        .bearer_auth(token)
        .send()
        .await
        .expect("deliveries");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["deliveries"].as_array().expect("array").clone()
}

/// Waits until the webhook's deliveries satisfy `ok`.
async fn wait_deliveries(
    env: &ApiEnv,
    token: &str,
    webhook: &str,
    what: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(env, token, webhook).await;
        if ok(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: {d:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The signature verifies with the secret, over the body received.
fn assert_signed(r: &Received, secret: &str) {
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        webhook_signature::verify(secret.as_bytes(), &r.signature, &r.body, now, 300),
        Ok(()),
        "signature {:?}",
        r.signature
    );
    assert!(webhook_signature::verify(b"another secret", &r.signature, &r.body, now, 300).is_err());
    let v = r.json();
    assert_eq!(
        v["id"],
        r.event_id.as_str(),
        "Vodfarm-Event-Id is the body's id"
    );
    assert!(v["created_at"].is_string() && v["type"].is_string() && v["data"].is_object());
}

/// A video uploaded through tus (so `processing`); returns its id.
async fn upload(env: &ApiEnv, token: &str, channel: &str, seed: u64) -> String {
    let up = env.initiate(token, channel, 4096, "public").await;
    let r = env
        .patch(
            up["upload_url"].as_str().expect("url"),
            up["upload_token"].as_str().expect("token"),
            0,
            bytes(4096, seed),
        )
        .await;
    assert_eq!(r.status(), 204, "final PATCH");
    up["video_id"].as_str().expect("video_id").to_owned()
}

/// Plays the worker for `video`: leases its jobs and completes them
/// (or fails the first one for good with `fail`) until the video is
/// ready (or failed).
async fn work(coord: &CoordinatorProcess, env: &ApiEnv, video: &str, fail: Option<&str>) {
    let w = CoordinatorClient::new(&coord.base, WORKER_TOKEN, "test-worker").expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = env.video_row(video).await;
        if status == "ready" || status == "failed" {
            return;
        }
        assert!(Instant::now() < deadline, "video stuck in {status}");
        for j in w
            .lease(&[], &[], 10, Duration::from_millis(200))
            .await
            .expect("lease")
        {
            assert_eq!(j.video_id, video, "only this video has jobs");
            match fail {
                Some(reason) => {
                    w.fail(j.id, j.lease_token, reason, false)
                        .await
                        .expect("fail");
                }
                None => {
                    w.complete(j.id, j.lease_token, JobOutputs::default())
                        .await
                        .expect("complete");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_signed_and_a_receiver_failing_twice_gets_three_attempts() {
    let env = env().await;
    let coord = CoordinatorProcess::start(&env.db, &[]).await;
    let flaky = Receiver::start(free_port(), &[500, 503], false).await;
    let all = Receiver::start(free_port(), &[], false).await;
    let sender = SenderProcess::start(&env.db, true).await;
    let (_, token) = env.signup("hookowner").await;
    let channel = env.channel(&token).await;
    let (flaky_id, flaky_secret) = register(&env, &token, &flaky.url(), &["video.ready"]).await;
    let (_, all_secret) = register(
        &env,
        &token,
        &all.url(),
        &[
            "upload.completed",
            "video.ready",
            "video.failed",
            "video.deleted",
            "video.updated",
        ],
    )
    .await;
    // The secret is shown once: never by GET.
    let listed: Value = env
        .http
        .get(env.url("/v1/webhooks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    // Someone else's webhook is not there for them.
    let (_, other) = env.signup("stranger").await;
    let r = env
        .http
        .get(env.url(&format!("/v1/webhooks/{flaky_id}/deliveries")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let video = upload(&env, &token, &channel, 1).await;
    work(&coord, &env, &video, None).await;

    // The flaky receiver: 500, 503, then 200, always the same event.
    let got = flaky.wait_for(3, Duration::from_secs(30)).await;
    let d = wait_deliveries(&env, &token, &flaky_id, "one success", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    })
    .await;
    let got_after = flaky.got();
    assert_eq!(got_after.len(), 3, "nothing sent after the success");
    assert_eq!(d[0]["attempts"], 3);
    assert_eq!(d[0]["last_status_code"], 200);
    for r in &got {
        assert_signed(r, &flaky_secret);
        assert_eq!(r.event_id, got[0].event_id, "retries keep the event id");
        assert_eq!(r.body, got[0].body, "retries send the same bytes");
    }
    let ev = got[0].json();
    assert_eq!(ev["type"], "video.ready");
    assert_eq!(ev["data"]["video_id"], video.as_str());
    assert_eq!(ev["data"]["status"], "ready");
    assert_eq!(d[0]["event_id"], ev["id"]);

    // Every other event type, each once, with its own id.
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .json(&json!({"title": "Renamed", "privacy": "unlisted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let broken = upload(&env, &token, &channel, 2).await;
    work(&coord, &env, &broken, Some("the file is not a video")).await;
    let r = env
        .http
        .delete(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got = all.wait_for(6, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = all.got();
    assert_eq!(got_after.len(), 6, "one delivery per event");
    let mut seen: Vec<(String, String)> = Vec::new();
    for r in &got {
        assert_signed(r, &all_secret);
        let v = r.json();
        seen.push((
            v["type"].as_str().unwrap().to_owned(),
            v["data"]["video_id"].as_str().unwrap().to_owned(),
        ));
        match v["type"].as_str().unwrap() {
            "video.updated" => {
                assert_eq!(v["data"]["title"], "Renamed");
                assert_eq!(v["data"]["privacy"], "unlisted");
                assert_eq!(v["data"]["previous"]["title"], "A video");
                assert_eq!(v["data"]["previous"]["privacy"], "public");
            }
            "video.failed" => {
                assert_eq!(v["data"]["reason"], "the file is not a video");
            }
            "upload.completed" => assert_eq!(v["data"]["size_bytes"], 4096),
            _ => {}
        }
    }
    seen.sort();
    let mut want = vec![
        ("upload.completed".to_owned(), video.clone()),
        ("video.ready".to_owned(), video.clone()),
        ("video.updated".to_owned(), video.clone()),
        ("upload.completed".to_owned(), broken.clone()),
        ("video.failed".to_owned(), broken.clone()),
        ("video.deleted".to_owned(), video.clone()),
    ];
    want.sort();
    assert_eq!(seen, want);
    let mut ids: Vec<&str> = got.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event has its own id");

    // The sender's /metrics: lint-clean, and it counted what happened.
    let text = reqwest::get(format!("{}/metrics", sender.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let promtool = crate::metrics::promtool_or_explain();
    crate::metrics::promtool_check_metrics(&promtool, "webhooks", &text);
    let sample = |name: &str| crate::common::metric(&text, name).unwrap_or(-1.0);
    assert_eq!(
        sample("vodfarm_webhooks_attempts_total{outcome=\"http_error\"}"),
        2.0
    );
    assert_eq!(
        sample("vodfarm_webhooks_attempts_total{outcome=\"delivered\"}"),
        7.0
    );
    assert_eq!(
        sample("vodfarm_webhooks_deliveries_total{outcome=\"succeeded\"}"),
        7.0
    );
    assert_eq!(sample("vodfarm_webhooks_backlog"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_a_while_gets_the_event_when_back_and_replay_resends_it() {
    let env = env().await;
    let _sender = SenderProcess::start(&env.db, true).await;
    let (_, token) = env.signup("hookdown").await;
    let channel = env.channel(&token).await;
    let port = free_port();
    let (hook, secret) = register(&env, &token, &hook_url(port), &["video.updated"]).await;
    let up = env.initiate(&token, &channel, 100, "public").await;
    let video = up["video_id"].as_str().unwrap();
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .json(&json!({"title": "While you were out"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Nobody listens: attempts fail with a network error and back off.
    let d = wait_deliveries(&env, &token, &hook, "failed attempts recorded", |d| {
        d.len() == 1 && d[0]["attempts"].as_i64() >= Some(2)
    })
    .await;
    assert_eq!(d[0]["status"], "pending");
    assert!(d[0]["last_status_code"].is_null());
    assert!(d[0]["last_error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(d[0]["next_attempt_at"].is_string());
    // The receiver comes back on its address: the event arrives.
    let receiver = Receiver::start(port, &[], false).await;
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_signed(&got[0], &secret);
    assert_eq!(got[0].json()["data"]["title"], "While you were out");
    let d = wait_deliveries(&env, &token, &hook, "succeeded", |d| {
        d[0]["status"] == "succeeded"
    })
    .await;
    let first = d[0]["delivery_id"].as_str().unwrap().to_owned();
    // Replay: a new delivery of the same event, same id and bytes.
    let r = env
        .http
        .post(env.url(&format!("/v1/webhooks/{hook}/deliveries/{first}/replay")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let replay: Value = r.json().await.unwrap();
    assert_eq!(replay["replay_of"], first.as_str());
    assert_eq!(replay["event_id"], got[0].event_id.as_str());
    assert_ne!(replay["delivery_id"], first.as_str());
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(
        got[1].event_id, got[0].event_id,
        "a replay keeps the event id"
    );
    assert_eq!(got[1].body, got[0].body);
    assert_signed(&got[1], &secret);
    wait_deliveries(&env, &token, &hook, "replay succeeded", |d| {
        d.len() == 2 && d.iter().all(|x| x["status"] == "succeeded")
    })
    .await;
    // Unknown deliveries and bad queries are clear 4xx.
    for (path, code) in [
        (
            format!("/v1/webhooks/{hook}/deliveries/dlv_nope/replay"),
            404,
        ),
        (
            format!("/v1/webhooks/wh_nope/deliveries/{first}/replay"),
            404,
        ),
    ] {
        let r = env
            .http
            .post(env.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), code, "{path}");
    }
    let r = env
        .http
        .get(env.url(&format!("/v1/webhooks/{hook}/deliveries?limit=0")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_killed_before_its_bookkeeping_sends_the_same_event_again() {
    let env = env().await;
    let receiver = Receiver::start(free_port(), &[], true).await;
    // A long attempt timeout: the first sender must still be waiting for
    // the answer when it is killed, however slow this machine is.
    let timing = ["--request-timeout", "10s", "--claim-lease", "11s"];
    let mut first = SenderProcess::start_with(&env.db, true, &timing).await;
    let (_, token) = env.signup("hookkill").await;
    let channel = env.channel(&token).await;
    let (hook, secret) = register(&env, &token, &receiver.url(), &["video.updated"]).await;
    let up = env.initiate(&token, &channel, 100, "public").await;
    let video = up["video_id"].as_str().unwrap();
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .json(&json!({"title": "Killed mid-delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The receiver has the event; the sender waits for its answer, and
    // dies before it can record anything.
    tokio::time::timeout(Duration::from_secs(30), receiver.state.arrived.notified())
        .await
        .expect("first delivery arrived");
    first.kill();
    let d = deliveries(&env, &token, &hook).await;
    assert_eq!(d[0]["status"], "pending");
    assert_eq!(d[0]["attempts"], 0, "nothing was recorded");
    // Another sender takes the delivery once the dead one's claim ends,
    // and sends the same event (never a new one).
    let _second = SenderProcess::start(&env.db, true).await;
    let got = receiver.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(got[1].event_id, got[0].event_id);
    assert_eq!(got[1].body, got[0].body);
    assert_signed(&got[1], &secret);
    let d = wait_deliveries(&env, &token, &hook, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(d[0]["event_id"], got[0].event_id.as_str());
    let (events, claims): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_events), (SELECT max(claims) FROM webhook_deliveries)",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1, "one event, however often it was sent");
    assert_eq!(claims, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destinations_inside_the_network_are_refused_at_registration_and_delivery() {
    let env = env().await;
    let (_, token) = env.signup("hookssrf").await;
    let channel = env.channel(&token).await;
    let post = |api: String, url: String| {
        let http = env.http.clone();
        let token = token.clone();
        async move {
            let r = http
                .post(format!("{api}/v1/webhooks"))
                .bearer_auth(&token)
                .json(&json!({"url": url, "events": ["video.ready"]}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    // An api without the flags (a second replica on the same database).
    let strict = ApiProcess::start(
        free_port(),
        [
            "--database-url",
            &env.db.url,
            "--store",
            &format!("s3://{BUCKET}"),
            "--signing-secret",
            SIGNING_SECRET,
            "--public-origin-url",
            ORIGIN,
        ]
        .iter()
        .map(ToString::to_string)
        .collect(),
        env.s3.env(),
    )
    .await;
    let receiver = Receiver::start(free_port(), &[], false).await;
    for (url, why) in [
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        ("http://169.254.169.254/".to_owned(), "https"),
        (
            format!("https://localhost:{}/hook", receiver.port),
            "loopback",
        ),
        (
            format!("https://127.0.0.1:{}/hook", receiver.port),
            "loopback",
        ),
        ("https://[::1]/hook".to_owned(), "loopback"),
        ("https://10.0.0.7/hook".to_owned(), "private"),
        (receiver.url(), "https"),
        ("ftp://example.com/".to_owned(), "https"),
        ("https://user:pw@example.com/".to_owned(), "user name"),
    ] {
        let (status, body) = post(strict.base.clone(), url.clone()).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["field"], "url", "{url}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{url}: {msg}");
    }
    // With --webhook-allow-private: loopback is fine, link-local never.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0:80/",
    ] {
        let (status, body) = post(env.api.base.clone(), url.to_owned()).await;
        assert_eq!(status, 422, "{url}: {body}");
    }
    let (hook, _) = register(&env, &token, &receiver.url(), &["video.updated"]).await;
    // A sender without the flag checks again when it connects: nothing
    // reaches the receiver, and the delivery says why.
    let _sender = SenderProcess::start(&env.db, false).await;
    let up = env.initiate(&token, &channel, 100, "public").await;
    let video = up["video_id"].as_str().unwrap();
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .json(&json!({"title": "Rebound"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d = wait_deliveries(&env, &token, &hook, "refused attempt recorded", |d| {
        d.len() == 1 && d[0]["attempts"].as_i64() >= Some(1)
    })
    .await;
    let err = d[0]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("loopback"), "{err}");
    assert!(
        receiver.got().is_empty(),
        "a refused destination got a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_that_keeps_failing_is_disabled_with_the_reason() {
    let env = env().await;
    let receiver = Receiver::start(free_port(), &[500; 100], false).await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .arg("webhooks")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &env.db.url])
        .args(["--retry-base", "100ms", "--retry-max", "200ms"])
        .args(["--disable-after-failures", "3", "--disable-after", "0s"])
        .args(["--webhook-allow-http", "--webhook-allow-private"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sender");
    wait_readyz(&format!("http://127.0.0.1:{port}"), "webhook sender").await;
    let (_, token) = env.signup("hookflaky").await;
    let channel = env.channel(&token).await;
    let (hook, _) = register(&env, &token, &receiver.url(), &["video.updated"]).await;
    let up = env.initiate(&token, &channel, 100, "public").await;
    let video = up["video_id"].as_str().unwrap();
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{video}")))
        .bearer_auth(&token)
        .json(&json!({"title": "Nobody home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let v: Value = env
            .http
            .get(env.url(&format!("/v1/webhooks/{hook}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["enabled"] == false {
            break v;
        }
        assert!(Instant::now() < deadline, "never disabled: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = view["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("3 failed delivery attempts"), "{reason}");
    assert!(reason.contains("HTTP 500"), "{reason}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got().len(), 3, "nothing sent once disabled");
    // A replay while disabled is refused; enabling resumes the delivery.
    let d = deliveries(&env, &token, &hook).await;
    let id = d[0]["delivery_id"].as_str().unwrap();
    let r = env
        .http
        .post(env.url(&format!("/v1/webhooks/{hook}/deliveries/{id}/replay")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    receiver.state.answers.lock().unwrap().clear();
    let r = env
        .http
        .patch(env.url(&format!("/v1/webhooks/{hook}")))
        .bearer_auth(&token)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["disabled_reason"].is_null() && v["consecutive_failures"] == 0);
    wait_deliveries(&env, &token, &hook, "delivered after enabling", |d| {
        d[0]["status"] == "succeeded"
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}
