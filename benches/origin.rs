//! `cargo bench --bench origin`: our origin against two caching proxies,
//! nginx and Varnish, in front of the same upstream, in one run.
//!
//! Setup: a directory store holding 2 MB segments and 1 KB playlists, a
//! `vodfarm origin --upstream store` over it (the shared upstream: every
//! contender fetches from it, and its `/metrics` counts what they fetch),
//! then three contenders on loopback:
//! - ours: `vodfarm origin --upstream http://UPSTREAM` (shield mode);
//! - nginx: Debian's nginx with `proxy_cache` (+ `proxy_cache_lock`),
//!   started by the bench with a generated config;
//! - varnish: Debian's `varnishd` (7.1) as its own instance (`-F`,
//!   `-n <bench dir>`, `-s malloc,256m`) with `benches/varnish/shield.vcl`
//!   (built-in VCL behaviour: TTL from the upstream's Cache-Control, one
//!   fetch per object for concurrent misses, streamed to every waiter).
//!
//! 1. Cache hits: `wrk --latency` against each, once for 1 KB playlists and
//!    once for 2 MB segments (every object warmed first): req/s and p99.
//! 2. Cold stampede: for each of `BENCH_COLD` (50) cold segments,
//!    `BENCH_STAMPEDE` (200) concurrent requests; upstream fetches (from
//!    the upstream's metrics) and p99 time to first byte (headers). Each
//!    contender gets its own cold objects.
//!
//! CPU: on a small machine wrk, the bench and the server share the cores,
//! so req/s alone rewards whoever takes the most CPU from the load
//! generator. Every scenario therefore also reports CPU seconds per 1,000
//! requests for each server: utime + stime from `/proc/PID/stat` (in
//! `getconf CLK_TCK` ticks) summed over the server's whole process tree
//! (our one process; nginx master, workers and cache helpers; varnishd
//! manager and child), read right before and right after each run in the
//! same run. Reaped children's ticks (cutime + cstime) are in the sum too,
//! so a helper that exits mid-run does not take its ticks with it. The
//! shared upstream is not counted (it serves every contender alike).
//!
//! Environment: `VODFARM_BIN` (the binary to bench, default cargo's),
//! `VODFARM_BENCH_PG`, `BENCH_SECS` (10 per wrk run),
//! `BENCH_CONNS` (64 wrk connections), `BENCH_COLD` (50), `BENCH_STAMPEDE`
//! (200). The last line is
//! `origin: ours=<req/s> peer=<req/s> ratio=<x> cpu_per_1k_ours=<s>
//! cpu_per_1k_nginx=<s> cpu_per_1k_varnish=<s> cpu_ratio=<x>
//! cold_fetches=<n>`, all of the playlist (1 KB) hit run: `peer` is the
//! faster peer's req/s and `ratio` ours over it; `cpu_ratio` is our CPU
//! per request over the thriftier peer's (below 1: we spend less);
//! `cold_fetches` is ours in total over the cold objects (the target is
//! exactly one per object).

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

/// What the bench reads from `/proc/PID/stat`.
#[derive(Clone, Copy)]
struct Stat {
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    ticks: u64,
    /// Start time since boot: tells a process from a later one that got
    /// its pid.
    start: u64,
    zombie: bool,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (the second field) is in parentheses and may hold spaces and
    // parentheses itself: the fields we want follow the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 of proc(5) (state): field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(num(4)?).ok()?,
        ticks: num(14)? + num(15)? + num(16)? + num(17)?,
        start: num(22)?,
        zombie: f.first() == Some(&"Z"),
    })
}

/// `root` and all its descendants, with their stats, from one pass over
/// `/proc`.
fn process_tree(root: u32) -> Vec<(u32, Stat)> {
    let all: Vec<(u32, Stat)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect();
    let mut tree: Vec<(u32, Stat)> = all.iter().filter(|(p, _)| *p == root).copied().collect();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i].0;
        tree.extend(all.iter().filter(|(_, s)| s.ppid == parent).copied());
        i += 1;
    }
    tree
}

