//! `cargo bench --bench search`: search through `vodfarm api` against the
//! same statements sent straight to PostgreSQL, in one run.
//!
//! 1. 200,000 synthetic videos (`BENCH_VIDEOS`) over 500 channels:
//!    titles, tags and descriptions drawn from a 5,000-word list with
//!    Zipf-distributed word frequencies, inserted with one `INSERT …
//!    SELECT generate_series`; the outbox triggers fire as for any
//!    writer, and a real `vodfarm search-indexer` process indexes them
//!    (its throughput is reported).
//! 2. 20 concurrent clients (`BENCH_CLIENTS`) send a fixed mix of
//!    queries (words drawn with the same Zipf law: one or two words,
//!    phrases, prefixes being typed, typos, filters, the three orders,
//!    second pages, as-you-type suggestions) for `BENCH_SECS` (20) each
//!    way, in two interleaved rounds with warm-ups: through the api over
//!    HTTP (ours), and as the same index calls and visibility check over
//!    a pool of as many connections in this process (the floor: no HTTP,
//!    no api).
//! 3. Meanwhile a writer changes videos (view counts, titles, new
//!    videos) at a steady rate; the index lag is read from the indexer's
//!    `vodfarm_search_index_lag_seconds` histogram over the measured
//!    window, and new videos are probed through the api until found.
//!
//! Ours is the api as configured, its answer cache included
//! (`VODFARM_SEARCH_CACHE_TTL`, inherited by the api: `0` turns it off);
//! the bench prints the cache's hits. The floor runs the index calls
//! without a cache.
//!
//! Environment: `VODFARM_BENCH_PG` (server, default the local one),
//! `BENCH_KEEP_DB` (keep the database to look at plans), `BENCH_DB` (the
//! URL of a database an earlier run kept: migrated, not seeded again,
//! its indexer catches up first; for iterating on queries). The
//! last line is `search: ours=<QPS> floor=<QPS> ratio=<ours/floor>
//! p99_ms=<ours p99> index_lag_p99_ms=<p99>`.

use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vodfarm_search::cursor::Mode;
use vodfarm_search::postgres::{search_pool, PgIndex, PgSearchSettings};
use vodfarm_search::query::{SearchRequest, SuggestRequest};
use vodfarm_search::{visibility, SearchIndex};

const WORDS: usize = 5000;
const CATEGORIES: &[&str] = &[
    "Music",
    "Gaming",
    "Education",
    "Sports",
    "News",
    "Comedy",
    "Travel",
    "Food",
    "Science",
    "Film",
    "Pets",
    "Howto",
];

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A Zipf (s = 1) rank in 0..n: P(k) ∝ ln((k + 2) / (k + 1)) ≈ 1/(k + 1),
    /// the same law the SQL seeding uses.
    fn zipf(&mut self, n: usize) -> usize {
        let k = (self.unit() * ((n + 1) as f64).ln()).exp().floor() as usize;
        k.clamp(1, n) - 1
    }
}

/// 5,000 distinct pronounceable words: three syllables from a fixed
/// inventory, shuffled so a word's rank says nothing about its spelling.
fn word_list() -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st",
        "pl", "gr", "sh",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    let mut syllables = Vec::new();
    for o in ONSETS {
        for v in VOWELS {
            syllables.push(format!("{o}{v}"));
        }
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < WORDS {
        let n = 2 + rng.below(2);
        let w: String = (0..n)
            .map(|_| syllables[rng.below(syllables.len())].as_str())
            .collect::<String>()
            + ["n", "r", "l", "s", "x", "m"][rng.below(6)];
        words.insert(w);
    }
    let mut words: Vec<String> = words.into_iter().collect();
    for i in (1..words.len()).rev() {
        words.swap(i, rng.below(i + 1));
    }
    words
}

struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_role(args: &[&str], ready: &str) -> anyhow::Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()?;
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if http
            .get(ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            let base = ready.trim_end_matches("/readyz").to_owned();
            return Ok(Proc(child, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{args:?} did not become ready")
}

fn port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The corpus, in SQL: `$1` the word list, `$2` how many videos.
async fn seed(pool: &PgPool, words: &[String], videos: usize) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO users (user_id, email, username, password_hash)
         VALUES ('u_bench', 'bench@example.com', 'bench', 'x')",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO channels (channel_id, user_id, name)
         SELECT 'c_bench' || g, u.id, initcap(($1::text[])[(g * 7) % 5000 + 1]) || ' '
                || initcap(($1::text[])[(g * 13) % 5000 + 1])
         FROM users u, generate_series(1, 500) g",
    )
    .bind(words)
    .execute(pool)
    .await?;
    // w(): a Zipf-distributed word (rank k with P ∝ 1/k).
    sqlx::query(
        "WITH w AS (SELECT $1::text[] AS a, ln(5001) AS l), c AS (SELECT array_agg(id ORDER BY id) AS ids FROM channels)
         INSERT INTO videos (video_id, channel_id, title, description, tags, category,
                             duration_seconds, view_count, like_count, status, privacy, uploaded_at)
         SELECT 'v_bench' || lpad(g::text, 10, '0'),
                c.ids[1 + g % 500],
                initcap(a[floor(exp(random() * l))::int]) || ' ' || a[floor(exp(random() * l))::int]
                    || ' ' || a[floor(exp(random() * l))::int]
                    || CASE WHEN g % 3 > 0 THEN ' ' || a[floor(exp(random() * l))::int] ELSE '' END
                    || CASE WHEN g % 4 = 0 THEN ' ' || a[floor(exp(random() * l))::int] ELSE '' END,
                -- `+ 0 * d.i` ties the aggregate to this subquery (an
                -- aggregate of outer columns only would be the outer one).
                (SELECT string_agg(a[floor(exp(random() * l))::int + 0 * d.i], ' ')
                 FROM generate_series(1, 8 + g % 8) AS d(i)),
                ARRAY[a[floor(exp(random() * l))::int], a[floor(exp(random() * l))::int]],
                ($3::text[])[1 + g % 12],
                (10 + (random() * random() * 3600))::int,
                floor(exp(random() * ln(1000000)))::bigint,
                (random() * 100)::int,
                'ready', 'public',
                now() - make_interval(secs => random() * 63072000)
         FROM generate_series(1, $2) g, w, c",
    )
    .bind(words)
    .bind(videos as i32)
    .bind(CATEGORIES)
    .execute(pool)
    .await?;
    Ok(())
}

/// One request of the mix: a route and its query-string pairs; a
/// `second_page` search is followed by its next page.
#[derive(Clone, Debug)]
struct Req {
    /// What kind of request of the mix it is (for the per-kind report).
    kind: &'static str,
    suggest: bool,
    pairs: Vec<(String, String)>,
    second_page: bool,
}

fn mix(words: &[String], n: usize) -> Vec<Req> {
    let mut rng = Rng(0xB3AC_4000_0000_0017);
    let mut out = Vec::with_capacity(n);
    let w = |rng: &mut Rng| words[rng.zipf(words.len())].clone();
    for i in 0..n {
        let kind = rng.below(100);
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut suggest = false;
        let mut second_page = false;
        let (label, q) = match kind {
            // One word, best match first.
            0..=29 => ("word", format!("{} ", w(&mut rng))),
            // Two words.
            30..=44 => ("two words", format!("{} {} ", w(&mut rng), w(&mut rng))),
            // A phrase.
            45..=49 => ("phrase", format!("\"{} {}\"", w(&mut rng), w(&mut rng))),
            // The last word being typed.
            50..=59 => {
                let a = w(&mut rng);
                let b = w(&mut rng);
                ("typing", format!("{a} {}", &b[..b.len().min(4)]))
            }
            // A typo: one letter replaced.
            60..=64 => {
                let mut chars: Vec<char> = w(&mut rng).chars().collect();
                let at = 1 + rng.below(chars.len() - 1);
                chars[at] = if chars[at] == 'q' { 'w' } else { 'q' };
                ("typo", chars.into_iter().collect::<String>() + " ")
            }
            // Filters and other orders.
            65..=74 => {
                pairs.push((
                    "category".into(),
                    CATEGORIES[rng.below(CATEGORIES.len())].into(),
                ));
                pairs.push(("sort".into(), "views".into()));
                ("category+views", format!("{} ", w(&mut rng)))
            }
            75..=79 => {
                pairs.push((
                    "duration".into(),
                    ["short", "medium", "long"][rng.below(3)].into(),
                ));
                pairs.push(("sort".into(), "newest".into()));
                ("duration+newest", format!("{} ", w(&mut rng)))
            }
            // A second page.
            80..=89 => {
                second_page = true;
                ("two pages", format!("{} ", w(&mut rng)))
            }
            // As-you-type titles.
            _ => {
                suggest = true;
                let b = w(&mut rng);
                ("suggest", b[..b.len().min(3 + i % 3)].to_owned())
            }
        };
        pairs.insert(0, ("q".into(), q));
        out.push(Req {
            kind: label,
            suggest,
            pairs,
            second_page,
        });
    }
    out
}

