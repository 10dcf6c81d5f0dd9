//! The object-key layout: the one place that builds object keys.
//!
//! ```text
//! originals/{id}/original.{ext}
//! encoded/{id}/master.m3u8
//! encoded/{id}/{rendition}/playlist.m3u8
//! encoded/{id}/{rendition}/segment_{n}.ts
//! encoded/{id}/{rendition|audio}/init.mp4 | segment_{n}.m4s   (CMAF)
//! encoded/{id}/manifest.mpd                                   (CMAF)
//! thumbnails/{id}/thumb_{n}.jpg | default.jpg | sprite.jpg | storyboard.vtt
//! encoded/{id}/renditions.json | subtitles.json   (sidecars, not served)
//! subtitles/{id}/{lang}.vtt | {lang}.m3u8
//! uploads/{session}/tail_{part}     (bytes of an unfinished tus part)
//! ```
//!
//! Every constructor validates its inputs, so a key built here can never
//! escape the layout (no `..`, `/` or NUL from a request can get in).

use crate::ids::is_valid_public_id;

/// A part of a key was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not a public video id.
    #[error("invalid video id")]
    VideoId,
    /// Not a rendition name like `720p`.
    #[error("invalid rendition name")]
    Rendition,
    /// Not a file extension of 1..=8 lowercase ASCII letters/digits.
    #[error("invalid file extension")]
    Extension,
    /// Not a language tag like `en` or `pt-BR`.
    #[error("invalid language tag")]
    Language,
}

/// A validated object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

fn video(id: &str) -> Result<&str, LayoutError> {
    if is_valid_public_id(id) {
        Ok(id)
    } else {
        Err(LayoutError::VideoId)
    }
}

/// Whether `name` is a rendition name: digits followed by `p` (`240p`), or `4k`.
pub fn is_valid_rendition(name: &str) -> bool {
    let digits = name.strip_suffix('p').unwrap_or("");
    (!digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
        || name == "4k"
}

/// Most MP4 downloads one video may ask for.
pub const MAX_DOWNLOADS: usize = 8;

/// A creator's `mp4_renditions`, checked: rendition names (`720p`), at
/// most [`MAX_DOWNLOADS`], each once, in the order given.
pub fn check_download_renditions(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > MAX_DOWNLOADS {
        return Err(format!("at most {MAX_DOWNLOADS} MP4 renditions"));
    }
    let mut out: Vec<String> = Vec::new();
    for r in list {
        if !is_valid_rendition(r) {
            return Err(format!("{r:?} is not a rendition name like 720p"));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

fn rendition(name: &str) -> Result<&str, LayoutError> {
    // A CMAF video's shared audio track has a directory of its own.
    if is_valid_rendition(name) || name == crate::playlists::AUDIO_TRACK {
        Ok(name)
    } else {
        Err(LayoutError::Rendition)
    }
}

/// The uploaded original, `originals/{id}/original.{ext}`.
pub fn original(video_id: &str, ext: &str) -> Result<ObjectKey, LayoutError> {
    let ext_ok = !ext.is_empty()
        && ext.len() <= 8
        && ext
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ext_ok {
        return Err(LayoutError::Extension);
    }
    Ok(ObjectKey(format!(
        "originals/{}/original.{ext}",
        video(video_id)?
    )))
}

/// `originals/{id}/`: the original and the plan's chunk files.
pub fn originals_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("originals/{}/", video(video_id)?)))
}

/// The prefix every encoded file of a video lives under, `encoded/{id}/`.
pub fn encoded_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("encoded/{}/", video(video_id)?)))
}

/// `encoded/{id}/master.m3u8`.
pub fn master_playlist(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/master.m3u8",
        video(video_id)?
    )))
}

/// `encoded/{id}/renditions.json`: the transcode job's internal record of
/// its renditions (size, bandwidth, codecs, segments), which the manifest
/// job turns into `master.m3u8`. Not served by the origin.
pub fn renditions_sidecar(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/renditions.json",
        video(video_id)?
    )))
}

/// `originals/{id}/chunks/`: the per-chunk stream copies of a chunked
/// original (its planning job writes them; the stitch removes them).
pub fn chunk_sources_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("originals/{}/chunks/", video(video_id)?)))
}

/// `originals/{id}/chunks/chunk_{k}.nut`: chunk `k`'s part of the
/// original, remuxed by stream copy (never served).
pub fn chunk_source(video_id: &str, k: u32) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "originals/{}/chunks/chunk_{k}.nut",
        video(video_id)?
    )))
}

/// `encoded/{id}/chunks/`: the chunk jobs' sidecars (never served: not a
/// rendition name).
pub fn chunk_sidecars_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("encoded/{}/chunks/", video(video_id)?)))
}