/// CPU ticks used so far by the server whose first process is `root`,
/// summed over its process tree.
fn cpu_ticks(root: u32, name: &str) -> anyhow::Result<u64> {
    let tree = process_tree(root);
    anyhow::ensure!(!tree.is_empty(), "{name} (pid {root}) is gone");
    Ok(tree.iter().map(|(_, s)| s.ticks).sum())
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
fn clock_ticks_per_sec() -> anyhow::Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("run getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK printed {text:?}"))
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    /// SIGTERM first: nginx's master then stops its workers and varnishd's
    /// manager stops its child (a SIGKILLed master leaves them running),
    /// and our origin stops cleanly; SIGKILL only if that takes more than
    /// 5 s. Whatever of the process tree is still alive after that (a
    /// worker or cache child orphaned by the SIGKILL) is killed too, so no
    /// server outlives the bench, whether it passed or failed.
    fn drop(&mut self) {
        let pid = self.pid();
        let tree = process_tree(pid);
        signal("TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        for (p, s) in tree.iter().filter(|(p, _)| *p != pid) {
            if read_stat(*p).is_some_and(|now| now.start == s.start && !now.zombie) {
                signal("KILL", *p);
            }
        }
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

/// `name` from the usual sbin directories, else from `PATH`.
fn sbin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    name.into()
}

