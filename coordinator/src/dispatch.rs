//! Long-poll dispatch: idle workers wait here, not in the database.
//!
//! A lease that finds nothing due registers a [`Waiter`] and sleeps. One
//! dispatcher task per coordinator replica hands out work to waiters, in
//! arrival order, when something may have become due:
//! - a `NOTIFY vodfarm_jobs` (sent by a trigger when a job is inserted,
//!   returned to `pending` or completed, the last of which can make a
//!   dependent job due),
//! - the earliest `run_after` of a backed-off job,
//! - a slow recheck while anyone waits (a job skipped because another
//!   transaction held its row lock notifies nobody when it is released).
//!
//! A round costs one claim query per distinct [`LeaseFilter`] that finds
//! nothing, plus one per job handed out, whatever the number of waiters:
//! a thousand idle workers cost the database a query every few seconds.

use crate::metrics::CoordinatorMetrics;
use crate::queue::{JobQueue, LeaseFilter, QueueError};
use sqlx::postgres::PgListener;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vodfarm_core::jobs::LeasedJob;

/// The channel the job triggers notify.
pub const JOBS_CHANNEL: &str = "vodfarm_jobs";

struct Waiter {
    worker_id: String,
    filter: LeaseFilter,
    max_jobs: i64,
    reply: oneshot::Sender<Vec<LeasedJob>>,
}

