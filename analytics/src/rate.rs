//! A request budget per client, shared by every api replica through
//! Redis: what keeps one address from inventing viewing sessions by the
//! thousand (a view counts once per session, and a session id is the
//! player's).
//!
//! Fixed windows: the key `{prefix}rate:{scope}:{client}:{window}` is
//! incremented and given an expiry in one `MULTI`, and the request is
//! allowed while the count is within the budget. Fixed rather than
//! sliding windows because that is one round trip and one key per client
//! and window; the price, a burst of up to twice the budget across a
//! window's edge, is harmless for beacons. The window number comes from
//! the api's clock, so replicas a few milliseconds apart disagree only at
//! an edge.
//!
//! When Redis cannot answer, the request is allowed (and a warning
//! logged): the budget guards the counts' honesty, not the service, and
//! beacons may be going to Kafka while Redis is away.

use redis::aio::ConnectionManager;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the budget says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget (or no budget is set, or Redis did not answer).
    Allowed,
    /// The client spent its budget; its window ends in `retry_after`.
    Refused {
        /// Until the client's next window.
        retry_after: Duration,
    },
}

/// A budget of `budget` requests per client per `window` (`budget` 0:
/// no limit).
#[derive(Clone)]
pub struct RateLimit {
    conn: ConnectionManager,
    key_prefix: String,
    budget: u32,
    window: Duration,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("key_prefix", &self.key_prefix)
            .field("budget", &self.budget)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// A budget named `scope` on `conn`, its keys under `prefix` (the
    /// counters' prefix). A zero window is taken as one second.
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        scope: &str,
        budget: u32,
        window: Duration,
    ) -> Self {
        RateLimit {
            conn,
            key_prefix: format!("{prefix}rate:{scope}:"),
            budget,
            window: window.max(Duration::from_secs(1)),
        }
    }

    /// Spends one request of `client`'s budget.
    pub async fn take(&self, client: &str) -> Verdict {
        if self.budget == 0 {
            return Verdict::Allowed;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match self.take_at(client, now).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "rate limit: redis did not answer; request allowed");
                Verdict::Allowed
            }
        }
    }

    /// [`RateLimit::take`] at `now` (since the Unix epoch).
    async fn take_at(&self, client: &str, now: Duration) -> redis::RedisResult<Verdict> {
        let window_ms = self.window.as_millis().max(1);
        let now_ms = now.as_millis();
        let number = now_ms / window_ms;
        let key = format!("{}{client}:{number}", self.key_prefix);
        let mut conn = self.conn.clone();
        // Two windows' worth: the key outlives its window whatever the
        // replicas' clocks say, and then goes.
        let ttl_ms = u64::try_from(window_ms * 2).unwrap_or(u64::MAX);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .pexpire(&key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
            .ignore()
            .query_async(&mut conn)
            .await?;
        if count <= u64::from(self.budget) {
            return Ok(Verdict::Allowed);
        }
        let left_ms = (number + 1) * window_ms - now_ms;
        Ok(Verdict::Refused {
            retry_after: Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limit(budget: u32, window: Duration) -> Option<RateLimit> {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let client = redis::Client::open(url).ok()?;
        let conn = crate::counters::connection_manager(&client).await.ok()?;
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        Some(RateLimit::new(conn, &prefix, "beacons", budget, window))
    }

    #[tokio::test]
    async fn a_client_gets_its_budget_per_window_and_others_theirs() {
        let Some(limit) = limit(3, Duration::from_secs(60)).await else {
            panic!("no Redis at REDIS_URL or 127.0.0.1:6379");
        };
        // Ten seconds into a window (a fixed instant: no race with the
        // clock).
        let t = Duration::from_secs(1_800_000_000 / 60 * 60 + 10);
        for _ in 0..3 {
            assert_eq!(limit.take_at("a", t).await.unwrap(), Verdict::Allowed);
        }
        assert_eq!(
            limit.take_at("a", t).await.unwrap(),
            Verdict::Refused {
                retry_after: Duration::from_secs(50)
            }
        );
        assert_eq!(limit.take_at("b", t).await.unwrap(), Verdict::Allowed);
        // The next window starts a new budget.
        let next = t + Duration::from_secs(50);
        assert_eq!(limit.take_at("a", next).await.unwrap(), Verdict::Allowed);
        // Keys expire: nothing stays in Redis for good.
        let mut conn = limit.conn.clone();
        let key = format!("{}a:{}", limit.key_prefix, next.as_millis() / 60_000);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 120_000, "{ttl}");
    }

    #[tokio::test]
    async fn no_budget_means_no_limit() {
        let Some(limit) = limit(0, Duration::from_secs(60)).await else {
            panic!("no Redis at REDIS_URL or 127.0.0.1:6379");
        };
        for _ in 0..10 {
            assert_eq!(limit.take("a").await, Verdict::Allowed);
        }
    }
}
