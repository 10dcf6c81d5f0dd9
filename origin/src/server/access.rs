//! Phase 2, access: may this request have the video's files?

use super::respond::error;
use super::{App, Ctx, Step};
use crate::access::Denied;
use crate::upstream::TIER_HEADER;
use crate::Route;
use http::{Method, StatusCode};

/// The request's context once its video's state and its `?token=` grant
/// it; otherwise the answer: 404 (no such video, deleted, not ready), 403
/// (private, no valid token) or 503 (the state could not be read).
pub(super) async fn access<'a>(
    app: &App,
    parts: &'a http::request::Parts,
    route: &'a Route,
) -> Step<Ctx<'a>> {
    let token = query_param(parts.uri.query(), "token");
    let grant = match app.access.check(&route.video_id, token).await {
        Ok(g) => g,
        Err(Denied::NotFound) => {
            return Step::Answer(error(StatusCode::NOT_FOUND, "not_found", "no such video"))
        }
        Err(e @ Denied::Forbidden) => {
            return Step::Answer(error(StatusCode::FORBIDDEN, "forbidden", &e.to_string()))
        }
        Err(e @ Denied::Unavailable(_)) => {
            return Step::Answer(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &e.to_string(),
            ))
        }
    };
    let rewrite_token = token.filter(|_| {
        grant.private
            && route.is_playlist
            && (route.key.as_str().ends_with(".m3u8") || route.key.as_str().ends_with(".mpd"))
            && !parts.headers.contains_key(TIER_HEADER)
    });
    Step::Next(Ctx {
        path: parts.uri.path(),
        head_only: parts.method == Method::HEAD,
        headers: &parts.headers,
        route,
        grant,
        rewrite_token,
    })
}

/// The value of query parameter `name` (not percent-decoded: tokens are
/// URL-safe).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&token=x.y"), "token"), Some("x.y"));
        assert_eq!(query_param(Some("tokens=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
