//! `cargo bench --bench origin`: our origin against nginx as a caching
//! proxy, in front of the same upstream, in one run.
//!
//! Setup: a directory store holding 2 MB segments and 1 KB playlists, a
//! `vodfarm origin --upstream store` over it (the shared upstream: both
//! contenders fetch from it, and its `/metrics` counts what they fetch),
//! then two contenders on loopback:
//! - ours: `vodfarm origin --upstream http://UPSTREAM` (shield mode);
//! - peer: Debian's nginx with `proxy_cache` (+ `proxy_cache_lock`) in
//!   front of the same upstream, started by the bench with a generated
//!   config.
//!
//! 1. Cache hits: `wrk --latency` against each, once for 1 KB playlists and
//!    once for 2 MB segments (every object warmed first): req/s and p99.
//! 2. Cold stampede: for each of `BENCH_COLD` (50) cold segments,
//!    `BENCH_STAMPEDE` (200) concurrent requests; upstream fetches (from
//!    the upstream's metrics) and p99 time to first byte (headers).
//!
//! Environment: `VODFARM_BIN` (the binary to bench, default cargo's),
//! `VODFARM_BENCH_PG`, `BENCH_SECS` (10 per wrk run),
//! `BENCH_CONNS` (64 wrk connections), `BENCH_COLD` (50), `BENCH_STAMPEDE`
//! (200). The last line is
//! `origin: ours=<req/s> peer=<req/s> ratio=<x> cold_fetches=<n>`, with
//! req/s of the playlist (1 KB) hit run and `cold_fetches` ours in total
//! over the cold objects (the target is exactly one per object).

use anyhow::Context;
use bytes::Bytes;
use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vodfarm_core::store::{LocalStore, ObjectStore};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `vodfarm` binary: `VODFARM_BIN` when set (a build directory shared
/// by several checkouts may hold another checkout's binary), else the one
/// cargo built for this bench.
fn vodfarm_bin() -> PathBuf {
    std::env::var_os("VODFARM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vodfarm").into())
}

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILLed
    /// master leaves them running), and our origin stops cleanly; SIGKILL
    /// only if that takes more than 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_origin(
    db_url: &str,
    upstream: &str,
    store: &Path,
) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new(vodfarm_bin())
        .args(["origin", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", upstream, "--database-url", db_url])
        .args(["--cache-size", "2GiB"])
        .env("VODFARM_STORE", format!("file://{}", store.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("start vodfarm origin")?;
    let base = format!("http://127.0.0.1:{port}");
    let p = Proc(child);
    wait_http(&format!("{base}/healthz")).await?;
    Ok((p, base))
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "nginx".into()
}

async fn start_nginx(dir: &Path, upstream_port: u16) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    for sub in ["cache", "tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes auto;
user root;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=vod:64m max_size=4g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache vod;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 206 1h;
            proxy_cache_use_stale error timeout updating;
        }}
        location = /nginx_health {{ return 200 "ok"; }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("start nginx (apt-get install nginx-light)")?;
    let p = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/nginx_health")).await?;
    Ok((p, base))
}

/// One wrk run over `paths`; (req/s, p99 ms).
fn wrk(
    base: &str,
    paths: &[String],
    secs: usize,
    conns: usize,
    dir: &Path,
) -> anyhow::Result<(f64, f64)> {
    let script = dir.join(format!("paths-{}.lua", paths.len()));
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        &script,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
            list.join(",")
        ),
    )?;
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    anyhow::ensure!(
        !text.contains("Non-2xx"),
        "wrk saw errors against {base}: {text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk output")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_time(v.trim()))
        .context("no 99% in wrk output")?;
    Ok((rps, p99))
}

