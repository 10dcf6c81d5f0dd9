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

/// The viewer's variant of playlist `o`: its head (own size and ETag, the
/// stored ETag tagged with a hash of the token) and body. `None` when the
/// playlist is not UTF-8.
pub(super) fn for_viewer(o: &CachedObject, token: &str) -> Option<(Head, Bytes)> {
    let body = rewrite_playlist(&o.body, token)?;
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
    fn playlists_get_the_token_on_every_uri() {
        let src = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8\r\n\nsegment_0.ts?x=1\n";
        let out = rewrite_playlist(src.as_bytes(), "9.abc").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8?token=9.abc\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/playlist.m3u8?token=9.abc\r\n\nsegment_0.ts?x=1&token=9.abc\n"
        );
    }
}
