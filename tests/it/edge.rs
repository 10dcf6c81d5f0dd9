//! The CDN edge: Varnish (`deploy/varnish/vodfarm.vcl`) → shield →
//! origin → store, the api, the purger and a coordinator, all real
//! processes on a PostgreSQL cluster the test owns.
//!
//! - Segments are edge hits from the second request on; a video deleted
//!   or made private through the api leaves the edge within 2 s (the
//!   purge outbox, `vodfarm purger`, `PURGE` + `Surrogate-Key`); a purge
//!   sent while Varnish is unreachable (frozen, cache kept) or down
//!   (restarted) is delivered once it is back.
//! - The database stopped (`pg_ctl stop`) while a player keeps fetching:
//!   known videos keep streaming through every tier, cached and uncached
//!   segments alike; an unknown video answers 503, a private one 403
//!   without a token; no role exits. Once the database is back a delete
//!   is 404 everywhere within 2 s, the edge included.
//! - Two purger replicas share the outbox: each purge reaches each edge
//!   exactly once, and an edge that is down does not make the purger
//!   purge the others again while it retries.

use crate::common::{free_port, insert_video, metric, TestDb};
use crate::edge_support::{purger, wait_listening, CountingEdge, Edge, Varnish};
use crate::origin_support::within;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn segment(id: &str, n: u32) -> String {
    format!("/v/{id}/720p/segment_{n}.ts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_and_privacy_changes_reach_the_edge_even_after_it_was_down() {
    let mut edge = Edge::start().await;
    let e = edge.edge();

    // The edge caches by the origin's headers: a hit from the second
    // request on; the keys it bans on are not shown to viewers.
    let a = edge.ready_video("public").await;
    assert_eq!(edge.get(&e, &segment(&a, 0)).await, (200, "MISS".into()));
    assert_eq!(edge.get(&e, &segment(&a, 0)).await, (200, "HIT".into()));
    let master = format!("/v/{a}/master.m3u8");
    assert_eq!(edge.get(&e, &master).await.0, 200);
    assert_eq!(edge.get(&e, &master).await, (200, "HIT".into()));
    let from_shield = edge
        .http
        .get(edge.shield.url(&segment(&a, 0)))
        .send()
        .await
        .expect("shield");
    assert_eq!(from_shield.headers()["surrogate-key"], format!("video-{a}"));
    assert_eq!(from_shield.headers()["cache-tag"], format!("video-{a}"));
    let at_edge = edge
        .http
        .get(edge.varnish.url(&segment(&a, 0)))
        .send()
        .await
        .expect("edge");
    assert!(at_edge.headers().get("surrogate-key").is_none());

    // Deleted through the api: gone from the edge within 2 s.
    edge.delete(&a).await;
    let took = within(
        Duration::from_secs(2),
        "a deleted video leaves the edge",
        || {
            let (edge, e, a) = (&edge, &e, &a);
            async move { edge.get(e, &segment(a, 0)).await.0 == 404 }
        },
    )
    .await;
    println!("deleted video gone from the edge after {took:?}");
    assert_eq!(edge.get(&e, &master).await.0, 404);
    // Sent twice (the second round catches answers already on their
    // way), acknowledged both times, done.
    within(Duration::from_secs(15), "the purge is done", || {
        let (edge, a) = (&edge, &a);
        async move { edge.purges(a).await == [("deleted".to_owned(), true, 2, None)] }
    })
    .await;

    // Public → private: 403 at the edge without a token within 2 s; the
    // owner's token plays, never from the edge's cache.
    let b = edge.ready_video("public").await;
    assert_eq!(edge.get(&e, &segment(&b, 0)).await.0, 200);
    assert_eq!(edge.get(&e, &segment(&b, 0)).await, (200, "HIT".into()));
    edge.set_privacy(&b, "private").await;
    within(
        Duration::from_secs(2),
        "a privated video leaves the edge",
        || {
            let (edge, e, b) = (&edge, &e, &b);
            async move { edge.get(e, &segment(b, 0)).await.0 == 403 }
        },
    )
    .await;
    let q = edge.playback_query(&b).await;
    let with_token = format!("{}{q}", segment(&b, 0));
    assert_eq!(edge.get(&e, &with_token).await, (200, "MISS".into()));
    assert_eq!(edge.get(&e, &with_token).await, (200, "MISS".into()));
    assert_eq!(edge.purges(&b).await[0].0, "private");

    // Varnish unreachable (frozen: the port accepts, nothing answers, the
    // cache is kept): the purge is retried until it is back.
    let c = edge.ready_video("public").await;
    assert_eq!(edge.get(&e, &segment(&c, 0)).await.0, 200);
    assert_eq!(edge.get(&e, &segment(&c, 0)).await, (200, "HIT".into()));
    edge.varnish.freeze();
    edge.delete(&c).await;
    within(Duration::from_secs(20), "the purger retries", || {
        let (edge, c) = (&edge, &c);
        async move {
            let rows = edge.purges(c).await;
            rows.len() == 1 && !rows[0].1 && rows[0].3.is_some()
        }
    })
    .await;
    assert_eq!(edge.get(&edge.shield.base, &segment(&c, 0)).await.0, 404);
    edge.varnish.thaw();
    within(
        Duration::from_secs(10),
        "the purge reaches the edge",
        || {
            let (edge, e, c) = (&edge, &e, &c);
            async move { edge.get(e, &segment(c, 0)).await.0 == 404 }
        },
    )
    .await;
    within(Duration::from_secs(20), "the purge is done", || {
        let (edge, c) = (&edge, &c);
        async move { edge.purges(c).await[0].1 }
    })
    .await;

    // Varnish down (killed, then started again on the same port): the
    // purge sent meanwhile reaches the new instance.
    let d = edge.ready_video("public").await;
    assert_eq!(edge.get(&e, &segment(&d, 0)).await.0, 200);
    let port = edge.varnish.port;
    edge.varnish.kill();
    edge.delete(&d).await;
    within(Duration::from_secs(20), "the purger retries", || {
        let (edge, d) = (&edge, &d);
        async move {
            let rows = edge.purges(d).await;
            rows.len() == 1 && !rows[0].1 && rows[0].3.is_some()
        }
    })
    .await;
    edge.varnish = Varnish::start_on(port, edge.shield.port).await;
    within(
        Duration::from_secs(20),
        "the ban reaches the new Varnish",
        || {
            let (edge, d) = (&edge, &d);
            async move { edge.varnish.bans().contains(&format!("video-{d}")) }
        },
    )
    .await;
    within(Duration::from_secs(20), "the purge is done", || {
        let (edge, d) = (&edge, &d);
        async move { edge.purges(d).await[0].1 }
    })
    .await;

    // The purger's metrics tell the story: errors to this edge, nothing
    // pending any more.
    let text = reqwest::get(format!("{}/metrics", edge.purger.base))
        .await
        .expect("purger metrics")
        .text()
        .await
        .expect("metrics text");
    assert_eq!(metric(&text, "vodfarm_purger_backlog"), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "vodfarm_purger_oldest_pending_seconds"),
        Some(0.0)
    );
    let target = edge.varnish.url("/");
    let errors: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("vodfarm_purger_requests_total{")
                && l.contains("outcome=\"error\"")
                && l.contains(&format!("target=\"{target}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 2.0, "{text}");
    assert!(metric(&text, "vodfarm_purger_purges_completed_total").is_some_and(|n| n >= 3.0));
    edge.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_videos_keep_streaming_while_the_database_is_down() {
    let mut edge = Edge::start().await;
    let e = edge.edge();
    let p = edge.ready_video("public").await;
    let private = edge.ready_video("private").await;
    let unknown = edge.ready_video("public").await;
    let token = edge.playback_query(&private).await;

    // A viewer watches the public and the private video once through
    // every tier, so each tier knows both.
    for path in [
        format!("/v/{p}/master.m3u8"),
        format!("/v/{p}/720p/playlist.m3u8"),
        segment(&p, 0),
    ] {
        assert_eq!(edge.get(&e, &path).await.0, 200, "{path}");
    }
    for path in [
        format!("/v/{private}/master.m3u8{token}"),
        format!("{}{token}", segment(&private, 0)),
    ] {
        assert_eq!(edge.get(&e, &path).await.0, 200, "{path}");
    }

    // A player keeps fetching the playlists and the first segment.
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let fetched = Arc::new(AtomicUsize::new(0));
    let player = {
        let (stop, errors, fetched) = (stop.clone(), errors.clone(), fetched.clone());
        let (e, p) = (e.clone(), p.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let paths = [
                format!("/v/{p}/master.m3u8"),
                format!("/v/{p}/720p/playlist.m3u8"),
                segment(&p, 0),
            ];
            while !stop.load(Ordering::SeqCst) {
                for path in &paths {
                    let status = match http.get(format!("{e}{path}")).send().await {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes().await;
                            s
                        }
                        Err(_) => 0,
                    };
                    fetched.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        errors.lock().expect("errors").push((path.clone(), status));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    edge.cluster.stop().await;
    let before = fetched.load(Ordering::SeqCst);

    // Segments nobody fetched yet come from the store through every tier.
    assert_eq!(edge.get(&e, &segment(&p, 1)).await, (200, "MISS".into()));
    assert_eq!(edge.get(&e, &segment(&p, 1)).await, (200, "HIT".into()));
    assert_eq!(edge.get(&edge.shield.base, &segment(&p, 2)).await.0, 200);
    assert_eq!(edge.get(&edge.origin.base, &segment(&p, 2)).await.0, 200);
    assert_eq!(edge.get(&e, &segment(&p, 2)).await.0, 200);
    // A video no tier has seen cannot be decided: 503.
    assert_eq!(edge.get(&e, &segment(&unknown, 0)).await.0, 503);
    assert_eq!(
        edge.get(&edge.shield.base, &segment(&unknown, 0)).await.0,
        503
    );
    // The private video still needs its token (checked without the
    // database); with it, it plays.
    assert_eq!(edge.get(&e, &segment(&private, 1)).await.0, 403);
    assert_eq!(
        edge.get(&e, &format!("{}{token}", segment(&private, 1)))
            .await
            .0,
        200
    );
    for tier in [&edge.origin, &edge.shield] {
        assert_eq!(tier.metric("vodfarm_origin_degraded").await, 1.0);
        assert!(
            tier.metric("vodfarm_origin_stale_state_answers_total")
                .await
                >= 1.0
        );
    }
    assert!(
        edge.shield
            .metric("vodfarm_origin_state_unavailable_total")
            .await
            >= 1.0
    );
    // A while into the outage (reapers, sweeps, LISTEN retries run):
    // every role is still up, the player still plays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    edge.assert_all_alive();
    assert!(
        fetched.load(Ordering::SeqCst) > before,
        "the player stalled"
    );

    edge.cluster.restart().await;
    for base in [&edge.origin.base, &edge.shield.base, &edge.purger.base] {
        wait_listening(base, Duration::from_secs(30)).await;
    }
    stop.store(true, Ordering::SeqCst);
    player.await.expect("player");
    let errors = errors.lock().expect("errors").clone();
    assert!(
        errors.is_empty(),
        "the player got errors: {errors:?} ({} fetches)",
        fetched.load(Ordering::SeqCst)
    );

    // States are read again: a delete now is 404 on every tier within
    // 2 s, the edge included.
    edge.delete(&p).await;
    within(Duration::from_secs(2), "a delete after the outage", || {
        let (edge, e, p) = (&edge, &e, &p);
        async move {
            edge.get(&edge.origin.base, &segment(p, 0)).await.0 == 404
                && edge.get(&edge.shield.base, &segment(p, 0)).await.0 == 404
                && edge.get(e, &segment(p, 0)).await.0 == 404
                && edge.get(e, &segment(p, 1)).await.0 == 404
        }
    })
    .await;
    for tier in [&edge.origin, &edge.shield] {
        assert_eq!(tier.metric("vodfarm_origin_degraded").await, 0.0);
    }
    // The unknown video is known now.
    assert_eq!(edge.get(&e, &segment(&unknown, 0)).await.0, 200);
    edge.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_outbox_and_a_dead_edge_does_not_repurge_the_others() {
    let db = TestDb::new().await;
    let up = CountingEdge::start_on(free_port()).await;
    // The second edge is down until later: nothing listens on its port.
    let down_port = free_port();
    let urls = [up.url(), format!("http://127.0.0.1:{down_port}/")];
    let _a = purger(&db.url, &urls).await;
    let _b = purger(&db.url, &urls).await;

    let mut ids = Vec::new();
    for _ in 0..40 {
        let (_, id) = insert_video(&db.pool).await;
        ids.push(id);
    }
    sqlx::query("UPDATE videos SET status = 'ready' WHERE video_id = ANY($1)")
        .bind(&ids)
        .execute(&db.pool)
        .await
        .expect("ready");
    // One statement deletes them all: 40 purges in one transaction.
    sqlx::query("UPDATE videos SET status = 'deleted' WHERE video_id = ANY($1)")
        .bind(&ids)
        .execute(&db.pool)
        .await
        .expect("delete");
    within(
        Duration::from_secs(20),
        "the live edge gets every purge",
        || {
            let (up, ids) = (&up, &ids);
            async move { up.counts().len() == ids.len() }
        },
    )
    .await;
    // Retries for the dead edge go on for a while …
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cdn_purges WHERE done_at IS NULL AND last_error IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .expect("failed purges");
    assert_eq!(
        failed,
        ids.len() as i64,
        "every purge waits for the dead edge"
    );
    // … without purging the live one again.
    let counts = up.counts();
    for id in &ids {
        assert_eq!(
            counts.get(&format!("video-{id}")),
            Some(&1),
            "{id}: {counts:?}"
        );
    }

    // The dead edge comes up: it gets each purge once, and the outbox
    // empties.
    let late = CountingEdge::start_on(down_port).await;
    within(Duration::from_secs(20), "every purge is done", || {
        let db = &db;
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cdn_purges WHERE done_at IS NULL")
                .fetch_one(&db.pool)
                .await
                .expect("pending")
                == 0
        }
    })
    .await;
    let late_counts = late.counts();
    let up_counts = up.counts();
    for id in &ids {
        let key = format!("video-{id}");
        assert_eq!(late_counts.get(&key), Some(&1), "{id}: {late_counts:?}");
        assert_eq!(up_counts.get(&key), Some(&1), "{id}: {up_counts:?}");
    }
}
