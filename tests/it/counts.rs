//! Analytics: playback beacons → the event bus (Redis Stream and Kafka
//! on a real `tansu` broker) → `vodfarm counts` (SIGKILLed while events
//! flow) → Redis → the hourly flush, exact; likes and subscriptions under
//! concurrency; watch history, continue watching and erasure;
//! recommendations and their filters. The Scylla watch store's test runs
//! when SCYLLA_NODES is set and says NOT RUN otherwise.

use crate::counts_support::{session_body, AnalyticsEnv, CountsProcess};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The counting rule, as the test sees it: min(30 s, half the duration),
/// 30 s when the duration is unknown.
fn threshold(duration: i32) -> f64 {
    if duration <= 0 {
        30.0
    } else {
        (f64::from(duration / 2)).clamp(1.0, 30.0)
    }
}

/// 20,000 events in 400 sessions over four videos (two channels), every
/// tenth session's request sent twice (a player's retry), the counts
/// replica SIGKILLed three times while they flow; then two flushers at
/// once. Every count must be exact.
async fn exact_counts_through_kills(kafka: bool) {
    let env = Arc::new(AnalyticsEnv::start(kafka).await);
    let (_, v0, ch_a) = env.ready_video(600).await;
    let (_, v1) = env.video_in(ch_a, "short", 40).await;
    let (_, v2, ch_b) = env.ready_video(16).await;
    let (_, v3) = env.video_in(ch_b, "unknown length", 0).await;
    let videos = [(v0, 600), (v1, 40), (v2, 16), (v3, 0)];
    let mut counts = CountsProcess::start(&env, "replica-1").await;

    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut sessions = Vec::new();
    for i in 0..400usize {
        let (vid, duration) = &videos[i % 4];
        // Final watch times 0..69 s: some sessions reach the threshold,
        // some stop short.
        let watched = ((i * 7) % 70) as f64;
        if watched >= threshold(*duration) {
            *expected.entry(vid.clone()).or_default() += 1;
        }
        let body = session_body(&format!("s-{i}"), 50, watched, *duration);
        sessions.push((vid.clone(), body, i % 10 == 0));
    }
    let total_expected: i64 = expected.values().sum();
    assert!(total_expected > 50 && total_expected < 400);

    let posted = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (env, posted) = (env.clone(), posted.clone());
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for chunk in sessions.chunks(8) {
                for (vid, body, retry) in chunk.iter().cloned() {
                    let env = env.clone();
                    set.spawn(async move {
                        let (status, v) = env.beacons(&vid, &body, None).await;
                        assert_eq!(status, 202, "{v}");
                        if retry {
                            let (status, v) = env.beacons(&vid, &body, None).await;
                            assert_eq!(status, 202, "{v}");
                        }
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("post");
                }
                posted.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    for at in [100, 200, 300] {
        while posted.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counts.kill_and_restart().await;
    }
    sender.await.expect("sender");
    counts.wait_drained(Duration::from_secs(180)).await;

    // Live: nothing flushed yet, GET shows Redis's count.
    for (vid, _) in &videos {
        let want = expected.get(vid).copied().unwrap_or(0);
        assert_eq!(env.shown_views(vid).await, want, "live views of {vid}");
    }

    // Two flushers at once.
    let (a, b) = {
        let (e1, e2) = (env.clone(), env.clone());
        let a = std::thread::spawn(move || e1.flush_now());
        let b = std::thread::spawn(move || e2.flush_now());
        (a.join().expect("flush a"), b.join().expect("flush b"))
    };
    assert!(
        a.starts_with("flushed") && b.starts_with("flushed"),
        "{a} {b}"
    );
    let pool = &env.db().pool;
    for (vid, _) in &videos {
        let want = expected.get(vid).copied().unwrap_or(0);
        let (views, aggregated, uniques): (i64, i64, i64) = sqlx::query_as(
            "SELECT v.view_count,
                    coalesce((SELECT sum(view_count) FROM view_aggregates a WHERE a.video_id = v.id), 0)::bigint,
                    coalesce((SELECT sum(unique_viewers) FROM view_aggregates a WHERE a.video_id = v.id), 0)::bigint
             FROM videos v WHERE v.video_id = $1",
        )
        .bind(vid)
        .fetch_one(pool)
        .await
        .expect("counts");
        assert_eq!(views, want, "videos.view_count of {vid}");
        assert_eq!(aggregated, want, "view_aggregates of {vid}");
        // Anonymous viewers are their sessions: a HyperLogLog estimate.
        assert!(
            (uniques - want).abs() <= want / 20 + 1,
            "unique viewers {uniques} vs {want}"
        );
        assert_eq!(env.shown_views(vid).await, want, "flushed views of {vid}");
    }
    let channel_total = |ch: i64| async move {
        sqlx::query_scalar::<_, i64>("SELECT total_views FROM channels WHERE id = $1")
            .bind(ch)
            .fetch_one(pool)
            .await
            .expect("channel")
    };
    let want_a = expected.get(&videos[0].0).copied().unwrap_or(0)
        + expected.get(&videos[1].0).copied().unwrap_or(0);
    assert_eq!(channel_total(ch_a).await, want_a);
    assert_eq!(
        channel_total(ch_b).await,
        total_expected - want_a,
        "channels.total_views"
    );

    // A flush with nothing new moves nothing.
    let again = env.flush_now();
    assert!(again.contains(" 0 view(s) moved"), "{again}");

    // More views in the same hour: the next flush replaces the hour's row
    // and moves the counters by the difference only.
    for i in 0..20 {
        let body = session_body(&format!("late-{i}"), 5, 40.0, 600);
        let (status, v) = env.beacons(&videos[0].0, &body, None).await;
        assert_eq!(status, 202, "{v}");
    }
    counts.wait_drained(Duration::from_secs(120)).await;
    let want0 = expected.get(&videos[0].0).copied().unwrap_or(0) + 20;
    assert_eq!(env.shown_views(&videos[0].0).await, want0);
    let out = env.flush_now();
    assert!(out.contains(" 20 view(s) moved"), "{out}");
    let (views, rows): (i64, i64) = sqlx::query_as(
        "SELECT v.view_count, (SELECT count(*) FROM view_aggregates a WHERE a.video_id = v.id)
         FROM videos v WHERE v.video_id = $1",
    )
    .bind(&videos[0].0)
    .fetch_one(pool)
    .await
    .expect("views");
    assert_eq!(views, want0);
    assert!(rows <= 2, "one row per hour, not per flush: {rows}");
    assert_eq!(channel_total(ch_a).await, want_a + 20);

    // On Kafka the api counts its records: 460 beacon requests (400, 40
    // retries, 20 late), sent 8 at a time, never more records than
    // requests, and the histogram of beacons per record adds up to them.
    if kafka {
        let text = crate::common::metrics_text(&env.api.api.base).await;
        crate::metrics::promtool_check_metrics(
            &crate::metrics::promtool_or_explain(),
            "api",
            &text,
        );
        let ok = crate::common::metric(&text, "vodfarm_kafka_records_total{result=\"ok\"}")
            .expect("records counted");
        let beacons =
            crate::common::metric(&text, "vodfarm_kafka_record_beacons_sum").expect("beacons");
        let records =
            crate::common::metric(&text, "vodfarm_kafka_record_beacons_count").expect("records");
        assert_eq!(records, ok, "{text}");
        assert!(
            ok >= 1.0 && ok <= beacons,
            "{ok} records for {beacons} beacons"
        );
        assert_eq!(beacons, 460.0, "every beacon in exactly one record");
    }

    // The counter's /metrics pass promtool's lint.
    let text = crate::common::metrics_text(&counts.base).await;
    crate::metrics::promtool_check_metrics(&crate::metrics::promtool_or_explain(), "counts", &text);
    assert!(text.contains("vodfarm_counts_lag_entries 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stream_counts_exactly_through_three_sigkills() {
    exact_counts_through_kills(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_counts_exactly_through_three_sigkills() {
    exact_counts_through_kills(true).await;
}

/// Kafka consumers on tansu keep counting while the group rebalances
/// under load: 600 sessions (12,000 events) over six videos (spread over
/// the partitions) while a second and a third replica join, each join a
/// rebalance that finds the others mid-batch (a commit then fails with
/// REBALANCE_IN_PROGRESS; retrying it instead of polling kept a member
/// from the rebalance and stalled the group). The wait is on progress:
/// it fails only when the views stop moving for 90 s short of the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_consumers_keep_counting_while_replicas_join() {
    let env = Arc::new(AnalyticsEnv::start(true).await);
    let (_, first, channel) = env.ready_video(600).await;
    let mut videos = vec![first];
    for i in 1..6 {
        videos.push(env.video_in(channel, &format!("v{i}"), 600).await.1);
    }
    let mut replicas = vec![CountsProcess::start(&env, "joiner-1").await];
    let sessions = 600usize;
    let posted = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (env, posted, videos) = (env.clone(), posted.clone(), videos.clone());
        tokio::spawn(async move {
            for chunk in (0..sessions).collect::<Vec<_>>().chunks(8) {
                let mut set = tokio::task::JoinSet::new();
                for &i in chunk {
                    let (env, vid) = (env.clone(), videos[i % videos.len()].clone());
                    set.spawn(async move {
                        let body = session_body(&format!("j-{i}"), 20, 40.0, 600);
                        let (status, v) = env.beacons(&vid, &body, None).await;
                        assert_eq!(status, 202, "{v}");
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("post");
                }
                posted.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    for (at, name) in [(150, "joiner-2"), (300, "joiner-3")] {
        while posted.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replicas.push(CountsProcess::start(&env, name).await);
    }
    sender.await.expect("sender");
    // Every session watched 40 s of a 10-minute video: one view each.
    let mut redis = env.redis.clone();
    let (mut seen, mut moved) = (0i64, std::time::Instant::now());
    loop {
        // One MGET; a read the loaded machine answers too late (the
        // client's 500 ms) is just another poll.
        let keys: Vec<String> = videos
            .iter()
            .map(|vid| env.key(&format!("views:{vid}")))
            .collect();
        let read: redis::RedisResult<Vec<Option<i64>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut redis).await;
        let Ok(views) = read else {
            assert!(
                moved.elapsed() < Duration::from_secs(90),
                "Redis did not answer, at {seen} of {sessions} views"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let total: i64 = views.into_iter().flatten().sum();
        if total == sessions as i64 {
            break;
        }
        assert!(
            total < sessions as i64,
            "{total} views for {sessions} sessions"
        );
        if total != seen {
            (seen, moved) = (total, std::time::Instant::now());
        }
        assert!(
            moved.elapsed() < Duration::from_secs(90),
            "the consumers stalled at {seen} of {sessions} views"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for vid in &videos {
        assert_eq!(env.shown_views(vid).await, 100, "views of {vid}");
    }
    for r in &replicas {
        r.wait_drained(Duration::from_secs(120)).await;
    }
}

/// Each client address has a budget of beacon requests per window
/// (counted in Redis, so over every replica): past it, 429
/// `rate_limited` with Retry-After; another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_past_its_beacon_budget_is_refused_and_others_are_not() {
    let env = AnalyticsEnv::start_with(
        false,
        &[
            "--beacons-per-client",
            "3",
            "--beacon-window",
            "1h",
            "--client-ip-header",
            "X-Forwarded-For",
        ],
    )
    .await;
    let (_, vid, _) = env.ready_video(60).await;
    let post = |address: &'static str| {
        let env = &env;
        let vid = vid.clone();
        async move {
            let r = env
                .api
                .http
                .post(env.api.url(&format!("/v1/videos/{vid}/beacons")))
                .header("X-Forwarded-For", format!("198.51.100.1, {address}"))
                .json(&session_body(
                    &uuid::Uuid::new_v4().simple().to_string(),
                    1,
                    1.0,
                    60,
                ))
                .send()
                .await
                .expect("beacons");
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            (
                status,
                retry,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let hour = || chrono::Utc::now().timestamp() / 3600;
    let before = hour();
    let mut allowed = 0;
    let refused = loop {
        let (status, retry, body) = post("203.0.113.7").await;
        match status {
            202 => allowed += 1,
            429 => break (retry, body),
            other => panic!("{other}: {body}"),
        }
        assert!(allowed <= 6, "never refused");
    };
    // Exactly the budget, unless a window's edge passed meanwhile.
    if hour() == before {
        assert_eq!(allowed, 3);
    }
    let (retry, body) = refused;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(retry.is_some_and(|s| (1..=3600).contains(&s)), "{retry:?}");
    // Another address has its own budget; the refused one stays refused.
    assert_eq!(post("203.0.113.8").await.0, 202);
    if hour() == before {
        assert_eq!(post("203.0.113.7").await.0, 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beacons_are_checked_before_they_reach_the_bus() {
    let env = AnalyticsEnv::start(false).await;
    let (vpk, vid, _) = env.ready_video(60).await;
    let ok = session_body("ok-session", 3, 10.0, 60);
    let (status, v) = env.beacons(&vid, &ok, None).await;
    assert_eq!((status, v["accepted"].as_i64()), (202, Some(3)), "{v}");
    let mut stream = env.redis.clone();
    let len: i64 = redis::cmd("XLEN")
        .arg(env.key("playback"))
        .query_async(&mut stream)
        .await
        .expect("xlen");
    assert_eq!(len, 1, "the accepted beacon is one entry on the stream");
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(env.key("playback"))
        .arg("-")
        .arg("+")
        .query_async(&mut stream)
        .await
        .expect("xrange");
    let fields = &entries[0].1;
    assert_eq!(fields[0], "e", "{fields:?}");
    let events: Vec<Value> = serde_json::from_str(&fields[1]).expect("a JSON array");
    assert_eq!(events.len(), 3, "holding the accepted events: {events:?}");

    let now = chrono::Utc::now().timestamp() as f64;
    let event = |pos: f64, watched: f64, at: f64| {
        json!({"event_id": uuid::Uuid::new_v4(), "kind": "progress",
               "position_seconds": pos, "watched_seconds": watched, "at": at})
    };
    let bad: Vec<(Value, u16, &str)> = vec![
        (
            json!({"session_id": "s", "events": [event(70.0, 1.0, now)]}),
            422,
            "past the end",
        ),
        (
            json!({"session_id": "s", "events": [event(-1.0, 1.0, now)]}),
            422,
            "negative position",
        ),
        (
            json!({"session_id": "s", "events": [event(1.0, 1e7, now)]}),
            422,
            "absurd watch time",
        ),
        (
            json!({"session_id": "s", "events": [event(1.0, 1.0, now + 7200.0)]}),
            422,
            "clock ahead",
        ),
        (
            json!({"session_id": "s", "events": [event(1.0, 1.0, 1000.0)]}),
            422,
            "clock in 1970",
        ),
        (json!({"session_id": "s", "events": []}), 422, "no events"),
        (
            json!({"session_id": "a b", "events": [event(1.0, 1.0, now)]}),
            422,
            "bad session",
        ),
        (
            json!({"session_id": "s", "events": [{"event_id": "nope", "kind": "start",
            "position_seconds": 0, "watched_seconds": 0, "at": now}]}),
            422,
            "bad event id",
        ),
        (
            json!({"session_id": "s", "events": [{"event_id": uuid::Uuid::new_v4(), "kind": "pause",
            "position_seconds": 0, "watched_seconds": 0, "at": now}]}),
            422,
            "bad kind",
        ),
        (json!({"events": [event(1.0, 1.0, now)]}), 422, "no session"),
        (
            json!({"session_id": "s", "events": (0..101).map(|_| event(1.0, 1.0, now)).collect::<Vec<_>>()}),
            422,
            "101 events",
        ),
    ];
    for (body, want, what) in bad {
        let (status, v) = env.beacons(&vid, &body, None).await;
        assert_eq!(status, want, "{what}: {v}");
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
    }
    // Not JSON, and too large.
    let r = env
        .api
        .http
        .post(env.api.url(&format!("/v1/videos/{vid}/beacons")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let big = json!({"session_id": "s", "events": [], "pad": "x".repeat(70 * 1024)});
    let (status, _) = env.beacons(&vid, &big, None).await;
    assert_eq!(status, 413);
    // A bad token is an error, not anonymity.
    let (status, _) = env.beacons(&vid, &ok, Some("not-a-token")).await;
    assert_eq!(status, 401);

    // Unknown, non-ready, private (someone else's) and deleted: 404.
    let (status, _) = env.beacons("v_doesnotexist", &ok, None).await;
    assert_eq!(status, 404);
    let (_, other, _) = env.ready_video(60).await;
    let set = |status: &'static str, privacy: &'static str, id: String| {
        let pool = env.db().pool.clone();
        async move {
            sqlx::query("UPDATE videos SET status = $2, privacy = $3 WHERE video_id = $1")
                .bind(id)
                .bind(status)
                .bind(privacy)
                .execute(&pool)
                .await
                .expect("update");
        }
    };
    set("processing", "public", other.clone()).await;
    assert_eq!(env.beacons(&other, &ok, None).await.0, 404, "not ready");
    set("ready", "private", other.clone()).await;
    let (_, _, token) = env.viewer().await;
    assert_eq!(
        env.beacons(&other, &ok, Some(&token)).await.0,
        404,
        "private"
    );
    // The deleted video: through the api, as its owner would.
    let owner: (String,) = sqlx::query_as(
        "SELECT u.user_id FROM videos v JOIN channels c ON c.id = v.channel_id
         JOIN users u ON u.id = c.user_id WHERE v.id = $1",
    )
    .bind(vpk)
    .fetch_one(&env.db().pool)
    .await
    .expect("owner");
    let owner_pk: i64 = sqlx::query_scalar("SELECT id FROM users WHERE user_id = $1")
        .bind(&owner.0)
        .fetch_one(&env.db().pool)
        .await
        .expect("owner id");
    let mut conn = env.db().pool.acquire().await.expect("conn");
    let owner_token =
        vodfarm_core::auth::issue_token(&mut conn, owner_pk, None, Duration::from_secs(600))
            .await
            .expect("token")
            .token;
    drop(conn);
    let r = env
        .api
        .http
        .delete(env.api.url(&format!("/v1/videos/{vid}")))
        .bearer_auth(&owner_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let (status, v) = env
        .beacons(&vid, &session_body("late", 2, 5.0, 60), None)
        .await;
    assert_eq!(status, 404, "deleted video: {v}");
    let len: i64 = redis::cmd("XLEN")
        .arg(env.key("playback"))
        .query_async(&mut stream)
        .await
        .expect("xlen");
    assert_eq!(len, 1, "nothing refused reached the bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_likes_and_subscriptions_stay_exact() {
    let env = Arc::new(AnalyticsEnv::start(false).await);
    let (vpk, vid, channel) = env.ready_video(60).await;
    let channel_id: String = sqlx::query_scalar("SELECT channel_id FROM channels WHERE id = $1")
        .bind(channel)
        .fetch_one(&env.db().pool)
        .await
        .expect("channel");
    let mut tokens = Vec::new();
    for _ in 0..50 {
        tokens.push(env.viewer().await.2);
    }
    let send = |method: reqwest::Method, path: String, token: String| {
        let env = env.clone();
        async move {
            let r = env
                .api
                .http
                .request(method, env.api.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        }
    };
    // Everyone clicks twice, all at once.
    let mut set = tokio::task::JoinSet::new();
    for t in tokens.iter().chain(tokens.iter()) {
        set.spawn(send(
            reqwest::Method::PUT,
            format!("/v1/videos/{vid}/like"),
            t.clone(),
        ));
        set.spawn(send(
            reqwest::Method::PUT,
            format!("/v1/channels/{channel_id}/subscription"),
            t.clone(),
        ));
    }
    while let Some(r) = set.join_next().await {
        r.expect("click");
    }
    let likes: (i32, i64) = sqlx::query_as(
        "SELECT like_count, (SELECT count(*) FROM video_likes WHERE video_id = $1) FROM videos WHERE id = $1",
    )
    .bind(vpk)
    .fetch_one(&env.db().pool)
    .await
    .expect("likes");
    assert_eq!(likes, (50, 50));
    let subs: (i64, i64) = sqlx::query_as(
        "SELECT subscriber_count, (SELECT count(*) FROM subscriptions WHERE channel_id = $1) FROM channels WHERE id = $1",
    )
    .bind(channel)
    .fetch_one(&env.db().pool)
    .await
    .expect("subs");
    assert_eq!(subs, (50, 50));
    let (_, v) = env.get(&format!("/v1/videos/{vid}"), None).await;
    assert_eq!(v["like_count"], 50);
    // The feed of a subscriber shows the channel's video.
    let (status, feed) = env
        .get("/v1/me/subscriptions/videos", Some(&tokens[0]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(feed["videos"][0]["video_id"], vid.as_str(), "{feed}");

    // Half of them take it back, twice each, at once.
    let mut set = tokio::task::JoinSet::new();
    for t in tokens[..25].iter().chain(tokens[..25].iter()) {
        set.spawn(send(
            reqwest::Method::DELETE,
            format!("/v1/videos/{vid}/like"),
            t.clone(),
        ));
        set.spawn(send(
            reqwest::Method::DELETE,
            format!("/v1/channels/{channel_id}/subscription"),
            t.clone(),
        ));
    }
    while let Some(r) = set.join_next().await {
        r.expect("unclick");
    }
    let likes: i32 = sqlx::query_scalar("SELECT like_count FROM videos WHERE id = $1")
        .bind(vpk)
        .fetch_one(&env.db().pool)
        .await
        .expect("likes");
    let subs: i64 = sqlx::query_scalar("SELECT subscriber_count FROM channels WHERE id = $1")
        .bind(channel)
        .fetch_one(&env.db().pool)
        .await
        .expect("subs");
    assert_eq!((likes, subs), (25, 25));
    // Anonymous and unknown targets.
    let r = env
        .api
        .http
        .put(env.api.url(&format!("/v1/videos/{vid}/like")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 401);
    let r = env
        .api
        .http
        .put(env.api.url("/v1/channels/c_nosuchchannel/subscription"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_continue_watching_and_erasure() {
    let env = AnalyticsEnv::start(false).await;
    let (_, finished, channel) = env.ready_video(60).await;
    let (_, partial) = env.video_in(channel, "half watched", 600).await;
    let (_, user_id, token) = env.viewer().await;
    let mut counts = CountsProcess::start(&env, "history").await;
    let body = session_body("h-1", 4, 60.0, 60);
    assert_eq!(env.beacons(&finished, &body, Some(&token)).await.0, 202);
    let body = session_body("h-2", 4, 120.0, 600);
    assert_eq!(env.beacons(&partial, &body, Some(&token)).await.0, 202);
    counts.wait_drained(Duration::from_secs(60)).await;

    let (status, page) = env.get("/v1/me/history?limit=1", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let first = page["items"][0]["video"]["video_id"].clone();
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, page2) = env
        .get(
            &format!("/v1/me/history?limit=1&cursor={cursor}"),
            Some(&token),
        )
        .await;
    let second = page2["items"][0]["video"]["video_id"].clone();
    let mut seen = vec![
        first.as_str().unwrap_or_default().to_owned(),
        second.as_str().unwrap_or_default().to_owned(),
    ];
    seen.sort();
    let mut want = vec![finished.clone(), partial.clone()];
    want.sort();
    assert_eq!(seen, want, "{page} {page2}");
    assert!(page2["next_cursor"].is_null(), "{page2}");

    let (_, cont) = env.get("/v1/me/continue-watching", Some(&token)).await;
    let items = cont["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "only the unfinished one: {cont}");
    assert_eq!(items[0]["video"]["video_id"], partial.as_str());
    assert_eq!(items[0]["position_seconds"], 120);

    // Events still on the bus when the viewer erases must not bring the
    // history back: stop counting, watch more, erase, count again.
    drop(counts);
    let body = session_body("h-3", 4, 200.0, 600);
    assert_eq!(env.beacons(&partial, &body, Some(&token)).await.0, 202);
    let mut redis = env.redis.clone();
    redis::cmd("ZADD")
        .arg(env.key(&format!("recs:user:{user_id}")))
        .arg(1)
        .arg(&finished)
        .query_async::<()>(&mut redis)
        .await
        .expect("zadd");
    let r = env
        .api
        .http
        .delete(env.api.url("/v1/me/history"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("erase");
    assert_eq!(r.status(), 204);
    counts = CountsProcess::start(&env, "history").await;
    counts.wait_drained(Duration::from_secs(60)).await;
    let (_, page) = env.get("/v1/me/history", Some(&token)).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    let (_, cont) = env.get("/v1/me/continue-watching", Some(&token)).await;
    assert_eq!(cont["items"].as_array().map(Vec::len), Some(0), "{cont}");
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM watch_history WHERE user_id = $1)
              + (SELECT count(*) FROM watch_progress WHERE user_id = $1)",
    )
    .bind(&user_id)
    .fetch_one(&env.db().pool)
    .await
    .expect("rows");
    assert_eq!(rows, 0, "nothing of the history is left in PostgreSQL");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(env.key(&format!("recs:user:{user_id}")))
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "nor in Redis");
    let len: i64 = redis::cmd("XLEN")
        .arg(env.key("playback"))
        .query_async(&mut redis)
        .await
        .expect("xlen");
    assert_eq!(len, 0, "nor on the stream");
    // Later viewing is recorded again.
    let body = session_body("h-4", 2, 10.0, 600);
    assert_eq!(env.beacons(&partial, &body, Some(&token)).await.0, 202);
    counts.wait_drained(Duration::from_secs(60)).await;
    let (_, page) = env.get("/v1/me/history", Some(&token)).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(env.get("/v1/me/history", None).await.0, 401);
    assert_eq!(
        env.get("/v1/me/history?cursor=zzz", Some(&token)).await.0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recommendations_follow_co_views_and_never_show_hidden_videos() {
    let env = AnalyticsEnv::start(false).await;
    let (_, a, channel) = env.ready_video(60).await;
    let (_, b) = env.video_in(channel, "watched with a", 60).await;
    let (_, c) = env.video_in(channel, "popular", 60).await;
    let (_, hidden) = env.video_in(channel, "private later", 60).await;
    let (_, lonely, _) = env.ready_video(60).await;
    sqlx::query("UPDATE videos SET view_count = 1000 WHERE video_id = $1")
        .bind(&c)
        .execute(&env.db().pool)
        .await
        .expect("popular");
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(env.viewer().await);
    }
    // Viewers 0 and 1 watched a, b and hidden; viewer 2 only a.
    let history = [
        (0, &a),
        (0, &b),
        (0, &hidden),
        (1, &a),
        (1, &b),
        (1, &hidden),
        (2, &a),
    ];
    for (i, (who, video)) in history.iter().enumerate() {
        sqlx::query(
            "INSERT INTO watch_history (user_id, watched_at, video_id, watch_duration_seconds,
                                        completed, last_position_seconds, updated_at)
             VALUES ($1, now() - make_interval(secs => $3), $2, 30, false, 30, now())",
        )
        .bind(&viewers[*who].1)
        .bind(*video)
        .bind(i as f64)
        .execute(&env.db().pool)
        .await
        .expect("history");
    }
    sqlx::query("UPDATE videos SET privacy = 'private' WHERE video_id = $1")
        .bind(&hidden)
        .execute(&env.db().pool)
        .await
        .expect("private");
    let out = env.recs_once();
    assert!(out.starts_with("recommendations written"), "{out}");

    let (status, rel) = env.get(&format!("/v1/videos/{a}/related"), None).await;
    assert_eq!(status, 200, "{rel}");
    let ids: Vec<&str> = rel["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .filter_map(|v| v["video_id"].as_str())
        .collect();
    assert_eq!(ids.first(), Some(&b.as_str()), "co-viewed first: {rel}");
    assert!(
        !ids.contains(&a.as_str()) && !ids.contains(&hidden.as_str()),
        "{rel}"
    );
    // Whatever Redis holds, a hidden video is never shown.
    let mut redis = env.redis.clone();
    redis::cmd("ZADD")
        .arg(env.key(&format!("recs:related:{a}")))
        .arg(99)
        .arg(&hidden)
        .query_async::<()>(&mut redis)
        .await
        .expect("zadd");
    let (_, rel) = env.get(&format!("/v1/videos/{a}/related"), None).await;
    assert!(!rel.to_string().contains(&hidden), "{rel}");
    // Viewer 2 watched only a: b is recommended to them.
    let (_, mine) = env.get("/v1/me/recommendations", Some(&viewers[2].2)).await;
    assert_eq!(mine["videos"][0]["video_id"], b.as_str(), "{mine}");
    // No signal: the channel's most viewed, then overall.
    let (_, rel) = env.get(&format!("/v1/videos/{lonely}/related"), None).await;
    assert_eq!(rel["videos"][0]["video_id"], c.as_str(), "{rel}");
    assert!(!rel.to_string().contains(&lonely), "{rel}");
    // A second run swaps the lists atomically and drops stale ones.
    sqlx::query("UPDATE videos SET status = 'deleted' WHERE video_id = $1")
        .bind(&b)
        .execute(&env.db().pool)
        .await
        .expect("delete");
    env.recs_once();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(env.key(&format!("recs:related:{b}")))
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "a deleted video's list is gone");
}

#[tokio::test]
async fn scylla_watch_store_when_configured() {
    use vodfarm_analytics::watch::scylla::ScyllaWatchStore;
    use vodfarm_analytics::watch::{WatchRecord, WatchStore};
    let Ok(nodes) = std::env::var("SCYLLA_NODES") else {
        println!("NOT RUN: counts::scylla_watch_store_when_configured (set SCYLLA_NODES=host:port to run it)");
        return;
    };
    let nodes: Vec<String> = nodes.split(',').map(|s| s.trim().to_owned()).collect();
    let keyspace = format!("vodfarm_t_{}", uuid::Uuid::new_v4().simple());
    let store = ScyllaWatchStore::connect(&nodes, &keyspace, 1)
        .await
        .expect("connect scylla");
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(10);
    let rec = |video: &str, at_min: i64, pos: i32, upd_min: i64| WatchRecord {
        user_id: "u_scylla".into(),
        video_id: video.into(),
        watched_at: t0 + chrono::Duration::minutes(at_min),
        updated_at: t0 + chrono::Duration::minutes(upd_min),
        watch_duration_seconds: pos,
        position_seconds: pos,
        duration_seconds: 600,
        completed: false,
    };
    store
        .record(&[
            rec("v_a", 0, 10, 1),
            rec("v_b", 2, 300, 3),
            rec("v_b", 2, 100, 2),
        ])
        .await
        .expect("record");
    let h = store.history("u_scylla", None, 10).await.expect("history");
    assert_eq!(
        h.iter().map(|e| e.video_id.as_str()).collect::<Vec<_>>(),
        ["v_b", "v_a"]
    );
    assert_eq!(h[0].last_position_seconds, 300, "the newest event wins");
    let page = store
        .history(
            "u_scylla",
            Some((h[0].watched_at, h[0].video_id.clone())),
            10,
        )
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    let cont = store
        .continue_watching("u_scylla", 10)
        .await
        .expect("continue");
    assert_eq!(cont[0].video_id, "v_b");
    store.erase("u_scylla").await.expect("erase");
    assert!(store
        .history("u_scylla", None, 10)
        .await
        .expect("history")
        .is_empty());
}
