//! Every role's `/metrics` through `promtool check metrics`, and the
//! Grafana dashboard and alert rules checked against what the roles
//! really export.
//!
//! One real process per role (coordinator, api, worker, origin, an
//! origin in its shield tier, a purger, a webhook sender, a search
//! indexer, counts and recs) on one
//! database and one local-directory store. A video is uploaded through
//! the api with tus and transcoded by the worker, then played through
//! the shield and the origin, so the
//! label sets that only appear with traffic (routes, statuses, job types,
//! outcomes, histograms) are there when each `/metrics` is scraped; the
//! video is then searched for.
//!
//! - `promtool check metrics` (Debian's `prometheus` package; ./test.sh
//!   installs it through scripts/services.sh) must accept every role's
//!   exposition as is.
//! - Every `vodfarm_*` name in helm/vodfarm/files/grafana/vodfarm.json and
//!   helm/vodfarm/files/prometheus/alerts.yaml must be exported by some
//!   role, except the ones listed in [`NOT_EXPORTED_YET`], so the
//!   dashboard and alerts cannot drift from the code.

use crate::api_support::ApiProcess;
use crate::common::{free_port, metrics_text, CoordinatorProcess, TestDb, OPERATOR_TOKEN};
use crate::media_support::{lavfi, WorkerProcess};
use crate::origin_support::OriginProcess;
use crate::search_support::IndexerProcess;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Grafana dashboard the chart ships.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/helm/vodfarm/files/grafana/vodfarm.json"
);
/// The alerting rules the chart ships.
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/helm/vodfarm/files/prometheus/alerts.yaml"
);

/// Metrics the dashboard and the alerts read that no role exports yet
/// (their panels show "No data" until the code records them); once a role
/// exports one, this test fails until it is removed from here. Empty:
/// every metric they name is exported.
const NOT_EXPORTED_YET: &[&str] = &[];

/// Series the alert rules and dashboard select by label value: a
/// renamed route or outcome would silently blind them.
const SELECTED_SERIES: &[(&str, &str)] = &[
    (
        "coordinator",
        "vodfarm_http_requests_total{route=\"/v1/worker/lease\",status=\"200\"}",
    ),
    (
        "coordinator",
        "vodfarm_lease_expiries_total{job_type=\"transcode\",outcome=\"failed\"}",
    ),
    (
        "coordinator",
        "vodfarm_jobs_failed_total{job_type=\"transcode\",outcome=\"failed\"}",
    ),
    (
        "worker",
        "vodfarm_worker_jobs_total{job_type=\"transcode\",outcome=\"completed\"}",
    ),
    (
        "origin",
        "vodfarm_origin_requests_total{route=\"master\",status=\"200\"}",
    ),
    (
        "origin",
        "vodfarm_origin_upstream_fetches_total{outcome=\"ok\"}",
    ),
    (
        "shield",
        "vodfarm_origin_requests_total{route=\"master\",status=\"200\"}",
    ),
];

