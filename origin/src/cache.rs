//! The object cache and single-flight fetching.
//!
//! - Objects live in memory, in a [`moka`] cache bounded by their weight
//!   in bytes (TinyLFU admission, LRU eviction).
//! - A miss starts one fetch task per key (a [`Flight`], see
//!   [`crate::flight`]); every request for that key while it runs joins it
//!   and streams the bytes as they arrive. The task runs detached from the
//!   request that started it, so a client that hangs up does not cancel
//!   the fetch for the others.
//! - The task owns the flight's [`FlightOwner`](crate::flight): the flight
//!   leaves the in-flight map exactly once, when the owner drops, and a
//!   task that panics or is aborted fails its waiters with
//!   [`FlightError::Abandoned`] instead of leaving them (and the key)
//!   hanging.
//! - A fetch inserts its object into the cache *before* its owner drops
//!   (so before it leaves the in-flight map), and a request that finds no
//!   flight re-checks the cache under the map's lock: N concurrent
//!   requests make exactly one upstream fetch.
//! - Objects over the size limit are not kept: the flight reports
//!   [`FlightError::TooLarge`] and each request streams straight from the
//!   upstream.
//! - Purges ([`ObjectCache::purge_video`]) bump an epoch and forget the
//!   video's flights; a fetch that started before a purge does not insert
//!   its object.

use crate::flight::{lock, FetchOutcome, FlightOwner, Flights, Join};
pub use crate::flight::{Flight, FlightError};
use crate::metrics::OriginMetrics;
use crate::upstream::{Head, Upstream, UpstreamError};
use crate::Route;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A cached object.
#[derive(Debug)]
pub struct CachedObject {
    /// Size and validators.
    pub head: Head,
    /// The whole object.
    pub body: Bytes,
    /// When it was fetched.
    pub fetched_at: Instant,
    /// How long it stays fresh (`None`: immutable).
    pub ttl: Option<Duration>,
}

impl CachedObject {
    /// Whether it is still fresh.
    pub fn is_fresh(&self) -> bool {
        self.ttl.is_none_or(|ttl| self.fetched_at.elapsed() < ttl)
    }
}

/// What [`ObjectCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh object.
    Fresh(Arc<CachedObject>),
    /// An expired playlist: revalidate, serve it if the upstream fails.
    Stale(Arc<CachedObject>),
    /// Nothing.
    Miss,
}

/// What [`ObjectCache::join`] gives a request.
#[derive(Debug)]
pub enum Joined {
    /// The object arrived in the cache meanwhile.
    Cached(Arc<CachedObject>),
    /// A flight to stream from; `leader` when this request started it.
    Flight {
        /// The fetch.
        flight: Arc<Flight>,
        /// Whether this request started it.
        leader: bool,
    },
}

/// Settings of the cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most bytes held.
    pub max_bytes: u64,
    /// Largest object kept; larger ones stream through.
    pub max_object: u64,
    /// Bounds the wait for the upstream's answer and each next chunk.
    pub upstream_timeout: Duration,
    /// How long a playlist stays fresh in this tier.
    pub playlist_ttl: Duration,
}

/// The byte-bounded object cache with single-flight fetching.
pub struct ObjectCache {
    objects: moka::sync::Cache<String, Arc<CachedObject>>,
    /// The cached keys of each video, for purges (kept in step by the
    /// eviction listener).
    by_video: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    too_large: moka::sync::Cache<String, ()>,
    flights: Flights,
    epoch: AtomicU64,
    upstream: Upstream,
    settings: CacheSettings,
    metrics: OriginMetrics,
}

