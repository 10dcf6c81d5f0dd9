//! Erasing a viewer's history for good. `DELETE /v1/me/history` writes a
//! mark (`watch_erasures`) and erases the store's rows while holding the
//! viewer's advisory lock exclusively; `vodfarm counts` writes history
//! only while holding the same lock shared and drops every record not
//! newer than the mark. Events of before the erasure still on the bus
//! therefore never bring the history back, whichever store holds it.

use super::{WatchError, WatchRecord, WatchStore};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};

/// Takes the viewer's history lock shared (writers).
const LOCK_SHARED: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('vodfarm.watch:' || $1, 0))";
/// Takes the viewer's history lock exclusively (erasure).
const LOCK_EXCLUSIVE: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('vodfarm.watch:' || $1, 0))";

/// Records `records` into `store` unless their viewer erased the history
/// after them. Returns how many were written.
pub async fn record_unless_erased(
    pool: &PgPool,
    store: &dyn WatchStore,
    records: &[WatchRecord],
) -> Result<usize, WatchError> {
    if records.is_empty() {
        return Ok(0);
    }
    let users: BTreeSet<&str> = records.iter().map(|r| r.user_id.as_str()).collect();
    let users: Vec<&str> = users.into_iter().collect();
    let mut tx = pool.begin().await?;
    // Sorted, so two writers never wait on each other in a cycle.
    for u in &users {
        sqlx::query(LOCK_SHARED).bind(u).execute(&mut *tx).await?;
    }
    let marks: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT user_id, erased_at FROM watch_erasures WHERE user_id = ANY($1)")
            .bind(&users)
            .fetch_all(&mut *tx)
            .await?;
    let marks: HashMap<String, DateTime<Utc>> = marks.into_iter().collect();
    let keep: Vec<WatchRecord> = records
        .iter()
        .filter(|r| marks.get(&r.user_id).is_none_or(|m| r.updated_at > *m))
        .cloned()
        .collect();
    store.record(&keep).await?;
    tx.commit().await?;
    Ok(keep.len())
}

/// Erases `user_id`'s history and progress from `store` and marks the
/// erasure, so nothing recorded before now comes back.
pub async fn erase(pool: &PgPool, store: &dyn WatchStore, user_id: &str) -> Result<(), WatchError> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_EXCLUSIVE)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO watch_erasures (user_id, erased_at) VALUES ($1, now())
         ON CONFLICT (user_id) DO UPDATE SET erased_at = now()",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    store.erase(user_id).await?;
    tx.commit().await?;
    Ok(())
}
