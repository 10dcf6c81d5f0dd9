//! The Kafka backend (`rdkafka`): an idempotent producer with
//! `acks=all` on topic `vodfarm.playback` (keyed by video id, so one
//! video's events stay in order on one partition), created by the admin
//! client if missing; consumers in a group with auto-commit off and
//! synchronous commits after each applied batch.
//!
//! Two things keep a group moving on tansu (the test broker) as on Kafka:
//! a commit refused because a rebalance took the partitions is given up
//! (the batch is delivered again and deduplicated) rather than retried,
//! since a member that does not poll holds the whole rebalance; and the
//! producer puts one record per batch by default, so a committed offset
//! is always a batch start (tansu's object-store engines answer a fetch
//! from inside a batch with the next batch, skipping the rest).
//!
//! Since each record is then its own produce request, concurrent beacons
//! of one video share a record (`coalesce.rs`): one record per video is
//! in flight, and the beacons that arrive meanwhile leave together in
//! the next, up to `record_bytes`.

use super::coalesce::{CoalesceError, Coalescer, RecordMetrics, SendRecord};
use super::{decode, encode, BusConsumer, BusError, EventBus};
use crate::event::PlaybackEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The topic's default name.
pub const DEFAULT_TOPIC: &str = "vodfarm.playback";

/// How the Kafka bus connects.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,…`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Partitions of the topic when this bus creates it.
    pub partitions: i32,
    /// Replication factor of the topic when this bus creates it.
    pub replication: i32,
    /// A consumer that stops heartbeating loses its partitions after this.
    pub session_timeout: Duration,
    /// Most records in one producer batch (`batch.num.messages`).
    pub batch_records: u32,
    /// A record carrying several beacons of one video stops growing at
    /// about this many bytes (a single larger beacon still goes alone).
    pub record_bytes: usize,
    /// librdkafka `debug` contexts (`consumer,cgrp,fetch`, …), if any.
    pub debug: Option<String>,
}

impl KafkaSettings {
    /// A client configuration on the brokers, with the debug contexts.
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        if let Some(d) = &self.debug {
            c.set("debug", d);
        }
        c
    }
}

/// A Kafka bus.
#[derive(Clone)]
pub struct KafkaBus {
    settings: KafkaSettings,
    records: Coalescer<KafkaError>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("topic", &self.settings.topic)
            .finish_non_exhaustive()
    }
}

const OP_TIMEOUT: Duration = Duration::from_secs(15);

impl KafkaBus {
    /// Connects a producer and creates the topic if it does not exist.
    pub async fn new(settings: KafkaSettings) -> Result<Self, BusError> {
        let producer: FutureProducer = settings
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", settings.batch_records.to_string())
            .set("message.timeout.ms", "30000")
            .create()?;
        let admin: AdminClient<DefaultClientContext> = settings.client().create()?;
        let topic = NewTopic::new(
            &settings.topic,
            settings.partitions.max(1),
            TopicReplication::Fixed(settings.replication.max(1)),
        );
        let results = admin
            .create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Timeout::After(OP_TIMEOUT))),
            )
            .await?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "created the playback topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Other(format!("creating topic {name}: {code}")))
                }
            }
        }
        let topic = settings.topic.clone();
        let send: SendRecord<KafkaError> = Arc::new(move |key: String, payload: Vec<u8>| {
            let (producer, topic) = (producer.clone(), topic.clone());
            Box::pin(async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Timeout::After(OP_TIMEOUT),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            })
        });
        // One record per video in flight: a video's records reach the
        // partition in the order their beacons arrived.
        let metrics = RecordMetrics::new("vodfarm_kafka")
            .map_err(|e| BusError::Other(format!("metrics: {e}")))?;
        let records = Coalescer::new(send, metrics, 1, settings.record_bytes);
        Ok(KafkaBus { settings, records })
    }
}

