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
//!
//! **Degraded mode (AP, bounded).** Every state read from the database is
//! also kept as the video's *last known state*, confirmed at the time of
//! the read, or, if it was read while the LISTEN connection was up, until
//! that connection was lost (no notification means no change). When the
//! database cannot be reached (a lookup fails or times out, the LISTEN
//! connection cannot be made), the origin enters degraded mode: a video
//! whose last known state was confirmed less than `--stale-state-grace`
//! ago is answered from it, without waiting on the database (private
//! videos still need a valid token: tokens are checked without the
//! database); any other video answers 503. A probe leaves degraded mode
//! once the database answers again; a LISTEN reconnect forgets every
//! last known state (changes made meanwhile were not heard), so each is
//! read again before it is trusted. A notification forgets the video's
//! last known state at once. A delete made while this tier could not see
//! the database takes effect here when it can again.

use crate::cache::ObjectCache;
use crate::metrics::OriginMetrics;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// How long a lookup may take when the video has a usable last known
/// state to fall back on (a database slower than this is treated as
/// unreachable).
const LOOKUP_TIMEOUT_WITH_FALLBACK: Duration = Duration::from_secs(1);
/// How long a lookup may take otherwise (the only answer without it is
/// 503).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a title is reused for download file names: a renamed video
/// downloads under its new name at most this late (one query per video
/// per this period instead of one per request, Range requests included).
pub const TITLE_TTL: Duration = Duration::from_secs(10);
/// How often degraded mode asks the database whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A video's last known state.
#[derive(Debug, Clone, Copy)]
struct Known {
    state: VideoState,
    /// When it was read.
    read_at: Instant,
    /// Read while the LISTEN connection was up (and no notification came
    /// since): confirmed until that connection is lost.
    while_listening: bool,
}

