//! `cargo bench --bench counts`: playback events end to end against
//! their floor.
//!
//! Ours: beacons of 100 events through a real `vodfarm api` (validation,
//! the event bus) and a real `vodfarm counts` (consumer group, the
//! idempotent Lua script) into Redis, from `BENCH_CLIENTS` concurrent
//! players; events/s from the first request until the counter applied
//! the last event (after an untimed warm-up session, so a Kafka consumer
//! has its partitions). Lag: for every 20th request, the time from the api's
//! 202 until its session appears in Redis (polled every 2 ms).
//! Floor: the same increments (dedup key, watch-time sum, HyperLogLog,
//! view counter) sent straight to Redis, pipelined, in the same run.
//!
//! Backends: the Redis Stream always; Kafka too when a `tansu` binary is
//! found (or `BENCH_KAFKA_BROKERS` is set). Environment:
//! `VODFARM_BENCH_PG` (default the local server), `BENCH_EVENTS`
//! (1000000: about 20 s per backend; a 200,000-event run lasts 4 s and
//! its Kafka figure moved by 10 % from run to run), `BENCH_CLIENTS`
//! (16), `BENCH_BACKENDS` (`kafka,redis`), `BENCH_LOG` (`RUST_LOG` of
//! the roles and the broker, `warn`), `BENCH_KAFKA_DELAY_MS` (0: the
//! bench's tansu is reached through a proxy that delays every chunk this
//! long each way, a broker further away than loopback). A run whose counts stop moving for
//! a minute fails, saying so. The last line is
//! `counts: ours=<events/s> floor=<events/s> ratio=<r> lag_p99_ms=<l>`
//! (the Redis Stream's figures; Kafka's line comes before it).

