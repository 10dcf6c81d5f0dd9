//! The Redis Stream backend: `XADD` (one entry per `publish`, field `e`
//! the events as a JSON array) and a consumer group read with
//! `XREADGROUP`; `XACK` commits. Entries read beyond a batch's `max`
//! events wait in the consumer (delivered to it, not yet returned or
//! acknowledged) for the next batch.
//!
//! A consumer first re-reads its own pending entries (delivered before a
//! crash, never acknowledged), then takes over entries another consumer
//! left pending for longer than `claim_idle` (`XAUTOCLAIM`: a replica
//! that died for good), then reads new entries.

use super::{decode, encode, BusConsumer, BusError, EventBus};
use crate::event::PlaybackEvent;
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest `XREADGROUP BLOCK`.
const MAX_BLOCK: Duration = Duration::from_secs(30);

/// The stream's key (after the key prefix).
pub const STREAM_KEY: &str = "playback";

/// A Redis Stream bus.
#[derive(Clone)]
pub struct RedisStreamBus {
    conn: ConnectionManager,
    client: redis::Client,
    stream: String,
    max_len: u64,
    claim_idle: Duration,
}

impl std::fmt::Debug for RedisStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamBus")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl RedisStreamBus {
    /// A bus on `client`'s server, stream `{prefix}playback`, trimmed to
    /// about `max_len` entries; pending entries idle for `claim_idle` are
    /// taken over by live consumers.
    pub async fn new(
        client: redis::Client,
        prefix: &str,
        max_len: u64,
        claim_idle: Duration,
    ) -> Result<Self, BusError> {
        let conn = crate::counters::connection_manager(&client).await?;
        Ok(RedisStreamBus {
            conn,
            client,
            stream: format!("{prefix}{STREAM_KEY}"),
            max_len,
            claim_idle,
        })
    }
}

#[async_trait::async_trait]
impl EventBus for RedisStreamBus {
    fn kind(&self) -> &'static str {
        "redis-stream"
    }

    async fn publish(&self, events: &[PlaybackEvent]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("e")
            .arg(encode(events)?)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn consumer(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn BusConsumer>, BusError> {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e.into());
            }
        }
        // A connection of its own: XREADGROUP BLOCK holds it (for at most
        // MAX_BLOCK, well within the connection's response timeout).
        let blocking = self
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(MAX_BLOCK + crate::counters::RESPONSE_TIMEOUT)),
            )
            .await?;
        Ok(Box::new(StreamConsumer {
            conn,
            blocking,
            stream: self.stream.clone(),
            group: group.to_owned(),
            name: consumer.to_owned(),
            own_pending: true,
            claim_idle: self.claim_idle,
            last_claim: None,
            claim_cursor: "0-0".to_owned(),
            read_ahead: VecDeque::new(),
            delivered: Vec::new(),
        }))
    }
}

struct StreamConsumer {
    conn: ConnectionManager,
    blocking: redis::aio::MultiplexedConnection,
    stream: String,
    group: String,
    name: String,
    /// Still re-reading our own pending entries (after a restart).
    own_pending: bool,
    claim_idle: Duration,
    last_claim: Option<Instant>,
    claim_cursor: String,
    /// Entries read but not yet returned (a read brings whole entries,
    /// a batch stops at about `max` events): returned by the next
    /// batches before anything is read again.
    read_ahead: VecDeque<(String, Vec<PlaybackEvent>)>,
    /// Ids of the last batch, acknowledged by `commit`.
    delivered: Vec<String>,
}

/// `[[stream, [[id, [field, value, …]], …]]]` or `[id, [[id, fields]…], …]`
/// entries → (id, payload of field `e`). Deleted entries (nil fields)
/// give no payload.
fn entries(v: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let Value::Array(items) = v else {
        return out;
    };
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(id), fields) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let id = match id {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        let mut payload = None;
        if let Some(Value::Array(kv)) = fields {
            for chunk in kv.chunks(2) {
                if let [Value::BulkString(k), Value::BulkString(val)] = chunk {
                    if k.as_slice() == b"e" {
                        payload = Some(val.clone());
                    }
                }
            }
        }
        out.push((id, payload));
    }
    out
}

