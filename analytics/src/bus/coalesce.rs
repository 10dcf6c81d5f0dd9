//! Group commit for bus records: beacons of one key that are published
//! while that key's earlier records are still in flight travel together
//! in the next record.
//!
//! Why: the Kafka producer puts one record per batch (see `kafka.rs`),
//! so every record is its own produce request, and an idempotent
//! producer keeps at most five requests in flight per broker. A popular
//! video's beacons then queue one request per beacon behind each other:
//! with the broker 5 ms away each way the bench moved 8,255 events/s,
//! with shared records 36,051-37,602 (ARCHITECTURE.md, Known gaps; on
//! loopback both ~110,000). Here at most
//! `max_in_flight` records per key are in flight; whatever arrives
//! meanwhile waits and leaves as one record when one of them is
//! acknowledged. An idle key adds no delay: its first beacon is sent at
//! once. Records grow with the load, up to `max_bytes` (a single larger
//! payload still travels alone).
//!
//! Each caller waits for the acknowledgement of the record that carried
//! its payload and gets that record's result: a failed record fails
//! every beacon in it (each answers 503 and its player retries; event ids
//! make the retry count once).

use futures::future::BoxFuture;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Sends one record (its key, its payload) and resolves when the bus
/// holds it.
pub(crate) type SendRecord<E> =
    Arc<dyn Fn(String, Vec<u8>) -> BoxFuture<'static, Result<(), E>> + Send + Sync>;

/// What a caller waits on: the result of the record that carried it.
type Done<E> = oneshot::Sender<Result<(), E>>;

/// Coalesces payloads (JSON arrays of events) per key into records.
pub(crate) struct Coalescer<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Coalescer<E> {
    fn clone(&self) -> Self {
        Coalescer {
            inner: self.inner.clone(),
        }
    }
}

/// Records sent and how many payloads (beacons) each carried.
pub(crate) struct RecordMetrics {
    records: IntCounterVec,
    payloads: Histogram,
}

impl RecordMetrics {
    /// Metrics named `{prefix}_records_total{result}` and
    /// `{prefix}_record_beacons`, not yet registered.
    pub(crate) fn new(prefix: &str) -> prometheus::Result<Self> {
        Ok(RecordMetrics {
            records: IntCounterVec::new(
                Opts::new(
                    format!("{prefix}_records_total"),
                    "Records the api sent to the bus, by result (ok, failed)",
                ),
                &["result"],
            )?,
            payloads: Histogram::with_opts(
                HistogramOpts::new(
                    format!("{prefix}_record_beacons"),
                    "Beacons that shared one record",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )?,
        })
    }

    /// Registers them on `registry`.
    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.records.clone()))?;
        registry.register(Box::new(self.payloads.clone()))
    }
}

struct Inner<E> {
    send: SendRecord<E>,
    metrics: RecordMetrics,
    max_in_flight: usize,
    max_bytes: usize,
    keys: Mutex<HashMap<String, KeyQueue<E>>>,
}

/// One key's records in flight and payloads waiting for the next one.
struct KeyQueue<E> {
    in_flight: usize,
    waiting: VecDeque<(Vec<u8>, Done<E>)>,
}

/// Why a coalesced publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CoalesceError<E> {
    /// The record carrying the payload failed.
    Send(E),
    /// The task sending it ended without an answer (a panic).
    Lost,
}

