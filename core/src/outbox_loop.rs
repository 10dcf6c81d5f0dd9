//! The loop every transactional-outbox consumer runs: the CDN purger,
//! the webhook sender and the search indexer.
//!
//! - A round claims one batch (`SKIP LOCKED`, so replicas share the
//!   work) and handles it; a round that claimed rows is followed at once
//!   by another, so a backlog drains without sleeping.
//! - An idle loop sleeps until a notification on the outbox's `NOTIFY`
//!   channel (its trigger sends one when a change commits), the earliest
//!   row waiting for a retry becomes due, or the poll interval passes
//!   (a safety net for missed notifications).
//! - The database going away is not fatal: the round's error is counted,
//!   logged (first and every tenth failure) and retried after a jittered,
//!   growing delay; nothing is lost since the rows stay in the outbox.
//! - The LISTEN connection is its own task ([`listen`]): it reconnects
//!   after a loss and wakes the loop once when it is back, since
//!   notifications may have been missed while it was down.

use crate::backoff::jittered;
use chrono::{DateTime, Utc};
use prometheus::IntGauge;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First delay after a failed round.
const FAILURE_BASE: Duration = Duration::from_millis(250);
/// Longest delay after failed rounds.
const FAILURE_MAX: Duration = Duration::from_secs(5);
/// Delay before a new LISTEN connection after one could not be made.
const RELISTEN: Duration = Duration::from_millis(500);

/// What one outbox consumer does in a round.
pub trait OutboxRound: Send + Sync {
    /// What a round can fail with (a lost database, mostly).
    type Error: Display + Send;

    /// Claims one batch and handles it; returns how many rows were
    /// claimed (0: nothing was waiting).
    fn round(&self) -> impl Future<Output = Result<usize, Self::Error>> + Send;

    /// When the earliest row that waits for a retry becomes due (`None`:
    /// none waits). Outboxes without delayed retries keep the default.
    fn next_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, Self::Error>> + Send {
        async { Ok(None) }
    }

    /// Runs after every round that found nothing to do or failed, before
    /// the loop sleeps (backlog gauges, housekeeping).
    fn idle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Counts a failed round or a failed `next_due` (a metric).
    fn failed(&self, error: &Self::Error);
}

/// How the loop is woken, shared by [`run`] and [`listen`].
#[derive(Debug)]
pub struct Wakeup {
    notify: Notify,
    listening: AtomicBool,
    gauge: Option<IntGauge>,
}

impl Wakeup {
    /// A wakeup whose LISTEN state is also shown by `gauge` (1 while up).
    pub fn new(gauge: Option<IntGauge>) -> Wakeup {
        Wakeup {
            notify: Notify::new(),
            listening: AtomicBool::new(false),
            gauge,
        }
    }

    /// Whether the LISTEN connection is up.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Wakes the loop (or its next sleep, if it is busy now).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::SeqCst);
        if let Some(g) = &self.gauge {
            g.set(i64::from(up));
        }
    }
}

