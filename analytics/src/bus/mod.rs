//! The event bus: the api appends playback events, `vodfarm counts`
//! replicas consume them in a consumer group, at least once.
//!
//! Two real backends behind one trait: a Redis Stream with a consumer
//! group (`redis_stream.rs`, the default: `vodfarm dev` and small
//! installs need nothing but Redis) and Kafka (`kafka.rs`, when
//! `KAFKA_BROKERS` is set: idempotent producer, `acks=all`, topic keyed by
//! video id). Delivery is at least once: a consumer commits only after the
//! batch was applied, and applying is idempotent (see `counters`).

pub mod kafka;
pub mod redis_stream;

use crate::event::PlaybackEvent;
use std::time::Duration;

/// Why the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Kafka answered with an error or could not be reached.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// An event could not be encoded.
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// Anything else (a timeout, an unexpected answer).
    #[error("{0}")]
    Other(String),
}

/// A bus the api publishes to and consumers read from.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// `redis-stream` or `kafka` (logs and metrics).
    fn kind(&self) -> &'static str;

    /// Appends `events` durably: returns once the bus holds every one
    /// (Redis: the XADDs ran; Kafka: every record acknowledged by all
    /// in-sync replicas).
    async fn publish(&self, events: &[PlaybackEvent]) -> Result<(), BusError>;

    /// Joins consumer group `group` as `consumer` (a stable name: a
    /// restarted replica takes back what it had not committed).
    async fn consumer(&self, group: &str, consumer: &str)
        -> Result<Box<dyn BusConsumer>, BusError>;
}

/// One member of a consumer group.
#[async_trait::async_trait]
pub trait BusConsumer: Send {
    /// Up to `max` events, waiting at most `wait` for the first. Entries
    /// that are not valid events are logged and skipped (committed with
    /// the batch).
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PlaybackEvent>, BusError>;

    /// Commits everything the previous `next_batch` returned: it will not
    /// be delivered to the group again.
    async fn commit(&mut self) -> Result<(), BusError>;

    /// Events of the group not yet committed (delivered or not).
    async fn lag(&mut self) -> Result<u64, BusError>;
}

/// Decodes one bus payload; `None` (logged) when it is not an event.
pub(crate) fn decode(payload: &[u8]) -> Option<PlaybackEvent> {
    match serde_json::from_slice(payload) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "skipping a bus entry that is not a playback event");
            None
        }
    }
}
