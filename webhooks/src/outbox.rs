//! The webhook outbox's SQL: `webhook_deliveries` rows written by the
//! triggers of migration `…000200_webhooks` (and by replays).
//!
//! - **Claim**: one statement picks due rows of enabled endpoints `FOR
//!   UPDATE SKIP LOCKED` (replicas split the work) and moves their
//!   `next_attempt_at` past a lease, so a sender that dies mid-way (even
//!   after the receiver got the event) leaves them to be sent again, with
//!   the same event id, once the lease is over. `claims` counts claims and
//!   fences the write-back.
//! - **Write-back**: one transaction per delivery (delivery row, then its
//!   endpoint row: one lock order, no deadlocks between replicas).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::time::Duration;
use vodfarm_core::outbox_role::Backlog;

/// A claimed delivery, with what sending it needs.
#[derive(Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// Public id (`dlv_…`).
    pub delivery_id: String,
    /// `webhook_endpoints.id`.
    pub endpoint: i64,
    /// The endpoint's public id.
    pub webhook_id: String,
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub secret: String,
    /// The event's public id (`evt_…`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The exact body to send.
    pub body: String,
    /// Claims so far, this one included (the fence).
    pub claims: i32,
    /// HTTP attempts recorded before this one.
    pub attempts: i32,
    /// When the delivery was made (retries stop a window after it).
    pub created_at: DateTime<Utc>,
    /// When the event happened.
    pub event_created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Claimed {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("delivery_id", &self.delivery_id)
            .field("webhook_id", &self.webhook_id)
            .field("event_id", &self.event_id)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// What an attempt came to, as written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A 2xx answer.
    Succeeded,
    /// Another attempt is due later.
    Retrying,
    /// The retry window is over: the delivery failed for good.
    Failed,
    /// Another sender owns the row now (our lease ran out).
    Fenced,
}

/// When endpoints are disabled.
#[derive(Debug, Clone, Copy)]
pub struct DisableRule {
    /// At least this many failed attempts in a row …
    pub failures: i32,
    /// … over at least this long.
    pub failing_for: Duration,
}

/// The outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
}

const CLAIM_SQL: &str = "WITH due AS (
        SELECT d.id FROM webhook_deliveries d
        JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled
        ORDER BY d.next_attempt_at, d.id
        FOR UPDATE OF d SKIP LOCKED
        LIMIT $1
    ), claimed AS (
        UPDATE webhook_deliveries d
        SET next_attempt_at = now() + make_interval(secs => $2), claims = d.claims + 1
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.delivery_id, d.endpoint_id, d.event_id AS event_row, d.claims,
                  d.attempts, d.created_at
    )
    SELECT c.id, c.delivery_id, c.endpoint_id, c.claims, c.attempts, c.created_at,
           e.webhook_id, e.url, e.secret, ev.event_id, ev.event_type, ev.body,
           ev.created_at AS event_created_at
    FROM claimed c
    JOIN webhook_endpoints e ON e.id = c.endpoint_id
    JOIN webhook_events ev ON ev.id = c.event_row
    ORDER BY c.id";

impl Outbox {
    /// The outbox in `pool`'s database.
    pub fn new(pool: PgPool) -> Outbox {
        Outbox { pool }
    }

    /// The pool (for LISTEN).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims up to `limit` due deliveries for `lease`.
    pub async fn claim(&self, limit: i64, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
        let rows = sqlx::query(CLAIM_SQL)
            .bind(limit)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    delivery_id: r.try_get("delivery_id")?,
                    endpoint: r.try_get("endpoint_id")?,
                    webhook_id: r.try_get("webhook_id")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    body: r.try_get("body")?,
                    claims: r.try_get("claims")?,
                    attempts: r.try_get("attempts")?,
                    created_at: r.try_get("created_at")?,
                    event_created_at: r.try_get("event_created_at")?,
                })
            })
            .collect()
    }

    /// Records a 2xx answer: the delivery succeeded, the endpoint's
    /// failure count starts over.
    pub async fn succeeded(&self, c: &Claimed, status: u16) -> Result<Written, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1,
                 last_status_code = $3, last_error = NULL, last_attempt_at = now(),
                 delivered_at = now()
             WHERE id = $1 AND claims = $2 AND status = 'pending'",
        )
        .bind(c.id)
        .bind(c.claims)
        .bind(i32::from(status))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Fenced);
        }
        sqlx::query(
            "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL
             WHERE id = $1 AND consecutive_failures > 0",
        )
        .bind(c.endpoint)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Written::Succeeded)
    }

    /// Records a failed attempt: retry after `retry_in` unless that is
    /// past `retry_for` after the delivery was made (then it failed for
    /// good). The endpoint's failure count grows, and past `rule` the
    /// endpoint is disabled with the reason; returns what was written and
    /// whether the endpoint was disabled now.
    pub async fn failed(
        &self,
        c: &Claimed,
        status: Option<u16>,
        error: &str,
        retry_in: Duration,
        retry_for: Duration,
        rule: DisableRule,
    ) -> Result<(Written, bool), sqlx::Error> {
        let error: String = error.chars().take(1000).collect();
        let mut tx = self.pool.begin().await?;
        let given_up: Option<bool> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET attempts = attempts + 1,
                 last_status_code = $3, last_error = $4, last_attempt_at = now(),
                 next_attempt_at = now() + make_interval(secs => $5),
                 status = CASE WHEN now() + make_interval(secs => $5)
                                    > created_at + make_interval(secs => $6)
                               THEN 'failed' ELSE 'pending' END
             WHERE id = $1 AND claims = $2 AND status = 'pending'
             RETURNING status = 'failed'",
        )
        .bind(c.id)
        .bind(c.claims)
        .bind(status.map(i32::from))
        .bind(&error)
        .bind(retry_in.as_secs_f64())
        .bind(retry_for.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(given_up) = given_up else {
            return Ok((Written::Fenced, false));
        };
        sqlx::query(
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
                 failing_since = coalesce(failing_since, now())
             WHERE id = $1",
        )
        .bind(c.endpoint)
        .execute(&mut *tx)
        .await?;
        let disabled = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = now(),
                 disabled_reason = 'disabled after ' || consecutive_failures
                     || ' failed delivery attempts in a row since '
                     || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                     || ' UTC; last error: ' || $4
             WHERE id = $1 AND enabled AND consecutive_failures >= $2
               AND failing_since <= now() - make_interval(secs => $3)",
        )
        .bind(c.endpoint)
        .bind(rule.failures)
        .bind(rule.failing_for.as_secs_f64())
        .bind(&error)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        let written = if given_up {
            Written::Failed
        } else {
            Written::Retrying
        };
        Ok((written, disabled))
    }

    /// When the earliest pending delivery of an enabled endpoint is due.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 'pending' AND e.enabled",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// The whole outbox's backlog.
    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
             FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending,
            oldest_seconds: oldest.unwrap_or(0.0).max(0.0),
        })
    }

    /// Deletes finished deliveries older than `age`, then events left
    /// with no delivery, at most 1,000 of each at a time.
    pub async fn prune(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let deliveries = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1)
                 LIMIT 1000)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        let events = sqlx::query(
            "DELETE FROM webhook_events WHERE id IN (
                 SELECT ev.id FROM webhook_events ev
                 WHERE ev.created_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id)
                 LIMIT 1000)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deliveries + events)
    }
}
