//! Upload sessions in PostgreSQL (`upload_sessions`): creation with the
//! video row, the per-PATCH row lock, progress and completion.

use super::UploadState;
use crate::pipeline::{upload_jobs_chunked, with_downloads, DEFAULT_SEGMENT_SECONDS};
use crate::queue::JobQueue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use std::collections::BTreeMap;
use uuid::Uuid;
use vodfarm_core::auth::{db_error, AuthUser};
use vodfarm_core::http::ApiError;
use vodfarm_core::ids::{new_public_id, new_secret_token, token_digest, IdKind};
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;
use vodfarm_core::store::{part_size_for, CompletedPart};
use vodfarm_core::text::Lines;

/// Privacy levels a video may have (`videos.privacy`).
pub const PRIVACY_LEVELS: [&str; 3] = ["public", "unlisted", "private"];

/// What a creator asks for when starting an upload.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    /// Public channel id; the caller's oldest channel when absent.
    pub channel_id: Option<String>,
    /// Title (1..=500 characters).
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Category.
    pub category: Option<String>,
    /// `public`, `unlisted` or `private`.
    pub privacy: String,
    /// `ts` or `cmaf`; the settings' default when `None`.
    pub packaging: Option<String>,
    /// The file's name as the creator has it.
    pub filename: String,
    /// Exact size in bytes.
    pub size_bytes: u64,
    /// tus `Upload-Metadata`, kept for HEAD.
    pub metadata: BTreeMap<String, String>,
    /// Rungs also made as MP4 downloads.
    pub mp4_renditions: Vec<String>,
}

/// A created upload.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedUpload {
    /// The video's public id.
    pub video_id: String,
    /// The tus upload's id.
    pub upload_id: Uuid,
    /// The short-lived token that authorizes this upload only.
    pub upload_token: String,
    /// When the upload expires unless bytes keep arriving.
    pub upload_expires_at: DateTime<Utc>,
}

/// An upload session row, with its video.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id.
    pub id: Uuid,
    /// `videos.id`.
    pub video: i64,
    /// `videos.video_id`.
    pub video_id: String,
    /// `videos.status`.
    pub video_status: String,
    /// `users.id` of the creator.
    pub user: i64,
    /// SHA-256 of the upload token.
    pub token_hash: Vec<u8>,
    /// Declared size.
    pub length: u64,
    /// Bytes stored so far.
    pub offset: u64,
    /// Size of every multipart part but the last.
    pub part_size: u64,
    /// tus metadata.
    pub metadata: BTreeMap<String, String>,
    /// Where the original goes.
    pub storage_key: String,
    /// The object store's multipart upload (absent for an empty file).
    pub multipart_upload_id: Option<String>,
    /// Parts uploaded and committed, in order.
    pub parts: Vec<CompletedPart>,
    /// `active`, `completed`, `terminated` or `expired`.
    pub status: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

const SESSION_SELECT: &str = "SELECT s.id, s.video_id AS video, v.video_id AS public_video_id,
        v.status AS video_status, s.user_id, s.token_hash, s.upload_length, s.upload_offset,
        s.part_size, s.metadata, s.storage_key, s.multipart_upload_id, s.parts, s.status,
        s.expires_at
 FROM upload_sessions s JOIN videos v ON v.id = s.video_id WHERE s.id = $1";

fn session_from_row(r: &PgRow) -> Result<Session, sqlx::Error> {
    let metadata: serde_json::Value = r.try_get("metadata")?;
    let parts: serde_json::Value = r.try_get("parts")?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    Ok(Session {
        id: r.try_get("id")?,
        video: r.try_get("video")?,
        video_id: r.try_get("public_video_id")?,
        video_status: r
            .try_get::<Option<String>, _>("video_status")?
            .unwrap_or_default(),
        user: r.try_get("user_id")?,
        token_hash: r.try_get("token_hash")?,
        length: r.try_get::<i64, _>("upload_length")?.max(0) as u64,
        offset: r.try_get::<i64, _>("upload_offset")?.max(0) as u64,
        part_size: r.try_get::<i64, _>("part_size")?.max(1) as u64,
        metadata: serde_json::from_value(metadata).map_err(decode)?,
        storage_key: r.try_get("storage_key")?,
        multipart_upload_id: r.try_get("multipart_upload_id")?,
        parts: serde_json::from_value(parts).map_err(decode)?,
        status: r.try_get("status")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// Reads a session without locking it (HEAD).
pub async fn load(state: &UploadState, id: Uuid) -> Result<Option<Session>, ApiError> {
    let row = sqlx::query(SESSION_SELECT)
        .bind(id)
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| db_error(&e))?;
    row.map(|r| session_from_row(&r).map_err(|e| db_error(&e)))
        .transpose()
}

/// Locks a session for the rest of `tx` (`FOR UPDATE NOWAIT`): 423 when
/// another request holds it, so two PATCHes never write one upload at
/// once.
pub async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    id: Uuid,
) -> Result<Option<Session>, ApiError> {
    let sql = format!("{SESSION_SELECT} FOR UPDATE OF s NOWAIT");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03") => ApiError::new(
                axum::http::StatusCode::LOCKED,
                "upload_locked",
                "another request is writing this upload; retry after it ends",
            ),
            _ => db_error(&e),
        })?;
    row.map(|r| session_from_row(&r).map_err(|e| db_error(&e)))
        .transpose()
}