impl std::fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The video id of a layout key (`encoded/{id}/...`, `thumbnails/{id}/...`).
fn video_of(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

impl ObjectCache {
    /// An empty cache in front of `upstream`.
    pub fn new(upstream: Upstream, settings: CacheSettings, metrics: OriginMetrics) -> Self {
        let by_video: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let index = by_video.clone();
        let objects = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &String, v: &Arc<CachedObject>| {
                let w = v.body.len() + k.len() + 256;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |k: Arc<String>, _v, cause| {
                if cause == moka::notification::RemovalCause::Replaced {
                    return;
                }
                if let Some(video) = video_of(&k) {
                    let mut index = lock(&index);
                    if let Some(keys) = index.get_mut(video) {
                        keys.remove(k.as_str());
                        if keys.is_empty() {
                            index.remove(video);
                        }
                    }
                }
            })
            .build();
        ObjectCache {
            objects,
            by_video,
            too_large: moka::sync::Cache::new(10_000),
            flights: Flights::new(&metrics),
            epoch: AtomicU64::new(0),
            upstream,
            settings,
            metrics,
        }
    }

    /// The upstream.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Whether `key` is known to be over the size limit.
    pub fn is_too_large(&self, key: &str) -> bool {
        self.too_large.contains_key(key)
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: &str) -> Lookup {
        match self.objects.get(key) {
            Some(o) if o.is_fresh() => Lookup::Fresh(o),
            Some(o) => Lookup::Stale(o),
            None => Lookup::Miss,
        }
    }

    /// Drops one object (the upstream says it is gone).
    pub fn remove(&self, key: &str) {
        self.objects.invalidate(key);
    }

    /// Joins the fetch of `route`'s object, starting it if none runs.
    pub fn join(self: &Arc<Self>, route: &Route, path: &str) -> Joined {
        let key = route.key.as_str();
        // A flight that just ended inserted its object before leaving the
        // map: `join` looks again under the map's lock.
        let check = || match self.lookup(key) {
            Lookup::Fresh(o) => Some(o),
            _ => None,
        };
        let owner = match self.flights.join(key, check) {
            Join::Running(flight) => {
                return Joined::Flight {
                    flight,
                    leader: false,
                }
            }
            Join::Found(o) => return Joined::Cached(o),
            Join::Started(owner) => owner,
        };
        let flight = owner.flight().clone();
        let epoch = self.epoch.load(Ordering::SeqCst);
        tokio::spawn(
            self.clone()
                .run_flight(owner, route.clone(), path.to_owned(), epoch),
        );
        Joined::Flight {
            flight,
            leader: true,
        }
    }

    /// The fetch task: fills the flight, then keeps the object (unless a
    /// purge came meanwhile). Every return ends the flight through
    /// `owner`; a panic or an abort drops `owner` unended, which fails the
    /// waiters.
    async fn run_flight(
        self: Arc<Self>,
        mut owner: FlightOwner,
        route: Route,
        path: String,
        epoch: u64,
    ) {
        let key = route.key.as_str();
        let started = Instant::now();
        let timeout = self.settings.upstream_timeout;
        let result = self.upstream.fetch(&route, &path, None, timeout).await;
        self.metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        owner.count_fetch(FetchOutcome::of(&result));
        let mut fetched = match result {
            Ok(f) => f,
            Err(e) => {
                if matches!(e, UpstreamError::NotFound) {
                    tracing::debug!(key, "not found upstream");
                } else {
                    tracing::warn!(key, error = %e, "upstream fetch failed");
                }
                return owner.end(Err(FlightError::Upstream(e)));
            }
        };
        let head = fetched.head.clone();
        if head.size > self.settings.max_object {
            self.too_large.insert(key.to_owned(), ());
            return owner.end(Err(FlightError::TooLarge(head)));
        }
        owner.publish_head(head.clone());
        let mut received = 0u64;
        let mut failure = None;
        while let Some(chunk) = fetched.body.next().await {
            match chunk {
                Ok(c) if c.is_empty() => {}
                Ok(c) => {
                    received += c.len() as u64;
                    if received > head.size {
                        failure = Some(UpstreamError::Failed("upstream body too long".into()));
                        break;
                    }
                    owner.push(c);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() && received != head.size {
            failure = Some(UpstreamError::Failed("upstream body ended early".into()));
        }
        if let Some(e) = failure {
            tracing::warn!(key, error = %e, "upstream body failed");
            return owner.end(Err(FlightError::Upstream(e)));
        }
        let object = Arc::new(CachedObject {
            head,
            body: owner.body(),
            fetched_at: Instant::now(),
            ttl: route.is_playlist.then_some(self.settings.playlist_ttl),
        });
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if let Some(video) = video_of(key) {
                lock(&self.by_video)
                    .entry(video.to_owned())
                    .or_default()
                    .insert(key.to_owned());
            }
            self.objects.insert(key.to_owned(), object);
            // A purge that raced the insert must still win.
            if self.epoch.load(Ordering::SeqCst) != epoch {
                self.objects.invalidate(key);
            }
        }
        owner.end(Ok(()));
    }

    /// Drops every cached object of `video_id`; fetches already running
    /// for it will not insert theirs.
    pub fn purge_video(&self, video_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.flights.forget(|k| video_of(k) == Some(video_id));
        let keys = lock(&self.by_video).remove(video_id).unwrap_or_default();
        for k in keys {
            self.objects.invalidate(&k);
        }
    }

    /// Drops every cached object.
    pub fn purge_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.flights.forget(|_| true);
        lock(&self.by_video).clear();
        self.objects.invalidate_all();
    }

    /// The running flights.
    #[cfg(test)]
    pub(crate) fn flights(&self) -> &Flights {
        &self.flights
    }

    /// Weighed size (bytes) and number of cached objects.
    pub fn usage(&self) -> (u64, u64) {
        self.objects.run_pending_tasks();
        (self.objects.weighted_size(), self.objects.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::sync::atomic::AtomicUsize;
    use vodfarm_core::store::LocalStore;

    #[test]
    fn video_of_layout_keys() {
        assert_eq!(video_of("encoded/v_a/720p/segment_1.ts"), Some("v_a"));
        assert_eq!(video_of("thumbnails/v_b/sprite.jpg"), Some("v_b"));
        assert_eq!(video_of("x"), None);
    }

    /// A fresh directory store, removed on drop.
    struct TempStore {
        dir: std::path::PathBuf,
        store: LocalStore,
    }

    impl TempStore {
        async fn new(name: &str) -> TempStore {
            let dir =
                std::env::temp_dir().join(format!("vodfarm-cache-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = LocalStore::new(&dir).await.unwrap();
            TempStore { dir, store }
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            max_bytes: 1 << 20,
            max_object: 1 << 20,
            upstream_timeout: Duration::from_secs(5),
            playlist_ttl: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn purge_empties_the_counts() {
        let tmp = TempStore::new("purge").await;
        let cache = ObjectCache::new(
            Upstream::Store(Arc::new(tmp.store.clone())),
            settings(),
            OriginMetrics::new().unwrap(),
        );
        for k in [
            "encoded/v_a/master.m3u8",
            "encoded/v_a/720p/segment_0.ts",
            "encoded/v_b/master.m3u8",
        ] {
            lock(&cache.by_video)
                .entry(video_of(k).unwrap().to_owned())
                .or_default()
                .insert(k.to_owned());
            cache.objects.insert(
                k.to_owned(),
                Arc::new(CachedObject {
                    head: Head {
                        size: 1,
                        etag: http::HeaderValue::from_static("\"x\""),
                        last_modified: None,
                    },
                    body: Bytes::from_static(b"x"),
                    fetched_at: Instant::now(),
                    ttl: None,
                }),
            );
        }
        assert_eq!(cache.usage().1, 3);
        cache.purge_video("v_a");
        assert!(matches!(
            cache.lookup("encoded/v_a/master.m3u8"),
            Lookup::Miss
        ));
        assert!(matches!(
            cache.lookup("encoded/v_b/master.m3u8"),
            Lookup::Fresh(_)
        ));
        assert_eq!(cache.usage().1, 1);
        assert_eq!(lock(&cache.by_video).len(), 1);
    }

    /// A next tier that answers each request on a connection of its own
    /// (`Connection: close`): the first with half the body, then nothing
    /// more until the connection is dropped; the others with the whole
    /// body. Counts requests.
    struct StallingTier {
        base: String,
        requests: Arc<AtomicUsize>,
    }

    impl StallingTier {
        async fn start(body: Bytes) -> StallingTier {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(AtomicUsize::new(0));
            let count = requests.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let mut req = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => req.extend_from_slice(&buf[..k]),
                            }
                        }
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"abc\"\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let sent = if n == 0 { body.len() / 2 } else { body.len() };
                        if conn.write_all(head.as_bytes()).await.is_err()
                            || conn.write_all(&body[..sent]).await.is_err()
                        {
                            return;
                        }
                        // Hold the rest back until the client goes away.
                        let _ = conn.read(&mut buf).await;
                    });
                }
            });
            StallingTier { base, requests }
        }
    }

    const PATH: &str = "/v/v_a/720p/segment_0.ts";
    const PROMPTLY: Duration = Duration::from_secs(5);

    fn join(cache: &Arc<ObjectCache>) -> (Arc<Flight>, bool) {
        match cache.join(&crate::route(PATH).unwrap(), PATH) {
            Joined::Flight { flight, leader } => (flight, leader),
            Joined::Cached(_) => panic!("unexpectedly cached"),
        }
    }

    /// Would hang before flights had owners: the fetch task was the only
    /// thing that took a flight out of the map or ended it, so a task that
    /// died (aborted here; a panic drops it the same way) left its waiters
    /// waiting forever and its key joined by every later request.
    #[tokio::test]
    async fn an_aborted_fetch_fails_its_waiters_and_the_next_request_fetches_again() {
        let body: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let tier = StallingTier::start(body.clone()).await;
        let cache = Arc::new(ObjectCache::new(
            Upstream::Origin(Box::new(
                crate::upstream::HttpUpstream::new(&tier.base, None).unwrap(),
            )),
            settings(),
            OriginMetrics::new().unwrap(),
        ));
        let route = crate::route(PATH).unwrap();
        let key = route.key.as_str();

        // Start the flight as `join` does, keeping the task's handle.
        let Join::Started(owner) = cache.flights.join(key, || None::<()>) else {
            panic!("a flight already ran");
        };
        let task = tokio::spawn(
            cache
                .clone()
                .run_flight(owner, route.clone(), PATH.to_owned(), 0),
        );
        let (flight, leader) = join(&cache);
        assert!(!leader, "the second request did not join the flight");
        let head = tokio::time::timeout(PROMPTLY, flight.head())
            .await
            .expect("no head")
            .unwrap();
        assert_eq!(head.size, body.len() as u64);
        // It streams the first half while the fetch runs.
        let mut stream = flight.clone().stream(0, head.size - 1).boxed();
        let mut got = Vec::new();
        while got.len() < body.len() / 2 {
            let chunk = tokio::time::timeout(PROMPTLY, stream.next())
                .await
                .expect("the first half did not come")
                .unwrap()
                .unwrap();
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, body[..body.len() / 2]);

        task.abort();
        let end = tokio::time::timeout(PROMPTLY, stream.next())
            .await
            .expect("the waiter hangs on the abandoned flight");
        assert!(matches!(end, Some(Err(FlightError::Abandoned))), "{end:?}");
        assert!(flight.is_done());
        assert!(
            !cache.flights.contains(key),
            "the abandoned flight is still in the map"
        );
        // It had answered: counted as ok, not as abandoned.
        let fetches = |o: &str| cache.metrics.upstream_fetches.with_label_values(&[o]).get();
        assert_eq!((fetches("ok"), fetches("abandoned")), (1, 0));

        // The next request starts a fetch of its own, which succeeds.
        let (flight, leader) = join(&cache);
        assert!(leader, "the next request joined the abandoned flight");
        let got: Vec<Bytes> = tokio::time::timeout(
            PROMPTLY,
            flight.clone().stream(0, head.size - 1).try_collect(),
        )
        .await
        .expect("the new fetch hung")
        .unwrap();
        assert_eq!(got.concat(), body[..]);
        assert_eq!(tier.requests.load(Ordering::SeqCst), 2);
        tokio::time::timeout(PROMPTLY, async {
            while !flight.is_done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the new flight did not end");
        assert!(matches!(cache.lookup(key), Lookup::Fresh(_)));
        assert!(!cache.flights.contains(key));
        assert_eq!(fetches("ok"), 2);
    }
}
