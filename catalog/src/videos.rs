//! A video's metadata: what `GET /v1/videos/{id}` shows (with playback
//! URLs, signed for private videos), edits, deletion and the background
//! removal of a deleted video's objects.

use crate::state::CatalogState;
use crate::validate::{check_text, unprocessable};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::Row;
use vodfarm_core::auth::{db_error, optional_user, require_user, AuthUser};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::is_valid_public_id;
use vodfarm_core::layout;
use vodfarm_core::signing::sign_playback_token;

/// A rendition of a ready video.
#[derive(Debug, Serialize)]
pub struct EncodingView {
    /// `240p`, `720p`, …
    pub resolution: String,
    /// `h264`.
    pub codec: String,
    /// `ts`.
    pub container: String,
    /// Average bits per second.
    pub bitrate: i32,
    /// Pixels.
    pub width: Option<i32>,
    /// Pixels.
    pub height: Option<i32>,
    /// Seconds per segment.
    pub segment_duration: Option<i32>,
    /// The rendition's playlist on the origin.
    pub playlist_url: Option<String>,
}

/// A thumbnail the origin serves.
#[derive(Debug, Serialize)]
pub struct ThumbnailView {
    /// `default`, `sprite` or `storyboard`.
    pub kind: String,
    /// Second of the source it shows.
    pub timestamp_sec: i32,
    /// Pixels.
    pub width: Option<i32>,
    /// Pixels.
    pub height: Option<i32>,
    /// On the origin.
    pub url: String,
}