impl<E: Clone + Send + 'static> Coalescer<E> {
    /// A coalescer sending through `send`, with at most `max_in_flight`
    /// records per key in flight and records of about `max_bytes` at
    /// most.
    pub(crate) fn new(
        send: SendRecord<E>,
        metrics: RecordMetrics,
        max_in_flight: usize,
        max_bytes: usize,
    ) -> Self {
        Coalescer {
            inner: Arc::new(Inner {
                send,
                metrics,
                max_in_flight: max_in_flight.max(1),
                max_bytes: max_bytes.max(1),
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers its [`RecordMetrics`] on `registry`.
    pub(crate) fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
    }

    /// Publishes `payload` (a JSON array) under `key`, alone or with
    /// other payloads of the same key; resolves when the record that
    /// carried it was sent (or failed).
    pub(crate) async fn publish(
        &self,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<(), CoalesceError<E>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut keys = self.inner.lock();
            let q = keys.entry(key.to_owned()).or_insert_with(|| KeyQueue {
                in_flight: 0,
                waiting: VecDeque::new(),
            });
            q.waiting.push_back((payload, tx));
            let start = q.in_flight < self.inner.max_in_flight;
            if start {
                q.in_flight += 1;
            }
            start
        };
        if start {
            // A task of its own: the record is sent (and the key's queue
            // drained) even if this caller goes away.
            tokio::spawn(self.inner.clone().drive(key.to_owned()));
        }
        match rx.await {
            Ok(r) => r.map_err(CoalesceError::Send),
            Err(_) => Err(CoalesceError::Lost),
        }
    }
}

impl<E: Clone + Send + 'static> Inner<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyQueue<E>>> {
        // A panic while holding the lock leaves the map consistent (each
        // step under it is a push, a pop or a count): go on with it.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `key`'s waiting payloads, one record at a time, until none
    /// is left; then gives its in-flight slot back.
    async fn drive(self: Arc<Self>, key: String) {
        loop {
            let batch = {
                let mut keys = self.lock();
                let Some(q) = keys.get_mut(&key) else { return };
                let batch = take_batch(&mut q.waiting, self.max_bytes);
                if batch.is_empty() {
                    q.in_flight = q.in_flight.saturating_sub(1);
                    if q.in_flight == 0 {
                        keys.remove(&key);
                    }
                    return;
                }
                batch
            };
            let (payloads, waiters): (Vec<Vec<u8>>, Vec<Done<E>>) = batch.into_iter().unzip();
            let record = concat_arrays(&payloads);
            let result = (self.send)(key.clone(), record).await;
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            self.metrics.records.with_label_values(&[outcome]).inc();
            self.metrics.payloads.observe(waiters.len() as f64);
            for w in waiters {
                // A caller that went away needs no answer.
                let _ = w.send(result.clone());
            }
        }
    }
}

/// Takes waiting payloads from the front up to `max_bytes` in all (at
/// least one, whatever its size).
fn take_batch<T>(waiting: &mut VecDeque<(Vec<u8>, T)>, max_bytes: usize) -> Vec<(Vec<u8>, T)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some((p, _)) = waiting.front() {
        if !out.is_empty() && bytes + p.len() > max_bytes {
            break;
        }
        bytes += p.len();
        if let Some(item) = waiting.pop_front() {
            out.push(item);
        }
    }
    out
}

