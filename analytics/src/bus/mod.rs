//! The event bus: the api appends playback events, `vodfarm counts`
//! replicas consume them in a consumer group, at least once.
//!
//! Two real backends behind one trait: a Redis Stream with a consumer
//! group (`redis_stream.rs`, the default: `vodfarm dev` and small
//! installs need nothing but Redis) and Kafka (`kafka.rs`, when
//! `KAFKA_BROKERS` is set: idempotent producer, `acks=all`, topic keyed by
//! video id). Delivery is at least once: a consumer commits only after the
//! batch was applied, and applying is idempotent (see `counters`).
//!
//! One bus entry (a stream entry, a Kafka record) carries the events of
//! one `publish` call as a JSON array: a beacon's events (up to 100) cost
//! one append, one delivery and one acknowledgement instead of one each.
//! On Kafka, concurrent beacons of one video share a record
//! (`coalesce.rs`).
//! Entries holding a single JSON object (written before batching) are
//! still read.

mod coalesce;
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
    /// The group took the batch's partitions away before its commit (a
    /// rebalance): retrying cannot succeed, and the batch, already
    /// applied, will be delivered again to the new owner (and
    /// deduplicated by the counters).
    #[error("the batch's partitions were reassigned before its commit: {0}")]
    Reassigned(String),
    /// Anything else (a timeout, an unexpected answer).
    #[error("{0}")]
    Other(String),
}

/// A bus the api publishes to and consumers read from.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// `redis-stream` or `kafka` (logs and metrics).
    fn kind(&self) -> &'static str;

    /// Registers the bus's own metrics on the publishing side (the api's
    /// `/metrics`); a bus with none registers nothing.
    fn register_metrics(&self, _registry: &prometheus::Registry) -> prometheus::Result<()> {
        Ok(())
    }

    /// Appends `events` durably: returns once the bus holds every one
    /// (Redis: the XADD ran; Kafka: every record acknowledged by all
    /// in-sync replicas). One call's events travel together in one entry
    /// (Kafka: one record per video).
    async fn publish(&self, events: &[PlaybackEvent]) -> Result<(), BusError>;

    /// Joins consumer group `group` as `consumer` (a stable name: a
    /// restarted replica takes back what it had not committed).
    async fn consumer(&self, group: &str, consumer: &str)
        -> Result<Box<dyn BusConsumer>, BusError>;
}

/// One member of a consumer group.
#[async_trait::async_trait]
pub trait BusConsumer: Send {
    /// About `max` events (whole entries: at least one, and no more than
    /// `max` unless the first entry alone holds more), waiting at most
    /// `wait` for the first. Entries that are not valid events are logged
    /// and skipped (committed with the batch).
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PlaybackEvent>, BusError>;

    /// Commits everything the previous `next_batch` returned: it will not
    /// be delivered to the group again. [`BusError::Reassigned`]: it will
    /// be, to another member (or to this one after it rejoins); the
    /// caller must go on reading so that the rebalance can finish.
    async fn commit(&mut self) -> Result<(), BusError>;

    /// Entries of the group not yet committed (delivered or not).
    async fn lag(&mut self) -> Result<u64, BusError>;
}

/// Encodes the payload of one bus entry: a JSON array of events.
pub(crate) fn encode(events: &[PlaybackEvent]) -> Result<Vec<u8>, BusError> {
    Ok(serde_json::to_vec(events)?)
}

/// Decodes one bus payload into its events: a batch (what `encode`
/// writes) or one event (what earlier versions wrote, one entry per
/// event); none (logged) when it is not events.
pub(crate) fn decode(payload: &[u8]) -> Vec<PlaybackEvent> {
    // The first byte tells the shape (cheaper than serde's untagged
    // enums, which buffer the whole value before trying each shape).
    let batch = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let decoded = if batch {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|e| vec![e])
    };
    match decoded {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "skipping a bus entry that is not playback events");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event(n: u128) -> PlaybackEvent {
        PlaybackEvent {
            event_id: uuid::Uuid::from_u128(n),
            video_id: "v".into(),
            session_id: "s".into(),
            user_id: None,
            kind: EventKind::Progress,
            position_seconds: 1.0,
            watched_seconds: 1.0,
            at: 0.0,
            received_at_ms: 0,
            duration_seconds: 60,
        }
    }

    #[test]
    fn batches_and_single_events_decode() {
        let batch = vec![event(1), event(2)];
        let payload = encode(&batch).expect("encode");
        assert_eq!(decode(&payload), batch);
        let one = serde_json::to_vec(&event(3)).expect("encode one");
        assert_eq!(decode(&one), vec![event(3)]);
        assert!(decode(b"{\"not\": \"an event\"}").is_empty());
    }
}