/// Where to play a ready video.
#[derive(Debug, Serialize)]
pub struct PlaybackView {
    /// The HLS master playlist.
    pub hls_url: String,
    /// The DASH MPD (CMAF videos only).
    pub dash_url: Option<String>,
    /// The poster image.
    pub thumbnail_url: String,
    /// When the URLs' token expires (private videos only).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A progressive MP4 download of one rung.
#[derive(Debug, Serialize)]
pub struct DownloadView {
    /// `720p`, …
    pub rendition: String,
    /// Bytes.
    pub size_bytes: i64,
    /// The file on the origin (`Content-Disposition` names it after the
    /// title; Range requests work).
    pub url: String,
}

/// An unfinished upload, shown to the owner.
#[derive(Debug, Serialize)]
pub struct UploadView {
    /// Bytes stored.
    pub offset: i64,
    /// Bytes declared.
    pub length: i64,
    /// When it expires unless bytes keep arriving.
    pub expires_at: DateTime<Utc>,
}

/// `GET /v1/videos/{video_id}`.
#[derive(Debug, Serialize)]
pub struct VideoView {
    /// Public id.
    pub video_id: String,
    /// Its channel's public id.
    pub channel_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Category.
    pub category: Option<String>,
    /// `public`, `unlisted`, `private`.
    pub privacy: String,
    /// `ts` or `cmaf`.
    pub packaging: String,
    /// `uploading`, `processing`, `ready`, `failed`.
    pub status: String,
    /// 0..=100.
    pub processing_progress: i32,
    /// Why processing failed.
    pub processing_error: Option<String>,
    /// Seconds (0 until probed).
    pub duration_seconds: i32,
    /// The uploaded file's name.
    pub original_filename: Option<String>,
    /// The uploaded file's size (once uploaded).
    pub original_size_bytes: Option<i64>,
    /// Upload time.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Publication time.
    pub published_at: Option<DateTime<Utc>>,
    /// Views: flushed to PostgreSQL plus those counted live since.
    pub view_count: i64,
    /// Likes.
    pub like_count: i32,
    /// Renditions.
    pub encodings: Vec<EncodingView>,
    /// Thumbnails.
    pub thumbnails: Vec<ThumbnailView>,
    /// Playback URLs once ready.
    pub playback: Option<PlaybackView>,
    /// Rungs asked for as MP4 downloads.
    pub mp4_renditions: Vec<String>,
    /// The MP4 downloads that exist (ready videos).
    pub downloads: Vec<DownloadView>,
    /// The unfinished upload (owner only).
    pub upload: Option<UploadView>,
}

/// A line of a channel's video list.
#[derive(Debug, Serialize)]
pub struct VideoSummary {
    /// Public id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// Status.
    pub status: String,
    /// Privacy.
    pub privacy: String,
    /// Percent of processing done.
    pub processing_progress: i32,
    /// Seconds.
    pub duration_seconds: i32,
    /// Views.
    pub view_count: i64,
    /// Upload time.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Publication time.
    pub published_at: Option<DateTime<Utc>>,
}

pub(crate) struct VideoRow {
    pub(crate) id: i64,
    pub(crate) owner: i64,
    pub(crate) view: VideoView,
}

const VIDEO_SELECT: &str = "SELECT v.id, v.video_id, c.channel_id, c.user_id AS owner, v.title,
        v.description, v.tags, v.category, v.privacy, v.status, v.processing_progress,
        v.processing_error, v.duration_seconds, v.original_filename, v.original_size_bytes,
        v.uploaded_at, v.published_at, v.view_count, v.like_count, v.packaging,
        v.mp4_renditions
 FROM videos v JOIN channels c ON c.id = v.channel_id WHERE v.video_id = $1";

fn video_from_row(r: &PgRow) -> Result<VideoRow, sqlx::Error> {
    Ok(VideoRow {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        view: VideoView {
            video_id: r.try_get("video_id")?,
            channel_id: r.try_get("channel_id")?,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            tags: r
                .try_get::<Option<Vec<String>>, _>("tags")?
                .unwrap_or_default(),
            category: r.try_get("category")?,
            privacy: r
                .try_get::<Option<String>, _>("privacy")?
                .unwrap_or_else(|| "public".into()),
            packaging: r.try_get("packaging")?,
            status: r
                .try_get::<Option<String>, _>("status")?
                .unwrap_or_else(|| "uploading".into()),
            processing_progress: r
                .try_get::<Option<i32>, _>("processing_progress")?
                .unwrap_or(0),
            processing_error: r.try_get("processing_error")?,
            duration_seconds: r.try_get("duration_seconds")?,
            original_filename: r.try_get("original_filename")?,
            original_size_bytes: r.try_get("original_size_bytes")?,
            uploaded_at: r.try_get("uploaded_at")?,
            published_at: r.try_get("published_at")?,
            view_count: r.try_get::<Option<i64>, _>("view_count")?.unwrap_or(0),
            like_count: r.try_get::<Option<i32>, _>("like_count")?.unwrap_or(0),
            encodings: Vec::new(),
            thumbnails: Vec::new(),
            playback: None,
            mp4_renditions: r.try_get("mp4_renditions")?,
            downloads: Vec::new(),
            upload: None,
        },
    })
}

/// Loads a video the viewer may see: 404 for unknown, deleted, and other
/// people's private videos (their existence is not revealed).
pub(crate) async fn visible_video(
    s: &CatalogState,
    video_id: &str,
    viewer: Option<&AuthUser>,
) -> Result<VideoRow, ApiError> {
    let not_found = || ApiError::not_found("no such video");
    if !is_valid_public_id(video_id) {
        return Err(not_found());
    }
    let row = sqlx::query(VIDEO_SELECT)
        .bind(video_id)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error(&e))?
        .ok_or_else(not_found)?;
    let v = video_from_row(&row).map_err(|e| db_error(&e))?;
    let is_owner = viewer.is_some_and(|u| u.id == v.owner);
    if v.view.status == "deleted" || (v.view.privacy == "private" && !is_owner) {
        return Err(not_found());
    }
    Ok(v)
}

pub(crate) fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "only the video's owner may change it",
    )
}

/// The query the origin URLs of a video carry: `?token=…` and its expiry
/// for a private video, nothing otherwise.
pub(crate) fn playback_query(
    s: &CatalogState,
    video_id: &str,
    private: bool,
) -> (String, Option<DateTime<Utc>>) {
    if !private {
        return (String::new(), None);
    }
    let exp = Utc::now()
        + chrono::Duration::from_std(s.settings.playback_token_ttl)
            .unwrap_or(chrono::Duration::hours(6));
    let token = sign_playback_token(&s.settings.signing_secret, video_id, exp.timestamp());
    (format!("?token={token}"), Some(exp))
}