use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `RUST_LOG` of the roles and the broker (`BENCH_LOG`, default `warn`;
/// e.g. `warn,librdkafka=debug` with `VODFARM_KAFKA_DEBUG=cgrp,fetch`).
fn role_log() -> String {
    std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

/// Whether `backend` (`kafka`, `redis`) is to run (`BENCH_BACKENDS`,
/// default both).
fn wanted(backend: &str) -> bool {
    std::env::var("BENCH_BACKENDS").map_or(true, |b| b.split(',').any(|x| x.trim() == backend))
}

fn tansu_bin() -> Option<String> {
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let p = format!("{home}/bin/tansu");
    std::path::Path::new(&p).exists().then_some(p)
}

/// Forwards every connection on `listener` to 127.0.0.1:`target`, each
/// chunk in either direction `delay` late (in order): a broker `2 ×
/// delay` away, as a replicated `acks=all` write across zones is.
async fn delay_proxy(listener: tokio::net::TcpListener, target: u16, delay: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (br, bw) = broker.into_split();
            tokio::join!(delayed(cr, bw, delay), delayed(br, cw, delay));
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// How long the counts may stay still before a run is declared stalled.
const STALL: Duration = Duration::from_secs(60);

struct Figures {
    ours: f64,
    lag_p99_ms: f64,
}

/// One end-to-end run on `kafka` (None: the Redis Stream).
async fn run_ours(
    db_url: &str,
    video: &str,
    kafka: Option<&str>,
    events: usize,
    clients: usize,
) -> anyhow::Result<Figures> {
    let prefix = format!("bench{}:", uuid::Uuid::new_v4().simple());
    let store = tempfile::tempdir()?;
    let mut common: Vec<String> = vec![
        "--database-url".into(),
        db_url.into(),
        "--redis-prefix".into(),
        prefix.clone(),
    ];
    if let Some(k) = kafka {
        common.extend(["--kafka-brokers".into(), k.into()]);
    }
    let api_port = free_port()?;
    let api_proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("api")
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--store", &format!("file://{}", store.path().display())])
            .args(["--signing-secret", "bench"])
            // Every client is 127.0.0.1: a budget that is never spent,
            // but still counted in Redis per request as in production.
            .args(["--beacons-per-client", "1000000000"])
            .args(&common)
            .env("RUST_LOG", role_log())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let counts_port = free_port()?;
    let counts_proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("counts")
            .args(["--listen", &format!("127.0.0.1:{counts_port}")])
            .args(["--consumer-name", "bench", "--batch-size", "1000"])
            .args(&common)
            .env("RUST_LOG", role_log())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let api = format!("http://127.0.0.1:{api_port}");
    wait_ready(&format!("{api}/readyz")).await?;
    wait_ready(&format!("http://127.0.0.1:{counts_port}/readyz")).await?;
    let redis = redis::Client::open("redis://127.0.0.1:6379")?;
    let conn = redis.get_multiplexed_async_connection().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let requests = events.div_ceil(100);
    let now = chrono::Utc::now().timestamp() as f64;
    let views_key = format!("{prefix}views:{video}");
    // Warm-up, not timed: one session through, so the consumer has joined
    // its group (Kafka assigns partitions a while after subscribing).
    let warm: Vec<serde_json::Value> = (0..2)
        .map(|k| {
            serde_json::json!({"event_id": uuid::Uuid::new_v4(), "kind": "progress",
                "position_seconds": 60.0 * f64::from(k), "watched_seconds": 60.0 * f64::from(k),
                "at": now})
        })
        .collect();
    let r = http
        .post(format!("{api}/v1/videos/{video}/beacons"))
        .json(&serde_json::json!({"session_id": "warm-up", "events": warm}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 202, "warm-up beacons: {}", r.status());
    let joined = Instant::now();
    let mut c = conn.clone();
    loop {
        let v: Option<usize> = redis::cmd("GET")
            .arg(&views_key)
            .query_async(&mut c)
            .await?;
        if v == Some(1) {
            break;
        }
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(300),
            "counts never consumed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  warm-up: the first event counted {:.1} s after its 202",
        joined.elapsed().as_secs_f64()
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lags = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, api, video, next, lags, prefix) = (
            http.clone(),
            api.clone(),
            video.to_owned(),
            next.clone(),
            lags.clone(),
            prefix.clone(),
        );
        let mut conn = conn.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return Ok::<(), anyhow::Error>(());
                }
                let session = format!("b{i}");
                let r = http
                    .post(format!("{api}/v1/videos/{video}/beacons"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(beacon_body(&session, now))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 202, "beacons: {}", r.status());
                if i % 20 == 0 {
                    let t0 = Instant::now();
                    let key = format!("{prefix}sess:{video}:{session}");
                    loop {
                        let n: i64 = redis::cmd("EXISTS")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                        if n == 1 {
                            break;
                        }
                        // A stalled consumer ends the run with a reason
                        // instead of hanging it.
                        anyhow::ensure!(
                            t0.elapsed() < STALL,
                            "session {session} not counted {} s after its 202: the consumer stalled",
                            STALL.as_secs()
                        );
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    lags.lock()
                        .map_err(|_| anyhow::anyhow!("lock"))?
                        .push(t0.elapsed());
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // Every session counted one view (99 s watched ≥ 30 s): done when the
    // view counter reaches the number of sessions (plus the warm-up's).
    // Done when the counter reaches it; a counter that stops moving for
    // STALL ends the run.
    let (mut seen, mut moved) = (0, Instant::now());
    loop {
        let v: Option<usize> = redis::cmd("GET")
            .arg(&views_key)
            .query_async(&mut c)
            .await?;
        let v = v.unwrap_or(0);
        if v > requests {
            break;
        }
        if v != seen {
            (seen, moved) = (v, Instant::now());
        }
        anyhow::ensure!(
            moved.elapsed() < STALL,
            "counts stalled: {seen} of {} views, none for {} s",
            requests + 1,
            STALL.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lags = lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    lags.sort();
    let p99 = lags
        .get((lags.len() * 99 / 100).min(lags.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    // Stop the roles first: a consumer blocked on the stream would see
    // its key vanish.
    drop(counts_proc);
    drop(api_proc);
    cleanup(&mut c, &prefix).await?;
    Ok(Figures {
        ours: (requests * 100) as f64 / elapsed,
        lag_p99_ms: p99.as_secs_f64() * 1000.0,
    })
}

/// A beacon of 100 progress events (0..99 s watched) of `session`,
/// written straight into a string: the clients share the two cores with
/// what they measure, and every cycle spent building `serde_json::Value`
/// maps per event is one the api, the bus and Redis do not get.
fn beacon_body(session: &str, now: f64) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(100 * 128 + 64);
    let _ = write!(body, r#"{{"session_id":"{session}","events":["#);
    for k in 0..100 {
        if k > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"event_id":"{}","kind":"progress","position_seconds":{k},"watched_seconds":{k},"at":{now}}}"#,
            uuid::Uuid::new_v4()
        );
    }
    body.push_str("]}");
    body
}

async fn cleanup(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(c).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The floor: per event a dedup `SET NX EX`, the watch-time `HINCRBY`,
/// the session `PFADD` and the view `INCR`, pipelined 1,000 events per
/// round trip over `clients` connections.
async fn run_floor(events: usize, clients: usize) -> anyhow::Result<f64> {
    let prefix = format!("floor{}:", uuid::Uuid::new_v4().simple());
    let redis = redis::Client::open("redis://127.0.0.1:6379")?;
    let per = events.div_ceil(clients);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // The client's default response timeout (500 ms) is shorter than a
    // 4,000-command pipeline on a loaded machine.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    for c in 0..clients {
        let mut conn = redis
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let prefix = prefix.clone();
        tasks.spawn(async move {
            let mut done = 0;
            while done < per {
                let mut pipe = redis::pipe();
                for k in done..(done + 1000).min(per) {
                    pipe.cmd("SET")
                        .arg(format!("{prefix}evt:{c}:{k}"))
                        .arg(1)
                        .arg("NX")
                        .arg("EX")
                        .arg(600)
                        .ignore();
                    pipe.cmd("HINCRBY")
                        .arg(format!("{prefix}h"))
                        .arg("watch")
                        .arg(1)
                        .ignore();
                    pipe.cmd("PFADD")
                        .arg(format!("{prefix}hs"))
                        .arg(format!("{c}:{}", k / 100))
                        .ignore();
                    pipe.cmd("INCR").arg(format!("{prefix}views")).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                done = (done + 1000).min(per);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = (per * clients) as f64 / started.elapsed().as_secs_f64();
    let mut c = redis.get_multiplexed_async_connection().await?;
    cleanup(&mut c, &prefix).await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env_num("BENCH_EVENTS", 1_000_000);
    let clients = env_num("BENCH_CLIENTS", 16);
    let pg = std::env::var("VODFARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db_url = format!(
        "{pg}/vodfarm_bench_counts_{}",
        uuid::Uuid::new_v4().simple()
    );
    Postgres::create_database(&db_url).await?;
    let result = async {
        let pool = sqlx::PgPool::connect(&db_url).await?;
        vodfarm::MIGRATOR.run(&pool).await?;
        let user: i64 = sqlx::query_scalar(
            "INSERT INTO users (user_id, email, username, password_hash)
             VALUES ('u_bench', 'bench@example.com', 'bench', 'x') RETURNING id",
        )
        .fetch_one(&pool)
        .await?;
        let channel: i64 = sqlx::query_scalar(
            "INSERT INTO channels (channel_id, user_id, name) VALUES ('c_bench', $1, 'bench') RETURNING id",
        )
        .bind(user)
        .fetch_one(&pool)
        .await?;
        sqlx::query(
            "INSERT INTO videos (video_id, channel_id, title, status, privacy, duration_seconds)
             VALUES ('v_bench', $1, 'bench', 'ready', 'public', 600)",
        )
        .bind(channel)
        .execute(&pool)
        .await?;
        pool.close().await;
        println!("counts bench: {events} events in beacons of 100, {clients} clients");
        let floor = run_floor(events, clients).await?;
        println!("floor (the same increments pipelined straight to Redis): {floor:.0} events/s");
        let kafka_broker = match std::env::var("BENCH_KAFKA_BROKERS") {
            _ if !wanted("kafka") => None,
            Ok(b) => Some((b, None)),
            Err(_) => match tansu_bin() {
                Some(bin) => {
                    let port = free_port()?;
                    let url = format!("tcp://127.0.0.1:{port}");
                    // With a delay, clients reach the broker through the
                    // delaying proxy only (it is what tansu advertises).
                    let delay = env_num("BENCH_KAFKA_DELAY_MS", 0);
                    let advertised = if delay > 0 {
                        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let at = proxy.local_addr()?.port();
                        tokio::spawn(delay_proxy(proxy, port, Duration::from_millis(delay as u64)));
                        println!("  kafka: {delay} ms each way between the roles and tansu");
                        at
                    } else {
                        port
                    };
                    let adv_url = format!("tcp://127.0.0.1:{advertised}");
                    let child = Proc(
                        Command::new(bin)
                            .args(["broker", "--listener-url", &url])
                            .args(["--advertised-listener-url", &adv_url])
                            .args(["--storage-engine", "memory://tansu/"])
                            .env("RUST_LOG", role_log())
                            .stdout(Stdio::null())
                            .spawn()?,
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Some((format!("127.0.0.1:{advertised}"), Some(child)))
                }
                None => None,
            },
        };
        if let Some((brokers, _broker)) = &kafka_broker {
            let k = run_ours(&db_url, "v_bench", Some(brokers), events, clients).await?;
            println!(
                "counts (kafka): ours={:.0} floor={floor:.0} ratio={:.2} lag_p99_ms={:.0}",
                k.ours,
                k.ours / floor,
                k.lag_p99_ms
            );
        } else {
            if wanted("kafka") {
                println!("counts (kafka): NOT RUN (no tansu binary, no BENCH_KAFKA_BROKERS)");
            }
        }
        if wanted("redis") {
            let r = run_ours(&db_url, "v_bench", None, events, clients).await?;
            println!(
                "counts: ours={:.0} floor={floor:.0} ratio={:.2} lag_p99_ms={:.0}",
                r.ours,
                r.ours / floor,
                r.lag_p99_ms
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = Postgres::drop_database(&db_url).await;
    result
}