/// The signing secret of the api and both origin tiers.
const SIGNING_SECRET: &str = "test-signing-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_exports_lint_clean_metrics_that_the_dashboard_and_alerts_use() {
    let promtool = promtool_or_explain();
    // Declared first, dropped last: the processes stop before it goes.
    let db = TestDb::new().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    std::fs::create_dir_all(&store_dir).expect("store dir");
    let store_url = format!("file://{}", store_dir.display());
    let source = lavfi("metrics", 640, 360, 30, 1.0, true).make(tmp.path());

    let coordinator = CoordinatorProcess::start(&db, &[]).await;
    let store_env = vec![("VODFARM_STORE", store_url.clone())];
    let origin = OriginProcess::start(&db, "store", &store_env, &[]).await;
    let shield = OriginProcess::start(&db, &origin.base, &[], &[]).await;
    let api_args: Vec<String> = [
        "--database-url",
        &db.url,
        "--store",
        &store_url,
        "--signing-secret",
        SIGNING_SECRET,
        "--public-origin-url",
        &shield.base,
        "--db-max-connections",
        "4",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let api = ApiProcess::start(free_port(), api_args, vec![]).await;
    let purger = RoleProcess::start("purger", &db.url, &["--allow-no-cdn"]).await;
    let webhooks = RoleProcess::start("webhooks", &db.url, &[]).await;
    // The analytics roles on keys of their own in the machine's Redis.
    let prefix = format!("metrics{}:", uuid::Uuid::new_v4().simple());
    let counts = RoleProcess::start("counts", &db.url, &["--redis-prefix", &prefix]).await;
    let recs = RoleProcess::start("recs", &db.url, &["--redis-prefix", &prefix]).await;
    let indexer = IndexerProcess::start(&db.url, &[], &[]).await;
    let worker = WorkerProcess::start(
        &coordinator.base,
        &store_url,
        &tmp.path().join("scratch"),
        &[],
        &["--x264-preset", "ultrafast"],
    );

    // A creator uploads a video through the api (tus), the worker
    // transcodes it.
    let http = reqwest::Client::new();
    let video = upload(&http, &api.base, &source).await;
    wait_ready(&db, &video).await;

    // Viewers play it through the shield (shield miss, origin miss), then
    // again (shield hit); a missing video answers 404.
    for base in [&shield.base, &shield.base, &origin.base] {
        let r = http
            .get(format!("{base}/v/{video}/master.m3u8"))
            .send()
            .await
            .expect("master playlist");
        assert_eq!(r.status(), 200, "{base}: master playlist of {video}");
    }
    let r = http
        .get(origin.url("/v/nope/master.m3u8"))
        .send()
        .await
        .expect("missing video");
    assert_eq!(r.status(), 404, "a video that does not exist");
    // An operator reads the queue; a stranger is refused.
    let r = http
        .get(format!("{}/v1/queue/stats", coordinator.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("queue stats");
    assert_eq!(r.status(), 200, "queue stats");
    let r = http
        .get(format!("{}/v1/queue/stats", coordinator.base))
        .send()
        .await
        .expect("queue stats without a token");
    assert_eq!(r.status(), 401);

    // A viewer finds it by its title; a search with a bad parameter is
    // refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = http
            .get(format!("{}/v1/search", api.base))
            .query(&[("q", "metrics")])
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("search json");
        if v["hits"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the video never became findable: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .get(format!("{}/v1/search/suggest", api.base))
        .query(&[("q", "metric"), ("sort", "views")])
        .send()
        .await
        .expect("suggest");
    assert_eq!(r.status(), 400);

    let scraped = [
        ("coordinator", metrics_text(&coordinator.base).await),
        ("api", metrics_text(&api.base).await),
        ("worker", metrics_text(&worker.metrics_base).await),
        ("origin", metrics_text(&origin.base).await),
        ("shield", metrics_text(&shield.base).await),
        ("purger", metrics_text(&purger.base).await),
        ("webhooks", metrics_text(&webhooks.base).await),
        ("search-indexer", metrics_text(&indexer.base).await),
        ("counts", metrics_text(&counts.base).await),
        ("recs", metrics_text(&recs.base).await),
    ];
    drop((counts, recs));
    crate::counts_support::delete_keys(&prefix).await;

    // promtool accepts every exposition, and each is the role's.
    let own_metric = |role: &str| match role {
        "coordinator" => "vodfarm_jobs_pending",
        "api" => "vodfarm_upload_bytes_total",
        "worker" => "vodfarm_worker_jobs_total",
        "purger" => "vodfarm_purger_backlog",
        "webhooks" => "vodfarm_webhooks_backlog",
        "search-indexer" => "vodfarm_search_index_lag_seconds",
        "counts" => "vodfarm_counts_lag_entries",
        "recs" => "vodfarm_recs_runs_total",
        _ => "vodfarm_origin_requests_total",
    };
    for (role, text) in &scraped {
        assert!(
            text.lines().any(|l| l.starts_with(own_metric(role))),
            "the {role}'s /metrics has no {}:\n{text}",
            own_metric(role)
        );
        promtool_check_metrics(&promtool, role, text);
    }
    for (role, series) in SELECTED_SERIES {
        let (_, text) = scraped.iter().find(|(r, _)| r == role).expect("role");
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{series} "))),
            "the {role}'s /metrics has no {series}, which the dashboard or alerts select:\n{text}"
        );
    }

    // Every metric the dashboard and the alerts name is exported.
    let mut exported = BTreeSet::new();
    for (_, text) in &scraped {
        exported.extend(exported_names(text));
    }
    let mut referenced = BTreeSet::new();
    for path in [DASHBOARD, ALERTS] {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let names = referenced_names(&text);
        assert!(!names.is_empty(), "{path} names no vodfarm_ metric");
        referenced.extend(names);
    }
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|n| !exported.contains(*n) && !NOT_EXPORTED_YET.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts read metrics no role exports: {missing:?}\n\
         (exported: {exported:?})"
    );
    let now_exported: Vec<&&str> = NOT_EXPORTED_YET
        .iter()
        .filter(|n| exported.contains(**n))
        .collect();
    assert!(
        now_exported.is_empty(),
        "{now_exported:?} are exported now: remove them from NOT_EXPORTED_YET"
    );
    let unused: Vec<&&str> = NOT_EXPORTED_YET
        .iter()
        .filter(|n| !referenced.contains(**n))
        .collect();
    assert!(
        unused.is_empty(),
        "{unused:?} are in NOT_EXPORTED_YET but neither the dashboard nor the alerts use them"
    );
}

/// A role that needs only the database (`vodfarm ROLE --listen …
/// --database-url … ARGS`), killed on drop.
struct RoleProcess {
    child: std::process::Child,
    base: String,
}

impl RoleProcess {
    async fn start(role: &str, database_url: &str, args: &[&str]) -> RoleProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg(role)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn vodfarm {role}: {e}"));
        let p = RoleProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        crate::common::wait_readyz(&p.base, role).await;
        p
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn promtool_or_explain() -> String {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => "promtool".to_owned(),
        Ok(out) => panic!(
            "promtool --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "promtool is not installed ({e}): install Debian's `prometheus` package \
             (`apt-get install --no-install-recommends prometheus`); ./test.sh does it \
             through scripts/services.sh"
        ),
    }
}

/// `promtool check metrics` on one role's exposition; panics with its
/// findings.
pub(crate) fn promtool_check_metrics(promtool: &str, role: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool check metrics");
    {
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool check metrics");
    assert!(
        out.status.success(),
        "promtool check metrics rejects the {role}'s /metrics ({}):\n{}{}\n--- /metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Uploads `source` through the api: a creator signs up, makes a channel,
/// creates a video and sends its bytes in one tus PATCH. Returns the
/// video's public id.
async fn upload(http: &reqwest::Client, api: &str, source: &std::path::Path) -> String {
    let r = http
        .post(format!("{api}/v1/users"))
        .json(
            &json!({"username": "metrics", "email": "metrics@example.com",
                      "password": "correct horse"}),
        )
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), 201, "signup");
    let token = r.json::<Value>().await.expect("signup json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = http
        .post(format!("{api}/v1/channels"))
        .bearer_auth(&token)
        .json(&json!({"name": "Metrics", "description": "dashboards"}))
        .send()
        .await
        .expect("channel");
    assert_eq!(r.status(), 201, "channel");
    let channel = r.json::<Value>().await.expect("channel json")["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_owned();
    let data = std::fs::read(source).expect("read source");
    let r = http
        .post(format!("{api}/v1/videos"))
        .bearer_auth(&token)
        .json(
            &json!({"channel_id": channel, "title": "Metrics", "privacy": "public",
                      "filename": "metrics.mp4", "size_bytes": data.len()}),
        )
        .send()
        .await
        .expect("initiate");
    assert_eq!(r.status(), 201, "initiate");
    let v: Value = r.json().await.expect("initiate json");
    let video = v["video_id"].as_str().expect("video_id").to_owned();
    let url = v["upload_url"].as_str().expect("upload_url").to_owned();
    let r = http
        .patch(&url)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(data)
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 204, "tus PATCH of the whole file");
    // Not found, for a 404 in the api's request counts.
    let r = http
        .get(format!("{api}/v1/no-such-route"))
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    video
}

/// Waits until `video` is ready (a safety deadline only).
async fn wait_ready(db: &TestDb, video: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, error): (String, Option<String>) =
            sqlx::query_as("SELECT status, processing_error FROM videos WHERE video_id = $1")
                .bind(video)
                .fetch_one(&db.pool)
                .await
                .expect("video row");
        match status.as_str() {
            "ready" => return,
            "failed" => panic!("video {video} failed: {error:?}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "video {video} still {status} after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Metric names in a Prometheus text exposition: families (`# TYPE`
/// lines, so a histogram's base name counts) and samples (`_bucket`,
/// `_sum`, `_count` included).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                out.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

/// Every `vodfarm_…` metric name in a dashboard or rule file (queries,
/// descriptions and comments alike). Names end at the first character
/// that is not a letter, digit or `_` (vodfarm exports no recording-rule
/// style `:` names, and prose says "vodfarm_jobs_pending: ...").
fn referenced_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("vodfarm_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_name_char) {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_name_scanners_see_what_they_look_for() {
    let exposition = "# HELP vodfarm_x_seconds x\n# TYPE vodfarm_x_seconds histogram\n\
                      vodfarm_x_seconds_bucket{le=\"1\"} 0\nvodfarm_y_total 3\n";
    let names = exported_names(exposition);
    assert!(names.contains("vodfarm_x_seconds"));
    assert!(names.contains("vodfarm_x_seconds_bucket"));
    assert!(names.contains("vodfarm_y_total"));
    let refs = referenced_names(
        "sum(rate(vodfarm_a_total[5m])) / max(vodfarm_b{x=\"vodfarm_c\"}) \
         myvodfarm_d vodfarm-e \"vodfarm_f_bucket\" (vodfarm_g: prose)",
    );
    let want: BTreeSet<String> = [
        "vodfarm_a_total",
        "vodfarm_b",
        "vodfarm_c",
        "vodfarm_f_bucket",
        "vodfarm_g",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(refs, want);
}
