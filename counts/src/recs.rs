//! `vodfarm recs`: item-to-item recommendations from co-views, daily (or
//! `--once`).
//!
//! Input: every (viewer, video) pair of the watch history of the last
//! `--window` (30 days), restricted to videos that are ready and public.
//! Two videos are related by how many viewers watched both, damped by
//! popularity (cosine: `co(a, b) / sqrt(viewers(a) · viewers(b))`), so a
//! video everyone watches does not top every list. A viewer's
//! recommendations sum the relations of what they watched, minus what
//! they watched. Each list is written to a temporary key and renamed over
//! the day's key (atomic swap); keys the run no longer writes are
//! deleted. The api filters again on read (deleted, private or non-ready
//! videos are never shown, whatever Redis holds).

use crate::metrics::RecsMetrics;
use chrono::Utc;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_analytics::args::AnalyticsArgs;
use vodfarm_analytics::counters::Counters;
use vodfarm_analytics::recs::{index_key, related_key, user_key};
use vodfarm_analytics::watch::{WatchError, WatchStore};
use vodfarm_core::config::parse_duration;

/// Flags and environment of `vodfarm recs`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecsArgs {
    /// Address of /healthz, /readyz and /metrics (not with --once).
    #[arg(long, env = "VODFARM_RECS_LISTEN", default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Redis and the watch store.
    #[command(flatten)]
    pub analytics: AnalyticsArgs,
    /// Compute once and exit.
    #[arg(long)]
    pub once: bool,
    /// How often to recompute.
    #[arg(long, env = "VODFARM_RECS_EVERY", default_value = "24h", value_parser = parse_duration)]
    pub every: Duration,
    /// How much history counts.
    #[arg(long, env = "VODFARM_RECS_WINDOW", default_value = "30d", value_parser = parse_duration)]
    pub window: Duration,
    /// Videos per list.
    #[arg(long, env = "VODFARM_RECS_LIST_SIZE", default_value_t = 50)]
    pub list_size: usize,
    /// Most videos of one viewer taken into account (pairs grow with its
    /// square).
    #[arg(long, env = "VODFARM_RECS_MAX_PER_VIEWER", default_value_t = 200)]
    pub max_per_viewer: usize,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 2)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RecsError {
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The watch store failed.
    #[error("watch store: {0}")]
    Watch(#[from] WatchError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What a run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecsReport {
    /// Videos with a related list.
    pub videos: usize,
    /// Viewers with recommendations.
    pub users: usize,
}

/// The lists computed from (viewer, video) pairs: related videos per
/// video and recommendations per viewer, each best first with scores.
pub type Lists = (
    HashMap<String, Vec<(String, f64)>>,
    HashMap<String, Vec<(String, f64)>>,
);

/// Co-view lists from `pairs` (pure: unit-tested).
pub fn compute(pairs: &[(String, String)], list_size: usize, max_per_viewer: usize) -> Lists {
    let mut by_user: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (u, v) in pairs {
        let set = by_user.entry(u.as_str()).or_default();
        if set.len() < max_per_viewer {
            set.insert(v.as_str());
        }
    }
    let mut popularity: HashMap<&str, f64> = HashMap::new();
    let mut co: HashMap<(&str, &str), f64> = HashMap::new();
    for videos in by_user.values() {
        for v in videos {
            *popularity.entry(v).or_default() += 1.0;
        }
        for a in videos {
            for b in videos {
                if a != b {
                    *co.entry((a, b)).or_default() += 1.0;
                }
            }
        }
    }
    let mut related: HashMap<&str, Vec<(&str, f64)>> = HashMap::new();
    for ((a, b), n) in &co {
        let damp = (popularity[a] * popularity[b]).sqrt();
        related.entry(a).or_default().push((b, n / damp));
    }
    let best = |list: &mut Vec<(&str, f64)>| {
        list.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(y.0)));
        list.truncate(list_size);
    };
    for list in related.values_mut() {
        best(list);
    }
    let mut users = HashMap::new();
    for (u, watched) in &by_user {
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for w in watched {
            for (c, s) in related.get(w).map(Vec::as_slice).unwrap_or_default() {
                if !watched.contains(c) {
                    *scores.entry(c).or_default() += s;
                }
            }
        }
        let mut list: Vec<(&str, f64)> = scores.into_iter().collect();
        best(&mut list);
        if !list.is_empty() {
            users.insert(
                (*u).to_owned(),
                list.into_iter().map(|(v, s)| (v.to_owned(), s)).collect(),
            );
        }
    }
    let related = related
        .into_iter()
        .map(|(v, l)| {
            (
                v.to_owned(),
                l.into_iter().map(|(w, s)| (w.to_owned(), s)).collect(),
            )
        })
        .collect();
    (related, users)
}

