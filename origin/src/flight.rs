//! Single-flight fetches: one upstream fetch per key, shared by every
//! request for that key while it runs.
//!
//! - A [`Flight`] holds what the fetch has received so far (the head, the
//!   chunks, how it ended). Each request joined to it reads the chunks
//!   received so far, then waits on a `watch` channel for more.
//! - The map of running flights (`Flights`) is keyed by object key. The
//!   request that finds no flight inserts one and gets its
//!   `FlightOwner`: the guard that the fetch task owns, as Pingora's
//!   cache lock hands its writer a `WritePermit`.
//! - **A flight leaves the map exactly once, in the owner's `Drop`**, and
//!   only if the map still holds that same flight (a purge may have
//!   dropped it, and a newer flight may have taken its key since). No
//!   other code removes a single flight; purges remove whole sets.
//! - **Every flight ends.** The owner's `Drop` leaves the map and then
//!   publishes the end the fetch task declared (`FlightOwner::end`). A
//!   fetch task that panics or is aborted drops its owner without having
//!   declared one: the flight is *abandoned*, and every waiter (at the
//!   head or mid-body) gets [`FlightError::Abandoned`] instead of waiting
//!   forever. After `Drop` both the head and the end are set, so no
//!   reader of the flight can wait again.
//! - Leaving before publishing means that a request that saw the end (an
//!   error, say) and asks again starts a fresh flight instead of joining
//!   the finished one.
//! - Every fetch is counted once in `upstream_fetches{outcome}`
//!   ([`FetchOutcome`]): by the fetch task when the upstream answers, or
//!   as `abandoned` by the owner's `Drop` when it never did.

use crate::metrics::OriginMetrics;
use crate::upstream::{Head, UpstreamError};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Why a flight produced no object (or stopped part-way).
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlightError {
    /// The upstream failed (or has no such object).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The object is larger than the cache keeps: fetch it directly.
    #[error("the object ({} bytes) is over the cache's size limit", .0.size)]
    TooLarge(Head),
    /// The fetch task ended without finishing the flight (it panicked or
    /// was aborted).
    #[error("the upstream fetch was abandoned before it finished")]
    Abandoned,
}

/// The label of one upstream fetch in
/// `vodfarm_origin_upstream_fetches_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The upstream answered with the object.
    Ok,
    /// The upstream has no such object.
    NotFound,
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream failed.
    Error,
    /// The fetch task ended before the upstream answered (a panic or an
    /// abort).
    Abandoned,
}

impl FetchOutcome {
    /// The outcome of an upstream answer.
    pub fn of<T>(result: &Result<T, UpstreamError>) -> FetchOutcome {
        match result {
            Ok(_) => FetchOutcome::Ok,
            Err(UpstreamError::NotFound) => FetchOutcome::NotFound,
            Err(UpstreamError::Timeout) => FetchOutcome::Timeout,
            Err(_) => FetchOutcome::Error,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::NotFound => "not_found",
            FetchOutcome::Timeout => "timeout",
            FetchOutcome::Error => "error",
            FetchOutcome::Abandoned => "abandoned",
        }
    }
}

#[derive(Default)]
struct FlightState {
    head: Option<Result<Head, FlightError>>,
    chunks: Vec<Bytes>,
    done: Option<Result<(), FlightError>>,
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

/// Locks `m`, ignoring poisoning: every critical section leaves its data
/// consistent, and an owner dropped while unwinding must still be able to
/// end its flight.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Flight {
    pub(crate) fn new() -> Arc<Flight> {
        Arc::new(Flight {
            state: Mutex::new(FlightState::default()),
            tx: watch::channel(()).0,
        })
    }

    fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut lock(&self.state));
        self.tx.send_replace(());
    }

    /// Whether the flight has ended (its readers will not wait again).
    pub fn is_done(&self) -> bool {
        let st = lock(&self.state);
        st.head.is_some() && st.done.is_some()
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

    /// The bytes `first..=last` of the object as they arrive; the stream
    /// ends with an error if the flight ends before them.
    pub fn stream(
        self: Arc<Self>,
        first: u64,
        last: u64,
    ) -> impl Stream<Item = Result<Bytes, FlightError>> + Send + 'static {
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
                            Some(Ok(())) => Some(Err(FlightError::Upstream(
                                UpstreamError::Failed("upstream body ended early".into()),
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

    /// The chunks received so far, as one buffer.
    fn body(&self) -> Bytes {
        let chunks = lock(&self.state).chunks.clone();
        match chunks.as_slice() {
            [one] => one.clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                for c in &chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        }
    }
}

/// The running flights, by object key.
#[derive(Clone)]
pub(crate) struct Flights(Arc<FlightsInner>);

struct FlightsInner {
    map: Mutex<HashMap<String, Arc<Flight>>>,
    /// `upstream_fetches{outcome}`.
    fetches: IntCounterVec,
}

/// What [`Flights::join`] found.
pub(crate) enum Join<T> {
    /// A flight already runs for the key.
    Running(Arc<Flight>),
    /// No flight runs, and the check found this.
    Found(T),
    /// A new flight: the caller owns it and must hand the owner to the
    /// task that fetches.
    Started(FlightOwner),
}

impl Flights {
    pub(crate) fn new(metrics: &OriginMetrics) -> Flights {
        Flights(Arc::new(FlightsInner {
            map: Mutex::default(),
            fetches: metrics.upstream_fetches.clone(),
        }))
    }

    /// Joins the flight of `key`; when none runs, asks `check` (under the
    /// map's lock, so no flight can end meanwhile) and starts one unless
    /// it finds something.
    pub(crate) fn join<T>(&self, key: &str, check: impl FnOnce() -> Option<T>) -> Join<T> {
        let flight = {
            let mut map = lock(&self.0.map);
            if let Some(f) = map.get(key) {
                return Join::Running(f.clone());
            }
            if let Some(found) = check() {
                return Join::Found(found);
            }
            let flight = Flight::new();
            map.insert(key.to_owned(), flight.clone());
            flight
        };
        // The owner is made after the lock is released: its `Drop` takes
        // the lock.
        Join::Started(FlightOwner {
            flights: self.clone(),
            key: key.to_owned(),
            flight,
            end: None,
            fetch_counted: false,
        })
    }

    /// Drops `flight` from the map if it still holds it under `key`.
    fn leave(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = lock(&self.0.map);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Forgets the flights whose key `drop` selects (they run on, but new
    /// requests start fresh ones).
    pub(crate) fn forget(&self, mut drop: impl FnMut(&str) -> bool) {
        lock(&self.0.map).retain(|k, _| !drop(k));
    }

    /// Whether a flight runs for `key`.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &str) -> bool {
        lock(&self.0.map).contains_key(key)
    }
}

/// The owner of a running flight: held by the task that fetches. Its
/// `Drop` takes the flight out of the map and ends it (with
/// [`FlightError::Abandoned`] if [`FlightOwner::end`] was not called).
pub(crate) struct FlightOwner {
    flights: Flights,
    key: String,
    flight: Arc<Flight>,
    end: Option<Result<(), FlightError>>,
    fetch_counted: bool,
}

impl std::fmt::Debug for FlightOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightOwner")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl FlightOwner {
    /// The flight.
    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// Counts the upstream's answer in `upstream_fetches{outcome}`.
    pub(crate) fn count_fetch(&mut self, outcome: FetchOutcome) {
        self.flights
            .0
            .fetches
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.fetch_counted = true;
    }

    /// Publishes the object's head: waiters start streaming.
    pub(crate) fn publish_head(&self, head: Head) {
        self.flight.update(|s| s.head = Some(Ok(head)));
    }

    /// Publishes the next chunk of the body.
    pub(crate) fn push(&self, chunk: Bytes) {
        self.flight.update(|s| s.chunks.push(chunk));
    }

    /// The body received so far, as one buffer.
    pub(crate) fn body(&self) -> Bytes {
        self.flight.body()
    }

    /// Ends the flight: `Ok` once the whole body was pushed (and the object
    /// is in the cache, if it is kept), or why it failed. The flight
    /// leaves the map, then its waiters see the end.
    pub(crate) fn end(mut self, end: Result<(), FlightError>) {
        self.end = Some(end);
    }
}

impl Drop for FlightOwner {
    fn drop(&mut self) {
        self.flights.leave(&self.key, &self.flight);
        let end = match self.end.take() {
            Some(end) => end,
            None => {
                tracing::error!(
                    key = %self.key,
                    "upstream fetch abandoned (panicked or aborted): failing its waiters"
                );
                if !self.fetch_counted {
                    self.count_fetch(FetchOutcome::Abandoned);
                }
                Err(FlightError::Abandoned)
            }
        };
        self.flight.update(|s| {
            if s.head.is_none() {
                s.head = Some(match &end {
                    Err(e) => Err(e.clone()),
                    // Ended without a head: nothing to serve.
                    Ok(()) => Err(FlightError::Abandoned),
                });
            }
            if s.done.is_none() {
                s.done = Some(end);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn flights() -> Flights {
        Flights::new(&OriginMetrics::new().unwrap())
    }

    fn start(flights: &Flights, key: &str) -> FlightOwner {
        match flights.join(key, || None::<()>) {
            Join::Started(owner) => owner,
            _ => panic!("a flight already ran"),
        }
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
        f.update(|st| st.done = Some(Err(UpstreamError::Timeout.into())));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(
            got[1],
            Err(FlightError::Upstream(UpstreamError::Timeout))
        ));
    }

    #[tokio::test]
    async fn one_flight_per_key_until_its_owner_ends_it() {
        let flights = flights();
        let owner = start(&flights, "k");
        let Join::Running(joined) = flights.join("k", || Some(())) else {
            panic!("the running flight was not joined");
        };
        assert!(Arc::ptr_eq(&joined, owner.flight()));
        owner.publish_head(Head {
            size: 2,
            etag: http::HeaderValue::from_static("\"x\""),
            last_modified: None,
        });
        owner.push(Bytes::from_static(b"ab"));
        owner.end(Ok(()));
        assert!(!flights.contains("k"));
        assert!(joined.is_done());
        let body: Vec<_> = joined.clone().stream(0, 1).collect().await;
        assert_eq!(body.len(), 1);
        assert!(matches!(flights.join("k", || Some(())), Join::Found(())));
    }

    #[tokio::test]
    async fn a_dropped_owner_fails_its_waiters_and_leaves_the_map() {
        let flights = flights();
        let owner = start(&flights, "k");
        let flight = owner.flight().clone();
        let waiter = tokio::spawn({
            let f = flight.clone();
            async move { f.head().await }
        });
        tokio::task::yield_now().await;
        drop(owner);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter hung")
            .unwrap();
        assert!(matches!(got, Err(FlightError::Abandoned)));
        assert!(flight.is_done());
        assert!(!flights.contains("k"));
        let abandoned = flights.0.fetches.with_label_values(&["abandoned"]).get();
        assert_eq!(abandoned, 1);
    }

    #[tokio::test]
    async fn a_task_that_panics_mid_body_fails_its_streaming_waiters() {
        let flights = flights();
        let owner = start(&flights, "k");
        let flight = owner.flight().clone();
        let go = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let go = go.clone();
            async move {
                owner.publish_head(Head {
                    size: 8,
                    etag: http::HeaderValue::from_static("\"x\""),
                    last_modified: None,
                });
                owner.push(Bytes::from_static(b"0123"));
                go.notified().await;
                panic!("test: the fetch task panics mid-body");
            }
        });
        let mut streams =
            [flight.clone().stream(0, 7), flight.clone().stream(2, 7)].map(StreamExt::boxed);
        for s in &mut streams {
            let first = s.next().await.unwrap().unwrap();
            assert!(b"0123".ends_with(&first));
        }
        go.notify_one();
        for s in &mut streams {
            let end = tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
                .await
                .expect("a waiter hangs on the abandoned flight");
            assert!(matches!(end, Some(Err(FlightError::Abandoned))), "{end:?}");
        }
        assert!(task.await.unwrap_err().is_panic());
        assert!(!flights.contains("k"));
        assert!(matches!(flights.join("k", || None::<()>), Join::Started(_)));
    }

    #[tokio::test]
    async fn an_owner_leaves_only_its_own_flight() {
        let flights = flights();
        let old = start(&flights, "k");
        // A purge forgets the old flight; a new one takes the key.
        flights.forget(|k| k == "k");
        let new = start(&flights, "k");
        drop(old);
        assert!(
            flights.contains("k"),
            "the old owner removed the new flight"
        );
        drop(new);
        assert!(!flights.contains("k"));
    }
}