/// Hands jobs to waiting long polls.
pub struct Dispatcher {
    queue: JobQueue,
    metrics: Arc<CoordinatorMetrics>,
    waiters: Mutex<VecDeque<Waiter>>,
    wake: Notify,
    /// Asks the dispatcher to recompute its timers (no claim round).
    schedule: Notify,
    /// Bumped for every notification; a poll that saw it change while it
    /// registered asks for a round, so no notification falls in the gap
    /// between its own claim and its registration.
    epoch: AtomicU64,
    recheck: Duration,
    shutdown: CancellationToken,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `queue`; `recheck` is the slow safety round.
    pub fn new(
        queue: JobQueue,
        metrics: Arc<CoordinatorMetrics>,
        recheck: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            queue,
            metrics,
            waiters: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            schedule: Notify::new(),
            epoch: AtomicU64::new(0),
            recheck,
            shutdown,
        })
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding this lock leaves only a queue of senders
        // behind, which is still consistent: keep using it.
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leases up to `max_jobs` jobs, waiting up to `wait` for one to
    /// become due. Answers an empty list when nothing came in time or the
    /// coordinator is shutting down.
    pub async fn lease(
        self: &Arc<Self>,
        worker_id: &str,
        filter: LeaseFilter,
        max_jobs: i64,
        wait: Duration,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        // A poll with the same filter already waiting means the last look
        // found nothing due for it, and anything new will start a round
        // that serves this poll too: skip the claim. This is what keeps a
        // re-polling idle fleet off the database.
        let others_wait = !wait.is_zero() && self.waiters().iter().any(|w| w.filter == filter);
        if !others_wait {
            let jobs = self.claim(worker_id, &filter, max_jobs).await?;
            if !jobs.is_empty() || wait.is_zero() || self.shutdown.is_cancelled() {
                return Ok(jobs);
            }
        }
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = self.waiters();
            q.push_back(Waiter {
                worker_id: worker_id.to_owned(),
                filter,
                max_jobs,
                reply: tx,
            });
            q.len() == 1
        };
        self.metrics.waiting_polls.inc();
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.wake.notify_one();
        } else if first {
            // The dispatcher keeps no timers while nobody waits: have it
            // look up when the next backed-off job becomes due.
            self.schedule.notify_one();
        }
        let mut guard = WaitGuard {
            rx: Some(rx),
            dispatcher: Arc::clone(self),
        };
        let result = tokio::select! {
            r = guard.rx.as_mut().expect("receiver present until the guard drops") => r.unwrap_or_default(),
            _ = tokio::time::sleep(wait) => guard.take_late_reply(),
            _ = self.shutdown.cancelled() => guard.take_late_reply(),
        };
        guard.rx = None;
        Ok(result)
    }

    async fn claim(
        &self,
        worker_id: &str,
        filter: &LeaseFilter,
        max_jobs: i64,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        self.metrics.claim_queries.inc();
        self.queue.claim(worker_id, filter, max_jobs).await
    }

    /// Asks for a round now (new work may be due).
    pub fn notify(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// How many polls are waiting.
    pub fn waiting(&self) -> usize {
        self.waiters().len()
    }

    /// Runs the dispatcher until shutdown; then answers every waiter.
    pub async fn run(self: Arc<Self>) {
        let mut next_due: Option<Instant> = None;
        loop {
            let has_waiters = self.waiting() > 0;
            let deadline = if has_waiters {
                let recheck = Instant::now() + self.recheck;
                Some(next_due.map_or(recheck, |d| d.min(recheck)))
            } else {
                None
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = sleep_until_opt(deadline) => {}
                _ = self.schedule.notified() => {
                    next_due = match self.next_due().await {
                        Ok(next) => next,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the next due time");
                            Some(Instant::now() + Duration::from_millis(500))
                        }
                    };
                    continue;
                }
                _ = self.shutdown.cancelled() => break,
            }
            next_due = match self.round().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch round failed; retrying shortly");
                    Some(Instant::now() + Duration::from_millis(500))
                }
            };
        }
        let drained: Vec<Waiter> = self.waiters().drain(..).collect();
        self.metrics.waiting_polls.sub(drained.len() as i64);
    }

    /// One pass over the waiters. Returns when the next backed-off job
    /// becomes due, if any waiter is still waiting.
    async fn round(&self) -> Result<Option<Instant>, QueueError> {
        let batch: Vec<Waiter> = self.waiters().drain(..).collect();
        let mut kept = Vec::new();
        let mut exhausted: HashSet<LeaseFilter> = HashSet::new();
        let mut failure = None;
        for w in batch {
            if w.reply.is_closed() {
                self.metrics.waiting_polls.dec();
                continue;
            }
            if failure.is_some() || exhausted.contains(&w.filter) {
                kept.push(w);
                continue;
            }
            match self.claim(&w.worker_id, &w.filter, w.max_jobs).await {
                Ok(jobs) if jobs.is_empty() => {
                    exhausted.insert(w.filter.clone());
                    kept.push(w);
                }
                Ok(jobs) => {
                    self.metrics.waiting_polls.dec();
                    if let Err(jobs) = w.reply.send(jobs) {
                        // The poll gave up between our check and the send.
                        self.queue.release(&jobs).await?;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    kept.push(w);
                }
            }
        }
        let any_left = !kept.is_empty();
        {
            // Waiters that arrived during the round queue behind the kept ones.
            let mut q = self.waiters();
            for w in kept.into_iter().rev() {
                q.push_front(w);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if !any_left {
            return Ok(None);
        }
        self.next_due().await
    }

    /// When the earliest backed-off job becomes due, as a timer deadline.
    async fn next_due(&self) -> Result<Option<Instant>, QueueError> {
        let next = self.queue.next_due_at().await?;
        Ok(next.map(|at| {
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
            Instant::now() + wait + Duration::from_millis(5)
        }))
    }

    /// Listens for job notifications until shutdown, reconnecting after
    /// connection loss (and running a round then: notifications sent while
    /// disconnected are lost).
    pub async fn listen(self: Arc<Self>, pool: sqlx::PgPool) {
        while !self.shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(JOBS_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                self.pause(Duration::from_secs(1)).await;
                continue;
            }
            // Anything committed while we were not listening: look once.
            self.notify();
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(_)) => self.notify(),
                        Ok(None) => {
                            tracing::warn!("LISTEN connection lost; reconnecting");
                            self.notify();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Owns a waiting poll's receiver. If the poll goes away (timeout, client
/// disconnect) after the dispatcher already sent it jobs, the jobs are
/// given back at once instead of waiting for their leases to expire.
struct WaitGuard {
    rx: Option<oneshot::Receiver<Vec<LeasedJob>>>,
    dispatcher: Arc<Dispatcher>,
}

impl WaitGuard {
    /// Closes the channel and takes a reply that raced with the timeout.
    fn take_late_reply(&mut self) -> Vec<LeasedJob> {
        match self.rx.take() {
            Some(mut rx) => {
                rx.close();
                rx.try_recv().unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let jobs = self.take_late_reply();
        if !jobs.is_empty() {
            let queue = self.dispatcher.queue.clone();
            tokio::spawn(async move {
                if let Err(e) = queue.release(&jobs).await {
                    tracing::warn!(error = %e, "could not release jobs of an abandoned poll");
                }
            });
        }
    }
}
