//! The generic HTTP driver: each video is purged from an edge with
//! `PURGE /` and `Surrogate-Key: video-{id}` (the key the origin sends),
//! the convention of Varnish (`deploy/varnish/vodfarm.vcl` bans on it)
//! and nginx-based caches. Each configured URL (`VODFARM_PURGE_URLS`) is a
//! target of its own, so an edge that is down is retried without
//! purging the others again.

use super::{check_answer, surrogate_key, Batch, CdnDriver, DriverError};
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, Url};

/// Purges sent to one edge at once.
const CONCURRENCY: usize = 8;

/// One edge cache reached over HTTP.
pub struct HttpEdge {
    url: Url,
    name: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpEdge {
    // The URL may hold credentials: only the name is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("target", &self.name)
            .finish_non_exhaustive()
    }
}

impl HttpEdge {
    /// An edge at `url` (`http[s]://host[:port][/path]`; the path defaults
    /// to `/`). Basic-auth credentials in the URL are sent but never
    /// appear in the target's name.
    pub fn new(url: &str, client: reqwest::Client) -> Result<HttpEdge, DriverError> {
        let url = Url::parse(url.trim())
            .map_err(|e| DriverError(format!("purge URL {:?}: {e}", redact(url))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(DriverError(format!(
                "purge URL {:?}: must be http:// or https:// with a host",
                redact(url.as_str())
            )));
        }
        let mut name = url.clone();
        let _ = name.set_username("");
        let _ = name.set_password(None);
        name.set_query(None);
        Ok(HttpEdge {
            name: name.to_string(),
            url,
            client,
        })
    }

    /// The request that purges `video_id` from this edge.
    pub fn request(&self, video_id: &str) -> Result<reqwest::Request, DriverError> {
        let purge = Method::from_bytes(b"PURGE").map_err(|e| DriverError(e.to_string()))?;
        self.client
            .request(purge, self.url.clone())
            .header("Surrogate-Key", surrogate_key(video_id))
            .build()
            .map_err(|e| DriverError(format!("{}: {e}", self.name)))
    }
}

#[async_trait::async_trait]
impl CdnDriver for HttpEdge {
    fn target(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        100
    }

    async fn purge(&self, batch: &Batch) -> Result<(), DriverError> {
        let requests = batch
            .video_ids
            .iter()
            .map(|id| self.request(id))
            .collect::<Result<Vec<_>, _>>()?;
        futures::stream::iter(requests)
            .map(|req| async move {
                check_answer(&self.name, self.client.execute(req).await).await?;
                Ok::<(), DriverError>(())
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// `url` without anything between `://` and `@` (credentials).
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::serve_once;
    use super::*;

    #[test]
    fn a_purge_is_purge_slash_with_the_surrogate_key() {
        let edge = HttpEdge::new("http://127.0.0.1:6081", reqwest::Client::new()).unwrap();
        assert_eq!(edge.target(), "http://127.0.0.1:6081/");
        let r = edge.request("v_abc-1").unwrap();
        assert_eq!(r.method().as_str(), "PURGE");
        assert_eq!(r.url().as_str(), "http://127.0.0.1:6081/");
        assert_eq!(r.headers()["surrogate-key"], "video-v_abc-1");
        assert!(r.body().is_none());
    }

    #[test]
    fn credentials_never_reach_the_name_or_errors() {
        let edge = HttpEdge::new(
            "https://purger:s3cret@edge.example/purge?x=1",
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(edge.target(), "https://edge.example/purge");
        assert!(!format!("{edge:?}").contains("s3cret"));
        let e = HttpEdge::new("ftp://u:s3cret@edge", reqwest::Client::new()).unwrap_err();
        assert!(!e.0.contains("s3cret"), "{e}");
        assert!(HttpEdge::new("not a url", reqwest::Client::new()).is_err());
    }

    #[tokio::test]
    async fn an_edge_acknowledges_with_2xx_and_refuses_otherwise() {
        let (base, got) = serve_once(200, "text/plain", "Purged".into()).await;
        let edge = HttpEdge::new(&base, reqwest::Client::new()).unwrap();
        let batch = Batch {
            video_ids: vec!["v_1".into()],
            reference: "r".into(),
        };
        edge.purge(&batch).await.unwrap();
        let got = got.await.unwrap();
        assert_eq!(got.request_line, "PURGE / HTTP/1.1");
        assert_eq!(got.header("surrogate-key"), Some("video-v_1"));

        let (base, _got) = serve_once(405, "text/plain", "not allowed".into()).await;
        let edge = HttpEdge::new(&base, reqwest::Client::new()).unwrap();
        let e = edge.purge(&batch).await.unwrap_err();
        assert!(e.0.contains("405") && e.0.contains("not allowed"), "{e}");
    }
}
