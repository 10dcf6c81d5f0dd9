//! `search_outbox`: the changes search has yet to apply, written by
//! triggers in the transaction of each change (migration `…_search.sql`).
//!
//! An indexer claims the oldest rows with `FOR UPDATE SKIP LOCKED` inside
//! a transaction, applies them, and deletes them in that same
//! transaction. Replicas never claim the same row; a crash or a failed
//! apply rolls back and leaves the rows for the next round.

use crate::index::ClaimedVideo;
use sqlx::{PgConnection, PgPool};

/// An outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRow {
    /// The change's version (`search_version_seq`).
    pub seq: i64,
    /// `videos.id`.
    pub video_row: i64,
}

/// Claims up to `limit` of the oldest unclaimed rows, in order.
pub async fn claim(tx: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT seq, video_id FROM search_outbox
         ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, video_row)| OutboxRow { seq, video_row })
        .collect())
}

/// The claimed videos, each once with its highest claimed sequence,
/// in order of first appearance.
pub fn by_video(rows: &[OutboxRow]) -> Vec<ClaimedVideo> {
    let mut out: Vec<ClaimedVideo> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for r in rows {
        match at.get(&r.video_row) {
            Some(&i) => {
                let v: &mut ClaimedVideo = &mut out[i];
                v.max_seq = v.max_seq.max(r.seq);
            }
            None => {
                at.insert(r.video_row, out.len());
                out.push(ClaimedVideo {
                    video_row: r.video_row,
                    max_seq: r.seq,
                });
            }
        }
    }
    out
}

/// Deletes applied rows; returns, for each, the seconds since its change
/// was made (the index lag).
pub async fn finish(tx: &mut PgConnection, rows: &[OutboxRow]) -> Result<Vec<f64>, sqlx::Error> {
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    sqlx::query_scalar(
        "DELETE FROM search_outbox WHERE seq = ANY($1)
         RETURNING extract(epoch FROM clock_timestamp() - created_at)::float8",
    )
    .bind(&seqs)
    .fetch_all(tx)
    .await
}

/// Rows waiting, and the age in seconds of the oldest (0 when none).
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
         FROM search_outbox",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_rows_fold_per_video() {
        let rows = [
            OutboxRow {
                seq: 3,
                video_row: 7,
            },
            OutboxRow {
                seq: 4,
                video_row: 9,
            },
            OutboxRow {
                seq: 8,
                video_row: 7,
            },
        ];
        assert_eq!(
            by_video(&rows),
            [
                ClaimedVideo {
                    video_row: 7,
                    max_seq: 8
                },
                ClaimedVideo {
                    video_row: 9,
                    max_seq: 4
                },
            ]
        );
    }
}
