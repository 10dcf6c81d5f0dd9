//! The origin/shield server through real HTTP requests against real
//! `vodfarm origin` processes, a real object store (a directory store and
//! s3s-fs) and a fresh database per test.

use crate::common;
use crate::origin_support;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use origin_support::*;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vodfarm_core::signing::sign_playback_token;
use vodfarm_core::store::S3Store;
use vodfarm_core::testing::S3Server;

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn token(id: &str, ttl: i64) -> String {
    sign_playback_token(SECRET.as_bytes(), id, chrono::Utc::now().timestamp() + ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_semantics_of_every_route() {
    let db = TestDb::new().await;
    let local = LocalDir::new().await;
    let id = ready_video(&db).await;
    let seg = put_video(&local.store, &id, 300_000).await;
    let o = OriginProcess::start(&db, "store", &local.env(), &["--playlist-max-age", "1h"]).await;
    let c = reqwest::Client::new();
    let seg_url = o.url(&format!("/v/{id}/720p/segment_0.ts"));

    // GET: body, type, caching headers, CORS, surrogate key.
    let r = c.get(&seg_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(header(&h, "content-type"), "video/mp2t");
    assert_eq!(
        header(&h, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&h, "content-length"), "300000");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(header(&h, "access-control-allow-origin"), "*");
    assert_eq!(header(&h, "surrogate-key"), format!("video-{id}"));
    let etag = header(&h, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2);
    let last_modified = header(&h, "last-modified").to_owned();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert_eq!(r.bytes().await.unwrap(), seg);
    // Again: from the cache, same validator.
    let r = c.get(&seg_url).send().await.unwrap();
    assert_eq!(header(r.headers(), "etag"), etag);
    assert_eq!(r.bytes().await.unwrap(), seg);

    // HEAD: the same headers, no body.
    let r = c.head(&seg_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "content-length"), "300000");
    assert_eq!(header(r.headers(), "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());

    // Ranges: bounded, open-ended, suffix, unsatisfiable, multi (ignored).
    for (range, first, last) in [
        ("bytes=10-19", 10usize, 19usize),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=-50", 299_950, 299_999),
        ("bytes=299000-999999", 299_000, 299_999),
    ] {
        let r = c.get(&seg_url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(r.headers(), "content-range"),
            format!("bytes {first}-{last}/300000")
        );
        assert_eq!(r.bytes().await.unwrap(), seg.slice(first..=last), "{range}");
    }
    let r = c
        .get(&seg_url)
        .header("range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(r.headers(), "content-range"), "bytes */300000");
    let r = c
        .get(&seg_url)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // If-Range with a stale validator: the whole object.
    let r = c
        .get(&seg_url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Conditionals.
    let r = c
        .get(&seg_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(r.headers(), "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(&seg_url)
        .header("if-none-match", format!("\"nope\", W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&seg_url)
        .header("if-none-match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(&seg_url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&seg_url)
        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every route's type and caching.
    for (path, ctype, playlist) in [
        (
            format!("/v/{id}/master.m3u8"),
            "application/vnd.apple.mpegurl",
            true,
        ),
        (
            format!("/v/{id}/720p/playlist.m3u8"),
            "application/vnd.apple.mpegurl",
            true,
        ),
        (format!("/t/{id}/default.jpg"), "image/jpeg", false),
        (format!("/t/{id}/sprite.jpg"), "image/jpeg", false),
        (format!("/t/{id}/storyboard.vtt"), "text/vtt", false),
        // Subtitles can be replaced: revalidated like playlists.
        (format!("/s/{id}/en.vtt"), "text/vtt", true),
    ] {
        let r = c.get(o.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(r.headers(), "content-type").starts_with(ctype),
            "{path}"
        );
        let cc = header(r.headers(), "cache-control");
        if playlist {
            assert!(
                cc.starts_with("public, max-age=3600,") && cc.contains("stale-while-revalidate="),
                "{cc}"
            );
        } else {
            assert_eq!(cc, "public, max-age=31536000, immutable", "{path}");
        }
    }
    let master = c
        .get(o.url(&format!("/v/{id}/master.m3u8")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(master.contains("\n720p/playlist.m3u8\n"), "{master}");

    // CORS preflight; other methods refused.
    let r = c
        .request(reqwest::Method::OPTIONS, &seg_url)
        .header("origin", "https://player.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), "*");
    assert!(header(r.headers(), "access-control-allow-methods").contains("GET"));
    assert!(header(r.headers(), "access-control-allow-headers").contains("Range"));
    let r = c.post(&seg_url).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // A routed file the store does not have; paths outside the seed's
    // routes, sent raw so no client normalizes them.
    let r = c
        .get(o.url(&format!("/v/{id}/720p/segment_99.ts")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(
        raw_status(o.port, &format!("/v/{id}/master.m3u8")).await,
        200
    );
    for path in [
        format!("/originals/{id}/original.mp4"),
        format!("/v/{id}/../../originals/{id}/original.mp4"),
        format!("/v/{id}/%2e%2e/playlist.m3u8"),
        format!("/v/{id}%2F..%2F/master.m3u8"),
        format!("/v/..%2Foriginals%2F{id}/master.m3u8"),
        format!("/v/{id}/720p/segment_0.ts%00"),
        format!("/v/{id}/720p/segment_-1.ts"),
        format!("/t/{id}/../../originals/{id}/original.mp4"),
        format!("/s/{id}/..%2F..%2Foriginals.vtt"),
        format!("/v/{}/master.m3u8", "a".repeat(400)),
        format!("//v/{id}/master.m3u8"),
        "/".to_owned(),
        "/etc/passwd".to_owned(),
    ] {
        assert_eq!(raw_status(o.port, &path).await, 404, "{path}");
    }

    // HTTP/2 without TLS (prior knowledge), as a shield or a CDN may speak.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(&seg_url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), seg);

    // Operators.
    let r = c.get(o.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        o.metric("vodfarm_origin_requests_total{route=\"segment\",status=\"200\"}")
            .await
            >= 8.0
    );
    assert!(o.metric("vodfarm_origin_cache_hits_total").await >= 10.0);
    assert!(o.metric("vodfarm_origin_bytes_out_total").await >= 900_000.0);
    assert_eq!(
        o.metric("vodfarm_origin_upstream_fetches_total{outcome=\"ok\"}")
            .await,
        7.0,
        "one fetch per distinct object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_follows_the_database_at_once() {
    let db = TestDb::new().await;
    let local = LocalDir::new().await;
    let c = reqwest::Client::new();
    let id = ready_video(&db).await;
    let seg = put_video(&local.store, &id, 50_000).await;
    let o = OriginProcess::start(&db, "store", &local.env(), &[]).await;
    let seg_url = o.url(&format!("/v/{id}/720p/segment_0.ts"));
    let master_url = o.url(&format!("/v/{id}/master.m3u8"));
    let status = |url: String| {
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().status() }
    };

    // Unknown video, and a video that is not ready: 404 even if files exist.
    assert_eq!(status(o.url("/v/v_nosuchvideo/master.m3u8")).await, 404);
    let (_, processing) = insert_video(&db.pool).await;
    put_video(&local.store, &processing, 1000).await;
    assert_eq!(
        status(o.url(&format!("/v/{processing}/master.m3u8"))).await,
        404
    );
    assert_eq!(
        status(o.url(&format!("/v/{processing}/720p/segment_0.ts"))).await,
        404
    );
    // It becomes ready: served at once (the 404 was not remembered).
    set_video(&db, &processing, "status = 'ready'").await;
    within(Duration::from_secs(1), "ready video served", || async {
        status(o.url(&format!("/v/{processing}/master.m3u8"))).await == 200
    })
    .await;

    // Ready and cached.
    assert_eq!(
        c.get(&seg_url).send().await.unwrap().bytes().await.unwrap(),
        seg
    );
    assert_eq!(status(master_url.clone()).await, 200);
    assert!(o.metric("vodfarm_origin_cache_objects").await >= 2.0);

    // Private: 403 without a valid token, 200 with one; the viewer's
    // token is carried into the playlist's URIs.
    set_video(&db, &id, "privacy = 'private'").await;
    within(Duration::from_secs(1), "private video refused", || async {
        status(seg_url.clone()).await == 403
    })
    .await;
    let good = token(&id, 600);
    assert_eq!(status(format!("{seg_url}?token={good}")).await, 200);
    let r = c
        .get(format!("{master_url}?token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(r.headers(), "cache-control").starts_with("private"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("\n720p/playlist.m3u8?token={good}\n")),
        "{text}"
    );
    let expired = sign_playback_token(SECRET.as_bytes(), &id, chrono::Utc::now().timestamp() - 10);
    let other_video = token(&processing, 600);
    let wrong_secret = sign_playback_token(b"other", &id, chrono::Utc::now().timestamp() + 600);
    for bad in [expired, other_video, wrong_secret, "garbage".into()] {
        assert_eq!(status(format!("{seg_url}?token={bad}")).await, 403, "{bad}");
    }
    set_video(&db, &id, "privacy = 'unlisted'").await;
    within(Duration::from_secs(1), "unlisted video served", || async {
        status(seg_url.clone()).await == 200
    })
    .await;

    // The LISTEN connection is cut: the origin reconnects and still
    // honours every change.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "the origin's LISTEN connection");
    within(Duration::from_secs(10), "LISTEN back", || async {
        o.metric("vodfarm_origin_listen_connects_total").await == 2.0
            && o.metric("vodfarm_origin_listening").await == 1.0
    })
    .await;
    assert_eq!(status(seg_url.clone()).await, 200);
    assert_eq!(
        o.metric("vodfarm_origin_cache_objects").await,
        1.0,
        "refilled after the reconnect flush"
    );

    // Soft delete while cached: 404 within a second, bytes purged.
    set_video(&db, &id, "status = 'deleted'").await;
    let took = within(Duration::from_secs(1), "deleted video refused", || async {
        status(seg_url.clone()).await == 404
    })
    .await;
    assert!(took < Duration::from_secs(1));
    assert_eq!(status(master_url.clone()).await, 404);
    assert_eq!(status(format!("{seg_url}?token={good}")).await, 404);

    // Hard delete of the other video's row, too.
    let p_url = o.url(&format!("/v/{processing}/720p/segment_0.ts"));
    assert_eq!(status(p_url.clone()).await, 200);
    sqlx::query("DELETE FROM videos WHERE video_id = $1")
        .bind(&processing)
        .execute(&db.pool)
        .await
        .unwrap();
    within(
        Duration::from_secs(1),
        "hard-deleted video refused",
        || async { status(p_url.clone()).await == 404 },
    )
    .await;
    within(Duration::from_secs(1), "cache purged", || async {
        o.metric("vodfarm_origin_cache_objects").await == 0.0
    })
    .await;
    assert!(o.metric("vodfarm_origin_invalidations_total").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chain_of_tiers_fetches_once_and_deletes_everywhere() {
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let store = S3Store::with_client(s3.client(), "vod", "");
    store.ensure_bucket().await.unwrap();
    let id = ready_video(&db).await;
    let seg = put_video(&store, &id, 2 * 1024 * 1024).await;
    let mut env = s3.env();
    env.push(("VODFARM_STORE", "s3://vod".into()));
    let shield = OriginProcess::start(&db, "store", &env, &[]).await;
    let edge = OriginProcess::start(&db, &shield.base, &[], &[]).await;
    let path = format!("/v/{id}/720p/segment_0.ts");

    // 200 concurrent requests for one cold segment at the edge.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, url, b) = (client.clone(), edge.url(&path), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let r = c.get(url).send().await.unwrap();
            (r.status(), r.bytes().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body == seg, "a waiter got different bytes");
    }
    let ok = "vodfarm_origin_upstream_fetches_total{outcome=\"ok\"}";
    assert_eq!(shield.metric(ok).await, 1.0, "fetches at the store");
    assert_eq!(edge.metric(ok).await, 1.0, "fetches at the shield");
    assert_eq!(
        shield
            .metric("vodfarm_origin_requests_total{route=\"segment\",status=\"200\"}")
            .await,
        1.0
    );
    assert_eq!(edge.metric("vodfarm_origin_cache_misses_total").await, 1.0);
    let joined = edge.metric("vodfarm_origin_coalesced_waiters_total").await
        + edge.metric("vodfarm_origin_cache_hits_total").await;
    assert_eq!(joined, 199.0);

    // Private through the chain: the edge signs its own fetches.
    set_video(&db, &id, "privacy = 'private'").await;
    let seg1 = format!("/v/{id}/720p/segment_1.ts");
    within(Duration::from_secs(1), "private at the edge", || async {
        reqwest::get(edge.url(&seg1)).await.unwrap().status() == 403
    })
    .await;
    let r = reqwest::get(edge.url(&format!("{seg1}?token={}", token(&id, 60))))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 2 * 1024 * 1024);
    set_video(&db, &id, "privacy = 'public'").await;

    // Delete while cached at both tiers: 404 within a second at both.
    within(Duration::from_secs(1), "public again", || async {
        reqwest::get(edge.url(&path)).await.unwrap().status() == 200
    })
    .await;
    set_video(&db, &id, "status = 'deleted'").await;
    for tier in [&edge, &shield] {
        within(Duration::from_secs(1), "deleted at a tier", || async {
            reqwest::get(tier.url(&path)).await.unwrap().status() == 404
        })
        .await;
    }
    for tier in [&edge, &shield] {
        within(Duration::from_secs(1), "bytes purged", || async {
            tier.metric("vodfarm_origin_cache_objects").await == 0.0
        })
        .await;
    }
}

/// An upstream tier under the test's control: it answers segment_0 with
/// the first half of the body, then waits for `release` before sending the
/// rest; it never answers segment_1.
struct GatedUpstream {
    port: u16,
    requests: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

impl GatedUpstream {
    async fn start(body: Bytes) -> GatedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (r2, rel2) = (requests.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (r3, rel3, body) = (r2.clone(), rel2.clone(), body.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    r3.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head);
                    if text.contains("segment_1.ts") {
                        // Never answer; hold the connection.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let half = body.len() / 2;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"gated\"\r\nContent-Type: video/mp2t\r\n\r\n",
                        body.len()
                    );
                    s.write_all(resp.as_bytes()).await.unwrap();
                    s.write_all(&body[..half]).await.unwrap();
                    s.flush().await.unwrap();
                    rel3.notified().await;
                    s.write_all(&body[half..]).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        GatedUpstream {
            port,
            requests,
            release,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_stream_before_the_fetch_ends_and_timeouts_answer_502() {
    let db = TestDb::new().await;
    let id = ready_video(&db).await;
    let body = bytes_of(1024 * 1024, 7);
    let up = GatedUpstream::start(body.clone()).await;
    let edge = OriginProcess::start(
        &db,
        &format!("http://127.0.0.1:{}", up.port),
        &[],
        &["--upstream-timeout", "3s"],
    )
    .await;
    let url = edge.url(&format!("/v/{id}/720p/segment_0.ts"));
    let half = body.len() / 2;

    // Three viewers; each must receive the first half while the upstream
    // still holds the second (if the origin waited for the end, this
    // would never happen and the test would time out).
    let (got_half_tx, mut got_half_rx) = tokio::sync::mpsc::channel::<()>(3);
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let (url, tx) = (url.clone(), got_half_tx.clone());
        viewers.push(tokio::spawn(async move {
            let r = reqwest::get(url).await.unwrap();
            assert_eq!(r.status(), 200);
            let mut stream = r.bytes_stream();
            let mut got = Vec::new();
            let mut told = false;
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
                if !told && got.len() >= half {
                    told = true;
                    tx.send(()).await.unwrap();
                }
            }
            got
        }));
    }
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(20), got_half_rx.recv())
            .await
            .expect("a waiter did not get the first half while the fetch ran")
            .unwrap();
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    up.release.notify_waiters();
    for v in viewers {
        assert!(v.await.unwrap() == body[..]);
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        edge.metric("vodfarm_origin_coalesced_waiters_total").await,
        2.0
    );
    // Cached now.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);

    // An upstream that does not answer: a clear 502 once the timeout passes.
    let r = reqwest::get(edge.url(&format!("/v/{id}/720p/segment_1.ts")))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_timeout");
    assert_eq!(
        edge.metric("vodfarm_origin_upstream_fetches_total{outcome=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_objects_survive_a_dead_upstream() {
    let db = TestDb::new().await;
    let local = LocalDir::new().await;
    let id = ready_video(&db).await;
    let seg = put_video(&local.store, &id, 100_000).await;
    let mut shield = OriginProcess::start(&db, "store", &local.env(), &[]).await;
    let edge = OriginProcess::start(
        &db,
        &shield.base,
        &[],
        &["--playlist-max-age", "1s", "--upstream-timeout", "2s"],
    )
    .await;
    let seg_path = format!("/v/{id}/720p/segment_0.ts");
    let pl_path = format!("/v/{id}/720p/playlist.m3u8");
    let playlist = reqwest::get(edge.url(&pl_path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        reqwest::get(edge.url(&seg_path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        seg
    );

    shield.kill();
    // The segment is immutable: served from the cache.
    let r = reqwest::get(edge.url(&seg_path)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), seg);
    let r = reqwest::Client::new()
        .get(edge.url(&seg_path))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), seg.slice(seg.len() - 10..));
    // The playlist expires (max-age 1 s here); revalidation fails, so the
    // expired copy is served (stale-if-error).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = reqwest::get(edge.url(&pl_path)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), playlist);
    assert!(edge.metric("vodfarm_origin_stale_served_total").await >= 1.0);
    // Nothing cached for this one: a clear 502.
    let r = reqwest::get(edge.url(&format!("/v/{id}/720p/segment_2.ts")))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_failed");
    // A delete is still honoured without the upstream.
    set_video(&db, &id, "status = 'deleted'").await;
    within(Duration::from_secs(1), "deleted", || async {
        reqwest::get(edge.url(&seg_path)).await.unwrap().status() == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_stream_through_uncached() {
    let db = TestDb::new().await;
    let local = LocalDir::new().await;
    let id = ready_video(&db).await;
    let seg = put_video(&local.store, &id, 300_000).await;
    let o =
        OriginProcess::start(&db, "store", &local.env(), &["--max-object-size", "100KiB"]).await;
    let url = o.url(&format!("/v/{id}/720p/segment_0.ts"));
    let c = reqwest::Client::new();
    for _ in 0..2 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "content-length"), "300000");
        assert_eq!(r.bytes().await.unwrap(), seg);
    }
    let r = c
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(r.headers(), "content-range"),
        "bytes 1000-1999/300000"
    );
    assert_eq!(r.bytes().await.unwrap(), seg.slice(1000..2000));
    let r = c
        .get(&url)
        .header("range", "bytes=400000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert!(o.metric("vodfarm_origin_passthrough_total").await >= 3.0);
    // Small objects are still cached.
    let r = c
        .get(o.url(&format!("/v/{id}/master.m3u8")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(o.metric("vodfarm_origin_cache_objects").await, 1.0);
}
