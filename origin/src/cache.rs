//! The object cache and single-flight fetching.
//!
//! - Objects live in memory, in a [`moka`] cache bounded by their weight
//!   in bytes (TinyLFU admission, LRU eviction).
//! - A miss starts one fetch task per key ([`Flight`]); every request for
//!   that key while it runs joins it and streams the bytes as they arrive
//!   (each subscriber reads the chunks received so far, then waits on a
//!   `watch` channel for more). The task runs detached from the request
//!   that started it, so a client that hangs up does not cancel the fetch
//!   for the others.
//! - A fetch inserts its object into the cache *before* it leaves the
//!   in-flight map, and a request that finds no flight re-checks the cache
//!   under the same lock: N concurrent requests make exactly one upstream
//!   fetch.
//! - Objects over the size limit are not kept: the flight reports
//!   [`FlightError::TooLarge`] and each request streams straight from the
//!   upstream.
//! - Purges ([`ObjectCache::purge_video`]) bump an epoch; a fetch that
//!   started before a purge does not insert its object.

use crate::metrics::OriginMetrics;
use crate::upstream::{Head, Upstream, UpstreamError};
use crate::Route;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// Why a flight produced no object.
#[derive(Debug, Clone)]
pub enum FlightError {
    /// The upstream failed (or has no such object).
    Upstream(UpstreamError),
    /// The object is larger than the cache keeps: fetch it directly.
    TooLarge(Head),
}

#[derive(Default)]
struct FlightState {
    head: Option<Result<Head, FlightError>>,
    chunks: Vec<Bytes>,
    done: Option<Result<(), UpstreamError>>,
}