/// Joins JSON arrays into one array of all their elements, in order
/// (`[a,b]` and `[c]` give `[a,b,c]`; empty arrays add nothing).
fn concat_arrays(payloads: &[Vec<u8>]) -> Vec<u8> {
    if let [one] = payloads {
        return one.clone();
    }
    let mut out = Vec::with_capacity(payloads.iter().map(Vec::len).sum::<usize>() + 2);
    out.push(b'[');
    for p in payloads {
        let inner = p.trim_ascii();
        let inner = inner.strip_prefix(b"[").unwrap_or(inner);
        let inner = inner.strip_suffix(b"]").unwrap_or(inner).trim_ascii();
        if inner.is_empty() {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(inner);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn arrays_join_in_order() {
        let joined = concat_arrays(&[b"[1,2]".to_vec(), b" [] ".to_vec(), b"[3]".to_vec()]);
        assert_eq!(joined, b"[1,2,3]");
        let v: Vec<i32> = serde_json::from_slice(&joined).expect("json");
        assert_eq!(v, vec![1, 2, 3]);
        assert_eq!(concat_arrays(&[b"[]".to_vec(), b"[]".to_vec()]), b"[]");
        assert_eq!(concat_arrays(&[b"[7]".to_vec()]), b"[7]");
    }

    #[test]
    fn batches_stop_at_the_byte_budget_but_take_at_least_one() {
        let mut q: VecDeque<(Vec<u8>, ())> = [vec![0; 60], vec![0; 30], vec![0; 20], vec![0; 5]]
            .into_iter()
            .map(|p| (p, ()))
            .collect();
        assert_eq!(take_batch(&mut q, 100).len(), 2);
        assert_eq!(
            take_batch(&mut q, 10).len(),
            1,
            "a payload over the budget still goes"
        );
        assert_eq!(take_batch(&mut q, 10).len(), 1);
        assert!(take_batch(&mut q, 10).is_empty());
    }

    fn metrics() -> RecordMetrics {
        RecordMetrics::new("test").expect("metrics")
    }

    /// The records a test sender saw: key and events.
    type Sent = Arc<Mutex<Vec<(String, Vec<i32>)>>>;

    /// A sender that records every record and holds each for `hold`.
    fn recording(
        hold: Duration,
        fail_key: Option<&'static str>,
    ) -> (SendRecord<String>, Sent, Arc<AtomicUsize>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let (s, p) = (sent.clone(), peak.clone());
        let send: SendRecord<String> = Arc::new(move |key: String, payload: Vec<u8>| {
            let (sent, peak, live) = (s.clone(), p.clone(), live.clone());
            Box::pin(async move {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                live.fetch_sub(1, Ordering::SeqCst);
                let events: Vec<i32> =
                    serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                sent.lock().expect("lock").push((key.clone(), events));
                if fail_key == Some(key.as_str()) {
                    return Err(format!("{key} refused"));
                }
                Ok(())
            })
        });
        (send, sent, peak)
    }

    /// Waits until every key's queue is gone (a driver gives its slot
    /// back just after it answered its callers): idle keys leave nothing.
    async fn settled(c: &Coalescer<String>) {
        for _ in 0..500 {
            if c.inner.lock().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("an idle key's queue was left behind");
    }

    #[tokio::test]
    async fn a_lone_payload_goes_at_once_and_alone() {
        let (send, sent, _) = recording(Duration::ZERO, None);
        let c = Coalescer::new(send, metrics(), 2, 1 << 20);
        c.publish("v1", b"[1,2]".to_vec()).await.expect("publish");
        assert_eq!(
            *sent.lock().expect("lock"),
            vec![("v1".to_owned(), vec![1, 2])]
        );
        settled(&c).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn payloads_of_a_busy_key_share_records_and_every_one_arrives_once() {
        let (send, sent, peak) = recording(Duration::from_millis(20), None);
        let c = Coalescer::new(send, metrics(), 2, 1 << 20);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200 {
            let c = c.clone();
            let key = if i % 10 == 0 { "cold" } else { "hot" };
            set.spawn(async move { c.publish(key, format!("[{i}]").into_bytes()).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("publish");
        }
        let sent = sent.lock().expect("lock").clone();
        let mut all: Vec<i32> = sent.iter().flat_map(|(_, e)| e.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "each payload once");
        for (key, events) in &sent {
            assert!(
                events.iter().all(|i| (i % 10 == 0) == (key == "cold")),
                "a record holds one key's payloads: {key} {events:?}"
            );
        }
        let hot = sent.iter().filter(|(k, _)| k == "hot").count();
        assert!(hot < 180, "180 hot payloads in {hot} records");
        // Two keys, at most two records each in flight.
        assert!(peak.load(Ordering::SeqCst) <= 4);
        settled(&c).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_keep_to_the_byte_budget() {
        let (send, sent, _) = recording(Duration::from_millis(10), None);
        // Each payload is 5 or 6 bytes; 16 bytes hold two.
        let c = Coalescer::new(send, metrics(), 1, 16);
        let mut set = tokio::task::JoinSet::new();
        for i in 100..150 {
            let c = c.clone();
            set.spawn(async move { c.publish("v", format!("[{i},1]").into_bytes()).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("publish");
        }
        let sent = sent.lock().expect("lock").clone();
        assert!(sent.iter().all(|(_, e)| e.len() <= 4), "{sent:?}");
        assert_eq!(sent.iter().map(|(_, e)| e.len()).sum::<usize>(), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_record_fails_every_payload_in_it_and_no_other_key() {
        let (send, _, _) = recording(Duration::from_millis(5), Some("bad"));
        let c = Coalescer::new(send, metrics(), 1, 1 << 20);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..40 {
            let c = c.clone();
            let key = if i % 2 == 0 { "bad" } else { "good" };
            set.spawn(async move { (key, c.publish(key, format!("[{i}]").into_bytes()).await) });
        }
        while let Some(r) = set.join_next().await {
            let (key, r) = r.expect("task");
            match key {
                "bad" => assert_eq!(r, Err(CoalesceError::Send("bad refused".into()))),
                _ => assert_eq!(r, Ok(())),
            }
        }
    }
}
