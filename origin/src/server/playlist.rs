//! Per-viewer playlists: a private playlist fetched by a viewer gets the
//! viewer's token added to every URI in it, as a variant with its own
//! validator.

use crate::cache::CachedObject;
use crate::upstream::Head;
use bytes::Bytes;
use http::HeaderValue;

/// Adds the viewer's token to every URI of an HLS playlist. `None` when
/// the playlist is not UTF-8 (served as stored).
pub fn rewrite_playlist(body: &[u8], token: &str) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let with_token = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}token={token}")
    };
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        let eol = &line[content.len()..];
        if content.trim().is_empty() {
            out.push_str(content);
        } else if content.starts_with('#') {
            // Tags with a URI attribute (EXT-X-MEDIA, EXT-X-MAP, EXT-X-KEY, …).
            let mut rest = content;
            while let Some(i) = rest.find("URI=\"") {
                let (before, after) = rest.split_at(i + 5);
                out.push_str(before);
                match after.find('"') {
                    Some(j) => {
                        out.push_str(&with_token(&after[..j]));
                        rest = &after[j..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
            out.push_str(rest);
        } else {
            out.push_str(&with_token(content));
        }
        out.push_str(eol);
    }
    Some(Bytes::from(out))
}

/// Adds the viewer's token to every URL of a DASH MPD: the
/// `initialization` and `media` templates and `<BaseURL>`s. `None` when
/// the MPD is not UTF-8.
pub(super) fn rewrite_mpd(body: &[u8], token: &str) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    let opens = ["initialization=\"", "media=\"", "<BaseURL>"];
    loop {
        let next = opens
            .iter()
            .filter_map(|o| rest.find(o).map(|i| (i, *o)))
            .min_by_key(|(i, _)| *i);
        let Some((i, open)) = next else { break };
        let start = i + open.len();
        let close = if open == "<BaseURL>" {
            "</BaseURL>"
        } else {
            "\""
        };
        let Some(len) = rest[start..].find(close) else {
            break;
        };
        let url = &rest[start..start + len];
        out.push_str(&rest[..start]);
        out.push_str(url);
        out.push_str(if url.contains('?') { "&amp;" } else { "?" });
        out.push_str("token=");
        out.push_str(token);
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    Some(Bytes::from(out))
}

/// The viewer's variant of playlist `o`: its head (own size and ETag, the
/// stored ETag tagged with a hash of the token) and body. `None` when the
/// playlist is not UTF-8.
pub(super) fn for_viewer(o: &CachedObject, token: &str) -> Option<(Head, Bytes)> {
    let body = if o.body.starts_with(b"<?xml") {
        rewrite_mpd(&o.body, token)?
    } else {
        rewrite_playlist(&o.body, token)?
    };
    let inner = o.head.etag.to_str().unwrap_or("").trim_matches('"');
    let tag = token.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let head = Head {
        size: body.len() as u64,
        etag: HeaderValue::from_str(&format!("\"{inner}-t{tag:016x}\""))
            .unwrap_or_else(|_| o.head.etag.clone()),
        last_modified: o.head.last_modified.clone(),
    };
    Some((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpds_get_the_token_on_every_url() {
        let src = "<?xml version=\"1.0\"?>\n<SegmentTemplate initialization=\"240p/init.mp4\" media=\"240p/segment_$Number$.m4s\"/><BaseURL>../../s/v/en.vtt</BaseURL>";
        let out = rewrite_mpd(src.as_bytes(), "9.abc").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<?xml version=\"1.0\"?>\n<SegmentTemplate initialization=\"240p/init.mp4?token=9.abc\" media=\"240p/segment_$Number$.m4s?token=9.abc\"/><BaseURL>../../s/v/en.vtt?token=9.abc</BaseURL>"
        );
    }

    #[test]
    fn playlists_get_the_token_on_every_uri() {
        let src = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8\r\n\nsegment_0.ts?x=1\n";
        let out = rewrite_playlist(src.as_bytes(), "9.abc").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8?token=9.abc\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8?token=9.abc\r\n\nsegment_0.ts?x=1&token=9.abc\n"
        );
    }
}
