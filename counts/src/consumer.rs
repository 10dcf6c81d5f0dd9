//! The consuming loop of `vodfarm counts`: batch → Redis (one idempotent
//! script run) → watch history → commit. A failure retries the same batch
//! (nothing is committed before it was applied); a crash leaves it
//! uncommitted, so the bus delivers it again and the script's dedup keys
//! make the second application a no-op.

use crate::metrics::CountsMetrics;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vodfarm_analytics::args::Analytics;
use vodfarm_analytics::bus::{BusConsumer, BusError};
use vodfarm_analytics::counters::Applied;
use vodfarm_analytics::event::{EventKind, PlaybackEvent};
use vodfarm_analytics::watch::{erasure, is_finished, WatchRecord};

/// How long `next_batch` waits for the first event.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// How often the lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// Seconds as the stores keep them (whole, clamped to i32).
fn whole(secs: f64) -> i32 {
    if secs.is_finite() && secs > 0.0 {
        secs.min(f64::from(i32::MAX)).floor() as i32
    } else {
        0
    }
}

/// The history writes of a batch: signed-in viewers only.
pub fn watch_records(events: &[PlaybackEvent], applied: &[Applied]) -> Vec<WatchRecord> {
    events
        .iter()
        .zip(applied)
        .filter_map(|(e, a)| {
            let user_id = e.user_id.clone()?;
            let position = whole(e.position_seconds);
            Some(WatchRecord {
                user_id,
                video_id: e.video_id.clone(),
                watched_at: ms_to_time(a.session_first_ms),
                updated_at: ms_to_time(e.received_at_ms),
                watch_duration_seconds: whole(e.watched_seconds),
                position_seconds: position,
                duration_seconds: e.duration_seconds,
                completed: e.kind == EventKind::End && is_finished(position, e.duration_seconds),
            })
        })
        .collect()
}

/// Retries `f` with backoff until it succeeds or `stop` fires (then
/// `None`: the batch stays uncommitted and is delivered again).
async fn retry<T, E: std::fmt::Display, F, Fut>(
    stage: &'static str,
    metrics: &CountsMetrics,
    stop: &CancellationToken,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                metrics.errors.with_label_values(&[stage]).inc();
                tracing::warn!(stage, error = %e, retry_in_ms = delay.as_millis() as u64, "batch failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Commits the last batch, retrying; `false` if asked to stop first. A batch
/// whose partitions were reassigned is left uncommitted (`true`).
async fn commit(
    consumer: &mut dyn BusConsumer,
    metrics: &CountsMetrics,
    stop: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match consumer.commit().await {
            Ok(()) => return true,
            // Retrying cannot succeed and would keep this member from
            // the rebalance; the applied batch is delivered again and
            // deduplicated.
            Err(e @ BusError::Reassigned(_)) => {
                metrics.errors.with_label_values(&["commit"]).inc();
                tracing::warn!(error = %e, "batch applied but not committed: it will be delivered again and deduplicated");
                return true;
            }
            Err(e) => {
                metrics.errors.with_label_values(&["commit"]).inc();
                tracing::warn!(error = %e, "commit failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Consumes until `stop` fires; the batch in flight is finished first.
pub async fn consume(
    consumer: &mut dyn BusConsumer,
    pool: &sqlx::PgPool,
    analytics: &Analytics,
    metrics: &CountsMetrics,
    batch_size: usize,
    stop: CancellationToken,
) {
    let mut last_lag = Instant::now() - LAG_EVERY;
    let mut poll_delay = Duration::from_millis(100);
    while !stop.is_cancelled() {
        if last_lag.elapsed() >= LAG_EVERY {
            last_lag = Instant::now();
            match consumer.lag().await {
                Ok(l) => metrics.lag.set(i64::try_from(l).unwrap_or(i64::MAX)),
                Err(e) => {
                    metrics.lag.set(-1);
                    tracing::warn!(error = %e, "consumer lag unknown");
                }
            }
        }
        let events = tokio::select! {
            r = consumer.next_batch(batch_size, POLL_WAIT) => r,
            () = stop.cancelled() => break,
        };
        let events = match events {
            Ok(e) => {
                poll_delay = Duration::from_millis(100);
                e
            }
            Err(e) => {
                metrics.errors.with_label_values(&["bus"]).inc();
                tracing::warn!(error = %e, "reading the bus failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(poll_delay) => {}
                    () = stop.cancelled() => break,
                }
                poll_delay = (poll_delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let started = Instant::now();
        // A stop request ends only a retry loop (a store is down): the
        // batch is then left uncommitted and delivered again later.
        let Some(applied) = retry("redis", metrics, &stop, || {
            analytics.counters.apply(&events)
        })
        .await
        else {
            break;
        };
        let records = watch_records(&events, &applied);
        let Some(written) = retry("history", metrics, &stop, || {
            erasure::record_unless_erased(pool, analytics.watch.as_ref(), &records)
        })
        .await
        else {
            break;
        };
        if !commit(consumer, metrics, &stop).await {
            break;
        }
        let new = applied.iter().filter(|a| a.new).count() as u64;
        let counted = applied.iter().filter(|a| a.counted).count() as u64;
        metrics.events.with_label_values(&["applied"]).inc_by(new);
        metrics
            .events
            .with_label_values(&["duplicate"])
            .inc_by(applied.len() as u64 - new);
        metrics.views.inc_by(counted);
        metrics.history_records.inc_by(written as u64);
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        if !events.is_empty() {
            tracing::debug!(events = events.len(), new, counted, "batch applied");
        }
    }
    tracing::info!("consumer stopped");
}
