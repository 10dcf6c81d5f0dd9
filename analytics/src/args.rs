//! The flags every analytics user shares (the api, `vodfarm counts`,
//! `vodfarm recs`) and [`Analytics`], the handles they open: Redis
//! counters, the event bus, the watch store.

use crate::bus::kafka::{KafkaBus, KafkaSettings};
use crate::bus::redis_stream::RedisStreamBus;
use crate::bus::{BusError, EventBus};
use crate::counters::{Counters, Retention};
use crate::watch::postgres::PgWatchStore;
use crate::watch::scylla::ScyllaWatchStore;
use crate::watch::{WatchError, WatchStore};
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::config::parse_duration;

/// Redis, the bus and the watch store.
#[derive(Clone, clap::Args)]
pub struct AnalyticsArgs {
    /// Redis for live counters, recommendations and (without
    /// KAFKA_BROKERS) the event bus's stream.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prefix of every Redis key vodfarm writes (to share a Redis).
    #[arg(long, env = "VODFARM_REDIS_PREFIX", default_value = "vodfarm:")]
    pub redis_prefix: String,
    /// Kafka brokers (host:port,…). When set, playback events go through
    /// Kafka; otherwise through a Redis Stream.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The Kafka topic of playback events (created if missing).
    #[arg(long, env = "VODFARM_KAFKA_TOPIC", default_value = crate::bus::kafka::DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// Partitions of the topic when vodfarm creates it (consumers in
    /// parallel at most).
    #[arg(long, env = "VODFARM_KAFKA_PARTITIONS", default_value_t = 6)]
    pub kafka_partitions: i32,
    /// Replication factor of the topic when vodfarm creates it.
    #[arg(long, env = "VODFARM_KAFKA_REPLICATION", default_value_t = 1)]
    pub kafka_replication: i32,
    /// A counts replica that stops heartbeating to Kafka loses its
    /// partitions after this long.
    #[arg(long, env = "VODFARM_KAFKA_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub kafka_session_timeout: Duration,
    /// Most records (beacons) the producer puts in one batch. 1 makes
    /// every offset a batch start: tansu's object-store engines (S3,
    /// memory://) serve a fetch from an offset inside a batch starting at
    /// the next batch, so a consumer resuming from a committed offset
    /// inside a batch would skip the rest of it. Raise it on a real Kafka
    /// when players send many small beacons.
    #[arg(long, env = "VODFARM_KAFKA_BATCH_RECORDS", default_value_t = 1)]
    pub kafka_batch_records: u32,
    /// Beacons of one video published while its previous record is in
    /// flight travel together in the next record, up to about this many
    /// bytes (keep it under the broker's and the topic's
    /// `message.max.bytes`, 1 MB by default).
    #[arg(long, env = "VODFARM_KAFKA_RECORD_BYTES", default_value_t = 512 * 1024)]
    pub kafka_record_bytes: usize,
    /// librdkafka debug contexts for the producer and the consumer (e.g.
    /// `consumer,cgrp,fetch` or `all`), logged through tracing at debug
    /// level under target `librdkafka` (RUST_LOG=librdkafka=debug).
    #[arg(long, env = "VODFARM_KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,
    /// The Redis Stream keeps about this many events (older ones are
    /// trimmed, consumed or not: size it for the longest consumer outage).
    #[arg(long, env = "VODFARM_STREAM_MAX_LEN", default_value_t = 10_000_000)]
    pub stream_max_len: u64,
    /// Stream entries a stopped consumer left unacknowledged this long are
    /// taken over by another replica.
    #[arg(long, env = "VODFARM_STREAM_CLAIM_IDLE", default_value = "60s", value_parser = parse_duration)]
    pub stream_claim_idle: Duration,
    /// An event id is remembered this long: a redelivery or a player's
    /// retry within it never counts twice.
    #[arg(long, env = "VODFARM_DEDUP_TTL", default_value = "7d", value_parser = parse_duration)]
    pub dedup_ttl: Duration,
    /// Scylla/Cassandra nodes (host:port,…). When set, watch history and
    /// progress live there; otherwise in PostgreSQL.
    #[arg(long, env = "SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,
    /// The Scylla keyspace (created if missing).
    #[arg(long, env = "VODFARM_SCYLLA_KEYSPACE", default_value = "vodfarm")]
    pub scylla_keyspace: String,
    /// Replication factor of the keyspace when vodfarm creates it.
    #[arg(long, env = "VODFARM_SCYLLA_REPLICATION", default_value_t = 3)]
    pub scylla_replication: u32,
}