/// The shared text rules (`core::text`): no controls, no bidi overrides;
/// only descriptions may hold line breaks.
fn check_text(name: &str, value: &str, max: usize, allow_empty: bool) -> Result<(), ApiError> {
    let lines = if name == "description" {
        Lines::Multi
    } else {
        Lines::Single
    };
    vodfarm_core::text::check(name, value, max, allow_empty, lines)
}

/// Checks a new upload's fields (422 on a bad one, 413 when too large).
pub fn validate(req: &mut NewUpload, max_size: u64) -> Result<(), ApiError> {
    if req.size_bytes > max_size {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!(
                "{} bytes is more than this server accepts ({max_size})",
                req.size_bytes
            ),
        ));
    }
    // A path is not a filename: keep its last component.
    let name = req
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_owned();
    req.filename = name;
    check_text("title", &req.title, 500, false)?;
    check_text("filename", &req.filename, 255, true)?;
    if let Some(d) = &req.description {
        check_text("description", d, 5000, true)?;
    }
    if let Some(c) = &req.category {
        check_text("category", c, 100, true)?;
    }
    if req.tags.len() > 50 {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "at most 50 tags",
        ));
    }
    for (i, t) in req.tags.iter().enumerate() {
        check_text(&format!("tags[{i}]"), t, 100, false)?;
    }
    if !PRIVACY_LEVELS.contains(&req.privacy.as_str()) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "privacy must be public, unlisted or private",
        ));
    }
    if req
        .packaging
        .as_deref()
        .is_some_and(|p| Packaging::parse(p).is_none())
    {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "packaging must be ts or cmaf",
        ));
    }
    req.mp4_renditions = layout::check_download_renditions(&req.mp4_renditions)
        .map_err(|m| ApiError::invalid_field("mp4_renditions", m))?;
    Ok(())
}

/// The channel an upload goes to: 404 unknown, 403 not the caller's.
async fn resolve_channel(
    conn: &mut PgConnection,
    user: &AuthUser,
    channel: Option<&str>,
) -> Result<i64, ApiError> {
    match channel {
        Some(public) => {
            if !vodfarm_core::ids::is_valid_public_id(public) {
                return Err(ApiError::not_found("no such channel"));
            }
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT id, user_id FROM channels WHERE channel_id = $1")
                    .bind(public)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| db_error(&e))?;
            match row {
                None => Err(ApiError::not_found("no such channel")),
                Some((_, owner)) if owner != user.id => Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "forbidden",
                    "only the channel's owner may upload to it",
                )),
                Some((id, _)) => Ok(id),
            }
        }
        None => sqlx::query_scalar(
            "SELECT id FROM channels WHERE user_id = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(user.id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error(&e))?
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "no_channel",
                "create a channel first (POST /v1/channels) or name one",
            )
        }),
    }
}

