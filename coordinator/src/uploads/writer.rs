//! Streams a PATCH body into the object store.
//!
//! Bytes are cut into parts of exactly the session's part size and
//! uploaded as multipart parts while the body is still arriving (up to
//! `parallel_parts` at once, so memory stays bounded by that many parts).
//! Bytes that do not fill a part are written as the tail object of that
//! part, `uploads/{session}/tail_{part}`, and read back by the next
//! PATCH: nothing lives only in the api's memory between requests.
//!
//! Nothing here commits: the caller records the new offset only once the
//! whole body arrived and its checksum matched. Parts a failed request
//! uploaded are simply uploaded again (same part numbers) by the retry;
//! tail objects are only ever rewritten with a longer prefix-preserving
//! copy or written under the next part's number, so the bytes the
//! database points to are never destroyed.

use super::session::{store_unavailable, Session};
use super::tus::{checksum_mismatch, Checksum};
use super::UploadState;
use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinSet;
use vodfarm_core::http::ApiError;
use vodfarm_core::layout;
use vodfarm_core::store::{ByteRange, CompletedPart, StoreError};

/// What a fully received, verified body amounts to.
#[derive(Debug)]
pub struct Received {
    /// The upload's offset after the body.
    pub offset: u64,
    /// Every part uploaded so far (committed ones and this body's).
    pub parts: Vec<CompletedPart>,
    /// Bytes after the last whole part (not yet stored anywhere).
    pub tail: Bytes,
    /// The part number `tail` belongs to.
    pub tail_part: i32,
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "exceeds_upload_length",
        "the body goes past the upload's declared Upload-Length",
    )
}

/// Reads back the committed tail of the current part: exactly the
/// `offset - boundary` bytes the database says are there.
async fn load_tail(
    state: &UploadState,
    s: &Session,
    part: i32,
    len: u64,
) -> Result<BytesMut, ApiError> {
    let mut buf = BytesMut::with_capacity(s.part_size as usize);
    if len == 0 {
        return Ok(buf);
    }
    let key = layout::upload_tail(&s.id, part);
    let got = state
        .store
        .get(key.as_str(), Some(ByteRange::Bounded(0, len - 1)))
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) | StoreError::RangeNotSatisfiable { .. } => {
                ApiError::internal(&format!("upload {}: tail {key} is missing", s.id))
            }
            e => store_unavailable(&e),
        })?;
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| store_unavailable(&e))?);
    }
    if buf.len() as u64 != len {
        return Err(ApiError::internal(&format!(
            "upload {}: tail {key} has {} bytes, expected {len}",
            s.id,
            buf.len()
        )));
    }
    Ok(buf)
}

/// Receives `body` at the session's offset: uploads every part it
/// completes, verifies `checksum`, and returns the new state without
/// committing anything.
pub async fn receive(
    state: &UploadState,
    s: &Session,
    body: Body,
    checksum: Option<&Checksum>,
) -> Result<Received, ApiError> {
    let part_size = s.part_size;
    let boundary = s.offset - s.offset % part_size;
    let mut part = (s.offset / part_size) as i32 + 1;
    let mut buf = load_tail(state, s, part, s.offset - boundary).await?;
    let mut offset = s.offset;
    let mut hasher = checksum.map(Checksum::hasher);
    let mut parts = s.parts.clone();
    let mut inflight: JoinSet<Result<CompletedPart, StoreError>> = JoinSet::new();
    let upload_id = s.multipart_upload_id.clone().unwrap_or_default();
    let mut stream = body.into_data_stream();
    let idle = state.settings.idle_timeout;
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "no bytes arrived for too long",
                )
            })?;
        let Some(chunk) = next else { break };
        let mut data =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if offset + data.len() as u64 > s.length {
            return Err(too_large());
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&data);
        }
        offset += data.len() as u64;
        state.metrics.bytes_received.inc_by(data.len() as u64);
        while !data.is_empty() {
            let room = part_size as usize - buf.len();
            let take = room.min(data.len());
            buf.extend_from_slice(&data.split_to(take));
            if buf.len() as u64 == part_size {
                let bytes = buf.split().freeze();
                buf.reserve(part_size as usize);
                let (store, key, id, n) = (
                    state.store.clone(),
                    s.storage_key.clone(),
                    upload_id.clone(),
                    part,
                );
                inflight.spawn(async move { store.upload_part(&key, &id, n, bytes).await });
                part += 1;
                while inflight.len() >= state.settings.parallel_parts.max(1) {
                    if let Some(done) = inflight.join_next().await {
                        parts.push(joined(done)?);
                    }
                }
            }
        }
    }
    while let Some(done) = inflight.join_next().await {
        parts.push(joined(done)?);
    }
    parts.sort_by_key(|p| p.part_number);
    if let (Some(c), Some(h)) = (checksum, hasher) {
        if h.finish() != c.expected {
            return Err(checksum_mismatch());
        }
    }
    state
        .metrics
        .parts_uploaded
        .inc_by((parts.len() - s.parts.len()) as u64);
    Ok(Received {
        offset,
        parts,
        tail: buf.freeze(),
        tail_part: part,
    })
}

fn joined(
    r: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
) -> Result<CompletedPart, ApiError> {
    match r {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(store_unavailable(&e)),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// Writes the tail of an unfinished upload under its part number.
pub async fn save_tail(state: &UploadState, s: &Session, r: &Received) -> Result<(), ApiError> {
    if r.tail.is_empty() || r.offset == s.offset {
        return Ok(());
    }
    let key = layout::upload_tail(&s.id, r.tail_part);
    state
        .store
        .put(key.as_str(), r.tail.clone())
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(())
}

/// Uploads the last part and assembles the original. Idempotent: when a
/// previous attempt already assembled it (and then failed to commit),
/// the original of the right size is accepted as is.
pub async fn assemble(state: &UploadState, s: &Session, r: &mut Received) -> Result<(), ApiError> {
    let key = s.storage_key.as_str();
    let Some(upload_id) = s.multipart_upload_id.as_deref() else {
        // An empty file: nothing was ever uploaded.
        state
            .store
            .put(key, Bytes::new())
            .await
            .map_err(|e| store_unavailable(&e))?;
        return Ok(());
    };
    let attempt: Result<(), StoreError> = async {
        if !r.tail.is_empty() {
            let p = state
                .store
                .upload_part(key, upload_id, r.tail_part, r.tail.clone())
                .await?;
            r.parts.push(p);
        }
        state
            .store
            .complete_multipart(key, upload_id, &r.parts)
            .await?;
        Ok(())
    }
    .await;
    match attempt {
        Ok(()) => Ok(()),
        Err(e @ (StoreError::NotFound(_) | StoreError::InvalidPart(_))) => {
            match state.store.head(key).await {
                Ok(meta) if meta.size == s.length => Ok(()),
                _ => Err(ApiError::internal(&format!(
                    "upload {}: cannot assemble {key}: {e}",
                    s.id
                ))),
            }
        }
        Err(e) => Err(store_unavailable(&e)),
    }
}
