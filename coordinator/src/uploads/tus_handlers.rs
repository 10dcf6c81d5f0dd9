//! The tus 1.0 routes at `/v1/uploads` and `/v1/uploads/{id}`:
//! creation (with upload), OPTIONS, HEAD, PATCH (and its method
//! override) and termination. A PATCH locks the session row, receives
//! the body, then commits the new offset or completes the upload.

use super::expire::discard;
use super::session::{self, NewUpload, Session};
use super::tus::*;
use super::{upload_url, writer, UploadState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;
use vodfarm_core::auth::{db_error, require_user, user_for_token};
use vodfarm_core::http::{bearer_token, ApiError};
use vodfarm_core::ids::{constant_time_eq, token_digest};
use vodfarm_core::layout;
use vodfarm_core::throttle::{Endpoint, Peer};

pub(super) async fn options(State(state): State<UploadState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    put(h, &TUS_VERSION_H, TUS_VERSION);
    put(h, &TUS_EXTENSION, TUS_EXTENSIONS);
    put(h, &TUS_MAX_SIZE, state.settings.max_size);
    put(h, &TUS_CHECKSUM_ALGORITHM, TUS_CHECKSUM_ALGORITHMS);
    resp
}

/// `OPTIONS /v1/uploads/{id}`: the capabilities, at the URL of an upload
/// that exists; 404 (or 410) where HEAD would answer it, since a
/// terminated upload is gone. Browsers' CORS preflights never get here.
pub(super) async fn options_upload(
    state: State<UploadState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_upload_id(&raw)?;
    let s = session::load(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such upload"))?;
    check_open(&s)?;
    Ok(options(state).await)
}

fn parse_upload_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::not_found("no such upload"))
}

/// The bearer token every tus request but OPTIONS carries: 401 at once,
/// before any other check, when there is none. Whose token it is gets
/// checked against the upload later ([`authorize`]).
fn require_bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    bearer_token(headers.get(header::AUTHORIZATION)).ok_or_else(|| {
        ApiError::unauthorized(
            "missing Authorization: Bearer token (the upload token or your user token)",
        )
    })
}

/// Checks the bearer token against the session: its upload token, or a
/// user token of the upload's creator. Throttled per client address
/// (`core::throttle`): a client that spent its budget of wrong tokens
/// gets 429 before its token is looked at.
async fn authorize(
    state: &UploadState,
    headers: &HeaderMap,
    peer: Peer,
    s: &Session,
) -> Result<(), ApiError> {
    let token = require_bearer(headers)?;
    let address = state
        .throttle
        .address(&state.throttle.client(headers, peer));
    state.throttle.check(Endpoint::Upload, &[&address]).await?;
    if constant_time_eq(&token_digest(token), &s.token_hash) {
        return Ok(());
    }
    match user_for_token(&state.pool, token)
        .await
        .map_err(|e| db_error(&e))?
    {
        Some(u) if u.id == s.user => Ok(()),
        _ => {
            state.throttle.failed(Endpoint::Upload, &[&address]).await?;
            Err(ApiError::unauthorized("invalid token for this upload"))
        }
    }
}

/// Refuses sessions that can take no more bytes (terminated, expired,
/// video deleted).
fn check_open(s: &Session) -> Result<(), ApiError> {
    if s.status == "terminated" || s.video_status == "deleted" {
        return Err(ApiError::not_found("this upload was terminated"));
    }
    if s.status == "expired" || (s.status == "active" && s.expires_at < Utc::now()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            "upload_expired",
            "this upload expired; start a new one",
        ));
    }
    Ok(())
}

fn session_headers(h: &mut HeaderMap, s: &Session, offset: u64) {
    put(h, &UPLOAD_OFFSET, offset);
    put(h, &UPLOAD_LENGTH, s.length);
    if s.status == "active" {
        put(h, &UPLOAD_EXPIRES, http_date(s.expires_at));
    }
    put(h, &VIDEO_ID, &s.video_id);
}

