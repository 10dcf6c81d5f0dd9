//! Where the origin's bytes come from: the object store, or (shield mode)
//! the next vodfarm origin tier over HTTP.

use crate::Route;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED, RANGE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::signing::sign_playback_token;
use vodfarm_core::store::{ByteRange, SharedStore, StoreError};

/// The request header a tier sets on its upstream requests: the next tier
/// answers with the stored bytes as they are (no per-viewer playlist
/// rewriting).
pub const TIER_HEADER: &str = "x-vodfarm-tier";

/// Why an upstream fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream has no such object (or refuses to serve it: deleted,
    /// not ready).
    #[error("not found upstream")]
    NotFound,
    /// The range lies outside the object.
    #[error("range not satisfiable (object is {size} bytes)")]
    RangeNotSatisfiable {
        /// The object's size.
        size: u64,
    },
    /// No answer (or no next chunk) within the upstream timeout.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream failed or answered something unusable.
    #[error("upstream failed: {0}")]
    Failed(String),
}

/// An object's validators and size, with response header values prebuilt
/// (the cache-hit path only clones them).
#[derive(Debug, Clone)]
pub struct Head {
    /// Total size in bytes.
    pub size: u64,
    /// Strong entity tag, quoted, as sent in `ETag`.
    pub etag: HeaderValue,
    /// `Last-Modified` value and its unix time, when known.
    pub last_modified: Option<(HeaderValue, i64)>,
}

impl Head {
    fn new(size: u64, etag: &str, last_modified: Option<DateTime<Utc>>) -> Head {
        let bare = etag.trim().trim_start_matches("W/").trim_matches('"');
        let etag = HeaderValue::from_str(&format!("\"{bare}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"unknown\""));
        let last_modified = last_modified.and_then(|t| {
            HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                .ok()
                .map(|v| (v, t.timestamp()))
        });
        Head {
            size,
            etag,
            last_modified,
        }
    }
}

/// A stream of body bytes from the upstream.
pub type UpstreamBody = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// An upstream answer.
pub struct Fetched {
    /// The whole object's head.
    pub head: Head,
    /// The inclusive byte range `body` covers (empty objects: `None`).
    pub range: Option<(u64, u64)>,
    /// The bytes.
    pub body: UpstreamBody,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("head", &self.head)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The upstream of a tier.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The object store (the tier nearest the store).
    Store(SharedStore),
    /// Another vodfarm origin (shield mode).
    Origin(Box<HttpUpstream>),
}

/// The next tier, over HTTP/1.1 keep-alive.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    secret: Option<Arc<[u8]>>,
}

impl HttpUpstream {
    /// A client for the tier at `base` (`http://HOST:PORT`). With a
    /// signing secret it signs a short-lived playback token for every
    /// request, so the next tier lets it fetch private videos.
    pub fn new(base: &str, secret: Option<Arc<[u8]>>) -> Result<HttpUpstream, UpstreamError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| UpstreamError::Failed(format!("upstream URL {base:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.path().len() > 1 {
            return Err(UpstreamError::Failed(format!(
                "upstream URL {base:?}: use http://HOST:PORT"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(HttpUpstream {
            client,
            base,
            secret,
        })
    }

    async fn fetch(
        &self,
        route: &Route,
        path: &str,
        range: Option<ByteRange>,
        timeout: Duration,
    ) -> Result<Fetched, UpstreamError> {
        let mut url = format!("{}{}", self.base, path);
        if let Some(secret) = &self.secret {
            let expires = Utc::now().timestamp() + 300;
            url.push_str("?token=");
            url.push_str(&sign_playback_token(secret, &route.video_id, expires));
        }
        let mut req = Request::get(url).header(TIER_HEADER, "1");
        if let Some(r) = range {
            let v = match r {
                ByteRange::Bounded(a, b) => format!("bytes={a}-{b}"),
                ByteRange::From(a) => format!("bytes={a}-"),
                ByteRange::Suffix(n) => format!("bytes=-{n}"),
            };
            req = req.header(RANGE, v);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let status = resp.status();
        let h = resp.headers();
        let header = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(UpstreamError::NotFound),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let size = header(CONTENT_RANGE)
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| UpstreamError::Failed("416 without a size".into()))?;
                return Err(UpstreamError::RangeNotSatisfiable { size });
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            other => return Err(UpstreamError::Failed(format!("upstream answered {other}"))),
        }
        let length: Option<u64> = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let (size, range) = if status == StatusCode::PARTIAL_CONTENT {
            parse_content_range(header(CONTENT_RANGE).unwrap_or(""))
                .map(|(a, b, size)| (size, Some((a, b))))
                .ok_or_else(|| UpstreamError::Failed("206 without a valid Content-Range".into()))?
        } else {
            let size = length
                .ok_or_else(|| UpstreamError::Failed("upstream sent no Content-Length".into()))?;
            (size, (size > 0).then(|| (0, size - 1)))
        };
        let etag = header(ETAG)
            .ok_or_else(|| UpstreamError::Failed("upstream sent no ETag".into()))?
            .to_owned();
        let last_modified = header(LAST_MODIFIED)
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&Utc));
        let head = Head::new(size, &etag, last_modified);
        let body = resp.into_body();
        let stream = futures::stream::unfold(body, move |mut body| async move {
            loop {
                match tokio::time::timeout(timeout, body.frame()).await {
                    Err(_) => return Some((Err(UpstreamError::Timeout), body)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        return Some((Err(UpstreamError::Failed(e.to_string())), body))
                    }
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), body));
                        }
                    }
                }
            }
        });
        Ok(Fetched {
            head,
            range,
            body: stream.boxed(),
        })
    }
}

/// `bytes a-b/size` → `(a, b, size)`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, size.parse().ok()?))
}

fn store_error(e: StoreError) -> UpstreamError {
    match e {
        StoreError::NotFound(_) | StoreError::InvalidKey(_) => UpstreamError::NotFound,
        StoreError::RangeNotSatisfiable { size } => UpstreamError::RangeNotSatisfiable { size },
        other => UpstreamError::Failed(other.to_string()),
    }
}

impl Upstream {
    /// Fetches `route`'s object (`path` is the request path, used in
    /// shield mode), or a range of it. `timeout` bounds the wait for the
    /// answer and for every later chunk.
    pub async fn fetch(
        &self,
        route: &Route,
        path: &str,
        range: Option<ByteRange>,
        timeout: Duration,
    ) -> Result<Fetched, UpstreamError> {
        match self {
            Upstream::Origin(h) => h.fetch(route, path, range, timeout).await,
            Upstream::Store(store) => {
                let got = tokio::time::timeout(timeout, store.get(route.key.as_str(), range))
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
                    .map_err(store_error)?;
                let head = Head::new(got.meta.size, &got.meta.etag, Some(got.meta.last_modified));
                let range = (got.meta.size > 0).then_some(got.range);
                let stream = futures::stream::unfold(got.body, move |mut body| async move {
                    match tokio::time::timeout(timeout, body.next()).await {
                        Err(_) => Some((Err(UpstreamError::Timeout), body)),
                        Ok(None) => None,
                        Ok(Some(r)) => Some((r.map_err(store_error), body)),
                    }
                });
                Ok(Fetched {
                    head,
                    range,
                    body: stream.boxed(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
    }

    #[test]
    fn etags_are_quoted_strong() {
        assert_eq!(Head::new(1, "abc", None).etag, "\"abc\"");
        assert_eq!(Head::new(1, "\"abc\"", None).etag, "\"abc\"");
        assert_eq!(Head::new(1, "W/\"abc\"", None).etag, "\"abc\"");
    }
}
