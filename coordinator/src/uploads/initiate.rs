//! `POST /v1/videos`: a signed-in user describes the video and gets a
//! tus upload URL and an upload token for it.

use super::session::{self, NewUpload};
use super::tus::put;
use super::{upload_url, UploadState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use vodfarm_core::auth::require_user;
use vodfarm_core::http::{ApiError, ApiJson};

/// `POST /v1/videos`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiateRequest {
    /// Public channel id (the caller's oldest channel when absent).
    #[serde(default)]
    pub channel_id: Option<String>,
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// `public` (default), `unlisted` or `private`.
    #[serde(default)]
    pub privacy: Option<String>,
    /// The file's name.
    #[serde(default)]
    pub filename: Option<String>,
    /// `ts` or `cmaf` (default: the api's `--default-packaging`).
    #[serde(default)]
    pub packaging: Option<String>,
    /// Exact size of the file in bytes.
    pub size_bytes: u64,
    /// Rungs (e.g. `720p`) also made as progressive MP4 downloads.
    #[serde(default)]
    pub mp4_renditions: Option<Vec<String>>,
}

/// `POST /v1/videos`'s answer.
#[derive(Debug, serde::Serialize)]
pub struct InitiateResponse {
    /// The new video's public id.
    pub video_id: String,
    /// The tus upload's id (the last segment of `upload_url`).
    pub upload_id: uuid::Uuid,
    /// Where to send the bytes with tus.
    pub upload_url: String,
    /// The token for that URL only (`Authorization: Bearer`).
    pub upload_token: String,
    /// When the upload expires unless bytes keep arriving.
    pub upload_expires_at: chrono::DateTime<Utc>,
}

pub(super) async fn initiate(
    State(state): State<UploadState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<InitiateRequest>,
) -> Result<Response, ApiError> {
    let user = require_user(&state.pool, &headers).await?;
    let filename = req.filename.unwrap_or_default();
    let created = session::create(
        &state,
        &user,
        NewUpload {
            channel_id: req.channel_id,
            title: req.title,
            description: req.description,
            tags: req.tags,
            category: req.category,
            privacy: req.privacy.unwrap_or_else(|| "public".into()),
            packaging: req.packaging,
            metadata: [("filename".to_owned(), filename.clone())].into(),
            filename,
            size_bytes: req.size_bytes,
            mp4_renditions: req.mp4_renditions.unwrap_or_default(),
        },
    )
    .await?;
    let url = upload_url(&state, &headers, created.upload_id);
    let mut resp = (
        StatusCode::CREATED,
        ApiJson(InitiateResponse {
            video_id: created.video_id,
            upload_id: created.upload_id,
            upload_url: url.clone(),
            upload_token: created.upload_token,
            upload_expires_at: created.upload_expires_at,
        }),
    )
        .into_response();
    put(resp.headers_mut(), &header::LOCATION, url);
    Ok(resp)
}
