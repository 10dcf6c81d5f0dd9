//! The flush: Redis's per-hour counters → PostgreSQL (the seed's hourly
//! cron), exactly once per (video, hour).
//!
//! For each open hour and each video with counts in it, one transaction:
//! make sure the `view_aggregates` row exists, lock it (`FOR UPDATE`),
//! set it to the new totals, and move `videos.view_count` and
//! `channels.total_views` by the difference between the new and the old
//! row only. A flush that crashes half-way left whole (video, hour)
//! transactions behind, and the next run moves only what is still
//! missing; two flushers at once serialize on the row lock and the second
//! sees a difference of zero. Counts only grow (Redis counters never
//! go down), and a row never moves back: a flusher that read Redis
//! earlier than the row's last writer keeps the row's larger value.

use crate::metrics::CountsMetrics;
use chrono::Utc;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_analytics::counters::{CounterError, Counters, HourTotals};

/// Why a flush failed.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Redis or PostgreSQL failed.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which hours a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// Hours that ended (the hourly run).
    ClosedHours,
    /// Every hour up to now, the current one included (`--flush-now`).
    UpToNow,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Hours flushed.
    pub hours: usize,
    /// (video, hour) rows written.
    pub rows: usize,
    /// Views moved into `videos.view_count` (the sum of differences).
    pub views: i64,
}

/// Flushes the open hours in `scope`; hours that ended more than `grace`
/// ago are closed after their last flush.
pub async fn flush(
    pool: &PgPool,
    counters: &Counters,
    metrics: &CountsMetrics,
    scope: FlushScope,
    grace: Duration,
) -> Result<FlushReport, FlushError> {
    let now = Utc::now().timestamp();
    let current = now - now.rem_euclid(3600);
    let mut report = FlushReport::default();
    for (hour, version) in counters.open_hour_versions().await? {
        if hour > current || (hour == current && scope == FlushScope::ClosedHours) {
            continue;
        }
        let totals = counters.hour_totals(hour).await?;
        let (rows, views) = flush_hour(pool, hour, &totals).await?;
        report.hours += 1;
        report.rows += rows;
        report.views += views;
        metrics.flushed_rows.inc_by(rows as u64);
        metrics
            .flushed_views
            .inc_by(u64::try_from(views).unwrap_or(0));
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        if hour.saturating_add(3600).saturating_add(grace_secs) <= now
            && counters.close_hour(hour, version).await?
        {
            tracing::info!(hour, "hour flushed for good");
        }
    }
    metrics.last_flush.set(Utc::now().timestamp());
    Ok(report)
}

/// Writes one hour's totals; returns (rows written, views moved).
async fn flush_hour(
    pool: &PgPool,
    hour: i64,
    totals: &[HourTotals],
) -> Result<(usize, i64), FlushError> {
    if totals.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<&str> = totals.iter().map(|t| t.video_id.as_str()).collect();
    let known: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT video_id, id, channel_id FROM videos WHERE video_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let known: HashMap<String, (i64, i64)> =
        known.into_iter().map(|(v, id, c)| (v, (id, c))).collect();
    let mut todo: Vec<(i64, i64, &HourTotals)> = totals
        .iter()
        .filter_map(|t| known.get(&t.video_id).map(|(id, c)| (*id, *c, t)))
        .collect();
    // One lock order for every flusher: by video.
    todo.sort_by_key(|(id, _, _)| *id);
    let (mut rows, mut views) = (0, 0);
    for (video, channel, t) in todo {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match flush_row(pool, hour, video, channel, t).await {
                Ok(moved) => {
                    rows += 1;
                    views += moved;
                    break;
                }
                Err(sqlx::Error::Database(d))
                    if attempt < 5 && matches!(d.code().as_deref(), Some("40P01" | "40001")) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((rows, views))
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v.max(0)).unwrap_or(i32::MAX)
}

/// One (video, hour) in one transaction; returns the views it moved.
async fn flush_row(
    pool: &PgPool,
    hour: i64,
    video: i64,
    channel: i64,
    t: &HourTotals,
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO view_aggregates (video_id, hour_bucket, view_count, unique_viewers, avg_watch_duration)
         VALUES ($1, to_timestamp($2), 0, 0, 0) ON CONFLICT (video_id, hour_bucket) DO NOTHING",
    )
    .bind(video)
    .bind(hour)
    .execute(&mut *tx)
    .await?;
    let (old,): (i32,) = sqlx::query_as(
        "SELECT view_count FROM view_aggregates
         WHERE video_id = $1 AND hour_bucket = to_timestamp($2) FOR UPDATE",
    )
    .bind(video)
    .bind(hour)
    .fetch_one(&mut *tx)
    .await?;
    let new = clamp_i32(t.views).max(old);
    let avg = if t.sessions > 0 {
        clamp_i32((t.watch_seconds + t.sessions / 2) / t.sessions)
    } else {
        0
    };
    sqlx::query(
        "UPDATE view_aggregates
         SET view_count = $3, unique_viewers = greatest(coalesce(unique_viewers, 0), $4),
             avg_watch_duration = $5
         WHERE video_id = $1 AND hour_bucket = to_timestamp($2)",
    )
    .bind(video)
    .bind(hour)
    .bind(new)
    .bind(clamp_i32(t.unique_viewers))
    .bind(avg)
    .execute(&mut *tx)
    .await?;
    let diff = i64::from(new - old);
    if diff > 0 {
        sqlx::query("UPDATE videos SET view_count = coalesce(view_count, 0) + $2 WHERE id = $1")
            .bind(video)
            .bind(diff)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE channels SET total_views = coalesce(total_views, 0) + $2 WHERE id = $1",
        )
        .bind(channel)
        .bind(diff)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(diff)
}

/// Flushes closed hours every `every` until `stop` fires.
pub async fn flush_every(
    pool: &PgPool,
    counters: &Counters,
    metrics: &CountsMetrics,
    every: Duration,
    grace: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match flush(pool, counters, metrics, FlushScope::ClosedHours, grace).await {
            Ok(r) if r.rows > 0 => {
                tracing::info!(hours = r.hours, rows = r.rows, views = r.views, "flushed");
            }
            Ok(_) => {}
            Err(e) => {
                metrics.errors.with_label_values(&["flush"]).inc();
                tracing::warn!(error = %e, "flush failed; the next run retries");
            }
        }
    }
}