/// Answers a request of the mix; returns hits.
trait Client: Send + Sync + 'static {
    fn run(&self, r: &Req) -> impl std::future::Future<Output = anyhow::Result<usize>> + Send;
}

/// Ours: `vodfarm api` over HTTP.
struct Http {
    http: reqwest::Client,
    base: String,
}

impl Client for Http {
    async fn run(&self, r: &Req) -> anyhow::Result<usize> {
        let path = if r.suggest {
            "/v1/search/suggest"
        } else {
            "/v1/search"
        };
        let get = |pairs: &[(String, String)]| {
            self.http
                .get(format!("{}{path}", self.base))
                .query(pairs)
                .send()
        };
        let resp = get(&r.pairs).await?;
        anyhow::ensure!(resp.status() == 200, "HTTP {}", resp.status());
        let v: serde_json::Value = resp.json().await?;
        let key = if r.suggest { "suggestions" } else { "hits" };
        let mut n = v[key].as_array().map_or(0, Vec::len);
        if let (true, Some(c)) = (r.second_page, v["next_cursor"].as_str()) {
            let mut pairs = r.pairs.clone();
            pairs.push(("cursor".into(), c.to_owned()));
            let resp = get(&pairs).await?;
            anyhow::ensure!(resp.status() == 200, "HTTP {}", resp.status());
            let v: serde_json::Value = resp.json().await?;
            n += v["hits"].as_array().map_or(0, Vec::len);
        }
        Ok(n)
    }
}

/// The floor: the api's index calls and visibility check, in process.
struct Direct {
    index: PgIndex,
    pool: PgPool,
}

impl Direct {
    async fn page(&self, req: &SearchRequest) -> anyhow::Result<(usize, Option<String>)> {
        let mode = req.after.as_ref().map_or(Mode::Strict, |c| c.mode);
        let mut page = self.index.search(req, mode).await?;
        if mode == Mode::Strict && req.after.is_none() && page.hits.is_empty() {
            let fuzzy = self.index.search(req, Mode::Fuzzy).await?;
            if !fuzzy.hits.is_empty() {
                page = fuzzy;
            }
        }
        let rows: Vec<i64> = page.hits.iter().map(|h| h.video_row).collect();
        let visible = visibility::visible(&self.pool, &rows).await?;
        let fp = req.fingerprint();
        Ok((visible.len(), page.next.map(|c| c.encode(&fp))))
    }
}

impl Client for Direct {
    async fn run(&self, r: &Req) -> anyhow::Result<usize> {
        if r.suggest {
            let req = SuggestRequest::parse(&r.pairs)?;
            let found = self.index.suggest(&req).await?;
            let rows: Vec<i64> = found.iter().map(|s| s.video_row).collect();
            return Ok(visibility::visible(&self.pool, &rows).await?.len());
        }
        let req = SearchRequest::parse(&r.pairs)?;
        let (mut n, next) = self.page(&req).await?;
        if let (true, Some(c)) = (r.second_page, next) {
            let mut pairs = r.pairs.clone();
            pairs.push(("cursor".into(), c));
            n += self.page(&SearchRequest::parse(&pairs)?).await?.0;
        }
        Ok(n)
    }
}

