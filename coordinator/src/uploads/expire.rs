//! Idle uploads expire: their sessions become `expired`, their videos
//! `failed`, and what they hold in the store is freed (as on termination).

use super::session::{self, Session};
use super::UploadState;
use std::time::Duration;
use uuid::Uuid;
use vodfarm_core::auth::db_error;
use vodfarm_core::http::ApiError;
use vodfarm_core::layout;

/// Expires idle uploads: every `every`, sessions past `expires_at` become
/// `expired`, their video `failed`, and their parts and tails are freed.
pub async fn expire_uploads(
    state: UploadState,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match expire_once(&state).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "idle uploads expired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message, "upload expiry pass failed"),
        }
    }
}

/// One expiry pass; returns how many uploads expired.
pub async fn expire_once(state: &UploadState) -> Result<usize, ApiError> {
    let mut tx = state.pool.begin().await.map_err(|e| db_error(&e))?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM upload_sessions WHERE status = 'active' AND expires_at < now()
         ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?;
    let mut expired = Vec::new();
    for id in &ids {
        if let Some(s) = session::load(state, *id).await? {
            expired.push(s);
        }
    }
    let r: Result<(), sqlx::Error> = async {
        sqlx::query(
            "UPDATE upload_sessions SET status = 'expired', updated_at = now() WHERE id = ANY($1)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE videos SET status = 'failed', updated_at = now(),
                    processing_error = 'the upload expired before it finished'
             WHERE status = 'uploading'
               AND id IN (SELECT video_id FROM upload_sessions WHERE id = ANY($1))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    .await;
    r.map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    for s in &expired {
        discard(state, s).await;
    }
    Ok(ids.len())
}

/// Frees what an unfinished upload holds in the store.
pub(super) async fn discard(state: &UploadState, s: &Session) {
    if let Some(upload) = &s.multipart_upload_id {
        if let Err(e) = state.store.abort_multipart(&s.storage_key, upload).await {
            tracing::warn!(error = %e, upload_id = %s.id, "could not abort multipart upload");
        }
    }
    if let Err(e) = state
        .store
        .delete_prefix(layout::upload_prefix(&s.id).as_str())
        .await
    {
        tracing::warn!(error = %e, upload_id = %s.id, "could not delete upload tails");
    }
}