/// `encoded/{id}/chunks/chunk_{k}.json`: what chunk `k` encoded (its
/// segments per rung), which the stitch turns into playlists.
pub fn chunk_sidecar(video_id: &str, k: u32) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/chunks/chunk_{k}.json",
        video(video_id)?
    )))
}

/// `encoded/{id}/{rendition}/`.
pub fn rendition_prefix(video_id: &str, rung: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/{}/",
        video(video_id)?,
        rendition(rung)?
    )))
}

/// `encoded/{id}/{rendition}/playlist.m3u8`.
pub fn rendition_playlist(video_id: &str, rung: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/{}/playlist.m3u8",
        video(video_id)?,
        rendition(rung)?
    )))
}

/// `encoded/{id}/{rendition}/segment_{n}.ts`.
pub fn segment(video_id: &str, rung: &str, n: u32) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/{}/segment_{n}.ts",
        video(video_id)?,
        rendition(rung)?
    )))
}

/// `encoded/{id}/{rendition}/init.mp4`: a CMAF track's init segment
/// (`rendition` may be `audio`, the shared audio track).
pub fn cmaf_init(video_id: &str, rung: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/{}/init.mp4",
        video(video_id)?,
        rendition(rung)?
    )))
}

/// `encoded/{id}/{rendition}/segment_{n}.m4s`: a CMAF media segment.
pub fn cmaf_segment(video_id: &str, rung: &str, n: u32) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/{}/segment_{n}.m4s",
        video(video_id)?,
        rendition(rung)?
    )))
}

/// `encoded/{id}/{rung}/video.mp4`: a rung as one progressive MP4 (the
/// download), never of the shared audio track.
pub fn download_mp4(video_id: &str, rung: &str) -> Result<ObjectKey, LayoutError> {
    if !is_valid_rendition(rung) {
        return Err(LayoutError::Rendition);
    }
    Ok(ObjectKey(format!(
        "encoded/{}/{rung}/video.mp4",
        video(video_id)?
    )))
}

/// `encoded/{id}/manifest.mpd`: a CMAF video's DASH manifest.
pub fn dash_manifest(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/manifest.mpd",
        video(video_id)?
    )))
}

/// `thumbnails/{id}/`.
pub fn thumbnails_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("thumbnails/{}/", video(video_id)?)))
}

/// `thumbnails/{id}/thumb_{n}.jpg`.
pub fn thumbnail(video_id: &str, n: u32) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "thumbnails/{}/thumb_{n}.jpg",
        video(video_id)?
    )))
}

/// A fixed-name file under `thumbnails/{id}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThumbFile {
    /// `default.jpg`, the poster.
    Default,
    /// `sprite.jpg`, the scrubbing grid.
    Sprite,
    /// `storyboard.vtt`, cues into the sprite.
    Storyboard,
}

/// `thumbnails/{id}/default.jpg|sprite.jpg|storyboard.vtt`.
pub fn thumb_file(video_id: &str, file: ThumbFile) -> Result<ObjectKey, LayoutError> {
    let name = match file {
        ThumbFile::Default => "default.jpg",
        ThumbFile::Sprite => "sprite.jpg",
        ThumbFile::Storyboard => "storyboard.vtt",
    };
    Ok(ObjectKey(format!("thumbnails/{}/{name}", video(video_id)?)))
}

fn language(lang: &str) -> Result<&str, LayoutError> {
    let ok = (2..=16).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !lang.starts_with('-');
    if ok {
        Ok(lang)
    } else {
        Err(LayoutError::Language)
    }
}

/// `subtitles/{id}/{lang}.vtt`; `lang` is a BCP 47-like tag (`en`, `pt-BR`).
pub fn subtitles(video_id: &str, lang: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "subtitles/{}/{}.vtt",
        video(video_id)?,
        language(lang)?
    )))
}

/// `subtitles/{id}/{lang}.m3u8`: the WebVTT media playlist the HLS master
/// points at for track `lang`.
pub fn subtitle_playlist(video_id: &str, lang: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "subtitles/{}/{}.m3u8",
        video(video_id)?,
        language(lang)?
    )))
}

/// `subtitles/{id}/`.
pub fn subtitles_prefix(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!("subtitles/{}/", video(video_id)?)))
}

/// `encoded/{id}/subtitles.json`: the api's record of a video's subtitle
/// tracks, which the manifest job lists in `master.m3u8`. Not served.
pub fn subtitles_sidecar(video_id: &str) -> Result<ObjectKey, LayoutError> {
    Ok(ObjectKey(format!(
        "encoded/{}/subtitles.json",
        video(video_id)?
    )))
}