struct Measured {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    hits: u64,
    /// Per kind of request: (kind, count, p50, p99).
    kinds: Vec<(&'static str, usize, f64, f64)>,
}

impl Measured {
    fn kinds(&self) -> String {
        self.kinds
            .iter()
            .map(|(k, n, p50, p99)| format!("{k} {p50:.1}/{p99:.1} ms ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latency samples (kind, ms) and hits of one phase.
#[derive(Default)]
struct Samples {
    lat: Vec<(&'static str, f64)>,
    hits: u64,
    secs: f64,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.lat.extend(other.lat);
        self.hits += other.hits;
        self.secs += other.secs;
    }

    fn summary(&self) -> Measured {
        let mut all: Vec<f64> = self.lat.iter().map(|(_, ms)| *ms).collect();
        all.sort_by(f64::total_cmp);
        let mut names: Vec<&'static str> = self.lat.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        names.dedup();
        let kinds = names
            .into_iter()
            .map(|k| {
                let mut v: Vec<f64> = self
                    .lat
                    .iter()
                    .filter(|(n, _)| *n == k)
                    .map(|(_, ms)| *ms)
                    .collect();
                v.sort_by(f64::total_cmp);
                (k, v.len(), percentile(&v, 0.5), percentile(&v, 0.99))
            })
            .collect();
        Measured {
            qps: all.len() as f64 / self.secs,
            p50_ms: percentile(&all, 0.5),
            p99_ms: percentile(&all, 0.99),
            hits: self.hits,
            kinds,
        }
    }
}

/// `clients` loop over the mix for `warmup` + `secs`; requests started
/// after the warm-up count.
async fn measure<C: Client>(
    client: Arc<C>,
    reqs: Arc<Vec<Req>>,
    clients: usize,
    warmup: Duration,
    secs: Duration,
) -> anyhow::Result<Samples> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + secs;
    let hits = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, reqs, hits) = (client.clone(), reqs.clone(), hits.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut i = c * reqs.len() / clients;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = &reqs[i % reqs.len()];
                i += 1;
                let n = client
                    .run(r)
                    .await
                    .map_err(|e| anyhow::anyhow!("{r:?}: {e}"))?;
                if t >= measure_from {
                    lat.push((r.kind, t.elapsed().as_secs_f64() * 1000.0));
                    hits.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Ok::<Vec<(&'static str, f64)>, anyhow::Error>(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(done) = tasks.join_next().await {
        lat.extend(done??);
    }
    Ok(Samples {
        lat,
        hits: hits.load(Ordering::Relaxed),
        secs: secs.as_secs_f64(),
    })
}

/// The cumulative buckets of `vodfarm_search_index_lag_seconds`.
fn lag_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("vodfarm_search_index_lag_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

/// Prometheus' `histogram_quantile` over the difference of two scrapes.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - b)
        })
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in diff {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let within = if n > prev.1 {
                (rank - prev.1) / (n - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, n);
    }
    None
}

async fn scrape(base: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?)
}

/// The api's answer cache lookups so far: (hits, misses).
fn cache_lookups(metrics: &str) -> (f64, f64) {
    let mut out = (0.0, 0.0);
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("vodfarm_search_cache_requests_total{"))
    {
        let n: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        if l.contains("result=\"hit\"") {
            out.0 += n;
        } else {
            out.1 += n;
        }
    }
    out
}

/// Changes videos at a steady rate until `stop`: every 50 ms a view-count
/// flush of 5 videos and a retitle; every 500 ms a new public video,
/// probed through `api` until it is found while `probing`.
async fn writer(
    pool: PgPool,
    channel: i64,
    api: String,
    probing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    findable_ms: Arc<Mutex<Vec<f64>>>,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x7E17_0000_0000_0001);
    // Probe ids and titles of this run (a kept database has earlier ones).
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let base = 1 + rng.below(199_000) as i64;
        sqlx::query("UPDATE videos SET view_count = view_count + 1 WHERE id BETWEEN $1 AND $1 + 4")
            .bind(base)
            .execute(&pool)
            .await?;
        sqlx::query("UPDATE videos SET title = title || ' x' WHERE id = $1")
            .bind(1 + rng.below(199_000) as i64)
            .execute(&pool)
            .await?;
        if n % 10 == 0 {
            let title = format!("Probe{n}x{}{run}", rng.next() % 1_000_000);
            sqlx::query(
                "INSERT INTO videos (video_id, channel_id, title, status, privacy)
                 VALUES ('v_probe' || $1, $2, $3, 'ready', 'public')",
            )
            .bind(format!("{run}_{n}"))
            .bind(channel)
            .bind(&title)
            .execute(&pool)
            .await?;
            let made = Instant::now();
            if probing.load(Ordering::Relaxed) {
                let (http, api, findable) = (http.clone(), api.clone(), findable_ms.clone());
                tokio::spawn(async move {
                    while made.elapsed() < Duration::from_secs(10) {
                        let found = http
                            .get(format!("{api}/v1/search"))
                            .query(&[("q", format!("{title} "))])
                            .send()
                            .await
                            .ok();
                        if let Some(r) = found {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if v["hits"].as_array().is_some_and(|h| !h.is_empty()) {
                                let ms = made.elapsed().as_secs_f64() * 1000.0;
                                findable.lock().map(|mut f| f.push(ms)).ok();
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let videos = env_num("BENCH_VIDEOS", 200_000);
    let clients = env_num("BENCH_CLIENTS", 20);
    let secs = Duration::from_secs(env_num("BENCH_SECS", 20) as u64);
    let warmup = Duration::from_secs(3);
    let server = std::env::var("VODFARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    if let Ok(url) = std::env::var("BENCH_DB") {
        return run(&url, None, clients, warmup, secs).await;
    }
    let name = format!("vodfarm_bench_search_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{server}/{name}");
    Postgres::create_database(&url).await?;
    let result = run(&url, Some(videos), clients, warmup, secs).await;
    if std::env::var_os("BENCH_KEEP_DB").is_some() {
        println!("search: kept the database {url} (BENCH_KEEP_DB)");
    } else {
        let _ = Postgres::force_drop_database(&url).await;
    }
    result
}

/// `videos`: how many to seed (`None`: the database is seeded already).
async fn run(
    url: &str,
    videos: Option<usize>,
    clients: usize,
    warmup: Duration,
    secs: Duration,
) -> anyhow::Result<()> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await?;
    vodfarm::MIGRATOR.run(&admin).await?;
    let words = word_list();

    let t = Instant::now();
    if let Some(videos) = videos {
        seed(&admin, &words, videos).await?;
    }
    let seeded = t.elapsed();
    let videos: i64 = sqlx::query_scalar("SELECT count(*) FROM videos")
        .fetch_one(&admin)
        .await?;
    let ip = port()?;
    let indexer = spawn_role(
        &[
            "search-indexer",
            "--listen",
            &format!("127.0.0.1:{ip}"),
            "--database-url",
            url,
            "--batch-size",
            "1000",
        ],
        &format!("http://127.0.0.1:{ip}/readyz"),
    )
    .await?;
    let t = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM search_outbox")
            .fetch_one(&admin)
            .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let indexed = t.elapsed();
    sqlx::query("VACUUM ANALYZE search_documents")
        .execute(&admin)
        .await?;
    sqlx::query("VACUUM ANALYZE videos").execute(&admin).await?;
    println!(
        "search: {videos} videos seeded in {:.1} s; indexed by one indexer in {:.1} s ({:.0} videos/s)",
        seeded.as_secs_f64(),
        indexed.as_secs_f64(),
        videos as f64 / indexed.as_secs_f64()
    );

    let store = tempfile::tempdir()?;
    let ap = port()?;
    let conns = clients.to_string();
    let api = spawn_role(
        &[
            "api",
            "--listen",
            &format!("127.0.0.1:{ap}"),
            "--database-url",
            url,
            "--store",
            &format!("file://{}", store.path().display()),
            "--signing-secret",
            "bench",
            "--search-db-max-connections",
            &conns,
        ],
        &format!("http://127.0.0.1:{ap}/readyz"),
    )
    .await?;
    let reqs = Arc::new(mix(&words, 4000));
    let settings = PgSearchSettings::default();
    let pool = search_pool(url, clients as u32, &settings).await?;
    let direct = Arc::new(Direct {
        index: PgIndex::new(pool.clone(), settings),
        pool,
    });
    let http = Arc::new(Http {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?,
        base: api.1.clone(),
    });
    let channel: i64 = sqlx::query_scalar("SELECT min(id) FROM channels")
        .fetch_one(&admin)
        .await?;

    // The writer runs through both phases, so both see the same load.
    let stop = Arc::new(AtomicBool::new(false));
    let probing = Arc::new(AtomicBool::new(true));
    let findable = Arc::new(Mutex::new(Vec::new()));
    let lag_before = lag_buckets(&scrape(&indexer.1).await?);
    let w = tokio::spawn(writer(
        admin.clone(),
        channel,
        api.1.clone(),
        probing.clone(),
        stop.clone(),
        findable.clone(),
    ));
    // Two rounds of each, interleaved, so a change of the machine's load
    // (it is shared) weighs on both alike.
    let (mut ours, mut floor) = (Samples::default(), Samples::default());
    let half = secs / 2;
    let (mut cache_hits, mut cache_misses) = (0.0, 0.0);
    for _ in 0..2 {
        probing.store(true, Ordering::Relaxed);
        let before = cache_lookups(&scrape(&api.1).await?);
        ours.add(measure(http.clone(), reqs.clone(), clients, warmup, half).await?);
        let after = cache_lookups(&scrape(&api.1).await?);
        cache_hits += after.0 - before.0;
        cache_misses += after.1 - before.1;
        // Probes are api requests: none while the floor is measured.
        probing.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        floor.add(measure(direct.clone(), reqs.clone(), clients, warmup, half).await?);
    }
    let (ours, floor) = (ours.summary(), floor.summary());
    stop.store(true, Ordering::Relaxed);
    w.await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lag_after = lag_buckets(&scrape(&indexer.1).await?);
    let lag_p99 = quantile(&lag_before, &lag_after, 0.99).unwrap_or(f64::NAN) * 1000.0;
    let lag_p50 = quantile(&lag_before, &lag_after, 0.5).unwrap_or(f64::NAN) * 1000.0;
    let mut found = findable.lock().map(|f| f.clone()).unwrap_or_default();
    found.sort_by(f64::total_cmp);

    println!(
        "search: ours {:.0} req/s (p50 {:.1} ms, p99 {:.1} ms, {} hits); floor {:.0} req/s (p50 {:.1} ms, p99 {:.1} ms, {} hits)",
        ours.qps, ours.p50_ms, ours.p99_ms, ours.hits, floor.qps, floor.p50_ms, floor.p99_ms, floor.hits
    );
    let lookups = cache_hits + cache_misses;
    println!(
        "search: ours is the api with its answer cache as configured (VODFARM_SEARCH_CACHE_TTL; 0: off): {} of {} lookups hit ({:.1} %, warm-ups included; every hit still checked against PostgreSQL); the floor has no cache",
        cache_hits,
        lookups,
        if lookups > 0.0 { 100.0 * cache_hits / lookups } else { 0.0 }
    );
    println!("search: ours by kind (p50/p99): {}", ours.kinds());
    println!("search: floor by kind (p50/p99): {}", floor.kinds());
    println!(
        "search: index lag p50 {lag_p50:.1} ms p99 {lag_p99:.1} ms (indexer histogram); a new public video findable through the api: p50 {:.0} ms, p99 {:.0} ms ({} probes)",
        percentile(&found, 0.5),
        percentile(&found, 0.99),
        found.len()
    );
    drop(api);
    drop(indexer);
    println!(
        "search: ours={:.0} floor={:.0} ratio={:.2} p99_ms={:.1} index_lag_p99_ms={:.0}",
        ours.qps,
        floor.qps,
        ours.qps / floor.qps,
        ours.p99_ms,
        lag_p99
    );
    Ok(())
}
