//! Fastly: purge by surrogate key (the origin's `Surrogate-Key:
//! video-{id}`, which Fastly indexes and strips before viewers see it).
//!
//! One key: `POST /service/{service_id}/purge/{key}`; several (up to 256):
//! `POST /service/{service_id}/purge` with `Surrogate-Key: k1 k2 …`. Both
//! authenticate with the `Fastly-Key` header and answer JSON. Purges are
//! hard purges: a deleted video must not be served stale.

use super::{check_answer, surrogate_key, Batch, CdnDriver, DriverError};
use reqwest::Url;

/// Fastly's API.
pub const DEFAULT_API_URL: &str = "https://api.fastly.com";

/// Keys Fastly takes in one multi-key purge.
const MAX_KEYS: usize = 256;

/// One Fastly service.
pub struct Fastly {
    api: Url,
    service_id: String,
    token: String,
    name: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Fastly {
    // The API token is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fastly")
            .field("target", &self.name)
            .finish_non_exhaustive()
    }
}

impl Fastly {
    /// The service `service_id`, purged with API token `token` through
    /// `api` ([`DEFAULT_API_URL`] unless testing or proxying).
    pub fn new(
        api: &str,
        service_id: &str,
        token: &str,
        client: reqwest::Client,
    ) -> Result<Fastly, DriverError> {
        let api = Url::parse(api).map_err(|e| DriverError(format!("Fastly API URL: {e}")))?;
        if service_id.is_empty() || !service_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DriverError(
                "Fastly service id must be letters and digits".into(),
            ));
        }
        if token.is_empty() {
            return Err(DriverError("Fastly needs an API token".into()));
        }
        Ok(Fastly {
            name: format!("fastly:{service_id}"),
            api,
            service_id: service_id.to_owned(),
            token: token.to_owned(),
            client,
        })
    }

    /// The request that purges `video_ids` (at most 256).
    pub fn request(&self, video_ids: &[String]) -> Result<reqwest::Request, DriverError> {
        let mut url = self.api.clone();
        let keys: Vec<String> = video_ids.iter().map(|id| surrogate_key(id)).collect();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| DriverError("Fastly API URL cannot be a base".into()))?;
            path.pop_if_empty()
                .extend(["service", &self.service_id, "purge"]);
            if let [key] = keys.as_slice() {
                path.push(key);
            }
        }
        let mut req = self
            .client
            .post(url)
            .header("Fastly-Key", &self.token)
            .header("Accept", "application/json");
        if keys.len() > 1 {
            req = req.header("Surrogate-Key", keys.join(" "));
        }
        req.build()
            .map_err(|e| DriverError(format!("{}: {e}", self.name)))
    }
}

#[async_trait::async_trait]
impl CdnDriver for Fastly {
    fn target(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        MAX_KEYS
    }

    async fn purge(&self, batch: &Batch) -> Result<(), DriverError> {
        if batch.video_ids.is_empty() {
            return Ok(());
        }
        let req = self.request(&batch.video_ids)?;
        check_answer(&self.name, self.client.execute(req).await).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::serve_once;
    use super::*;

    fn fastly(api: &str) -> Fastly {
        Fastly::new(
            api,
            "SU1Z0isxPaozGVKXdv0eY",
            "fastly-t0ken",
            reqwest::Client::new(),
        )
        .unwrap()
    }

    #[test]
    fn one_key_is_posted_to_its_own_path() {
        // https://www.fastly.com/documentation/reference/api/purging/#purge-tag
        let r = fastly(DEFAULT_API_URL).request(&["v_abc".into()]).unwrap();
        assert_eq!(r.method(), reqwest::Method::POST);
        assert_eq!(
            r.url().as_str(),
            "https://api.fastly.com/service/SU1Z0isxPaozGVKXdv0eY/purge/video-v_abc"
        );
        assert_eq!(r.headers()["fastly-key"], "fastly-t0ken");
        assert_eq!(r.headers()["accept"], "application/json");
        assert!(r.headers().get("surrogate-key").is_none());
        assert!(r.headers().get("fastly-soft-purge").is_none());
    }

    #[test]
    fn several_keys_go_in_one_surrogate_key_header() {
        // https://www.fastly.com/documentation/reference/api/purging/#bulk-purge-tag
        let r = fastly(DEFAULT_API_URL)
            .request(&["v_a".into(), "v_b".into()])
            .unwrap();
        assert_eq!(
            r.url().as_str(),
            "https://api.fastly.com/service/SU1Z0isxPaozGVKXdv0eY/purge"
        );
        assert_eq!(r.headers()["surrogate-key"], "video-v_a video-v_b");
        assert_eq!(r.headers()["fastly-key"], "fastly-t0ken");
    }

    #[test]
    fn bad_settings_are_refused_and_the_token_never_shows() {
        let c = reqwest::Client::new();
        assert!(Fastly::new(DEFAULT_API_URL, "a/b", "t", c.clone()).is_err());
        assert!(Fastly::new(DEFAULT_API_URL, "abc", "", c).is_err());
        let f = fastly(DEFAULT_API_URL);
        assert_eq!(f.target(), "fastly:SU1Z0isxPaozGVKXdv0eY");
        assert!(!format!("{f:?}").contains("t0ken"));
    }

    #[tokio::test]
    async fn the_answer_decides() {
        let (base, got) = serve_once(
            200,
            "application/json",
            r#"{"status":"ok","id":"108-1391560174-974124"}"#.into(),
        )
        .await;
        let batch = Batch {
            video_ids: vec!["v_1".into()],
            reference: "r".into(),
        };
        fastly(&base).purge(&batch).await.unwrap();
        let got = got.await.unwrap();
        assert_eq!(
            got.request_line,
            "POST /service/SU1Z0isxPaozGVKXdv0eY/purge/video-v_1 HTTP/1.1"
        );
        let (base, _got) = serve_once(
            401,
            "application/json",
            r#"{"msg":"Provided credentials are missing or invalid"}"#.into(),
        )
        .await;
        let e = fastly(&base).purge(&batch).await.unwrap_err();
        assert!(e.0.contains("401") && !e.0.contains("t0ken"), "{e}");
    }
}