/// Creates the video (`uploading`), its upload session and the object
/// store's multipart upload: the seed's "initiate upload".
pub async fn create(
    state: &UploadState,
    user: &AuthUser,
    mut req: NewUpload,
) -> Result<CreatedUpload, ApiError> {
    validate(&mut req, state.settings.max_size)?;
    let mut tx = state.pool.begin().await.map_err(|e| db_error(&e))?;
    let channel = resolve_channel(&mut tx, user, req.channel_id.as_deref()).await?;
    let video_id = new_public_id(IdKind::Video);
    let ext = layout::original_extension(&req.filename);
    let key = layout::original(&video_id, &ext).map_err(|e| ApiError::internal(&e))?;
    let multipart = if req.size_bytes > 0 {
        Some(
            state
                .store
                .create_multipart(key.as_str())
                .await
                .map_err(|e| store_unavailable(&e))?,
        )
    } else {
        None
    };
    let session = Uuid::new_v4();
    let token = new_secret_token();
    let expires = Utc::now()
        + chrono::Duration::from_std(state.settings.ttl).unwrap_or(chrono::Duration::days(1));
    let result: Result<(), sqlx::Error> = async {
        let video: i64 = sqlx::query_scalar(
            "INSERT INTO videos (video_id, channel_id, title, description, tags, category,
                                 privacy, original_filename, packaging, status, mp4_renditions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploading', $10) RETURNING id",
        )
        .bind(&video_id)
        .bind(channel)
        .bind(req.title.trim())
        .bind(&req.description)
        .bind(&req.tags)
        .bind(&req.category)
        .bind(&req.privacy)
        .bind(&req.filename)
        .bind(
            req.packaging
                .as_deref()
                .and_then(Packaging::parse)
                .unwrap_or(state.settings.default_packaging)
                .as_str(),
        )
        .bind(&req.mp4_renditions)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO upload_sessions (id, video_id, user_id, token_hash, upload_length,
                 part_size, metadata, storage_key, multipart_upload_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(session)
        .bind(video)
        .bind(user.id)
        .bind(&token_digest(&token)[..])
        .bind(req.size_bytes as i64)
        .bind(part_size_for(req.size_bytes) as i64)
        .bind(serde_json::to_value(&req.metadata).unwrap_or_default())
        .bind(key.as_str())
        .bind(&multipart)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    .await;
    let result = match result {
        Ok(()) => tx.commit().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        if let Some(id) = &multipart {
            let _ = state.store.abort_multipart(key.as_str(), id).await;
        }
        return Err(db_error(&e));
    }
    state.metrics.uploads_created.inc();
    tracing::info!(video_id = %video_id, upload_id = %session, size = req.size_bytes, "upload created");
    Ok(CreatedUpload {
        video_id,
        upload_id: session,
        upload_token: token,
        upload_expires_at: expires,
    })
}

/// 503 for an object store that failed (the cause is logged).
pub fn store_unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "object store failed");
    ApiError::unavailable("object store unavailable, retry shortly")
}

/// Records progress of a PATCH that did not finish the upload: the new
/// offset and parts, and a fresh expiry (uploads expire when idle).
pub async fn save_progress(
    tx: &mut Transaction<'static, Postgres>,
    state: &UploadState,
    session: &Session,
    offset: u64,
    parts: &[CompletedPart],
) -> Result<DateTime<Utc>, ApiError> {
    let expires = Utc::now()
        + chrono::Duration::from_std(state.settings.ttl).unwrap_or(chrono::Duration::days(1));
    sqlx::query(
        "UPDATE upload_sessions SET upload_offset = $2, parts = $3, expires_at = $4,
                updated_at = now() WHERE id = $1",
    )
    .bind(session.id)
    .bind(offset as i64)
    .bind(serde_json::to_value(parts).unwrap_or_default())
    .bind(expires)
    .execute(&mut **tx)
    .await
    .map_err(|e| db_error(&e))?;
    Ok(expires)
}

/// The completing transaction's writes: the session `completed`, the
/// video `processing` with its size, and its jobs. Returns whether the
/// video was still `uploading` (a video deleted meanwhile gets no jobs).
pub async fn complete(
    tx: &mut Transaction<'static, Postgres>,
    state: &UploadState,
    session: &Session,
    parts: &[CompletedPart],
) -> Result<bool, ApiError> {
    let r: Result<(bool, (String, Vec<String>)), sqlx::Error> = async {
        sqlx::query(
            "UPDATE upload_sessions SET status = 'completed', upload_offset = upload_length,
                    parts = $2, updated_at = now() WHERE id = $1",
        )
        .bind(session.id)
        .bind(serde_json::to_value(parts).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
        let updated: Option<(String, Vec<String>)> = sqlx::query_as(
            "UPDATE videos SET status = 'processing', original_size_bytes = $2,
                    processing_progress = 0, uploaded_at = now(), updated_at = now()
             WHERE id = $1 AND status = 'uploading' RETURNING packaging, mp4_renditions",
        )
        .bind(session.video)
        .bind(session.length as i64)
        .fetch_optional(&mut **tx)
        .await?;
        Ok((updated.is_some(), updated.unwrap_or_default()))
    }
    .await;
    let (processing, (packaging, mp4_renditions)) = r.map_err(|e| db_error(&e))?;
    let packaging = Packaging::parse(&packaging).unwrap_or_default();
    if processing {
        let key = layout::original(
            &session.video_id,
            &layout::original_extension(&session.storage_key),
        )
        .map_err(|e| ApiError::internal(&e))?;
        let jobs = upload_jobs_chunked(
            &session.video_id,
            &key,
            &state.settings.ladder,
            DEFAULT_SEGMENT_SECONDS,
            packaging,
            0,
            state.settings.chunking,
        )
        .and_then(|jobs| with_downloads(&session.video_id, jobs, &mp4_renditions))
        .map_err(|e| ApiError::internal(&e))?;
        JobQueue::enqueue(tx, session.video, &jobs)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    Ok(processing)
}