/// Adds encodings, thumbnails, playback URLs and the upload to a view.
async fn complete_view(s: &CatalogState, v: &mut VideoRow, is_owner: bool) -> Result<(), ApiError> {
    let origin = s.settings.public_origin_url.trim_end_matches('/');
    let id = v.view.video_id.clone();
    let (query, expires_at) = playback_query(s, &id, v.view.privacy == "private");
    let ready = v.view.status == "ready";
    let rows = sqlx::query(
        "SELECT resolution, codec, container, bitrate, width, height, segment_duration
         FROM video_encodings WHERE video_id = $1 ORDER BY height NULLS LAST, bitrate",
    )
    .bind(v.id)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    for r in rows {
        let get = || -> Result<EncodingView, sqlx::Error> {
            let resolution: String = r.try_get("resolution")?;
            let playlist_url = (ready && layout::is_valid_rendition(&resolution))
                .then(|| format!("{origin}/v/{id}/{resolution}/playlist.m3u8{query}"));
            Ok(EncodingView {
                codec: r.try_get("codec")?,
                container: r.try_get("container")?,
                bitrate: r.try_get("bitrate")?,
                width: r.try_get("width")?,
                height: r.try_get("height")?,
                segment_duration: r.try_get("segment_duration")?,
                playlist_url,
                resolution,
            })
        };
        v.view.encodings.push(get().map_err(|e| db_error(&e))?);
    }
    let rows = sqlx::query(
        "SELECT kind, timestamp_sec, width, height FROM video_thumbs
         WHERE video_id = $1 AND kind IN ('default', 'sprite', 'storyboard') ORDER BY kind",
    )
    .bind(v.id)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    for r in rows {
        let get = || -> Result<ThumbnailView, sqlx::Error> {
            let kind: String = r.try_get("kind")?;
            let file = match kind.as_str() {
                "default" => "default.jpg",
                "sprite" => "sprite.jpg",
                _ => "storyboard.vtt",
            };
            Ok(ThumbnailView {
                url: format!("{origin}/t/{id}/{file}{query}"),
                timestamp_sec: r.try_get("timestamp_sec")?,
                width: r.try_get("width")?,
                height: r.try_get("height")?,
                kind,
            })
        };
        v.view.thumbnails.push(get().map_err(|e| db_error(&e))?);
    }
    if ready {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.rendition, d.size_bytes FROM video_downloads d
             JOIN videos v ON v.id = d.video_id
             WHERE d.video_id = $1 AND d.rendition = ANY(v.mp4_renditions)
             ORDER BY d.size_bytes",
        )
        .bind(v.id)
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
        v.view.downloads = rows
            .into_iter()
            .filter(|(r, _)| layout::is_valid_rendition(r))
            .map(|(rendition, size_bytes)| DownloadView {
                url: format!("{origin}/v/{id}/{rendition}/video.mp4{query}"),
                rendition,
                size_bytes,
            })
            .collect();
        v.view.playback = Some(PlaybackView {
            hls_url: format!("{origin}/v/{id}/master.m3u8{query}"),
            dash_url: (v.view.packaging == "cmaf")
                .then(|| format!("{origin}/v/{id}/manifest.mpd{query}")),
            thumbnail_url: format!("{origin}/t/{id}/default.jpg{query}"),
            expires_at,
        });
    }
    if is_owner && v.view.status == "uploading" {
        let row: Option<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT upload_offset, upload_length, expires_at FROM upload_sessions
             WHERE video_id = $1 AND status = 'active' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(v.id)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
        v.view.upload = row.map(|(offset, length, expires_at)| UploadView {
            offset,
            length,
            expires_at,
        });
    }
    Ok(())
}

