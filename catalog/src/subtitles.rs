//! A video's subtitles and captions:
//! `PUT|DELETE /v1/videos/{id}/subtitles/{lang}` (owner only) and
//! `GET /v1/videos/{id}/subtitles`.
//!
//! A PUT takes a WebVTT or SRT file as the body (`?label=` names it in
//! players' menus), checks it cue by cue (`webvtt.rs`), stores the
//! normalised WebVTT at `subtitles/{id}/{lang}.vtt` (served at
//! `/s/{id}/{lang}.vtt`), records the track in `video_subtitles` and
//! rewrites the playlists that list the tracks (`manifests.rs`) before
//! the row commits. The row's trigger then makes every cache tier drop
//! the video's cached answers (origins at once through NOTIFY, CDNs
//! through the purge outbox), so nothing serves a master that misses the
//! new track or lists a removed one for longer than a purge takes.

use crate::manifests;
use crate::state::CatalogState;
use crate::validate::unprocessable;
use crate::videos::{forbidden, playback_query, visible_video};
use crate::webvtt::normalise;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use vodfarm_core::auth::{db_error, optional_user, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::layout;
use vodfarm_core::playlists::SubtitleTrack;

/// Longest language tag (the object layout's limit).
const MAX_LANG: usize = 16;
/// Longest label, characters.
const MAX_LABEL: usize = 100;

/// A subtitle track as the api shows it.
#[derive(Debug, Serialize)]
pub struct SubtitleView {
    /// BCP 47 language tag, canonical case (`pt-BR`).
    pub lang: String,
    /// Shown in players' captions menus.
    pub label: String,
    /// What was uploaded: `vtt` or `srt` (served as WebVTT either way).
    pub source_format: String,
    /// Cues in the file.
    pub cue_count: i32,
    /// Bytes of the stored WebVTT.
    pub size_bytes: i64,
    /// The WebVTT file on the origin (with the playback token for a
    /// private video).
    pub url: String,
    /// First upload.
    pub created_at: DateTime<Utc>,
    /// Last replacement.
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/videos/{id}/subtitles`.
#[derive(Debug, Serialize)]
pub struct SubtitleList {
    /// By language tag.
    pub subtitles: Vec<SubtitleView>,
}

/// Query of `PUT /v1/videos/{id}/subtitles/{lang}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// 1..=100 characters; the language tag when absent.
    #[serde(default)]
    pub label: Option<String>,
}

type Row = (
    String,
    String,
    String,
    i32,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

const LIST: &str =
    "SELECT lang, label, source_format, cue_count, size_bytes, created_at, updated_at
     FROM video_subtitles WHERE video_id = $1 ORDER BY lang";

fn view(origin: &str, video_id: &str, query: &str, r: Row) -> SubtitleView {
    SubtitleView {
        url: format!("{origin}/s/{video_id}/{}.vtt{query}", r.0),
        lang: r.0,
        label: r.1,
        source_format: r.2,
        cue_count: r.3,
        size_bytes: r.4,
        created_at: r.5,
        updated_at: r.6,
    }
}

/// The canonical form of a BCP 47 tag (`language[-script][-region]…`:
/// language lowercase, script titlecase, region uppercase), or `None`
/// when `tag` is not one.
pub fn canonical_lang(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > MAX_LANG {
        return None;
    }
    let mut out = Vec::new();
    for (i, sub) in tag.split('-').enumerate() {
        let ok =
            !sub.is_empty() && sub.len() <= 8 && sub.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        let alpha = sub.bytes().all(|b| b.is_ascii_alphabetic());
        let c = if i == 0 {
            if !alpha || !(2..=8).contains(&sub.len()) || sub.len() == 4 {
                return None;
            }
            sub.to_ascii_lowercase()
        } else if alpha && sub.len() == 4 {
            let lower = sub.to_ascii_lowercase();
            lower[..1].to_ascii_uppercase() + &lower[1..]
        } else if (alpha && sub.len() == 2)
            || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit()))
        {
            sub.to_ascii_uppercase()
        } else {
            sub.to_ascii_lowercase()
        };
        out.push(c);
    }
    Some(out.join("-"))
}

fn bad_lang() -> ApiError {
    unprocessable(format!(
        "the language must be a BCP 47 tag of at most {MAX_LANG} characters, like en or pt-BR"
    ))
}

fn store_error(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "object store failed writing subtitles");
    ApiError::unavailable("object store unavailable, retry shortly")
}

/// `GET /v1/videos/{video_id}/subtitles`: anyone who may see the video.
pub async fn list_subtitles(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<SubtitleList>, ApiError> {
    let viewer = optional_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, viewer.as_ref()).await?;
    let rows: Vec<Row> = sqlx::query_as(LIST)
        .bind(v.id)
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
    let origin = s.settings.public_origin_url.trim_end_matches('/');
    let (query, _) = playback_query(&s, &v.view.video_id, v.view.privacy == "private");
    Ok(ApiJson(SubtitleList {
        subtitles: rows
            .into_iter()
            .map(|r| view(origin, &v.view.video_id, &query, r))
            .collect(),
    }))
}

