//! The operator CLI (`vodfarm jobs`, `vodfarm workers`, `vodfarm videos`)
//! as an operator runs it: the real binary against a real coordinator on
//! a fresh database, tables for people and `--json` for scripts, and
//! errors that say what to fix.

use crate::common::{
    enqueue, insert_video, job, CoordinatorProcess, TestDb, OPERATOR_TOKEN, WORKER_TOKEN,
};
use serde_json::{json, Value};
use std::process::Output;
use vodfarm_core::jobs::JobType;

/// Runs `vodfarm ARGS` with the coordinator and token in the environment,
/// as an operator's shell would have them.
async fn vodfarm(coordinator: &str, token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(args)
        .env("VODFARM_COORDINATOR_URL", coordinator)
        .env("VODFARM_OPERATOR_TOKEN", token)
        .env_remove("VODFARM_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run vodfarm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed; answers its stdout.
async fn ok(coordinator: &str, args: &[&str]) -> String {
    let o = vodfarm(coordinator, OPERATOR_TOKEN, args).await;
    assert!(
        o.status.success(),
        "vodfarm {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a `--json` command; answers the parsed output.
async fn ok_json(coordinator: &str, args: &[&str]) -> Value {
    let out = ok(coordinator, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// The table row (after the header) whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_show_retry_and_cancel_without_curl() {
    let db = TestDb::new().await;
    let coordinator = CoordinatorProcess::start(&db, &[]).await;
    let base = coordinator.base.as_str();
    let (video, video_id) = insert_video(&db.pool).await;
    let (_, other_video_id) = insert_video(&db.pool).await;
    let ids = enqueue(
        &db.pool,
        video,
        &[job(JobType::Transcode, 10), job(JobType::Thumbnail, 0)],
    )
    .await;
    let (transcode, thumbnail) = (ids[0], ids[1]);

    // A worker polls and takes the transcode job.
    let http = reqwest::Client::new();
    let leased: Value = http
        .post(format!("{base}/v1/worker/lease"))
        .bearer_auth(WORKER_TOKEN)
        .json(&json!({"worker_id": "gpu-node-7", "capabilities": ["nvdec"], "job_types": ["transcode"]}))
        .send()
        .await
        .expect("lease")
        .json()
        .await
        .expect("lease json");
    assert_eq!(leased["jobs"][0]["id"], transcode, "{leased}");

    // The table lists both jobs with aligned columns.
    let table = ok(base, &["jobs", "list"]).await;
    let header = table.lines().next().expect("header");
    assert!(header.starts_with("ID "), "{table}");
    let running = row(&table, &transcode.to_string());
    assert_eq!(
        &running[1..5],
        [video_id.as_str(), "transcode", "processing", "0%"]
    );
    assert_eq!(running[6], "gpu-node-7", "{table}");
    // Every row has a value where the header has TYPE: the columns align.
    let at = header.find("TYPE").expect("TYPE column");
    for line in table.lines().skip(1) {
        let cell = line.get(at..at + 3).unwrap_or("");
        assert!(
            !cell.trim().is_empty(),
            "the TYPE column is not aligned:\n{table}"
        );
    }

    // Filters by status, type and video; --json for scripts.
    let pending = ok_json(base, &["jobs", "list", "--status", "pending", "--json"]).await;
    let pending_ids: Vec<i64> = pending["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_i64())
        .collect();
    assert_eq!(pending_ids, [thumbnail]);
    let by_type = ok_json(base, &["jobs", "list", "--type", "transcode", "--json"]).await;
    assert_eq!(by_type["jobs"].as_array().map(Vec::len), Some(1));
    let none = ok_json(
        base,
        &["jobs", "list", "--video", &other_video_id, "--json"],
    )
    .await;
    assert_eq!(none["jobs"], json!([]));
    let bad = vodfarm(
        base,
        OPERATOR_TOKEN,
        &["jobs", "list", "--status", "sleeping"],
    )
    .await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("sleeping"), "{}", stderr(&bad));

    // show: every field of one job.
    let shown = ok(base, &["jobs", "show", &transcode.to_string()]).await;
    for (k, v) in [
        ("status", "processing"),
        ("worker", "gpu-node-7"),
        ("attempts", "1 of 5"),
    ] {
        let field = format!("{k:<13} {v}\n");
        assert!(shown.contains(&field), "{field:?} not in:\n{shown}");
    }

    // workers: the worker that polled, its capabilities and its running job.
    let workers = ok(base, &["workers"]).await;
    let w = row(&workers, "gpu-node-7");
    assert_eq!(&w[1..4], ["nvdec", "transcode", "1"], "{workers}");
    let workers_json = ok_json(base, &["workers", "--json"]).await;
    assert_eq!(workers_json["workers"][0]["jobs_running"], 1);

    // cancel the running job: the video fails; retry by video reopens it.
    let cancelled = ok(base, &["jobs", "cancel", &transcode.to_string()]).await;
    assert_eq!(row(&cancelled, &transcode.to_string())[3], "cancelled");
    let again = vodfarm(
        base,
        OPERATOR_TOKEN,
        &["jobs", "cancel", &transcode.to_string()],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("only pending or processing jobs can be cancelled"),
        "{}",
        stderr(&again)
    );
    let failed = ok_json(base, &["videos", "show", &video_id, "--json"]).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["processing_error"]
        .as_str()
        .is_some_and(|e| e.contains("cancelled by an operator")));
    let retried = ok_json(base, &["jobs", "retry", "--video", &video_id, "--json"]).await;
    let statuses: Vec<&str> = retried
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending", "pending"], "{retried}");
    let nothing = vodfarm(
        base,
        OPERATOR_TOKEN,
        &["jobs", "retry", "--video", &video_id],
    )
    .await;
    assert!(
        stderr(&nothing).contains("no failed or cancelled job"),
        "{}",
        stderr(&nothing)
    );

    // videos show: the state, the renditions (none yet) and every job.
    let video_text = ok(base, &["videos", "show", &video_id]).await;
    let status_line = format!("{:<10} processing (0%)\n", "status");
    assert!(video_text.contains(&status_line), "{video_text}");
    assert!(video_text.contains("(none yet)"), "{video_text}");
    assert_eq!(
        row(
            &video_text[video_text.find("\njobs\n").expect("jobs") + 6..],
            &thumbnail.to_string()
        )[2],
        "thumbnail"
    );
    let missing = vodfarm(base, OPERATOR_TOKEN, &["videos", "show", "v_doesnotexist"]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_and_a_missing_coordinator_say_what_to_fix() {
    let db = TestDb::new().await;
    let coordinator = CoordinatorProcess::start(&db, &[]).await;

    // The worker token is not the operator token.
    let wrong = vodfarm(&coordinator.base, WORKER_TOKEN, &["jobs", "list"]).await;
    assert!(!wrong.status.success());
    let said = stderr(&wrong);
    assert!(
        said.contains("refused the operator token") && said.contains("VODFARM_OPERATOR_TOKEN"),
        "{said}"
    );

    // Nothing listens on this port.
    let port = crate::common::free_port();
    let gone = vodfarm(
        &format!("http://127.0.0.1:{port}"),
        OPERATOR_TOKEN,
        &["workers"],
    )
    .await;
    assert!(!gone.status.success());
    let said = stderr(&gone);
    assert!(
        said.contains("cannot reach the coordinator") && said.contains(&port.to_string()),
        "{said}"
    );

    // No token at all: the error names the flag and its variable.
    let none = tokio::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(["jobs", "list"])
        .env_remove("VODFARM_OPERATOR_TOKEN")
        .env_remove("VODFARM_ADMIN_TOKEN")
        .output()
        .await
        .expect("run vodfarm");
    assert!(!none.status.success());
    let said = stderr(&none);
    assert!(
        said.contains("--operator-token") && said.contains("VODFARM_OPERATOR_TOKEN"),
        "{said}"
    );

    // The deprecated variable still works.
    let old = tokio::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(["workers", "--json"])
        .env("VODFARM_COORDINATOR_URL", &coordinator.base)
        .env_remove("VODFARM_OPERATOR_TOKEN")
        .env("VODFARM_ADMIN_TOKEN", OPERATOR_TOKEN)
        .output()
        .await
        .expect("run vodfarm");
    assert!(old.status.success(), "{}", stderr(&old));
}