/// `1.23ms`, `456.00us`, `1.50s` → milliseconds.
fn parse_wrk_time(v: &str) -> f64 {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

async fn upstream_segment_requests(upstream: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{upstream}/metrics"))
        .await?
        .text()
        .await?;
    let key = "vodfarm_origin_requests_total{route=\"segment\",status=\"200\"} ";
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// `stampede` concurrent GETs of each path in turn; (upstream fetches,
/// p99 time to first byte in ms).
async fn cold(
    base: &str,
    upstream: &str,
    paths: &[String],
    stampede: usize,
    client: &reqwest::Client,
) -> anyhow::Result<(f64, f64)> {
    let before = upstream_segment_requests(upstream).await?;
    let mut ttfb = Vec::new();
    for path in paths {
        let barrier = Arc::new(tokio::sync::Barrier::new(stampede));
        let mut tasks = Vec::new();
        for _ in 0..stampede {
            let (c, url, b) = (client.clone(), format!("{base}{path}"), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let t = Instant::now();
                let r = c.get(url).send().await?;
                let first = t.elapsed();
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                let body = r.bytes().await?;
                anyhow::ensure!(body.len() == 2_000_000, "short body {}", body.len());
                Ok(first)
            }));
        }
        for t in tasks {
            ttfb.push(t.await??.as_secs_f64() * 1000.0);
        }
    }
    let fetches = upstream_segment_requests(upstream).await? - before;
    ttfb.sort_by(|a, b| a.total_cmp(b));
    let p99 = ttfb[((ttfb.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    Ok((fetches, p99))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_num("BENCH_SECS", 10);
    let conns = env_num("BENCH_CONNS", 64);
    let cold_n = env_num("BENCH_COLD", 50);
    let stampede = env_num("BENCH_STAMPEDE", 200);
    let hot_segments = 20;

    let base = std::env::var("VODFARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("vodfarm_bench_origin_{}", std::process::id());
    let url = format!("{base}/{db}");
    Postgres::create_database(&url).await?;
    let dir = std::env::temp_dir().join(format!("vodfarm-bench-origin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await?;
        vodfarm::MIGRATOR.run(&pool).await?;
        sqlx::query("INSERT INTO users (user_id, email, username, password_hash) VALUES ('u_bench', 'b@example.com', 'bench', 'x')").execute(&pool).await?;
        sqlx::query("INSERT INTO channels (channel_id, user_id, name) SELECT 'c_bench', id, 'bench' FROM users").execute(&pool).await?;
        sqlx::query("INSERT INTO videos (video_id, channel_id, title, status) SELECT 'v_bench', id, 'bench', 'ready' FROM channels").execute(&pool).await?;

        // Objects: playlists of 1 KB, segments of 2 MB.
        let store_dir = dir.join("store");
        let store = LocalStore::new(&store_dir).await?;
        let segment = Bytes::from(vec![0x47u8; 2_000_000]);
        let mut playlist = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n");
        while playlist.len() < 1000 {
            playlist.push_str("#EXTINF:6.0,\nsegment_0.ts\n");
        }
        let playlist = Bytes::from(playlist[..1000].to_owned());
        let rungs = ["240p", "360p", "480p", "720p", "1080p"];
        let mut playlists = Vec::new();
        for r in rungs {
            store.put(&format!("encoded/v_bench/{r}/playlist.m3u8"), playlist.clone()).await?;
            playlists.push(format!("/v/v_bench/{r}/playlist.m3u8"));
        }
        let mut hot = Vec::new();
        for n in 0..hot_segments {
            store.put(&format!("encoded/v_bench/720p/segment_{n}.ts"), segment.clone()).await?;
            hot.push(format!("/v/v_bench/720p/segment_{n}.ts"));
        }
        let mut cold_ours = Vec::new();
        let mut cold_peer = Vec::new();
        for n in 0..cold_n {
            for (rung, list) in [("1080p", &mut cold_ours), ("480p", &mut cold_peer)] {
                store.put(&format!("encoded/v_bench/{rung}/segment_{n}.ts"), segment.clone()).await?;
                list.push(format!("/v/v_bench/{rung}/segment_{n}.ts"));
            }
        }

        let (_up, upstream) = start_origin(&url, "store", &store_dir).await?;
        let (_ours, ours) = start_origin(&url, &upstream, &store_dir).await?;
        let upstream_port: u16 = upstream.rsplit(':').next().unwrap_or("0").parse()?;
        let (_nginx, peer) = start_nginx(&dir.join("nginx"), upstream_port).await?;
        println!(
            "origin bench: {} hot segments (2 MB), {} playlists (1 KB), wrk -t1 -c{conns} -d{secs}s, cold: {cold_n} segments x {stampede} concurrent",
            hot.len(),
            playlists.len()
        );
        let client = reqwest::Client::builder().pool_max_idle_per_host(stampede).build()?;
        for b in [&ours, &peer] {
            for p in hot.iter().chain(&playlists) {
                let r = client.get(format!("{b}{p}")).send().await?;
                anyhow::ensure!(r.status().is_success(), "warming {b}{p}: {}", r.status());
                r.bytes().await?;
            }
        }

        let (ours_pl, ours_pl_p99) = wrk(&ours, &playlists, secs, conns, &dir)?;
        let (peer_pl, peer_pl_p99) = wrk(&peer, &playlists, secs, conns, &dir)?;
        println!("hits, 1 KB playlists: ours {ours_pl:.0} req/s p99 {ours_pl_p99:.2} ms | nginx {peer_pl:.0} req/s p99 {peer_pl_p99:.2} ms | ratio {:.2}", ours_pl / peer_pl);
        let (ours_seg, ours_seg_p99) = wrk(&ours, &hot, secs, conns, &dir)?;
        let (peer_seg, peer_seg_p99) = wrk(&peer, &hot, secs, conns, &dir)?;
        println!(
            "hits, 2 MB segments: ours {ours_seg:.0} req/s ({:.2} GB/s) p99 {ours_seg_p99:.2} ms | nginx {peer_seg:.0} req/s ({:.2} GB/s) p99 {peer_seg_p99:.2} ms | ratio {:.2}",
            ours_seg * 2e6 / 1e9,
            peer_seg * 2e6 / 1e9,
            ours_seg / peer_seg
        );

        let (ours_fetches, ours_ttfb) = cold(&ours, &upstream, &cold_ours, stampede, &client).await?;
        let (peer_fetches, peer_ttfb) = cold(&peer, &upstream, &cold_peer, stampede, &client).await?;
        println!(
            "cold stampede ({cold_n} segments x {stampede}): ours {ours_fetches:.0} upstream fetches, p99 TTFB {ours_ttfb:.1} ms | nginx {peer_fetches:.0} upstream fetches, p99 TTFB {peer_ttfb:.1} ms"
        );
        pool.close().await;
        println!(
            "origin: ours={ours_pl:.0} peer={peer_pl:.0} ratio={:.2} cold_fetches={ours_fetches:.0}",
            ours_pl / peer_pl
        );
        anyhow::Ok(())
    }
    .await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
