//! vodfarm's analytics library: what the api, `vodfarm counts` and
//! `vodfarm recs` share.
//!
//! - [`event`]: the playback event on the bus (one player beacon, stamped
//!   by the api) and the counting rule's threshold.
//! - [`bus`]: the [`bus::EventBus`] trait and its two backends, a Redis
//!   Stream with a consumer group (default) and Kafka (`KAFKA_BROKERS`).
//! - [`counters`]: the Redis key layout, the Lua script that applies a
//!   batch of events idempotently, and the live delta the api adds to
//!   the flushed view count.
//! - [`recs`]: the recommendation sets in Redis and their reads.
//! - [`rate`]: a request budget per client in Redis (the api's beacons).
//! - [`watch`]: the [`watch::WatchStore`] trait (history and progress),
//!   on PostgreSQL (default) or Scylla/Cassandra (`SCYLLA_NODES`), and
//!   erasure.
//! - [`args`]: the flags every analytics user shares (Redis, Kafka,
//!   Scylla) and [`args::Analytics`], the opened handles.

#![warn(missing_docs)]

pub mod args;
pub mod bus;
pub mod counters;
pub mod event;
pub mod rate;
pub mod recs;
pub mod watch;
