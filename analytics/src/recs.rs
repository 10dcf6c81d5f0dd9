//! Recommendations in Redis: the sorted sets `vodfarm recs` writes
//! (`recs:related:{video_id}`, `recs:user:{user_id}`: member a video id,
//! score its strength) and the reads the api makes. A day's set replaces
//! the previous one with one `RENAME` (atomic: a reader sees the old list
//! or the new, never a mix).

use crate::counters::{CounterError, Counters};
use redis::aio::ConnectionManager;

/// `recs:related:{video_id}` (after the prefix).
pub fn related_key(prefix: &str, video_id: &str) -> String {
    format!("{prefix}recs:related:{video_id}")
}

/// `recs:user:{user_id}` (after the prefix).
pub fn user_key(prefix: &str, user_id: &str) -> String {
    format!("{prefix}recs:user:{user_id}")
}

/// The set of every recs key the last run wrote (to drop stale ones).
pub fn index_key(prefix: &str) -> String {
    format!("{prefix}recs:keys")
}

async fn top(
    conn: &mut ConnectionManager,
    key: &str,
    n: usize,
) -> Result<Vec<String>, CounterError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(n - 1)
        .arg("REV")
        .query_async(conn)
        .await?)
}

impl Counters {
    /// The `n` videos most related to `video_id`, strongest first (as
    /// written: the api still filters what may be shown).
    pub async fn related(&self, video_id: &str, n: usize) -> Result<Vec<String>, CounterError> {
        let mut conn = self.connection();
        top(&mut conn, &related_key(self.prefix(), video_id), n).await
    }

    /// The `n` videos recommended to `user_id`, best first.
    pub async fn recommended(&self, user_id: &str, n: usize) -> Result<Vec<String>, CounterError> {
        let mut conn = self.connection();
        top(&mut conn, &user_key(self.prefix(), user_id), n).await
    }

    /// Drops `user_id`'s recommendations (their history was erased).
    pub async fn forget_user(&self, user_id: &str) -> Result<(), CounterError> {
        let mut conn = self.connection();
        let key = user_key(self.prefix(), user_id);
        redis::pipe()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("SREM")
            .arg(index_key(self.prefix()))
            .arg(&key)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