/// The entries of the one stream an `XREADGROUP` answer names.
fn read_answer(v: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) => pair.get(1).map(entries),
                _ => None,
            })
            .flatten()
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

impl StreamConsumer {
    /// Keeps what a read brought (decoded) for `batch`.
    fn keep(&mut self, got: Vec<(String, Option<Vec<u8>>)>) {
        for (id, payload) in got {
            let events = payload.as_deref().map(decode).unwrap_or_default();
            self.read_ahead.push_back((id, events));
        }
    }

    /// Whole entries from `read_ahead`, up to `max` events (at least one
    /// entry); their ids become the batch `commit` acknowledges.
    fn batch(&mut self, max: usize) -> Vec<PlaybackEvent> {
        let mut out = Vec::new();
        while let Some((_, events)) = self.read_ahead.front() {
            if !self.delivered.is_empty() && out.len() + events.len() > max {
                break;
            }
            let Some((id, mut events)) = self.read_ahead.pop_front() else {
                break;
            };
            out.append(&mut events);
            self.delivered.push(id);
        }
        out
    }

    /// Reads entries into `read_ahead`: first this consumer's own
    /// pending ones (after a restart), then ones a stopped consumer left
    /// pending, then new ones (waiting up to `wait`).
    async fn fill(&mut self, max: usize, wait: Duration) -> Result<(), BusError> {
        if self.own_pending {
            let v = self.read("0", max, None).await?;
            let got = read_answer(&v);
            if !got.is_empty() {
                self.keep(got);
                return Ok(());
            }
            self.own_pending = false;
        }
        if self
            .last_claim
            .is_none_or(|t| t.elapsed() >= self.claim_idle / 2)
        {
            let v: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(max)
                .query_async(&mut self.conn)
                .await?;
            if let Value::Array(parts) = &v {
                let next = match parts.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => "0-0".to_owned(),
                };
                let got = parts.get(1).map(entries).unwrap_or_default();
                if next == "0-0" {
                    self.last_claim = Some(Instant::now());
                }
                self.claim_cursor = next;
                if !got.is_empty() {
                    tracing::info!(
                        entries = got.len(),
                        "took over entries a stopped consumer left pending"
                    );
                    self.keep(got);
                    return Ok(());
                }
            }
        }
        let v = self.read(">", max, Some(wait)).await?;
        self.keep(read_answer(&v));
        Ok(())
    }

    async fn read(
        &mut self,
        id: &str,
        max: usize,
        block: Option<Duration>,
    ) -> Result<Value, BusError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK")
                .arg(b.min(MAX_BLOCK).as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        Ok(if block.is_some() {
            cmd.query_async(&mut self.blocking).await?
        } else {
            cmd.query_async(&mut self.conn).await?
        })
    }
}

#[async_trait::async_trait]
impl BusConsumer for StreamConsumer {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PlaybackEvent>, BusError> {
        self.delivered.clear();
        let max = max.max(1);
        // Read only when everything read before was returned (and, the
        // loop being read → apply → commit, acknowledged): a re-read of
        // our own pending entries then never brings one twice.
        if self.read_ahead.is_empty() {
            self.fill(max, wait).await?;
        }
        Ok(self.batch(max))
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        if self.delivered.is_empty() {
            return Ok(());
        }
        // Acknowledged entries are deleted at once: the stream then holds
        // exactly what the group has not committed (its length is the
        // lag), and no viewer's events outlive their counting.
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.delivered)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&self.delivered)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await?;
        self.delivered.clear();
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64, BusError> {
        Ok(redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut self.conn)
            .await?)
    }
}
