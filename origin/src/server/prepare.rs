//! Status and headers of an object's answer: caching headers and CORS,
//! conditional requests (RFC 9110 §13), then ranges (§14).

use super::respond::empty;
use super::{App, Body, Ctx};
use crate::upstream::Head;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use vodfarm_core::store::{content_type_for, ByteRange};

const EXPOSE: &str = "Content-Length, Content-Range, ETag, Last-Modified, Accept-Ranges";
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// Cloudflare's name for the same key (it purges by cache tag).
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Status and headers for `head` under the request's conditions and
/// range, with an empty body; and the inclusive byte span to send (`None`:
/// no body, for 304, 416, HEAD and empty objects).
pub(super) fn prepare(
    app: &App,
    ctx: &Ctx<'_>,
    head: &Head,
) -> (Response<Body>, Option<(u64, u64)>) {
    let mut r = Response::new(empty());
    object_headers(app, ctx, head, r.headers_mut());
    if not_modified(ctx.headers, head) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return (r, None);
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(ctx.route.key.as_str())),
    );
    let size = head.size;
    let span = match wanted_range(ctx.headers, head) {
        Some(wanted) => match wanted.resolve(size) {
            Some((a, b)) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                Some((a, b))
            }
            None => {
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let h = r.headers_mut();
                h.remove(header::CONTENT_TYPE);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return (r, None);
            }
        },
        None => (size > 0).then(|| (0, size - 1)),
    };
    let len = span.map_or(0, |(a, b)| b - a + 1);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if ctx.head_only {
        return (r, None);
    }
    (r, span)
}

/// The headers every answer for an object carries, 304 included:
/// caching (by privacy and kind), validators, CORS, surrogate key.
fn object_headers(app: &App, ctx: &Ctx<'_>, head: &Head, h: &mut HeaderMap) {
    let cc = match (ctx.grant.private, ctx.route.is_playlist) {
        (false, false) => &app.cc_immutable,
        (false, true) => &app.cc_playlist,
        (true, false) => &app.cc_private_immutable,
        (true, true) => &app.cc_private_playlist,
    };
    h.insert(header::CACHE_CONTROL, cc.clone());
    h.insert(header::ETAG, head.etag.clone());
    if let Some((lm, _)) = &head.last_modified {
        h.insert(header::LAST_MODIFIED, lm.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("video-{}", ctx.route.video_id)) {
        h.insert(CACHE_TAG, v.clone());
        h.insert(SURROGATE_KEY, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Whether the request's conditions make the answer 304 (RFC 9110
/// §13.2.2: If-None-Match wins over If-Modified-Since).
fn not_modified(req: &HeaderMap, head: &Head) -> bool {
    let inm = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    match inm {
        Some(list) => etag_matches(list, &head.etag),
        None => match (
            req.get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok()),
            &head.last_modified,
        ) {
            (Some(since), Some((_, t))) => *t <= since.timestamp(),
            _ => false,
        },
    }
}

/// The range asked for, unless there is none or an `If-Range` validator
/// does not match (then the whole object is sent).
fn wanted_range(req: &HeaderMap, head: &Head) -> Option<ByteRange> {
    req.get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse_header)
        .filter(|_| match req.get(header::IF_RANGE) {
            None => true,
            Some(v) => {
                v.as_bytes() == head.etag.as_bytes()
                    || head
                        .last_modified
                        .as_ref()
                        .is_some_and(|(lm, _)| lm.as_bytes() == v.as_bytes())
            }
        })
}

/// Whether `etag` is in an `If-None-Match` list (weak comparison).
fn etag_matches(list: &str, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    list.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/").as_bytes() == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists_match_weakly() {
        let e = HeaderValue::from_static("\"abc\"");
        assert!(etag_matches("\"x\", W/\"abc\"", &e));
        assert!(etag_matches("*", &e));
        assert!(!etag_matches("\"abcd\"", &e));
    }
}