/// Runs rounds of `work` until `stop`; a round in flight is finished
/// first. `name` names the outbox in log lines.
pub async fn run<W: OutboxRound>(
    work: &W,
    wakeup: &Wakeup,
    poll_interval: Duration,
    name: &str,
    stop: &CancellationToken,
) {
    let mut failing = 0u32;
    while !stop.is_cancelled() {
        let wait = match work.round().await {
            Ok(claimed) => {
                if failing > 0 {
                    tracing::info!(outbox = name, "outbox reachable again");
                    failing = 0;
                }
                if claimed > 0 {
                    continue;
                }
                work.idle().await;
                match work.next_due().await {
                    Ok(due) => until(due, poll_interval),
                    Err(e) => {
                        work.failed(&e);
                        tracing::warn!(outbox = name, error = %e, "cannot read the next due row");
                        poll_interval
                    }
                }
            }
            Err(e) => {
                failing += 1;
                work.failed(&e);
                if failing == 1 || failing % 10 == 0 {
                    tracing::warn!(
                        outbox = name,
                        error = %e,
                        failures = failing,
                        "outbox round failed; retrying"
                    );
                }
                work.idle().await;
                jittered(failing, FAILURE_BASE, FAILURE_MAX)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wakeup.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to sleep for a row due at `due`, at most `poll_interval`.
fn until(due: Option<DateTime<Utc>>, poll_interval: Duration) -> Duration {
    match due {
        Some(at) => (at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll_interval),
        None => poll_interval,
    }
}

/// Listens on `channel` until `stop`, waking the loop on every
/// notification; reconnects after a lost connection and wakes the loop
/// once it is back (notifications may have been missed meanwhile).
pub async fn listen(pool: &PgPool, channel: &str, wakeup: &Wakeup, stop: &CancellationToken) {
    while !stop.is_cancelled() {
        let connected = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(channel, error = %e, "LISTEN failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RELISTEN) => continue,
                }
            }
        };
        wakeup.set_listening(true);
        tracing::info!(channel, "listening for outbox notifications");
        wakeup.wake();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wakeup.wake(),
                    Ok(None) => {
                        tracing::warn!(channel, "LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "LISTEN failed; reconnecting");
                        break;
                    }
                }
            }
        }
        wakeup.set_listening(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Rounds that hand out `backlog` rows in batches, fail `fail` times
    /// first, and record what the loop asked.
    struct Script {
        fail: AtomicUsize,
        backlog: Mutex<usize>,
        rounds: AtomicUsize,
        failures: AtomicUsize,
        idles: AtomicUsize,
        drained: Notify,
    }

    impl OutboxRound for Script {
        type Error = String;
        async fn round(&self) -> Result<usize, String> {
            self.rounds.fetch_add(1, Ordering::SeqCst);
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err("database down".into());
            }
            let mut b = self.backlog.lock().map_err(|e| e.to_string())?;
            let n = (*b).min(10);
            *b -= n;
            Ok(n)
        }
        async fn idle(&self) {
            self.idles.fetch_add(1, Ordering::SeqCst);
            if self.backlog.lock().map(|b| *b == 0).unwrap_or(false) {
                self.drained.notify_one();
            }
        }
        fn failed(&self, _: &String) {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_backlog_drains_without_sleeping_and_failures_are_retried() {
        let script = std::sync::Arc::new(Script {
            fail: AtomicUsize::new(2),
            backlog: Mutex::new(35),
            rounds: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            idles: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let wakeup = std::sync::Arc::new(Wakeup::new(None));
        let stop = CancellationToken::new();
        let task = {
            let (s, w, stop) = (script.clone(), wakeup.clone(), stop.clone());
            // An hour's poll: only the backlog and the failure backoff
            // may make the loop go round.
            tokio::spawn(
                async move { run(&*s, &w, Duration::from_secs(3600), "test", &stop).await },
            )
        };
        script.drained.notified().await;
        // 2 failed rounds, 4 rounds with rows (10+10+10+5), 1 empty one.
        assert_eq!(script.failures.load(Ordering::SeqCst), 2);
        assert_eq!(script.rounds.load(Ordering::SeqCst), 7);
        // A wakeup runs one more (empty) round.
        *script.backlog.lock().unwrap() = 3;
        wakeup.wake();
        script.drained.notified().await;
        assert_eq!(script.rounds.load(Ordering::SeqCst), 9);
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn the_sleep_is_bounded_by_the_poll_interval_and_never_negative() {
        let poll = Duration::from_secs(5);
        assert_eq!(until(None, poll), poll);
        assert_eq!(
            until(Some(Utc::now() - chrono::Duration::seconds(3)), poll),
            Duration::ZERO
        );
        assert_eq!(
            until(Some(Utc::now() + chrono::Duration::hours(1)), poll),
            poll
        );
        let soon = until(Some(Utc::now() + chrono::Duration::seconds(2)), poll);
        assert!(soon > Duration::from_secs(1) && soon <= Duration::from_secs(2));
    }
}
