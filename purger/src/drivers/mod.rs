//! CDN drivers: how a batch of purges reaches one CDN.
//!
//! - [`http`]: `PURGE /` with `Surrogate-Key: video-{id}` to an edge URL
//!   (Varnish, nginx-based caches; `deploy/varnish/vodfarm.vcl`).
//! - [`fastly`]: Fastly's purge-by-surrogate-key API.
//! - [`cloudflare`]: Cloudflare's `purge_cache`, by cache tag or prefix.
//! - [`cloudfront`]: a CloudFront invalidation through the AWS SDK.
//!
//! Every driver names itself with a stable [`CdnDriver::target`] (the
//! acknowledgement key and the metrics label), which never holds a
//! credential, and builds its requests in a function the unit tests check
//! against the CDN's documented format.

pub mod cloudflare;
pub mod cloudfront;
pub mod fastly;
pub mod http;

use std::fmt::Debug;

/// The surrogate key (Fastly, Varnish) and cache tag (Cloudflare) of a
/// video: the `Surrogate-Key` / `Cache-Tag` value the origin sends.
pub fn surrogate_key(video_id: &str) -> String {
    format!("video-{video_id}")
}

/// The URL path prefixes under which the origin serves a video's files
/// (playlists and segments, thumbnails, subtitles).
pub fn path_prefixes(video_id: &str) -> [String; 3] {
    [
        format!("/v/{video_id}/"),
        format!("/t/{video_id}/"),
        format!("/s/{video_id}/"),
    ]
}

/// One call's worth of purges for one target.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The videos' public ids (valid ids, no duplicates).
    pub video_ids: Vec<String>,
    /// A name for this batch that is the same when the same rows are
    /// retried in the same round (CloudFront's `CallerReference`, so a
    /// retry after a lost answer does not start a second invalidation).
    pub reference: String,
}

/// Why a CDN did not acknowledge a purge. The text names the target and
/// what it answered, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

/// A CDN the purger sends purges to.
#[async_trait::async_trait]
pub trait CdnDriver: Send + Sync + Debug {
    /// Stable name of this target, e.g. `http://edge-1:6081/`,
    /// `fastly:SERVICE`, `cloudflare:ZONE`, `cloudfront:DISTRIBUTION`:
    /// the acknowledgement key (so keep it when the credentials rotate)
    /// and the `target` label of the metrics.
    fn target(&self) -> &str;

    /// Most videos one [`purge`](Self::purge) call takes.
    fn max_batch(&self) -> usize;

    /// Purges every file of each video; `Ok` once the CDN acknowledged.
    async fn purge(&self, batch: &Batch) -> Result<(), DriverError>;
}

/// Checks a CDN's HTTP answer: 2xx is an acknowledgement, anything else
/// an error that quotes the start of the body.
pub(crate) async fn check_answer(
    target: &str,
    answer: Result<reqwest::Response, reqwest::Error>,
) -> Result<String, DriverError> {
    let r = answer.map_err(|e| DriverError(format!("{target}: {}", without_url(&e))))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(DriverError(format!(
            "{target}: answered {status}: {}",
            body.chars().take(300).collect::<String>()
        )))
    }
}

/// A reqwest error's text without its URL (it may carry credentials in
/// its userinfo or query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// A one-connection HTTP server for the drivers' tests: it captures the
/// request it gets and answers with a canned status and body. Nothing
/// leaves the machine.
#[cfg(test)]
pub(crate) mod capture {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server received.
    #[derive(Debug)]
    pub(crate) struct Captured {
        /// `POST /path HTTP/1.1`.
        pub(crate) request_line: String,
        /// Lower-cased names.
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: Vec<u8>,
    }

    impl Captured {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Serves one request on a free loopback port; returns the base URL
    /// and the captured request (once answered).
    pub(crate) async fn serve_once(
        status: u16,
        content_type: &'static str,
        answer: String,
    ) -> (String, tokio::task::JoinHandle<Captured>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before the request ended");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = buf[head_end..].to_vec();
            while body.len() < len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before the body ended");
                body.extend_from_slice(&chunk[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            let _ = s.shutdown().await;
            Captured {
                request_line,
                headers,
                body,
            }
        });
        (base, task)
    }
}