/// The prefix of an upload session's scratch objects, `uploads/{session}/`.
pub fn upload_prefix(session: &uuid::Uuid) -> ObjectKey {
    ObjectKey(format!("uploads/{}/", session.simple()))
}

/// The buffered bytes of part `part_number` of an unfinished upload,
/// `uploads/{session}/tail_{part_number}`. Bytes that do not yet fill a
/// multipart part live here between PATCH requests; keyed by part number,
/// so writing the next part's tail never touches the one the database
/// still points to.
pub fn upload_tail(session: &uuid::Uuid, part_number: i32) -> ObjectKey {
    ObjectKey(format!("uploads/{}/tail_{part_number}", session.simple()))
}

/// The extension for an original named `filename`: its lowercased
/// extension when it is 1..=8 ASCII letters or digits, else `bin`.
pub fn original_extension(filename: &str) -> String {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        ext
    } else {
        "bin".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let id = "v_abcDEF123-_";
        assert_eq!(
            original(id, "mp4").unwrap().as_str(),
            "originals/v_abcDEF123-_/original.mp4"
        );
        assert_eq!(
            master_playlist(id).unwrap().as_str(),
            "encoded/v_abcDEF123-_/master.m3u8"
        );
        assert_eq!(
            chunk_source(id, 4).unwrap().as_str(),
            "originals/v_abcDEF123-_/chunks/chunk_4.nut"
        );
        assert!(chunk_source(id, 4)
            .unwrap()
            .as_str()
            .starts_with(chunk_sources_prefix(id).unwrap().as_str()));
        assert_eq!(
            chunk_sidecar(id, 0).unwrap().as_str(),
            "encoded/v_abcDEF123-_/chunks/chunk_0.json"
        );
        assert!(chunk_sidecar(id, 0)
            .unwrap()
            .as_str()
            .starts_with(chunk_sidecars_prefix(id).unwrap().as_str()));
        assert_eq!(
            segment(id, "720p", 3).unwrap().as_str(),
            "encoded/v_abcDEF123-_/720p/segment_3.ts"
        );
        assert_eq!(
            thumb_file(id, ThumbFile::Sprite).unwrap().as_str(),
            "thumbnails/v_abcDEF123-_/sprite.jpg"
        );
        assert_eq!(
            subtitles(id, "pt-BR").unwrap().as_str(),
            "subtitles/v_abcDEF123-_/pt-BR.vtt"
        );
        assert_eq!(
            subtitle_playlist(id, "en").unwrap().as_str(),
            "subtitles/v_abcDEF123-_/en.m3u8"
        );
        assert!(subtitle_playlist(id, "en")
            .unwrap()
            .as_str()
            .starts_with(subtitles_prefix(id).unwrap().as_str()));
    }

    #[test]
    fn upload_keys() {
        let s = uuid::Uuid::nil();
        assert_eq!(
            upload_tail(&s, 3).as_str(),
            "uploads/00000000000000000000000000000000/tail_3"
        );
        assert!(upload_tail(&s, 3)
            .as_str()
            .starts_with(upload_prefix(&s).as_str()));
        assert_eq!(original_extension("My Movie.MP4"), "mp4");
        assert_eq!(original_extension("noext"), "bin");
        assert_eq!(original_extension("a.tar/../x"), "bin");
        assert_eq!(original_extension("clip.verylongext"), "bin");
        assert!(original("v_a", &original_extension("x.MoV")).is_ok());
    }

    #[test]
    fn tricks_are_refused() {
        assert_eq!(original("../x", "mp4"), Err(LayoutError::VideoId));
        assert_eq!(original("v_a", "m/p4"), Err(LayoutError::Extension));
        assert_eq!(segment("v_a", "..", 0), Err(LayoutError::Rendition));
        assert_eq!(segment("v_a", "p", 0), Err(LayoutError::Rendition));
        assert_eq!(subtitles("v_a", "../en"), Err(LayoutError::Language));
        assert!(is_valid_rendition("4k"));
        assert!(is_valid_rendition("1080p"));
        assert!(!is_valid_rendition("1080"));
    }

    #[test]
    fn downloads_are_rungs_checked_and_bounded() {
        assert_eq!(
            download_mp4("v_abc", "720p").unwrap().as_str(),
            "encoded/v_abc/720p/video.mp4"
        );
        assert!(download_mp4("v_abc", "audio").is_err());
        assert!(download_mp4("v_abc", "../x").is_err());
        let l = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            check_download_renditions(&l(&["720p", "240p", "720p"])).unwrap(),
            ["720p", "240p"]
        );
        assert!(check_download_renditions(&l(&["720"])).is_err());
        assert!(check_download_renditions(&l(&["240p"; 9])).is_err());
        assert!(check_download_renditions(&l(&["240p"; 8])).is_ok());
    }
}
