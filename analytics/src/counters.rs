//! Live counters in Redis: the key layout, the Lua script that applies a
//! batch of playback events exactly once, and what the flush and the api
//! read back.
//!
//! Keys (after the configured prefix):
//! - `evt:{event_id}`: the event was applied (`SET NX`, expires after the
//!   dedup window);
//! - `sess:{video_id}:{session_id}`: hash `first` (ms of the session's
//!   first event), `max` (most watched seconds seen), `counted` (the hour
//!   its view counted in);
//! - `views:{video_id}`: views ever counted in Redis (the seed's `INCR`);
//! - `h:{video_id}:{hour}`: hash `views`, `watch` (watched seconds);
//! - `uv:{video_id}:{hour}`: HyperLogLog of the viewers whose view counted;
//! - `hs:{video_id}:{hour}`: HyperLogLog of the sessions that watched;
//! - `dirty:{hour}`: the videos with counts in that hour; `hours`: the
//!   hours not yet flushed for good; `hourver`: a hash of each open
//!   hour's change count (an hour is closed only if unchanged since the
//!   flush read it).
//!
//! The script checks and sets the event's dedup key and makes every
//! increment in one atomic step, so an event applied twice (redelivered
//! after a crash, or sent twice by the player) counts once.

use crate::event::PlaybackEvent;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

/// Why a counter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// How long a Redis command may take before the client gives up (the
/// client's default, 500 ms, is shorter than a batch's script under
/// load; a timed-out batch is retried, which is safe but wasteful).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A reconnecting connection to `client`'s server with
/// [`RESPONSE_TIMEOUT`].
pub async fn connection_manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(
        client.clone(),
        redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT)),
    )
    .await
}

/// How long keys live.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// An event id is remembered this long (redeliveries and retries
    /// later than this would count again).
    pub dedup: Duration,
    /// A session is remembered this long after its last event (a session
    /// idle for longer starts over and may count a new view).
    pub session: Duration,
    /// Per-hour counters live this long (they must outlive the flush).
    pub hours: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            dedup: Duration::from_secs(7 * 86_400),
            session: Duration::from_secs(2 * 86_400),
            hours: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The live counters of one Redis (with a key prefix).
#[derive(Clone)]
pub struct Counters {
    conn: ConnectionManager,
    prefix: String,
    retention: Retention,
    script: redis::Script,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The event was new (not a duplicate).
    pub new: bool,
    /// It made its session's view count.
    pub counted: bool,
    /// When its session started (ms since the epoch, from the session's
    /// first applied event): the `watched_at` of its history row.
    pub session_first_ms: i64,
}

/// One video's totals in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourTotals {
    /// The video's public id.
    pub video_id: String,
    /// Views counted in the hour.
    pub views: i64,
    /// Distinct viewers whose view counted (HyperLogLog estimate).
    pub unique_viewers: i64,
    /// Seconds watched in the hour.
    pub watch_seconds: i64,
    /// Sessions that watched in the hour (HyperLogLog estimate).
    pub sessions: i64,
}

