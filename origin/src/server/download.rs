//! MP4 downloads (`/v/{id}/{rung}/video.mp4`): the answer names the file
//! after the video's title, `Content-Disposition: attachment` with an
//! ASCII `filename` and the exact title in `filename*` (RFC 6266, RFC
//! 5987). The title is read from the database and reused for at most
//! `access::TITLE_TTL` (10 s), so a renamed video downloads under its new
//! name that soon (renames purge the CDN too).

use super::{App, Body};
use crate::Route;
use http::header::{HeaderValue, CONTENT_DISPOSITION};
use http::Response;

/// Longest file name stem, in characters.
const MAX_STEM: usize = 120;

/// Adds `Content-Disposition` to a successful answer.
pub(super) async fn name_the_file(
    app: &App,
    route: &Route,
    mut resp: Response<Body>,
) -> Response<Body> {
    if !(resp.status().is_success() || resp.status() == http::StatusCode::NOT_MODIFIED) {
        return resp;
    }
    let title = app.access.title(&route.video_id).await;
    let stem = title.as_deref().unwrap_or(&route.video_id);
    if let Ok(v) = HeaderValue::from_str(&disposition(stem)) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    resp
}

/// `attachment; filename="…"; filename*=UTF-8''…` for `{stem}.mp4`.
pub(crate) fn disposition(stem: &str) -> String {
    let stem: String = stem
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .take(MAX_STEM)
        .collect();
    let stem = if stem.trim().is_empty() {
        "video".to_owned()
    } else {
        stem
    };
    let ascii: String = stem
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in format!("{stem}.mp4").bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}.mp4\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_in_both_forms() {
        assert_eq!(
            disposition("My trip"),
            "attachment; filename=\"My trip.mp4\"; filename*=UTF-8''My%20trip.mp4"
        );
        assert_eq!(
            disposition("Café \"live\" 50%/2"),
            "attachment; filename=\"Caf_ _live_ 50__2.mp4\"; \
             filename*=UTF-8''Caf%C3%A9%20%22live%22%2050%25_2.mp4"
        );
        assert_eq!(
            disposition("  "),
            "attachment; filename=\"video.mp4\"; filename*=UTF-8''video.mp4"
        );
        assert!(disposition(&"x".repeat(500)).len() < 300);
    }
}