/// `PUT /v1/videos/{video_id}/subtitles/{lang}`: adds or replaces a
/// track. 201 when new, 200 when replaced; 413 over the size limit; 422
/// for a bad tag or label, and for a malformed file with the line.
pub async fn put_subtitle(
    State(s): State<CatalogState>,
    Path((video_id, lang)): Path<(String, String)>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, Some(&user)).await?;
    if v.owner != user.id {
        return Err(forbidden());
    }
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let lang = canonical_lang(&lang).ok_or_else(bad_lang)?;
    let label = q.label.unwrap_or_else(|| lang.clone());
    let too_long = label.chars().count() > MAX_LABEL;
    let label = label.trim();
    if label.is_empty() || too_long || label.chars().any(char::is_control) {
        return Err(unprocessable(format!(
            "label must be 1..={MAX_LABEL} characters without control characters"
        )));
    }
    let max = s.settings.max_subtitle_size;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a subtitle file may hold at most {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(unprocessable("the body must be a WebVTT or SRT file"));
    }
    let file = normalise(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_subtitles",
            e.to_string(),
        )
    })?;
    let key = layout::subtitles(&v.view.video_id, &lang).map_err(|_| bad_lang())?;

    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    // The video's row lock orders subtitle changes of one video (each
    // rewrites the playlists from the full list) and keeps a delete of
    // the video from passing in between.
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM videos WHERE id = $1 FOR UPDATE")
            .bind(v.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(&e))?
            .flatten();
    if status.as_deref().is_none_or(|st| st == "deleted") {
        return Err(ApiError::not_found("no such video"));
    }
    s.store
        .put(key.as_str(), file.vtt.clone().into())
        .await
        .map_err(|e| store_error(&e))?;
    let (row, inserted): (Row, bool) = {
        let r: (String, String, String, i32, i64, DateTime<Utc>, DateTime<Utc>, bool) = sqlx::query_as(
            "INSERT INTO video_subtitles (video_id, lang, label, source_format, cue_count, size_bytes)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (video_id, lang) DO UPDATE SET
                label = EXCLUDED.label, source_format = EXCLUDED.source_format,
                cue_count = EXCLUDED.cue_count, size_bytes = EXCLUDED.size_bytes,
                updated_at = now()
             RETURNING lang, label, source_format, cue_count, size_bytes, created_at, updated_at,
                       (xmax = 0) AS inserted",
        )
        .bind(v.id)
        .bind(&lang)
        .bind(label)
        .bind(file.source.as_str())
        .bind(i32::try_from(file.cues).unwrap_or(i32::MAX))
        .bind(file.vtt.len() as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?;
        ((r.0, r.1, r.2, r.3, r.4, r.5, r.6), r.7)
    };
    rewrite(&s, &mut tx, v.id, &v.view.video_id).await?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    tracing::info!(
        video_id = %v.view.video_id,
        lang = %lang,
        cues = file.cues,
        source = file.source.as_str(),
        replaced = !inserted,
        "subtitles stored"
    );
    let origin = s.settings.public_origin_url.trim_end_matches('/');
    let (query, _) = playback_query(&s, &v.view.video_id, v.view.privacy == "private");
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ApiJson(view(origin, &v.view.video_id, &query, row))).into_response())
}

/// Rewrites the playlists from the tracks the transaction sees.
async fn rewrite(
    s: &CatalogState,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    video: i64,
    video_id: &str,
) -> Result<(), ApiError> {
    let tracks: Vec<(String, String)> =
        sqlx::query_as("SELECT lang, label FROM video_subtitles WHERE video_id = $1 ORDER BY lang")
            .bind(video)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| db_error(&e))?;
    let tracks: Vec<SubtitleTrack> = tracks
        .into_iter()
        .map(|(lang, label)| SubtitleTrack { lang, label })
        .collect();
    manifests::write(s, video_id, &tracks)
        .await
        .map_err(|e| match e {
            manifests::ManifestError::Store(e) => store_error(&e),
            e => ApiError::internal(&e),
        })
}

/// `DELETE /v1/videos/{video_id}/subtitles/{lang}`: 204, or 404 when the
/// video has no such track.
pub async fn delete_subtitle(
    State(s): State<CatalogState>,
    Path((video_id, lang)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, Some(&user)).await?;
    if v.owner != user.id {
        return Err(forbidden());
    }
    let no_track = || ApiError::not_found("the video has no subtitles in that language");
    let lang = canonical_lang(&lang).ok_or_else(no_track)?;
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    sqlx::query("SELECT 1 FROM videos WHERE id = $1 FOR UPDATE")
        .bind(v.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?;
    let gone = sqlx::query("DELETE FROM video_subtitles WHERE video_id = $1 AND lang = $2")
        .bind(v.id)
        .bind(&lang)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?
        .rows_affected();
    if gone == 0 {
        return Err(no_track());
    }
    rewrite(&s, &mut tx, v.id, &v.view.video_id).await?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    // After the commit: until then the master still listed the track.
    for key in [
        layout::subtitles(&v.view.video_id, &lang),
        layout::subtitle_playlist(&v.view.video_id, &lang),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(e) = s.store.delete(key.as_str()).await {
            // Unlisted and unreachable through the api; the video's
            // deletion removes the whole prefix.
            tracing::warn!(video_id = %v.view.video_id, key = %key, error = %e, "could not remove a subtitle object");
        }
    }
    tracing::info!(video_id = %v.view.video_id, lang = %lang, "subtitles removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        assert_eq!(canonical_lang("en").as_deref(), Some("en"));
        assert_eq!(canonical_lang("PT-br").as_deref(), Some("pt-BR"));
        assert_eq!(canonical_lang("zh-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(canonical_lang("es-419").as_deref(), Some("es-419"));
        assert_eq!(canonical_lang("e"), None);
        assert_eq!(canonical_lang("en_US"), None);
        assert_eq!(canonical_lang("en-"), None);
        assert_eq!(canonical_lang("../en"), None);
        assert_eq!(canonical_lang("1en"), None);
        assert_eq!(canonical_lang("en-verylongsubtag"), None);
    }
}