/// `GET /v1/videos/{video_id}`.
pub async fn get_video(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<VideoView>, ApiError> {
    let viewer = optional_user(&s.pool, &headers).await?;
    let mut v = visible_video(&s, &video_id, viewer.as_ref()).await?;
    let is_owner = viewer.is_some_and(|u| u.id == v.owner);
    complete_view(&s, &mut v, is_owner).await?;
    // The flushed count plus what Redis counted since (the seed's AP
    // choice: without Redis the flushed count alone is shown).
    match s
        .analytics
        .counters
        .live_delta(&s.pool, v.id, &v.view.video_id)
        .await
    {
        Ok(delta) => v.view.view_count += delta,
        Err(e) => tracing::warn!(video_id = %video_id, error = %e, "live view count unavailable"),
    }
    Ok(ApiJson(v.view))
}

/// `PATCH /v1/videos/{video_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoPatch {
    /// 1..=500 characters.
    #[serde(default)]
    pub title: Option<String>,
    /// Up to 5,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// At most 50 tags of 1..=100 characters.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Up to 100 characters.
    #[serde(default)]
    pub category: Option<String>,
    /// `public`, `unlisted` or `private`.
    #[serde(default)]
    pub privacy: Option<String>,
    /// `true` publishes (sets `published_at` if unset), `false` unpublishes.
    #[serde(default)]
    pub publish: Option<bool>,
    /// The whole list of rungs wanted as MP4 downloads: new ones are
    /// made (on a processing or ready video), removed ones deleted.
    #[serde(default)]
    pub mp4_renditions: Option<Vec<String>>,
}

/// `PATCH /v1/videos/{video_id}`.
pub async fn patch_video(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
    ApiJson(p): ApiJson<VideoPatch>,
) -> Result<ApiJson<VideoView>, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, Some(&user)).await?;
    if v.owner != user.id {
        return Err(forbidden());
    }
    if let Some(t) = &p.title {
        check_text("title", t, 500, false)?;
    }
    if let Some(d) = &p.description {
        check_text("description", d, 5000, true)?;
    }
    if let Some(c) = &p.category {
        check_text("category", c, 100, true)?;
    }
    if let Some(tags) = &p.tags {
        if tags.len() > 50 {
            return Err(unprocessable("at most 50 tags"));
        }
        for (i, t) in tags.iter().enumerate() {
            check_text(&format!("tags[{i}]"), t, 100, false)?;
        }
    }
    if let Some(pr) = &p.privacy {
        if !["public", "unlisted", "private"].contains(&pr.as_str()) {
            return Err(unprocessable("privacy must be public, unlisted or private"));
        }
    }
    let mp4 = match &p.mp4_renditions {
        Some(list) => Some(
            layout::check_download_renditions(list)
                .map_err(|m| ApiError::invalid_field("mp4_renditions", m))?,
        ),
        None => None,
    };
    sqlx::query(
        "UPDATE videos SET
            title = coalesce($2, title),
            description = coalesce($3, description),
            tags = coalesce($4, tags),
            category = coalesce($5, category),
            privacy = coalesce($6, privacy),
            published_at = CASE WHEN $7 IS NULL THEN published_at
                                WHEN $7 THEN coalesce(published_at, now())
                                ELSE NULL END,
            updated_at = now()
         WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(v.id)
    .bind(p.title.as_deref().map(str::trim))
    .bind(&p.description)
    .bind(&p.tags)
    .bind(&p.category)
    .bind(&p.privacy)
    .bind(p.publish)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    if let Some(list) = mp4 {
        let removed = set_downloads(&s, v.id, &video_id, &list)
            .await
            .map_err(|e| db_error(&e))?;
        for r in removed {
            if let Ok(key) = layout::download_mp4(&video_id, &r) {
                if let Err(e) = s.store.delete(key.as_str()).await {
                    tracing::warn!(video_id = %video_id, error = %e, "removing an MP4 download failed");
                }
            }
        }
    }
    tracing::info!(video_id = %video_id, "video updated");
    let mut v = visible_video(&s, &video_id, Some(&user)).await?;
    complete_view(&s, &mut v, true).await?;
    Ok(ApiJson(v.view))
}