const APPLY_LUA: &str = r"
local p = ARGV[1]
local dttl, sttl, httl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
-- What the batch changes, gathered so that each key is read and written
-- once per batch (in first-seen order) instead of once per event.
local sess, sess_order = {}, {}
local hours, hour_order = {}, {}
local views, view_order = {}, {}
local opened, opened_order = {}, {}
-- Appends v to list once.
local function add(list, seen, v)
  if not seen[v] then
    seen[v] = true
    list[#list + 1] = v
  end
end
-- PFADD in slices (unpack's stack is limited) and EXPIRE.
local function pfadd(key, list)
  for j = 1, #list, 1000 do
    redis.call('PFADD', key, unpack(list, j, math.min(j + 999, #list)))
  end
  redis.call('EXPIRE', key, httl)
end
local n = (#ARGV - 4) / 8
for i = 0, n - 1 do
  local b = 4 + i * 8
  local eid, vid, sid, viewer = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local watched, threshold = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local hour, stamp = ARGV[b + 7], ARGV[b + 8]
  local sk = p .. 'sess:' .. vid .. ':' .. sid
  local s = sess[sk]
  if s == nil then
    local f = redis.call('HMGET', sk, 'first', 'max', 'counted')
    s = {first = f[1], max = tonumber(f[2] or '0'), counted = f[3], changed = {}, live = false}
    sess[sk] = s
    sess_order[#sess_order + 1] = sk
  end
  if redis.call('SET', p .. 'evt:' .. eid, '1', 'NX', 'EX', dttl) then
    s.live = true
    if not s.first then
      s.first = stamp
      s.changed.first = true
    end
    local hk = vid .. ':' .. hour
    local h = hours[hk]
    if h == nil then
      h = {vid = vid, hour = hour, watch = 0, views = 0, hs = {}, hs_seen = {}, uv = {},
           uv_seen = {}, touched = 0}
      hours[hk] = h
      hour_order[#hour_order + 1] = hk
    end
    local touched = false
    if watched > s.max then
      h.watch = h.watch + (watched - s.max)
      s.max = watched
      s.changed.max = true
      add(h.hs, h.hs_seen, sid)
      touched = true
    end
    local counted = 0
    if watched >= threshold and not s.counted then
      s.counted = hour
      s.changed.counted = true
      if views[vid] == nil then
        views[vid] = 0
        view_order[#view_order + 1] = vid
      end
      views[vid] = views[vid] + 1
      h.views = h.views + 1
      add(h.uv, h.uv_seen, viewer)
      counted = 1
      touched = true
    end
    if touched then h.touched = h.touched + 1 end
    out[#out + 1] = {1, counted, tonumber(s.first)}
  else
    out[#out + 1] = {0, 0, tonumber(s.first or stamp)}
  end
end
for _, sk in ipairs(sess_order) do
  local s = sess[sk]
  local fields = {}
  for _, name in ipairs({'first', 'max', 'counted'}) do
    if s.changed[name] then
      fields[#fields + 1] = name
      fields[#fields + 1] = s[name]
    end
  end
  if #fields > 0 then redis.call('HSET', sk, unpack(fields)) end
  if s.live then redis.call('EXPIRE', sk, sttl) end
end
for _, vid in ipairs(view_order) do
  redis.call('INCRBY', p .. 'views:' .. vid, views[vid])
end
for _, hk in ipairs(hour_order) do
  local h = hours[hk]
  if h.touched > 0 then
    local key = p .. 'h:' .. hk
    if h.watch > 0 then redis.call('HINCRBY', key, 'watch', h.watch) end
    if h.views > 0 then redis.call('HINCRBY', key, 'views', h.views) end
    redis.call('EXPIRE', key, httl)
    if #h.hs > 0 then pfadd(p .. 'hs:' .. hk, h.hs) end
    if #h.uv > 0 then pfadd(p .. 'uv:' .. hk, h.uv) end
    redis.call('SADD', p .. 'dirty:' .. h.hour, h.vid)
    redis.call('EXPIRE', p .. 'dirty:' .. h.hour, httl)
    if opened[h.hour] == nil then
      opened[h.hour] = 0
      opened_order[#opened_order + 1] = h.hour
    end
    opened[h.hour] = opened[h.hour] + h.touched
  end
end
for _, hour in ipairs(opened_order) do
  redis.call('SADD', p .. 'hours', hour)
  redis.call('HINCRBY', p .. 'hourver', hour, opened[hour])
end
return out
";

impl Counters {
    /// Counters on `conn` under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str, retention: Retention) -> Self {
        Counters {
            conn,
            prefix: prefix.to_owned(),
            retention,
            script: redis::Script::new(APPLY_LUA),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection to the counters' Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Applies `events` in order, atomically per call (one script run).
    pub async fn apply(&self, events: &[PlaybackEvent]) -> Result<Vec<Applied>, CounterError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(self.retention.dedup.as_secs().max(1))
            .arg(self.retention.session.as_secs().max(1))
            .arg(self.retention.hours.as_secs().max(1));
        for e in events {
            inv.arg(e.event_id.simple().to_string())
                .arg(&e.video_id)
                .arg(&e.session_id)
                .arg(e.viewer_key())
                .arg(e.watched_whole_seconds())
                .arg(e.view_threshold_seconds())
                .arg(e.hour_bucket())
                .arg(e.received_at_ms);
        }
        let mut conn = self.conn.clone();
        let raw: Vec<(i64, i64, i64)> = inv.invoke_async(&mut conn).await?;
        Ok(raw
            .into_iter()
            .map(|(new, counted, first)| Applied {
                new: new == 1,
                counted: counted == 1,
                session_first_ms: first,
            })
            .collect())
    }

    /// Hours with counts that were not yet flushed for good (seconds),
    /// sorted.
    pub async fn open_hours(&self) -> Result<Vec<i64>, CounterError> {
        Ok(self
            .open_hour_versions()
            .await?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }

    /// Open hours with their change counts, sorted by hour.
    pub async fn open_hour_versions(&self) -> Result<Vec<(i64, i64)>, CounterError> {
        let mut conn = self.conn.clone();
        let hours: Vec<i64> = redis::cmd("SMEMBERS")
            .arg(format!("{}hours", self.prefix))
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(hours.len());
        if !hours.is_empty() {
            let versions: Vec<Option<i64>> = redis::cmd("HMGET")
                .arg(format!("{}hourver", self.prefix))
                .arg(&hours)
                .query_async(&mut conn)
                .await?;
            out.extend(
                hours
                    .into_iter()
                    .zip(versions.into_iter().map(Option::unwrap_or_default)),
            );
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Forgets `hour` as open if it did not change since its change
    /// count was `version` (its counts were flushed after it closed and
    /// its grace passed). An event for it applied later opens it again.
    /// Returns whether it was closed.
    pub async fn close_hour(&self, hour: i64, version: i64) -> Result<bool, CounterError> {
        const CLOSE_LUA: &str = "
            if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') == tonumber(ARGV[2]) then
              redis.call('SREM', KEYS[1], ARGV[1])
              redis.call('HDEL', KEYS[2], ARGV[1])
              return 1
            end
            return 0";
        let mut conn = self.conn.clone();
        let closed: i64 = redis::Script::new(CLOSE_LUA)
            .key(format!("{}hours", self.prefix))
            .key(format!("{}hourver", self.prefix))
            .arg(hour)
            .arg(version)
            .invoke_async(&mut conn)
            .await?;
        Ok(closed == 1)
    }

    /// Every video's totals in `hour`.
    pub async fn hour_totals(&self, hour: i64) -> Result<Vec<HourTotals>, CounterError> {
        let p = &self.prefix;
        let mut conn = self.conn.clone();
        let videos: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{p}dirty:{hour}"))
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(videos.len());
        for chunk in videos.chunks(500) {
            let mut sums = redis::pipe();
            let mut viewers = redis::pipe();
            let mut sessions = redis::pipe();
            for v in chunk {
                sums.cmd("HMGET")
                    .arg(format!("{p}h:{v}:{hour}"))
                    .arg("views")
                    .arg("watch");
                viewers.cmd("PFCOUNT").arg(format!("{p}uv:{v}:{hour}"));
                sessions.cmd("PFCOUNT").arg(format!("{p}hs:{v}:{hour}"));
            }
            let sums: Vec<(Option<i64>, Option<i64>)> = sums.query_async(&mut conn).await?;
            let viewers: Vec<i64> = viewers.query_async(&mut conn).await?;
            let sessions: Vec<i64> = sessions.query_async(&mut conn).await?;
            for (i, v) in chunk.iter().enumerate() {
                let (views, watch) = sums.get(i).copied().unwrap_or_default();
                out.push(HourTotals {
                    video_id: v.clone(),
                    views: views.unwrap_or(0),
                    unique_viewers: viewers.get(i).copied().unwrap_or(0),
                    watch_seconds: watch.unwrap_or(0),
                    sessions: sessions.get(i).copied().unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Views counted in Redis but not yet in `videos.view_count`: for each
    /// open hour, what Redis counted beyond the hour's flushed row.
    /// `GET /v1/videos/{id}` adds this to the flushed count.
    pub async fn live_delta(
        &self,
        pool: &sqlx::PgPool,
        video_pk: i64,
        video_id: &str,
    ) -> Result<i64, CounterError> {
        let hours = self.open_hours().await?;
        if hours.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for h in &hours {
            pipe.cmd("HGET")
                .arg(format!("{}h:{video_id}:{h}", self.prefix))
                .arg("views");
        }
        let mut conn = self.conn.clone();
        let live: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        let flushed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT extract(epoch FROM hour_bucket)::bigint, view_count::bigint
             FROM view_aggregates WHERE video_id = $1
               AND hour_bucket = ANY(SELECT to_timestamp(h) FROM unnest($2::bigint[]) AS h)",
        )
        .bind(video_pk)
        .bind(&hours)
        .fetch_all(pool)
        .await?;
        let flushed: HashMap<i64, i64> = flushed.into_iter().collect();
        Ok(hours
            .iter()
            .zip(live)
            .map(|(h, v)| (v.unwrap_or(0) - flushed.get(h).copied().unwrap_or(0)).max(0))
            .sum())
    }
}