pub(super) async fn head(
    State(state): State<UploadState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_bearer(&headers)?;
    check_resumable(&headers)?;
    let id = parse_upload_id(&raw)?;
    let s = session::load(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such upload"))?;
    authorize(&state, &headers, peer, &s).await?;
    check_open(&s)?;
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    session_headers(h, &s, s.offset);
    if !s.metadata.is_empty() {
        put(h, &UPLOAD_METADATA, format_metadata(&s.metadata));
    }
    put(h, &header::CACHE_CONTROL, "no-store");
    Ok(resp)
}

/// tus-js-client's `overridePatchMethod`: POST with
/// `X-HTTP-Method-Override: PATCH|DELETE` (400 without either).
pub(super) async fn method_override(
    state: State<UploadState>,
    path: Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_bearer(&headers)?;
    check_resumable(&headers)?;
    // Whichever method it stands for, a header sent is a valid one.
    u64_header(&headers, &UPLOAD_OFFSET)?;
    Checksum::from_headers(&headers)?;
    let method = headers
        .get(&METHOD_OVERRIDE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_uppercase);
    match method.as_deref() {
        Some("PATCH") => patch(state, path, peer, headers, body).await,
        Some("DELETE") => terminate(state, path, peer, headers).await,
        _ => Err(ApiError::bad_request(
            "POST here needs X-HTTP-Method-Override: PATCH or DELETE \
             (or use PATCH, HEAD, DELETE or OPTIONS)",
        )),
    }
}

pub(super) async fn patch(
    State(state): State<UploadState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_bearer(&headers)?;
    check_resumable(&headers)?;
    if !is_offset_stream(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "PATCH bodies are Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = u64_header(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("Upload-Offset is required"))?;
    let checksum = Checksum::from_headers(&headers)?;
    let id = parse_upload_id(&raw)?;
    write(
        &state,
        id,
        &headers,
        offset,
        body,
        checksum.as_ref(),
        Some(peer),
    )
    .await
}

/// What a locked write amounts to, before its transaction ends.
enum Written {
    /// Nothing changed (an empty PATCH at the end).
    Nothing(Response),
    /// Progress to commit.
    Progress(Response),
    /// The upload completed: commit, then clean up.
    Completed {
        response: Response,
        session: Box<Session>,
        processing: bool,
    },
}

/// The PATCH path, shared by creation-with-upload: lock, check, receive,
/// then commit progress or complete. Any error rolls back at once, so the
/// row lock is free for the client's retry. `auth`: check the token
/// (from this peer) against the session; creation already knows whose
/// upload it is.
async fn write(
    state: &UploadState,
    id: Uuid,
    headers: &HeaderMap,
    offset: u64,
    body: Body,
    checksum: Option<&Checksum>,
    auth: Option<Peer>,
) -> Result<Response, ApiError> {
    let mut tx = state.pool.begin().await.map_err(|e| db_error(&e))?;
    let written = write_locked(state, &mut tx, id, headers, offset, body, checksum, auth).await;
    match written {
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
        Ok(Written::Nothing(resp)) => {
            let _ = tx.rollback().await;
            Ok(resp)
        }
        Ok(Written::Progress(resp)) => {
            tx.commit().await.map_err(|e| db_error(&e))?;
            Ok(resp)
        }
        Ok(Written::Completed {
            response,
            session: s,
            processing,
        }) => {
            tx.commit().await.map_err(|e| db_error(&e))?;
            state.metrics.uploads_completed.inc();
            tracing::info!(video_id = %s.video_id, upload_id = %s.id, bytes = s.length, processing, "upload completed; processing started");
            let (store, prefix, key) = (
                state.store.clone(),
                layout::upload_prefix(&s.id),
                s.storage_key.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = store.delete_prefix(prefix.as_str()).await {
                    tracing::warn!(error = %e, "could not delete upload tails");
                }
                if !processing {
                    // The video was deleted while its last bytes arrived.
                    let _ = store.delete(&key).await;
                }
            });
            Ok(response)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_locked(
    state: &UploadState,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    id: Uuid,
    headers: &HeaderMap,
    offset: u64,
    body: Body,
    checksum: Option<&Checksum>,
    auth: Option<Peer>,
) -> Result<Written, ApiError> {
    let s = session::lock(tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such upload"))?;
    if let Some(peer) = auth {
        authorize(state, headers, peer, &s).await?;
    }
    check_open(&s)?;
    if offset != s.offset {
        return Err(ApiError::conflict(
            "offset_mismatch",
            format!(
                "Upload-Offset is {offset} but the upload is at {}; HEAD it and resume",
                s.offset
            ),
        ));
    }
    let declared = u64_header(headers, &header::CONTENT_LENGTH).unwrap_or(None);
    if declared.is_some_and(|n| offset + n > s.length) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds_upload_length",
            "the body goes past the upload's declared Upload-Length",
        ));
    }
    if s.status == "completed" {
        // Only an empty PATCH at the end can get here: nothing to do.
        let mut resp = StatusCode::NO_CONTENT.into_response();
        session_headers(resp.headers_mut(), &s, s.offset);
        return Ok(Written::Nothing(resp));
    }
    let span = tracing::info_span!("upload", video_id = %s.video_id, upload_id = %s.id);
    let mut received = writer::receive(state, &s, body, checksum)
        .instrument(span)
        .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if received.offset == s.length {
        writer::assemble(state, &s, &mut received).await?;
        let processing = session::complete(tx, state, &s, &received.parts).await?;
        let h = resp.headers_mut();
        put(h, &UPLOAD_OFFSET, s.length);
        put(h, &UPLOAD_LENGTH, s.length);
        put(h, &VIDEO_ID, &s.video_id);
        put(
            h,
            &VIDEO_STATUS,
            if processing { "processing" } else { "deleted" },
        );
        Ok(Written::Completed {
            response: resp,
            session: Box::new(s),
            processing,
        })
    } else {
        writer::save_tail(state, &s, &received).await?;
        let expires =
            session::save_progress(tx, state, &s, received.offset, &received.parts).await?;
        let h = resp.headers_mut();
        put(h, &UPLOAD_OFFSET, received.offset);
        put(h, &UPLOAD_EXPIRES, http_date(expires));
        tracing::debug!(video_id = %s.video_id, upload_id = %s.id, offset = received.offset, "upload progress");
        Ok(Written::Progress(resp))
    }
}

pub(super) async fn terminate(
    State(state): State<UploadState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_bearer(&headers)?;
    check_resumable(&headers)?;
    let id = parse_upload_id(&raw)?;
    let mut tx = state.pool.begin().await.map_err(|e| db_error(&e))?;
    let s = match session::lock(&mut tx, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(ApiError::not_found("no such upload")),
        Err(e) => return Err(e),
    };
    let refused = match authorize(&state, &headers, peer, &s).await {
        Err(e) => Some(e),
        Ok(()) if s.status == "terminated" => {
            Some(ApiError::not_found("this upload was terminated"))
        }
        Ok(()) if s.status == "completed" => Some(ApiError::conflict(
            "upload_completed",
            "this upload is complete; DELETE /v1/videos/{id} removes the video",
        )),
        Ok(()) => None,
    };
    if let Some(e) = refused {
        let _ = tx.rollback().await;
        return Err(e);
    }
    let r: Result<(), sqlx::Error> = async {
        sqlx::query(
            "UPDATE upload_sessions SET status = 'terminated', updated_at = now() WHERE id = $1",
        )
        .bind(s.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE videos SET status = 'deleted', deleted_at = now(), updated_at = now()
             WHERE id = $1 AND status = 'uploading'",
        )
        .bind(s.video)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    .await;
    r.map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    discard(&state, &s).await;
    tracing::info!(video_id = %s.video_id, upload_id = %s.id, "upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// tus creation (`POST /v1/uploads`) and creation-with-upload.
pub(super) async fn create_tus(
    State(state): State<UploadState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_bearer(&headers)?;
    check_resumable(&headers)?;
    if headers.contains_key(&UPLOAD_DEFER_LENGTH) || headers.contains_key(&UPLOAD_CONCAT) {
        return Err(ApiError::bad_request(
            "Upload-Defer-Length and Upload-Concat are not supported: send Upload-Length",
        ));
    }
    let length = u64_header(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("Upload-Length is required"))?;
    let metadata = match headers.get(&UPLOAD_METADATA) {
        Some(v) => parse_metadata(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Upload-Metadata must be ASCII"))?,
        )?,
        None => Default::default(),
    };
    let checksum = Checksum::from_headers(&headers)?;
    let with_body = is_offset_stream(&headers);
    let user = require_user(&state.pool, &headers).await?;
    let filename = metadata
        .get("filename")
        .or_else(|| metadata.get("name"))
        .cloned()
        .unwrap_or_default();
    let title = metadata
        .get("title")
        .cloned()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| {
            let stem = filename
                .rsplit_once('.')
                .map_or(filename.as_str(), |(s, _)| s);
            if stem.trim().is_empty() {
                "Untitled".to_owned()
            } else {
                stem.to_owned()
            }
        });
    let created = session::create(
        &state,
        &user,
        NewUpload {
            channel_id: metadata.get("channel_id").cloned(),
            title,
            description: metadata.get("description").cloned(),
            tags: Vec::new(),
            category: metadata.get("category").cloned(),
            privacy: metadata
                .get("privacy")
                .cloned()
                .unwrap_or_else(|| "public".into()),
            packaging: metadata.get("packaging").cloned(),
            filename,
            size_bytes: length,
            // `mp4_renditions` metadata: comma-separated rungs.
            mp4_renditions: metadata
                .get("mp4_renditions")
                .map(|v| {
                    v.split(',')
                        .map(|r| r.trim().to_owned())
                        .filter(|r| !r.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            metadata,
        },
    )
    .await?;
    let url = upload_url(&state, &headers, created.upload_id);
    let mut resp = if with_body {
        // creation-with-upload: the body is the first chunk. The upload
        // exists whatever happens to it; the client learns the offset.
        match write(
            &state,
            created.upload_id,
            &headers,
            0,
            body,
            checksum.as_ref(),
            None,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(upload_id = %created.upload_id, error = %e.message, "creation-with-upload body not stored");
                let mut r = StatusCode::NO_CONTENT.into_response();
                put(r.headers_mut(), &UPLOAD_OFFSET, 0);
                r
            }
        }
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    put(h, &header::LOCATION, url);
    put(h, &VIDEO_ID, &created.video_id);
    if !h.contains_key(&UPLOAD_EXPIRES) {
        put(h, &UPLOAD_EXPIRES, http_date(created.upload_expires_at));
    }
    put(
        h,
        &axum::http::HeaderName::from_static("vodfarm-upload-token"),
        &created.upload_token,
    );
    Ok(resp)
}
