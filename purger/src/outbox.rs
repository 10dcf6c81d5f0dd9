//! The outbox's SQL: `cdn_purges` rows written by the triggers of
//! migration `…040_cdn_purge`, and `cdn_purge_acks`, one row per CDN
//! target that acknowledged a purge in a round.
//!
//! - **Claim**: one statement picks due rows `FOR UPDATE SKIP LOCKED`
//!   (replicas split the work) and moves their `due_at` past a lease, so
//!   a purger that dies mid-way leaves them to be claimed again later.
//!   `attempts` counts claims and fences the write-back: a purger whose
//!   lease ran out (and whose rows another replica claimed since) changes
//!   nothing.
//! - **Acknowledgements** are written per target as soon as that CDN
//!   answered, so a retry only goes to the CDNs that did not.
//! - **Rounds**: a purge is sent once more `confirm_after` after every
//!   target acknowledged it (see [`crate::runner`] for why); the row is
//!   done when the last round is acknowledged.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use vodfarm_core::outbox_role::Backlog;

/// A claimed outbox row.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// The video's public id.
    pub video_id: String,
    /// Why (`deleted`, `private`, …).
    pub reason: String,
    /// When the change happened.
    pub created_at: DateTime<Utc>,
    /// Claims so far, this one included (the fence of the write-back).
    pub attempts: i32,
    /// The round being sent (rounds acknowledged so far).
    pub round: i32,
    /// Targets that already acknowledged this round.
    pub acked: HashSet<String>,
}

/// What happened to a claimed row.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every target acknowledged the round; another round follows after
    /// the delay, or (`None`) the purge is done.
    RoundDone {
        /// The delay before the next round, if any.
        next_round_after: Option<Duration>,
    },
    /// Some target failed: try again after the delay.
    Retry {
        /// The delay.
        after: Duration,
        /// What failed (no credentials: targets' names and answers).
        error: String,
    },
}

/// The outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
}

const CLAIM_SQL: &str = "UPDATE cdn_purges p
    SET due_at = now() + make_interval(secs => $2), attempts = p.attempts + 1
    FROM (SELECT id FROM cdn_purges
          WHERE done_at IS NULL AND due_at <= now()
          ORDER BY due_at, id
          FOR UPDATE SKIP LOCKED
          LIMIT $1) due
    WHERE p.id = due.id
    RETURNING p.id, p.video_id, p.reason, p.created_at, p.attempts, p.rounds_done";

impl Outbox {
    /// The outbox in `pool`'s database.
    pub fn new(pool: PgPool) -> Outbox {
        Outbox { pool }
    }

    /// The pool (for LISTEN).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims up to `limit` due rows for `lease`, with the targets that
    /// already acknowledged each row's current round.
    pub async fn claim(&self, limit: i64, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
        let rows = sqlx::query(CLAIM_SQL)
            .bind(limit)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    video_id: r.try_get("video_id")?,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                    attempts: r.try_get("attempts")?,
                    round: r.try_get("rounds_done")?,
                    acked: HashSet::new(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        claimed.sort_by_key(|c| c.id);
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let rounds: Vec<i32> = claimed.iter().map(|c| c.round).collect();
        let acks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT a.purge_id, a.target FROM cdn_purge_acks a
             JOIN unnest($1::bigint[], $2::int[]) AS c(id, round)
               ON a.purge_id = c.id AND a.round = c.round",
        )
        .bind(&ids)
        .bind(&rounds)
        .fetch_all(&self.pool)
        .await?;
        let mut by_id: HashMap<i64, HashSet<String>> = HashMap::new();
        for (id, target) in acks {
            by_id.entry(id).or_default().insert(target);
        }
        for c in &mut claimed {
            if let Some(t) = by_id.remove(&c.id) {
                c.acked = t;
            }
        }
        Ok(claimed)
    }

    /// Records that `target` acknowledged `rows` (id, round).
    pub async fn ack(&self, target: &str, rows: &[(i64, i32)]) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let rounds: Vec<i32> = rows.iter().map(|r| r.1).collect();
        sqlx::query(
            "INSERT INTO cdn_purge_acks (purge_id, target, round)
             SELECT c.id, $2, c.round FROM unnest($1::bigint[], $3::int[]) AS c(id, round)
             ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(target)
        .bind(&rounds)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes back what happened to each claimed row, fenced by the
    /// claim's `attempts`: a row claimed again since (our lease ran out)
    /// is left to its new owner. Returns how many rows were written.
    pub async fn finish(&self, outcomes: &[(&Claimed, Outcome)]) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for (c, outcome) in outcomes {
            let q = match outcome {
                Outcome::RoundDone {
                    next_round_after: None,
                } => sqlx::query(
                    "UPDATE cdn_purges SET rounds_done = rounds_done + 1, done_at = now(),
                         first_done_at = coalesce(first_done_at, now()), last_error = NULL
                     WHERE id = $1 AND attempts = $2 AND done_at IS NULL",
                )
                .bind(c.id)
                .bind(c.attempts),
                Outcome::RoundDone {
                    next_round_after: Some(after),
                } => sqlx::query(
                    "UPDATE cdn_purges SET rounds_done = rounds_done + 1,
                         due_at = now() + make_interval(secs => $3),
                         first_done_at = coalesce(first_done_at, now()), last_error = NULL
                     WHERE id = $1 AND attempts = $2 AND done_at IS NULL",
                )
                .bind(c.id)
                .bind(c.attempts)
                .bind(after.as_secs_f64()),
                Outcome::Retry { after, error } => sqlx::query(
                    "UPDATE cdn_purges SET due_at = now() + make_interval(secs => $3),
                         last_error = $4
                     WHERE id = $1 AND attempts = $2 AND done_at IS NULL",
                )
                .bind(c.id)
                .bind(c.attempts)
                .bind(after.as_secs_f64())
                .bind(error.chars().take(2000).collect::<String>()),
            };
            written += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// When the earliest pending row becomes due (`None`: nothing pending).
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        sqlx::query_scalar("SELECT min(due_at) FROM cdn_purges WHERE done_at IS NULL")
            .fetch_one(&self.pool)
            .await
    }

    /// The whole outbox's backlog.
    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
             FROM cdn_purges WHERE done_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending,
            oldest_seconds: oldest.unwrap_or(0.0).max(0.0),
        })
    }

    /// Deletes rows done more than `age` ago (their acknowledgements go
    /// with them), at most 1,000 at a time; returns how many.
    pub async fn prune(&self, age: Duration) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM cdn_purges WHERE id IN (
                 SELECT id FROM cdn_purges
                 WHERE done_at IS NOT NULL AND done_at < now() - make_interval(secs => $1)
                 LIMIT 1000)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
