//! Who may fetch a video's files, read from PostgreSQL and kept strongly
//! consistent with it.
//!
//! - A video's state (exists, ready, private) is read from `videos` and
//!   cached in memory, but only while the `LISTEN vodfarm_videos`
//!   connection is up: the trigger of migration `…010_video_notify`
//!   notifies every change of status or privacy, every insert and delete.
//!   A notification drops the video's state and purges its cached bytes.
//! - While the LISTEN connection is down nothing is cached (every request
//!   reads the row); after it is back the whole state cache is flushed,
//!   since notifications may have been missed meanwhile, and so is every
//!   cached object (a missed purge must not leave a re-encoded or deleted
//!   video's old bytes behind; single-flight keeps the refill to one fetch
//!   per object).
//! - A lookup that raced a notification does not cache what it read: an
//!   epoch bumped by every notification is compared before and after the
//!   insert.
//! - The rules: no row, `deleted`, or any status but `ready` → 404;
//!   `private` without a valid `?token=` → 403.

use crate::cache::ObjectCache;
use crate::metrics::OriginMetrics;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_core::signing::verify_playback_token;

/// The channel the videos trigger notifies (payload: the public video id,
/// or `*` for every video).
pub const VIDEOS_CHANNEL: &str = "vodfarm_videos";

/// What the origin knows about a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoState {
    /// A row exists and its status is `ready`.
    pub ready: bool,
    /// Its privacy is `private`.
    pub private: bool,
}

/// Why a request may not have the video's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No such video, deleted, or not ready.
    #[error("no such video")]
    NotFound,
    /// Private, and no valid token.
    #[error("this video is private: a valid token is required")]
    Forbidden,
    /// The database could not be asked.
    #[error("video state unavailable: {0}")]
    Unavailable(String),
}

/// A granted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The video is private (answers must not be cached by shared caches).
    pub private: bool,
}

/// The access checker.
pub struct Access {
    pool: PgPool,
    states: moka::sync::Cache<String, VideoState>,
    epoch: AtomicU64,
    listening: AtomicBool,
    secret: Option<Arc<[u8]>>,
    metrics: OriginMetrics,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// A checker over `pool`; `state_ttl` bounds how long a state is kept
    /// even without notifications (a safety net).
    pub fn new(
        pool: PgPool,
        secret: Option<Arc<[u8]>>,
        state_ttl: Duration,
        metrics: OriginMetrics,
    ) -> Access {
        Access {
            pool,
            states: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(state_ttl)
                .build(),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            secret,
            metrics,
        }
    }

    /// Whether the LISTEN connection is up.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Decides whether a request for `video_id`'s files, carrying `token`,
    /// may be served.
    pub async fn check(&self, video_id: &str, token: Option<&str>) -> Result<Grant, Denied> {
        let state = self.state(video_id).await?;
        if !state.ready {
            return Err(Denied::NotFound);
        }
        if state.private {
            let ok = match (&self.secret, token) {
                (Some(secret), Some(t)) => {
                    let now = chrono::Utc::now().timestamp();
                    verify_playback_token(secret, video_id, t, now).is_ok()
                }
                _ => false,
            };
            if !ok {
                return Err(Denied::Forbidden);
            }
        }
        Ok(Grant {
            private: state.private,
        })
    }

    async fn state(&self, video_id: &str) -> Result<VideoState, Denied> {
        let listening = self.is_listening();
        if listening {
            if let Some(s) = self.states.get(video_id) {
                return Ok(s);
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.metrics.state_lookups.inc();
        let row: Option<(Option<String>, Option<String>)> = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::query_as("SELECT status, privacy FROM videos WHERE video_id = $1")
                .bind(video_id)
                .fetch_optional(&self.pool),
        )
        .await
        .map_err(|_| Denied::Unavailable("database timed out".into()))?
        .map_err(|e| {
            tracing::warn!(error = %e, "video state lookup failed");
            Denied::Unavailable("database unavailable".into())
        })?;
        let state = match row {
            None => VideoState {
                ready: false,
                private: false,
            },
            Some((status, privacy)) => VideoState {
                ready: status.as_deref() == Some("ready"),
                private: privacy.as_deref() == Some("private"),
            },
        };
        if listening && self.is_listening() && self.epoch.load(Ordering::SeqCst) == epoch {
            self.states.insert(video_id.to_owned(), state);
            if self.epoch.load(Ordering::SeqCst) != epoch || !self.is_listening() {
                self.states.invalidate(video_id);
            }
        }
        Ok(state)
    }

    fn forget(&self, video_id: &str, cache: &ObjectCache) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if video_id == "*" {
            self.states.invalidate_all();
            cache.purge_all();
        } else {
            self.states.invalidate(video_id);
            cache.purge_video(video_id);
        }
    }

    fn forget_all_states(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.states.invalidate_all();
    }

    /// Listens for video changes until `stop`, reconnecting after a lost
    /// connection (and then flushing every cached state).
    pub async fn listen(self: Arc<Self>, cache: Arc<ObjectCache>, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    if pause(&stop, Duration::from_millis(500)).await {
                        return;
                    }
                    continue;
                }
            };
            if let Err(e) = listener.listen(VIDEOS_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                if pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
            // From here on every change is heard: start caching again, but
            // forget what was read while we were deaf. After a reconnect,
            // cached bytes go too: a purge may have been missed.
            self.listening.store(true, Ordering::SeqCst);
            self.forget_all_states();
            if self.metrics.listen_connects.get() > 0 {
                cache.purge_all();
            }
            self.metrics.listen_connects.inc();
            self.metrics.listening.set(1);
            tracing::info!(channel = VIDEOS_CHANNEL, "listening for video changes");
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) => {
                            self.metrics.invalidations.inc();
                            tracing::debug!(video_id = n.payload(), "video changed");
                            self.forget(n.payload(), &cache);
                        }
                        Ok(None) => {
                            tracing::warn!("LISTEN connection lost; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            self.listening.store(false, Ordering::SeqCst);
            self.forget_all_states();
            self.metrics.listening.set(0);
        }
    }
}

/// Sleeps `d`; true when `stop` fired first.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