/// The access checker.
pub struct Access {
    pool: PgPool,
    states: moka::sync::Cache<String, VideoState>,
    /// Titles for download file names, kept [`TITLE_TTL`] (renames do
    /// not notify).
    titles: moka::sync::Cache<String, String>,
    known: moka::sync::Cache<String, Known>,
    epoch: AtomicU64,
    listening: AtomicBool,
    /// When the LISTEN connection was last lost.
    deaf_since: Mutex<Option<Instant>>,
    degraded: AtomicBool,
    degraded_since: Mutex<Option<Instant>>,
    grace: Duration,
    secret: Option<Arc<[u8]>>,
    metrics: OriginMetrics,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("listening", &self.listening)
            .field("degraded", &self.degraded)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// A checker over `pool`; `state_ttl` bounds how long a state is kept
    /// even without notifications (a safety net); `grace` is how long a
    /// last known state may be served while the database is unreachable
    /// (zero: never, every request then answers 503).
    pub fn new(
        pool: PgPool,
        secret: Option<Arc<[u8]>>,
        state_ttl: Duration,
        grace: Duration,
        metrics: OriginMetrics,
    ) -> Access {
        Access {
            pool,
            states: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(state_ttl)
                .build(),
            titles: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TITLE_TTL)
                .build(),
            known: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            deaf_since: Mutex::new(None),
            degraded: AtomicBool::new(false),
            degraded_since: Mutex::new(None),
            grace,
            secret,
            metrics,
        }
    }

    /// The video's title (a download's file name), at most
    /// [`TITLE_TTL`] old; `None` when the database does not answer within
    /// a second (degraded mode asks nothing).
    pub async fn title(&self, video_id: &str) -> Option<String> {
        if let Some(t) = self.titles.get(video_id) {
            return Some(t);
        }
        if self.is_degraded() {
            return None;
        }
        let q = sqlx::query_scalar::<_, String>("SELECT title FROM videos WHERE video_id = $1")
            .bind(video_id)
            .fetch_optional(&self.pool);
        match tokio::time::timeout(Duration::from_secs(1), q).await {
            Ok(Ok(Some(title))) => {
                self.titles.insert(video_id.to_owned(), title.clone());
                Some(title)
            }
            _ => None,
        }
    }

    /// Whether the LISTEN connection is up.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Whether the database is unreachable (answers come from last known
    /// states).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    fn enter_degraded(&self, cause: &str) {
        if !self.degraded.swap(true, Ordering::SeqCst) {
            if let Ok(mut since) = self.degraded_since.lock() {
                *since = Some(Instant::now());
            }
            self.metrics.degraded.set(1);
            self.metrics.degraded_entered.inc();
            tracing::warn!(
                cause,
                grace_seconds = self.grace.as_secs(),
                "database unreachable: degraded mode, known videos are served from their last known state; others answer 503"
            );
        }
    }

    fn leave_degraded(&self) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            let lasted = self
                .degraded_since
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            self.metrics.degraded.set(0);
            tracing::warn!(
                seconds = lasted,
                "database reachable again: leaving degraded mode"
            );
        }
    }

    /// The last known state of `video_id`, if it was confirmed less than
    /// the grace ago.
    fn last_known(&self, video_id: &str) -> Option<VideoState> {
        let k = self.known.get(video_id)?;
        let confirmed = if k.while_listening {
            if self.is_listening() {
                Instant::now()
            } else {
                self.deaf_since
                    .lock()
                    .ok()
                    .and_then(|d| *d)
                    .map_or(k.read_at, |d| d.max(k.read_at))
            }
        } else {
            k.read_at
        };
        (confirmed.elapsed() <= self.grace).then_some(k.state)
    }

    /// The answer when the database cannot tell: the last known state, or
    /// 503.
    fn fallback(&self, video_id: &str) -> Result<VideoState, Denied> {
        match self.last_known(video_id) {
            Some(s) => {
                self.metrics.stale_state_answers.inc();
                Ok(s)
            }
            None => {
                self.metrics.state_unavailable.inc();
                Err(Denied::Unavailable("database unavailable".into()))
            }
        }
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
        if self.is_degraded() {
            // The database did not answer lately: do not make the viewer
            // wait on it; the probe notices when it is back.
            return self.fallback(video_id);
        }
        let timeout = if self.last_known(video_id).is_some() {
            LOOKUP_TIMEOUT_WITH_FALLBACK
        } else {
            LOOKUP_TIMEOUT
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let read_at = Instant::now();
        self.metrics.state_lookups.inc();
        let row: Option<(Option<String>, Option<String>)> = match tokio::time::timeout(
            timeout,
            sqlx::query_as("SELECT status, privacy FROM videos WHERE video_id = $1")
                .bind(video_id)
                .fetch_optional(&self.pool),
        )
        .await
        {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                tracing::warn!(video_id, error = %e, "video state lookup failed");
                self.enter_degraded("lookup failed");
                return self.fallback(video_id);
            }
            Err(_) => {
                tracing::warn!(video_id, "video state lookup timed out");
                self.enter_degraded("lookup timed out");
                return self.fallback(video_id);
            }
        };
        self.leave_degraded();
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
        if self.epoch.load(Ordering::SeqCst) == epoch {
            let heard = listening && self.is_listening();
            self.known.insert(
                video_id.to_owned(),
                Known {
                    state,
                    read_at,
                    while_listening: heard,
                },
            );
            if heard {
                self.states.insert(video_id.to_owned(), state);
            }
            if self.epoch.load(Ordering::SeqCst) != epoch || (heard && !self.is_listening()) {
                // A notification (or the loss of the connection) raced
                // the read: what it read may be stale.
                self.states.invalidate(video_id);
                self.known.invalidate(video_id);
            }
        }
        Ok(state)
    }

    /// While degraded, asks the database every second whether it is back
    /// (requests do not wait on it then); runs until `stop`.
    pub async fn probe(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if pause(&stop, PROBE_INTERVAL).await {
                return;
            }
            if !self.is_degraded() {
                continue;
            }
            let ok = matches!(
                tokio::time::timeout(
                    LOOKUP_TIMEOUT,
                    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool),
                )
                .await,
                Ok(Ok(_))
            );
            if ok {
                self.leave_degraded();
            }
        }
    }

    fn forget(&self, video_id: &str, cache: &ObjectCache) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if video_id == "*" {
            self.states.invalidate_all();
            self.known.invalidate_all();
            self.titles.invalidate_all();
            cache.purge_all();
        } else {
            self.states.invalidate(video_id);
            self.known.invalidate(video_id);
            self.titles.invalidate(video_id);
            cache.purge_video(video_id);
        }
    }

    /// Forgets the states kept while listening; with `last_known` also
    /// every last known state (after a reconnect: changes made while deaf
    /// were not heard).
    fn forget_all_states(&self, last_known: bool) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.states.invalidate_all();
        if last_known {
            self.known.invalidate_all();
        }
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
                    self.enter_degraded("LISTEN connection failed");
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
            // forget what was read while we were deaf (last known states
            // included: they are read again before being trusted). After
            // a reconnect, cached bytes go too: a purge may have been
            // missed.
            self.listening.store(true, Ordering::SeqCst);
            self.forget_all_states(true);
            self.leave_degraded();
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
            // States heard while listening stay as last known states,
            // confirmed until now.
            if let Ok(mut d) = self.deaf_since.lock() {
                *d = Some(Instant::now());
            }
            self.listening.store(false, Ordering::SeqCst);
            self.forget_all_states(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use vodfarm_core::signing::sign_playback_token;

    const SECRET: &[u8] = b"secret";

    /// A checker whose database is never reached.
    fn access(grace: Duration) -> Access {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .unwrap();
        Access::new(
            pool,
            Some(Arc::from(SECRET)),
            Duration::from_secs(60),
            grace,
            OriginMetrics::new().unwrap(),
        )
    }

    fn known(a: &Access, id: &str, private: bool, age: Duration, while_listening: bool) {
        let Some(read_at) = Instant::now().checked_sub(age) else {
            return;
        };
        a.known.insert(
            id.to_owned(),
            Known {
                state: VideoState {
                    ready: true,
                    private,
                },
                read_at,
                while_listening,
            },
        );
    }

    #[tokio::test]
    async fn a_last_known_state_is_usable_within_the_grace_from_its_confirmation() {
        let a = access(Duration::from_secs(600));
        known(&a, "v_fresh", false, Duration::from_secs(5), false);
        known(&a, "v_old", false, Duration::from_secs(700), false);
        assert!(a.last_known("v_fresh").is_some());
        assert!(a.last_known("v_old").is_none());
        assert!(a.last_known("v_never").is_none());
        // Read long ago while listening: confirmed for as long as the
        // connection stayed up …
        known(&a, "v_heard", false, Duration::from_secs(700), true);
        a.listening.store(true, Ordering::SeqCst);
        assert!(a.last_known("v_heard").is_some());
        // … so until it was lost.
        a.listening.store(false, Ordering::SeqCst);
        *a.deaf_since.lock().unwrap() = Some(Instant::now());
        assert!(a.last_known("v_heard").is_some());
        *a.deaf_since.lock().unwrap() = Instant::now().checked_sub(Duration::from_secs(650));
        assert!(a.last_known("v_heard").is_none());
        // A zero grace never serves stale.
        let strict = access(Duration::ZERO);
        known(&strict, "v_fresh", false, Duration::from_secs(1), false);
        assert!(strict.last_known("v_fresh").is_none());
    }

    #[tokio::test]
    async fn degraded_answers_known_videos_and_still_checks_tokens() {
        let a = access(Duration::from_secs(600));
        known(&a, "v_pub", false, Duration::from_secs(1), false);
        known(&a, "v_priv", true, Duration::from_secs(1), false);
        a.enter_degraded("test");
        assert!(a.is_degraded());
        assert_eq!(a.check("v_pub", None).await, Ok(Grant { private: false }));
        assert_eq!(a.check("v_priv", None).await, Err(Denied::Forbidden));
        let exp = chrono::Utc::now().timestamp() + 60;
        let token = sign_playback_token(SECRET, "v_priv", exp);
        assert_eq!(
            a.check("v_priv", Some(&token)).await,
            Ok(Grant { private: true })
        );
        assert!(matches!(
            a.check("v_unknown", None).await,
            Err(Denied::Unavailable(_))
        ));
        assert_eq!(a.metrics.stale_state_answers.get(), 3);
        assert_eq!(a.metrics.state_unavailable.get(), 1);
        // A notification forgets the last known state.
        let cache = ObjectCache::new(
            crate::upstream::Upstream::Origin(Box::new(
                crate::upstream::HttpUpstream::new("http://127.0.0.1:9", None).unwrap(),
            )),
            crate::cache::CacheSettings {
                max_bytes: 1 << 20,
                max_object: 1 << 20,
                upstream_timeout: Duration::from_secs(1),
                playlist_ttl: Duration::from_secs(1),
            },
            a.metrics.clone(),
        );
        a.forget("v_pub", &cache);
        assert!(matches!(
            a.check("v_pub", None).await,
            Err(Denied::Unavailable(_))
        ));
        a.leave_degraded();
        assert!(!a.is_degraded());
        assert_eq!(a.metrics.degraded.get(), 0);
    }
}