#[async_trait::async_trait]
impl EventBus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.records.register_metrics(registry)
    }

    async fn publish(&self, events: &[PlaybackEvent]) -> Result<(), BusError> {
        // One payload per run of one video's events (keyed by it, so a
        // video's events stay in order on one partition; a beacon is one
        // video, hence one payload), sharing a record with other
        // beacons of that video published meanwhile.
        let mut sends = Vec::new();
        for run in events.chunk_by(|a, b| a.video_id == b.video_id) {
            let payload = encode(run)?;
            let records = self.records.clone();
            sends.push(async move { records.publish(&run[0].video_id, payload).await });
        }
        for r in futures::future::join_all(sends).await {
            r.map_err(|e| match e {
                CoalesceError::Send(e) => BusError::Kafka(e),
                CoalesceError::Lost => {
                    BusError::Other("the task sending the record ended without an answer".into())
                }
            })?;
        }
        Ok(())
    }

    async fn consumer(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn BusConsumer>, BusError> {
        let c: StreamConsumer = self
            .settings
            .client()
            .set("group.id", group)
            .set("client.id", consumer)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // tansu holds a fetch for up to half this even when it has
            // data; the default 500 ms put 600-740 ms on the bench's lag
            // p99, 100 ms 440-660 ms.
            .set("fetch.wait.max.ms", "100")
            .set(
                "session.timeout.ms",
                self.settings.session_timeout.as_millis().to_string(),
            )
            .create()?;
        c.subscribe(&[self.settings.topic.as_str()])?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(c),
            topic: self.settings.topic.clone(),
            delivered: BTreeMap::new(),
            probe: None,
            last_lag: None,
        }))
    }
}

/// Whether a commit failed because this member no longer owns the
/// partitions (a rebalance began or finished without it). Retrying such
/// a commit never succeeds, and while a caller retries instead of
/// polling, the consumer cannot take part in the rebalance: the group
/// waits on it and nothing is consumed (up to `max.poll.interval.ms`).
fn lost_assignment(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}

impl KafkaConsumer {
    /// Starts a lag measurement on a blocking thread.
    fn spawn_probe(&self) -> tokio::task::JoinHandle<Result<u64, BusError>> {
        let (c, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || measure_lag(&c, &topic))
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    topic: String,
    /// Highest offset delivered per partition in the last batch.
    delivered: BTreeMap<i32, i64>,
    /// The lag measurement in flight.
    probe: Option<tokio::task::JoinHandle<Result<u64, BusError>>>,
    /// The last lag measured.
    last_lag: Option<u64>,
}

/// How long a batch keeps gathering messages after the first arrived.
const GATHER: Duration = Duration::from_millis(20);

#[async_trait::async_trait]
impl BusConsumer for KafkaConsumer {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PlaybackEvent>, BusError> {
        self.delivered.clear();
        let mut out = Vec::new();
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut seen = 0;
        // Whole records: a batch may pass `max` by one record's events.
        while out.len() < max.max(1) {
            let msg = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m?,
            };
            if seen == 0 {
                deadline = tokio::time::Instant::now() + GATHER;
            }
            seen += 1;
            let (p, o) = (msg.partition(), msg.offset());
            let best = self.delivered.entry(p).or_insert(o);
            *best = (*best).max(o);
            if let Some(payload) = msg.payload() {
                out.append(&mut decode(payload));
            }
        }
        Ok(out)
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        if self.delivered.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.delivered {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(o + 1))?;
        }
        let c = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| BusError::Other(format!("commit task: {e}")))?;
        match committed {
            Ok(()) => {
                self.delivered.clear();
                Ok(())
            }
            Err(e) if lost_assignment(&e) => {
                self.delivered.clear();
                Err(BusError::Reassigned(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn lag(&mut self) -> Result<u64, BusError> {
        // Measured off the consuming path: the watermark and offset
        // requests queue behind the broker's fetches (on tansu, up to
        // `fetch.wait.max.ms` each), and measured inline every two
        // seconds they cost ~3 s per batch under load, so the consumer
        // fell minutes behind (the bench's "stall"). The first answer is
        // awaited; later calls give the last one and start the next.
        if self.probe.is_none() && self.last_lag.is_none() {
            self.probe = Some(self.spawn_probe());
        }
        if self.last_lag.is_none()
            || self
                .probe
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            if let Some(p) = self.probe.take() {
                let measured = p
                    .await
                    .map_err(|e| BusError::Other(format!("lag task: {e}")))
                    .and_then(|r| r);
                self.last_lag = measured.as_ref().ok().copied();
                measured?;
            }
        }
        if self.probe.is_none() {
            self.probe = Some(self.spawn_probe());
        }
        self.last_lag
            .ok_or_else(|| BusError::Other("lag not measured yet".into()))
    }
}

/// The group's committed lag on `topic`: Σ over partitions of the high
/// watermark minus the committed offset (blocking requests).
fn measure_lag(c: &StreamConsumer, topic: &str) -> Result<u64, BusError> {
    let md = c.fetch_metadata(Some(topic), Timeout::After(OP_TIMEOUT))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = c.committed_offsets(tpl, Timeout::After(OP_TIMEOUT))?;
    let mut lag = 0u64;
    for el in committed.elements() {
        let (low, high) = c.fetch_watermarks(topic, el.partition(), Timeout::After(OP_TIMEOUT))?;
        let at = match el.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += u64::try_from(high - at.max(low)).unwrap_or(0);
    }
    Ok(lag)
}