/// One upstream fetch in progress, shared by every request for its key.
pub struct Flight {
    state: Mutex<FlightState>,
    tx: watch::Sender<()>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flight {
    fn new() -> Arc<Flight> {
        Arc::new(Flight {
            state: Mutex::new(FlightState::default()),
            tx: watch::channel(()).0,
        })
    }

    fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut lock(&self.state));
        self.tx.send_replace(());
    }

    /// Waits for the object's head (or the reason there is none).
    pub async fn head(&self) -> Result<Head, FlightError> {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(h) = lock(&self.state).head.clone() {
                return h;
            }
            // The sender lives in `self`: `changed` cannot fail here.
            let _ = rx.changed().await;
        }
    }

    /// The bytes `first..=last` of the object as they arrive.
    pub fn stream(
        self: Arc<Self>,
        first: u64,
        last: u64,
    ) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static {
        let rx = self.tx.subscribe();
        struct Reader {
            flight: Arc<Flight>,
            rx: watch::Receiver<()>,
            idx: usize,
            offset: u64,
            first: u64,
            end: u64,
        }
        let reader = Reader {
            flight: self,
            rx,
            idx: 0,
            offset: 0,
            first,
            end: last + 1,
        };
        futures::stream::unfold(reader, |mut r| async move {
            loop {
                if r.offset >= r.end {
                    return None;
                }
                let next = {
                    let st = lock(&r.flight.state);
                    if let Some(c) = st.chunks.get(r.idx) {
                        Some(Ok(c.clone()))
                    } else {
                        match &st.done {
                            Some(Err(e)) => Some(Err(e.clone())),
                            Some(Ok(())) => Some(Err(UpstreamError::Failed(
                                "upstream body ended early".into(),
                            ))),
                            None => None,
                        }
                    }
                };
                match next {
                    Some(Ok(chunk)) => {
                        r.idx += 1;
                        let start = r.offset;
                        let stop = start + chunk.len() as u64;
                        r.offset = stop;
                        let a = r.first.max(start);
                        let b = r.end.min(stop);
                        if a < b {
                            let piece = chunk.slice((a - start) as usize..(b - start) as usize);
                            return Some((Ok(piece), r));
                        }
                    }
                    Some(Err(e)) => {
                        r.offset = r.end;
                        return Some((Err(e), r));
                    }
                    None => {
                        let _ = r.rx.changed().await;
                    }
                }
            }
        })
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
    flights: Mutex<HashMap<String, Arc<Flight>>>,
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
            flights: Mutex::new(HashMap::new()),
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
        let mut flights = lock(&self.flights);
        if let Some(f) = flights.get(key) {
            return Joined::Flight {
                flight: f.clone(),
                leader: false,
            };
        }
        // A flight that just ended inserted its object before leaving the
        // map: look again under the lock.
        if let Lookup::Fresh(o) = self.lookup(key) {
            return Joined::Cached(o);
        }
        let flight = Flight::new();
        flights.insert(key.to_owned(), flight.clone());
        drop(flights);
        let epoch = self.epoch.load(Ordering::SeqCst);
        tokio::spawn(self.clone().run_flight(
            flight.clone(),
            route.clone(),
            path.to_owned(),
            epoch,
        ));
        Joined::Flight {
            flight,
            leader: true,
        }
    }

    fn leave(&self, key: &str, flight: &Arc<Flight>) {
        let mut flights = lock(&self.flights);
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    async fn run_flight(
        self: Arc<Self>,
        flight: Arc<Flight>,
        route: Route,
        path: String,
        epoch: u64,
    ) {
        let key = route.key.as_str().to_owned();
        let started = Instant::now();
        let timeout = self.settings.upstream_timeout;
        let result = self.upstream.fetch(&route, &path, None, timeout).await;
        self.metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(UpstreamError::NotFound) => "not_found",
            Err(UpstreamError::Timeout) => "timeout",
            Err(_) => "error",
        };
        self.metrics
            .upstream_fetches
            .with_label_values(&[outcome])
            .inc();
        let mut fetched = match result {
            Ok(f) => f,
            Err(e) => {
                if matches!(e, UpstreamError::NotFound) {
                    tracing::debug!(key, "not found upstream");
                } else {
                    tracing::warn!(key, error = %e, "upstream fetch failed");
                }
                self.leave(&key, &flight);
                flight.update(|s| s.head = Some(Err(FlightError::Upstream(e))));
                return;
            }
        };
        let head = fetched.head.clone();
        if head.size > self.settings.max_object {
            self.too_large.insert(key.clone(), ());
            self.leave(&key, &flight);
            flight.update(|s| s.head = Some(Err(FlightError::TooLarge(head))));
            return;
        }
        flight.update(|s| s.head = Some(Ok(head.clone())));
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
                    flight.update(|s| s.chunks.push(c));
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
            self.leave(&key, &flight);
            flight.update(|s| s.done = Some(Err(e)));
            return;
        }
        let body = {
            let st = lock(&flight.state);
            if st.chunks.len() == 1 {
                st.chunks[0].clone()
            } else {
                let mut buf = BytesMut::with_capacity(head.size as usize);
                for c in &st.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let object = Arc::new(CachedObject {
            head,
            body,
            fetched_at: Instant::now(),
            ttl: route.is_playlist.then_some(self.settings.playlist_ttl),
        });
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if let Some(video) = video_of(&key) {
                lock(&self.by_video)
                    .entry(video.to_owned())
                    .or_default()
                    .insert(key.clone());
            }
            self.objects.insert(key.clone(), object);
            // A purge that raced the insert must still win.
            if self.epoch.load(Ordering::SeqCst) != epoch {
                self.objects.invalidate(&key);
            }
        }
        self.leave(&key, &flight);
        flight.update(|s| s.done = Some(Ok(())));
    }

    /// Drops every cached object of `video_id`; fetches already running
    /// for it will not insert theirs.
    pub fn purge_video(&self, video_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.flights).retain(|k, _| video_of(k) != Some(video_id));
        let keys = lock(&self.by_video).remove(video_id).unwrap_or_default();
        for k in keys {
            self.objects.invalidate(&k);
        }
    }

    /// Drops every cached object.
    pub fn purge_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.flights).clear();
        lock(&self.by_video).clear();
        self.objects.invalidate_all();
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

    #[test]
    fn video_of_layout_keys() {
        assert_eq!(video_of("encoded/v_a/720p/segment_1.ts"), Some("v_a"));
        assert_eq!(video_of("thumbnails/v_b/sprite.jpg"), Some("v_b"));
        assert_eq!(video_of("x"), None);
    }

    #[tokio::test]
    async fn subscribers_get_their_range_across_chunks() {
        let f = Flight::new();
        let s = f.clone().stream(3, 8);
        let all = f.clone().stream(0, 9);
        let late =
            tokio::spawn(async move { s.map(|r| r.unwrap()).collect::<Vec<_>>().await.concat() });
        f.update(|st| st.chunks.push(Bytes::from_static(b"0123")));
        tokio::task::yield_now().await;
        f.update(|st| st.chunks.push(Bytes::from_static(b"456")));
        f.update(|st| st.chunks.push(Bytes::from_static(b"789")));
        f.update(|st| st.done = Some(Ok(())));
        assert_eq!(late.await.unwrap(), b"345678");
        let v: Vec<u8> = all.map(|r| r.unwrap()).collect::<Vec<_>>().await.concat();
        assert_eq!(v, b"0123456789");
    }

    #[tokio::test]
    async fn subscribers_see_upstream_failure() {
        let f = Flight::new();
        let s = f.clone().stream(0, 9);
        f.update(|st| st.chunks.push(Bytes::from_static(b"0123")));
        f.update(|st| st.done = Some(Err(UpstreamError::Timeout)));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(UpstreamError::Timeout)));
    }
}

#[cfg(test)]
mod purge_tests {
    use super::*;

    #[tokio::test]
    async fn purge_empties_the_counts() {
        let dir = std::env::temp_dir().join(format!("vodfarm-purge-{}", std::process::id()));
        let store = vodfarm_core::store::LocalStore::new(&dir).await.unwrap();
        let cache = ObjectCache::new(
            Upstream::Store(Arc::new(store)),
            CacheSettings {
                max_bytes: 1 << 20,
                max_object: 1 << 20,
                upstream_timeout: Duration::from_secs(1),
                playlist_ttl: Duration::from_secs(1),
            },
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
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cache.usage().1, 1);
        assert_eq!(lock(&cache.by_video).len(), 1);
    }
}