// By hand: the Redis URL may carry a password.
impl std::fmt::Debug for AnalyticsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsArgs")
            .field("redis_prefix", &self.redis_prefix)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic", &self.kafka_topic)
            .field("scylla_nodes", &self.scylla_nodes)
            .finish_non_exhaustive()
    }
}

/// Why the analytics handles could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Redis could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The bus could not be opened.
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    /// The watch store could not be opened.
    #[error("watch store: {0}")]
    Watch(#[from] WatchError),
}

/// The opened handles.
#[derive(Debug, Clone)]
pub struct Analytics {
    /// Live counters (and the Redis connection recs use).
    pub counters: Counters,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// Watch history and progress.
    pub watch: Arc<dyn WatchStore>,
}

impl AnalyticsArgs {
    /// Opens Redis, the bus (Kafka when configured, else the stream) and
    /// the watch store (Scylla when configured, else `pool`).
    pub async fn open(&self, pool: sqlx::PgPool) -> Result<Analytics, OpenError> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let counters = self.counters(&client).await?;
        let bus = self.bus(client).await?;
        let watch = self.watch(pool).await?;
        tracing::info!(bus = bus.kind(), watch = watch.kind(), "analytics ready");
        Ok(Analytics {
            counters,
            bus,
            watch,
        })
    }

    /// Opens the Redis counters only (recs: no bus).
    pub async fn open_counters(&self) -> Result<Counters, OpenError> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        self.counters(&client).await
    }

    async fn counters(&self, client: &redis::Client) -> Result<Counters, OpenError> {
        let conn = crate::counters::connection_manager(client).await?;
        Ok(Counters::new(
            conn,
            &self.redis_prefix,
            Retention {
                dedup: self.dedup_ttl,
                ..Retention::default()
            },
        ))
    }

    async fn bus(&self, client: redis::Client) -> Result<Arc<dyn EventBus>, OpenError> {
        Ok(match self.kafka_brokers.as_deref().map(str::trim) {
            Some(brokers) if !brokers.is_empty() => Arc::new(
                KafkaBus::new(KafkaSettings {
                    brokers: brokers.to_owned(),
                    topic: self.kafka_topic.clone(),
                    partitions: self.kafka_partitions,
                    replication: self.kafka_replication,
                    session_timeout: self.kafka_session_timeout,
                    batch_records: self.kafka_batch_records.max(1),
                    record_bytes: self.kafka_record_bytes.max(1),
                    debug: self.kafka_debug.clone().filter(|d| !d.trim().is_empty()),
                })
                .await?,
            ),
            _ => Arc::new(
                RedisStreamBus::new(
                    client,
                    &self.redis_prefix,
                    self.stream_max_len,
                    self.stream_claim_idle,
                )
                .await?,
            ),
        })
    }

    /// Opens the watch store: Scylla when SCYLLA_NODES is set, else
    /// PostgreSQL on `pool`.
    pub async fn watch(&self, pool: sqlx::PgPool) -> Result<Arc<dyn WatchStore>, OpenError> {
        let nodes: Vec<String> = self
            .scylla_nodes
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        Ok(if nodes.is_empty() {
            Arc::new(PgWatchStore::new(pool))
        } else {
            Arc::new(
                ScyllaWatchStore::connect(&nodes, &self.scylla_keyspace, self.scylla_replication)
                    .await?,
            )
        })
    }
}