/// One run: read, compute, swap every list in.
pub async fn run_once(
    args: &RecsArgs,
    pool: &sqlx::PgPool,
    watch: &dyn WatchStore,
    counters: &Counters,
) -> Result<RecsReport, RecsError> {
    let since =
        Utc::now() - chrono::Duration::from_std(args.window).unwrap_or(chrono::Duration::days(30));
    let pairs = watch.watched_since(since).await?;
    let eligible: Vec<(String,)> = sqlx::query_as(
        "SELECT video_id FROM videos WHERE status = 'ready' AND privacy = 'public'
           AND video_id = ANY($1)",
    )
    .bind(
        pairs
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
    )
    .fetch_all(pool)
    .await?;
    let eligible: HashSet<String> = eligible.into_iter().map(|(v,)| v).collect();
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(_, v)| eligible.contains(v))
        .collect();
    let (related, users) = compute(&pairs, args.list_size.max(1), args.max_per_viewer.max(2));
    let p = counters.prefix().to_owned();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut conn = counters.connection();
    let run = uuid_like();
    let lists = related
        .iter()
        .map(|(v, l)| (related_key(&p, v), l))
        .chain(users.iter().map(|(u, l)| (user_key(&p, u), l)));
    // Lists outlive a few missed runs, not forever.
    let ttl = (args.every.as_secs().max(3600) * 3).max(3 * 86_400);
    for (key, list) in lists {
        let tmp = format!("{key}:next:{run}");
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&tmp).ignore();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&tmp);
        for (member, score) in list {
            zadd.arg(*score).arg(member);
        }
        pipe.add_command(zadd).ignore();
        pipe.cmd("EXPIRE").arg(&tmp).arg(ttl).ignore();
        pipe.cmd("RENAME").arg(&tmp).arg(&key).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        written.insert(key);
    }
    // Drop the lists this run did not write (videos no longer eligible,
    // viewers whose history left the window), then record the new set.
    let index = index_key(&p);
    let old: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&index)
        .query_async(&mut conn)
        .await?;
    let stale: Vec<&String> = old.iter().filter(|k| !written.contains(*k)).collect();
    for chunk in stale.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    let tmp_index = format!("{index}:next:{run}");
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&tmp_index).ignore();
    for chunk in written.iter().collect::<Vec<_>>().chunks(500) {
        pipe.cmd("SADD").arg(&tmp_index).arg(chunk).ignore();
    }
    if written.is_empty() {
        pipe.cmd("DEL").arg(&index).ignore();
    } else {
        pipe.cmd("RENAME").arg(&tmp_index).arg(&index).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(RecsReport {
        videos: related.len(),
        users: users.len(),
    })
}

/// A run id for temporary keys.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// Runs `vodfarm recs`: once with `--once`, else every `--every` until
/// `shutdown`, serving /metrics.
pub async fn run(
    args: RecsArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::CountsError> {
    let pool = crate::pool(&args.database_url, args.db_max_connections).await?;
    let counters = args.analytics.open_counters().await?;
    let watch = args.analytics.watch(pool.clone()).await?;
    let metrics = RecsMetrics::new()?;
    if args.once {
        let r = run_once(&args, &pool, watch.as_ref(), &counters).await?;
        println!(
            "recommendations written: {} video list(s), {} viewer list(s)",
            r.videos, r.users
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| crate::CountsError::Serve {
            addr: args.listen,
            source,
        })?;
    let stop = CancellationToken::new();
    let task = {
        let (args, pool, counters, metrics, stop) = (
            args.clone(),
            pool.clone(),
            counters.clone(),
            metrics.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(args.every.max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                match run_once(&args, &pool, watch.as_ref(), &counters).await {
                    Ok(r) => {
                        metrics.runs.inc();
                        metrics
                            .videos
                            .set(i64::try_from(r.videos).unwrap_or(i64::MAX));
                        metrics
                            .users
                            .set(i64::try_from(r.users).unwrap_or(i64::MAX));
                        metrics.last_run.set(Utc::now().timestamp());
                        tracing::info!(
                            videos = r.videos,
                            users = r.users,
                            "recommendations written"
                        );
                    }
                    Err(e) => {
                        metrics.failures.inc();
                        tracing::warn!(error = %e, "recommendations failed; the next run retries");
                    }
                }
            }
        })
    };
    let http = crate::server::router(pool.clone(), counters, metrics.registry.clone());
    let connections = vodfarm_core::serve::ConnectionMetrics::new(&metrics.registry)?;
    vodfarm_core::http::serve_until_shutdown(
        listener,
        http,
        (args.server.limits(), connections),
        stop.clone(),
        shutdown,
        "recs",
    )
    .await;
    let _ = task.await;
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(u: &str, v: &str) -> (String, String) {
        (u.to_owned(), v.to_owned())
    }

    #[test]
    fn co_views_relate_videos_and_popularity_is_damped() {
        // a and b are watched together by two viewers; "hit" is watched
        // by everyone, so co-viewing it says little.
        let pairs = vec![
            p("u1", "a"),
            p("u1", "b"),
            p("u1", "hit"),
            p("u2", "a"),
            p("u2", "b"),
            p("u2", "hit"),
            p("u3", "hit"),
            p("u3", "c"),
            p("u4", "hit"),
            p("u4", "d"),
            p("u5", "a"),
        ];
        let (related, users) = compute(&pairs, 10, 100);
        assert_eq!(related["a"][0].0, "b");
        assert!(related["a"].iter().all(|(v, _)| v != "a"));
        // u5 watched a: b comes first, a itself never.
        assert_eq!(users["u5"][0].0, "b");
        assert!(users["u5"].iter().all(|(v, _)| v != "a"));
    }

    #[test]
    fn lists_are_capped() {
        let pairs: Vec<_> = (0..30).map(|i| p("u", &format!("v{i}"))).collect();
        let (related, _) = compute(&pairs, 5, 10);
        assert!(related.values().all(|l| l.len() <= 5));
        assert_eq!(related.len(), 10);
    }
}