/// The first line a program prints for its version flag (nginx and
/// varnishd print it on stderr), for the bench's header.
fn version(bin: &Path, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| {
            let all = [o.stdout, o.stderr].concat();
            let text = String::from_utf8_lossy(&all).into_owned();
            text.lines().next().map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{} (version unknown)", bin.display()))
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
    let child = Command::new(sbin("nginx"))
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

/// varnishd as its own instance in `dir`, in front of the upstream.
///
/// `-F` keeps the manager in the foreground as our child, so `Proc`'s
/// SIGTERM reaches it and it stops its cache child. `-n dir/work` gives it
/// its own working directory (shared-memory log, compiled VCL) instead of
/// the system instance's `/var/lib/varnish`. As root the default jail
/// (`-j unix`) runs the child as Debian's `vcache` user; that works with a
/// working directory under /tmp, so no `-j none` is needed.
async fn start_varnish(dir: &Path, upstream_port: u16) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    std::fs::create_dir_all(dir)?;
    let vcl =
        include_str!("varnish/shield.vcl").replace("UPSTREAM_PORT", &upstream_port.to_string());
    let vcl_path = dir.join("shield.vcl");
    std::fs::write(&vcl_path, vcl)?;
    let log_path = dir.join("varnishd.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(sbin("varnishd"))
        .arg("-F")
        .arg("-n")
        .arg(dir.join("work"))
        .args(["-a", &format!("127.0.0.1:{port}")])
        .arg("-f")
        .arg(&vcl_path)
        .args(["-s", "malloc,256m"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start varnishd (apt-get install varnish)")?;
    let p = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/varnish_health"))
        .await
        .with_context(|| {
            format!(
                "varnishd did not come up; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        })?;
    Ok((p, base))
}

/// One server under test.
struct Contender {
    name: &'static str,
    base: String,
    /// The first process of its tree (origin, nginx master, varnishd
    /// manager), for the CPU count.
    pid: u32,
    /// Its own cold segments, so nobody finds another's fetch cached.
    cold: Vec<String>,
}

/// One contender's hit run.
struct Hits {
    rps: f64,
    p99_ms: f64,
    /// CPU seconds per 1,000 requests.
    cpu_per_1k: f64,
}

/// One wrk run over `paths` against `c`, with `c`'s CPU over the run.
fn wrk(
    c: &Contender,
    paths: &[String],
    secs: usize,
    conns: usize,
    dir: &Path,
    tck: f64,
) -> anyhow::Result<Hits> {
    let script = dir.join(format!("paths-{}.lua", paths.len()));
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        &script,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
            list.join(",")
        ),
    )?;
    let before = cpu_ticks(c.pid, c.name)?;
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
        .arg(&c.base)
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let after = cpu_ticks(c.pid, c.name)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let base = &c.base;
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
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_time(v.trim()))
        .context("no 99% in wrk output")?;
    // `  123456 requests in 10.00s, 1.23GB read`
    let requests: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no request count in wrk output")?;
    anyhow::ensure!(
        requests > 0.0,
        "wrk made no requests against {base}: {text}"
    );
    let cpu_s = after.saturating_sub(before) as f64 / tck;
    Ok(Hits {
        rps,
        p99_ms,
        cpu_per_1k: cpu_s / requests * 1000.0,
    })
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

/// One contender's cold stampede.
struct Cold {
    /// Upstream fetches over all its cold objects.
    fetches: f64,
    /// p99 time to first byte, ms.
    ttfb_p99: f64,
    /// CPU seconds per 1,000 requests.
    cpu_per_1k: f64,
}

/// `stampede` concurrent GETs of each of `c`'s cold paths in turn.
async fn cold(
    c: &Contender,
    upstream: &str,
    stampede: usize,
    client: &reqwest::Client,
    tck: f64,
) -> anyhow::Result<Cold> {
    let before = upstream_segment_requests(upstream).await?;
    let cpu_before = cpu_ticks(c.pid, c.name)?;
    let mut ttfb = Vec::new();
    for path in &c.cold {
        let barrier = Arc::new(tokio::sync::Barrier::new(stampede));
        let mut tasks = Vec::new();
        for _ in 0..stampede {
            let (cl, url, b) = (client.clone(), format!("{}{path}", c.base), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let t = Instant::now();
                let r = cl.get(url).send().await?;
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
    let cpu_after = cpu_ticks(c.pid, c.name)?;
    let fetches = upstream_segment_requests(upstream).await? - before;
    anyhow::ensure!(
        !ttfb.is_empty(),
        "no cold requests (BENCH_COLD or BENCH_STAMPEDE is 0)"
    );
    ttfb.sort_by(f64::total_cmp);
    let ttfb_p99 = ttfb[((ttfb.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    let cpu_s = cpu_after.saturating_sub(cpu_before) as f64 / tck;
    Ok(Cold {
        fetches,
        ttfb_p99,
        cpu_per_1k: cpu_s / ttfb.len() as f64 * 1000.0,
    })
}

/// Index of the peer (everyone after ours, at 0) with the highest req/s,
/// and of the one with the least CPU per request.
fn best_peers(runs: &[Hits]) -> (usize, usize) {
    let peers = 1..runs.len();
    let fastest = peers
        .clone()
        .max_by(|&a, &b| runs[a].rps.total_cmp(&runs[b].rps))
        .unwrap_or(0);
    let thriftiest = peers
        .min_by(|&a, &b| runs[a].cpu_per_1k.total_cmp(&runs[b].cpu_per_1k))
        .unwrap_or(0);
    (fastest, thriftiest)
}

/// One line per hit scenario: every contender, then ours against the
/// fastest peer (req/s) and the thriftiest (CPU per request).
fn print_hits(scenario: &str, contenders: &[Contender], runs: &[Hits], bytes: Option<f64>) {
    let parts: Vec<String> = contenders
        .iter()
        .zip(runs)
        .map(|(c, r)| {
            let rate = bytes.map_or(String::new(), |b| format!(" ({:.2} GB/s)", r.rps * b / 1e9));
            format!(
                "{} {:.0} req/s{rate} p99 {:.2} ms cpu {:.4} s/1k",
                c.name, r.rps, r.p99_ms, r.cpu_per_1k
            )
        })
        .collect();
    let (fast, thrift) = best_peers(runs);
    println!(
        "hits, {scenario}: {} | ratio {:.2} (vs {}) cpu_ratio {:.2} (vs {})",
        parts.join(" | "),
        runs[0].rps / runs[fast].rps,
        contenders[fast].name,
        runs[0].cpu_per_1k / runs[thrift].cpu_per_1k,
        contenders[thrift].name
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_num("BENCH_SECS", 10);
    let conns = env_num("BENCH_CONNS", 64);
    let cold_n = env_num("BENCH_COLD", 50);
    let stampede = env_num("BENCH_STAMPEDE", 200);
    let hot_segments = 20;
    let tck = clock_ticks_per_sec()?;

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
        // Cold segments: one rung per contender (ours, nginx, varnish).
        let cold_rungs = ["1080p", "480p", "360p"];
        let mut cold_sets: [Vec<String>; 3] = Default::default();
        for n in 0..cold_n {
            for (rung, list) in cold_rungs.iter().zip(&mut cold_sets) {
                store.put(&format!("encoded/v_bench/{rung}/segment_{n}.ts"), segment.clone()).await?;
                list.push(format!("/v/v_bench/{rung}/segment_{n}.ts"));
            }
        }
        let [cold_ours, cold_nginx, cold_varnish] = cold_sets;

        let (_up, upstream) = start_origin(&url, "store", &store_dir).await?;
        let upstream_port: u16 = upstream.rsplit(':').next().unwrap_or("0").parse()?;
        // The servers stop when these drop: at the end of this block,
        // whether it returns Ok or an error.
        let (ours_proc, ours) = start_origin(&url, &upstream, &store_dir).await?;
        let (nginx_proc, nginx) = start_nginx(&dir.join("nginx"), upstream_port).await?;
        let (varnish_proc, varnish) = start_varnish(&dir.join("varnish"), upstream_port).await?;
        let contenders = [
            Contender { name: "ours", base: ours, pid: ours_proc.pid(), cold: cold_ours },
            Contender { name: "nginx", base: nginx, pid: nginx_proc.pid(), cold: cold_nginx },
            Contender { name: "varnish", base: varnish, pid: varnish_proc.pid(), cold: cold_varnish },
        ];
        println!(
            "origin bench: {} hot segments (2 MB), {} playlists (1 KB), wrk -t1 -c{conns} -d{secs}s, cold: {cold_n} segments x {stampede} concurrent",
            hot.len(),
            playlists.len()
        );
        println!(
            "peers: {}; {}; cpu: utime+stime of each server's process tree from /proc/PID/stat, CLK_TCK {tck}, {} cores",
            version(&sbin("nginx"), "-v"),
            version(&sbin("varnishd"), "-V"),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        );
        let client = reqwest::Client::builder().pool_max_idle_per_host(stampede).build()?;
        for c in &contenders {
            for p in hot.iter().chain(&playlists) {
                let r = client.get(format!("{}{p}", c.base)).send().await?;
                anyhow::ensure!(r.status().is_success(), "warming {}{p}: {}", c.base, r.status());
                r.bytes().await?;
            }
        }

        let mut pl_runs = Vec::new();
        for c in &contenders {
            pl_runs.push(wrk(c, &playlists, secs, conns, &dir, tck)?);
        }
        print_hits("1 KB playlists", &contenders, &pl_runs, None);
        let mut seg_runs = Vec::new();
        for c in &contenders {
            seg_runs.push(wrk(c, &hot, secs, conns, &dir, tck)?);
        }
        print_hits("2 MB segments", &contenders, &seg_runs, Some(2e6));

        let mut colds = Vec::new();
        for c in &contenders {
            colds.push(cold(c, &upstream, stampede, &client, tck).await?);
        }
        let parts: Vec<String> = contenders
            .iter()
            .zip(&colds)
            .map(|(c, r)| {
                format!(
                    "{} {:.0} upstream fetches, p99 TTFB {:.1} ms, cpu {:.4} s/1k",
                    c.name, r.fetches, r.ttfb_p99, r.cpu_per_1k
                )
            })
            .collect();
        println!("cold stampede ({cold_n} segments x {stampede}): {}", parts.join(" | "));
        pool.close().await;

        let (fast, thrift) = best_peers(&pl_runs);
        let cpu: Vec<String> = contenders
            .iter()
            .zip(&pl_runs)
            .map(|(c, r)| format!("cpu_per_1k_{}={:.4}", c.name, r.cpu_per_1k))
            .collect();
        println!(
            "origin: ours={:.0} peer={:.0} ratio={:.2} {} cpu_ratio={:.2} cold_fetches={:.0}",
            pl_runs[0].rps,
            pl_runs[fast].rps,
            pl_runs[0].rps / pl_runs[fast].rps,
            cpu.join(" "),
            pl_runs[0].cpu_per_1k / pl_runs[thrift].cpu_per_1k,
            colds[0].fetches
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
