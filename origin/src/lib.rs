//! The origin/shield server. Today: the mapping from CDN URLs (the seed's
//! URL structure) to object keys, which refuses every path outside the
//! layout; the hyper server, cache and coalescing build on it.

#![warn(missing_docs)]

use vodfarm_core::layout::{self, ObjectKey, ThumbFile};

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The video's public id.
    pub video_id: String,
    /// The object to serve.
    pub key: ObjectKey,
    /// Whether it is a playlist (short cache lifetime) rather than an
    /// immutable segment or image.
    pub is_playlist: bool,
}

/// Maps a request path to an object key, or `None` for anything that is
/// not one of the seed's routes:
/// `/v/{id}/master.m3u8`, `/v/{id}/{rendition}/playlist.m3u8`,
/// `/v/{id}/{rendition}/segment_{n}.ts`, `/t/{id}/default.jpg`,
/// `/t/{id}/sprite.jpg`, `/t/{id}/storyboard.vtt`, `/s/{id}/{lang}.vtt`.
///
/// The path is matched raw (not percent-decoded): an encoded dot, slash
/// or NUL is simply not a valid id or name, so it cannot reach a key.
pub fn route(path: &str) -> Option<Route> {
    if path.len() > 256 {
        return None;
    }
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (id, key, is_playlist) = match parts.as_slice() {
        ["v", id, "master.m3u8"] => (*id, layout::master_playlist(id).ok()?, true),
        ["v", id, rung, "playlist.m3u8"] => (*id, layout::rendition_playlist(id, rung).ok()?, true),
        ["v", id, rung, file] => {
            let n = file.strip_prefix("segment_")?.strip_suffix(".ts")?;
            if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (*id, layout::segment(id, rung, n.parse().ok()?).ok()?, false)
        }
        ["t", id, "default.jpg"] => (*id, layout::thumb_file(id, ThumbFile::Default).ok()?, false),
        ["t", id, "sprite.jpg"] => (*id, layout::thumb_file(id, ThumbFile::Sprite).ok()?, false),
        ["t", id, "storyboard.vtt"] => (
            *id,
            layout::thumb_file(id, ThumbFile::Storyboard).ok()?,
            false,
        ),
        ["s", id, file] => (
            *id,
            layout::subtitles(id, file.strip_suffix(".vtt")?).ok()?,
            false,
        ),
        _ => return None,
    };
    Some(Route {
        video_id: id.to_owned(),
        key,
        is_playlist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_routes_map_to_the_layout() {
        let r = route("/v/v_abc/720p/segment_12.ts").unwrap();
        assert_eq!(r.key.as_str(), "encoded/v_abc/720p/segment_12.ts");
        assert!(!r.is_playlist);
        assert!(route("/v/v_abc/master.m3u8").unwrap().is_playlist);
        assert_eq!(
            route("/t/v_abc/sprite.jpg").unwrap().key.as_str(),
            "thumbnails/v_abc/sprite.jpg"
        );
        assert_eq!(
            route("/s/v_abc/en.vtt").unwrap().key.as_str(),
            "subtitles/v_abc/en.vtt"
        );
    }

    #[test]
    fn tricks_and_unknown_paths_are_refused() {
        for p in [
            "/v/../master.m3u8",
            "/v/v_abc/%2e%2e/playlist.m3u8",
            "/v/v_abc/720p/segment_1.ts/..",
            "/v/v_abc/720p/segment_.ts",
            "/v/v_abc/720p/segment_-1.ts",
            "/v/v_abc%2F..%2F/master.m3u8",
            "/v/v_abc/720p/../../x",
            "/t/v_abc/thumb.png",
            "/s/v_abc/..vtt",
            "/v/v_a\0bc/master.m3u8",
            "/originals/v_abc/original.mp4",
            "",
            "/",
        ] {
            assert_eq!(route(p), None, "{p:?} was routed");
        }
        assert_eq!(route(&format!("/v/{}/master.m3u8", "a".repeat(300))), None);
    }
}