/// Sets the video's MP4 renditions to `list`. A processing or ready
/// video gets an `mp4` job per new rung (after its manifest job if that
/// is still open, so "ready" still means every output exists); removed
/// rungs lose their download row. Returns the removed rungs (their files
/// are deleted by the caller).
async fn set_downloads(
    s: &CatalogState,
    video: i64,
    video_id: &str,
    list: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = s.pool.begin().await?;
    let (status, old): (Option<String>, Vec<String>) =
        sqlx::query_as("SELECT status, mp4_renditions FROM videos WHERE id = $1 FOR UPDATE")
            .bind(video)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("UPDATE videos SET mp4_renditions = $2 WHERE id = $1")
        .bind(video)
        .bind(list)
        .execute(&mut *tx)
        .await?;
    let added: Vec<&String> = list.iter().filter(|r| !old.contains(r)).collect();
    let removed: Vec<String> = old.into_iter().filter(|r| !list.contains(r)).collect();
    let status = status.unwrap_or_default();
    if matches!(status.as_str(), "processing" | "ready") {
        for r in added {
            let (Ok(prefix), Ok(key)) = (
                layout::encoded_prefix(video_id),
                layout::download_mp4(video_id, r),
            ) else {
                continue;
            };
            // The same job the pipeline makes (coordinator::pipeline::mp4_jobs).
            sqlx::query(
                "INSERT INTO processing_jobs
                    (video_id, job_type, input_path, output_path, parameters, max_attempts, depends_on)
                 SELECT $1, 'mp4', $2, $3, jsonb_build_object('rendition', $4::text), 5,
                        coalesce((SELECT array_agg(id) FROM processing_jobs
                                  WHERE video_id = $1 AND job_type = 'manifest'
                                    AND status IN ('pending', 'processing')), '{}')",
            )
            .bind(video)
            .bind(prefix.as_str())
            .bind(key.as_str())
            .bind(r)
            .execute(&mut *tx)
            .await?;
        }
    }
    if !removed.is_empty() {
        sqlx::query("DELETE FROM video_downloads WHERE video_id = $1 AND rendition = ANY($2)")
            .bind(video)
            .bind(&removed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// `DELETE /v1/videos/{video_id}`: `deleted` at once (the origin stops
/// serving it on the row change), pending and running jobs cancelled in
/// the same transaction, objects removed in the background.
pub async fn delete_video(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, Some(&user)).await?;
    if v.owner != user.id {
        return Err(forbidden());
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match delete_tx(&s, v.id).await {
            Ok(()) => break,
            // The queue locks job → video; we must lock the video before
            // the jobs inserted meanwhile, so a deadlock is possible
            // (rarely): PostgreSQL aborts one side; retry ours.
            Err(sqlx::Error::Database(d))
                if attempt < 5 && matches!(d.code().as_deref(), Some("40P01" | "40001")) => {}
            Err(e) => return Err(db_error(&e)),
        }
    }
    tracing::info!(video_id = %video_id, "video deleted; removing its objects");
    let st = s.clone();
    tokio::spawn(async move {
        if let Err(e) = purge(&st, v.id, &v.view.video_id, false).await {
            tracing::warn!(video_id = %v.view.video_id, error = %e, "object removal failed; the sweep will retry");
        }
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_tx(s: &CatalogState, video: i64) -> Result<(), sqlx::Error> {
    const CANCEL: &str = "UPDATE processing_jobs
         SET status = 'cancelled', error_message = 'the video was deleted',
             lease_token = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE video_id = $1 AND status IN ('pending', 'processing')";
    let mut tx = s.pool.begin().await?;
    // Jobs first (the queue's lock order is job → video) …
    sqlx::query(CANCEL).bind(video).execute(&mut *tx).await?;
    sqlx::query("SELECT 1 FROM videos WHERE id = $1 FOR UPDATE")
        .bind(video)
        .execute(&mut *tx)
        .await?;
    // … and again under the video lock: an upload completing meanwhile
    // inserted its jobs while holding the video row.
    sqlx::query(CANCEL).bind(video).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE videos SET status = 'deleted', deleted_at = now(), updated_at = now() WHERE id = $1",
    )
        .bind(video)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Removes a deleted video's objects (originals, encoded files,
/// thumbnails, subtitles), ends its unfinished uploads, and records that
/// the purge finished; `settled`: no worker can still be writing them
/// (the final purge, recorded as such).
pub async fn purge(
    s: &CatalogState,
    video: i64,
    video_id: &str,
    settled: bool,
) -> Result<(), String> {
    let uploads: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
        "UPDATE upload_sessions SET status = 'terminated', updated_at = now()
         WHERE id IN (SELECT id FROM upload_sessions WHERE video_id = $1 AND status = 'active'
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, storage_key, multipart_upload_id",
    )
    .bind(video)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| e.to_string())?;
    for (id, key, multipart) in &uploads {
        if let Some(m) = multipart {
            let _ = s.store.abort_multipart(key, m).await;
        }
        let _ = s
            .store
            .delete_prefix(layout::upload_prefix(id).as_str())
            .await;
    }
    let prefixes = [
        format!("originals/{video_id}/"),
        layout::encoded_prefix(video_id)
            .map_err(|e| e.to_string())?
            .to_string(),
        layout::thumbnails_prefix(video_id)
            .map_err(|e| e.to_string())?
            .to_string(),
        layout::subtitles_prefix(video_id)
            .map_err(|e| e.to_string())?
            .to_string(),
    ];
    for p in &prefixes {
        s.store.delete_prefix(p).await.map_err(|e| e.to_string())?;
    }
    sqlx::query(
        "UPDATE videos SET objects_purged_at = now(),
             objects_settled_at = CASE WHEN $2 THEN now() ELSE objects_settled_at END
         WHERE id = $1",
    )
    .bind(video)
    .bind(settled)
    .execute(&s.pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Sweeps deleted videos whose objects were not (fully) removed, e.g.
/// because the api stopped mid-purge, and removes them once more when
/// `settings.purge_settle` has passed since the deletion (a worker that
/// was running one of the video's jobs may have uploaded objects after
/// the first removal, until its heartbeat told it); returns how many it
/// purged.
pub async fn sweep_deleted(s: &CatalogState) -> Result<usize, String> {
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, video_id, settled FROM (
             SELECT id, video_id,
                    deleted_at < now() - make_interval(secs => $1) AS settled,
                    objects_purged_at IS NULL AND updated_at < now() - interval '1 minute' AS unfinished
             FROM videos
             WHERE status = 'deleted' AND objects_settled_at IS NULL
         ) v
         WHERE settled OR unfinished
         ORDER BY id LIMIT 100",
    )
    .bind(s.settings.purge_settle.as_secs_f64())
    .fetch_all(&s.pool)
    .await
    .map_err(|e| e.to_string())?;
    for (id, video_id, settled) in &rows {
        purge(s, *id, video_id, *settled).await?;
    }
    Ok(rows.len())
}

/// A page of a channel's videos, newest first: everything but deleted
/// videos for the owner, public ready videos for everyone else. Returns
/// whether more follow.
pub async fn list(
    s: &CatalogState,
    channel: i64,
    owner: bool,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<VideoSummary>, bool), ApiError> {
    let rows = sqlx::query(
        "SELECT video_id, title, status, privacy, processing_progress, duration_seconds,
                view_count, uploaded_at, published_at
         FROM videos
         WHERE channel_id = $1 AND ($2::bigint IS NULL OR id < $2)
           AND status <> 'deleted'
           AND ($3 OR (status = 'ready' AND privacy = 'public'))
         ORDER BY id DESC LIMIT $4",
    )
    .bind(channel)
    .bind(before)
    .bind(owner)
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let more = rows.len() as i64 > limit;
    let mut out = Vec::new();
    for r in rows.iter().take(limit as usize) {
        let get = || -> Result<VideoSummary, sqlx::Error> {
            Ok(VideoSummary {
                video_id: r.try_get("video_id")?,
                title: r.try_get("title")?,
                status: r
                    .try_get::<Option<String>, _>("status")?
                    .unwrap_or_default(),
                privacy: r
                    .try_get::<Option<String>, _>("privacy")?
                    .unwrap_or_default(),
                processing_progress: r
                    .try_get::<Option<i32>, _>("processing_progress")?
                    .unwrap_or(0),
                duration_seconds: r.try_get("duration_seconds")?,
                view_count: r.try_get::<Option<i64>, _>("view_count")?.unwrap_or(0),
                uploaded_at: r.try_get("uploaded_at")?,
                published_at: r.try_get("published_at")?,
            })
        };
        out.push(get().map_err(|e| db_error(&e))?);
    }
    Ok((out, more))
}
