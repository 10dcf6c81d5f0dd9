//! Cloudflare: `POST /zones/{zone_id}/purge_cache` with an API token
//! (`Authorization: Bearer …`, permission "Cache Purge"), by cache tag
//! (`{"tags": ["video-{id}", …]}`, the `Cache-Tag` the origin sends) or
//! by prefix (`{"prefixes": ["cdn.example.com/v/{id}/", …]}`: host and
//! path, no scheme). Up to 30 tags or prefixes per call; the answer is
//! JSON with `"success": true`.

use super::{check_answer, path_prefixes, surrogate_key, Batch, CdnDriver, DriverError};
use reqwest::Url;

/// Cloudflare's API.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";

/// Tags or prefixes Cloudflare takes per purge call.
const MAX_ITEMS: usize = 30;

/// What identifies a video's cached files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeBy {
    /// Its cache tag, `video-{id}`.
    Tags,
    /// Its URL prefixes on `host` (the hostname viewers use, maybe with a
    /// path prefix: `cdn.example.com` or `example.com/media`).
    Prefixes {
        /// Host (and optional path) without scheme.
        host: String,
    },
}

/// One Cloudflare zone.
pub struct Cloudflare {
    api: Url,
    zone_id: String,
    token: String,
    by: PurgeBy,
    name: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Cloudflare {
    // The API token is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("target", &self.name)
            .field("by", &self.by)
            .finish_non_exhaustive()
    }
}

impl Cloudflare {
    /// Zone `zone_id`, purged with API token `token`, through `api`
    /// ([`DEFAULT_API_URL`] unless testing or proxying).
    pub fn new(
        api: &str,
        zone_id: &str,
        token: &str,
        by: PurgeBy,
        client: reqwest::Client,
    ) -> Result<Cloudflare, DriverError> {
        let api = Url::parse(api).map_err(|e| DriverError(format!("Cloudflare API URL: {e}")))?;
        if zone_id.is_empty() || !zone_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DriverError(
                "Cloudflare zone id must be letters and digits".into(),
            ));
        }
        if token.is_empty() {
            return Err(DriverError("Cloudflare needs an API token".into()));
        }
        let by = match by {
            PurgeBy::Prefixes { host } => {
                let host = host
                    .trim()
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(DriverError(
                        "purging Cloudflare by prefix needs the viewers' host (--cloudflare-prefix-host)"
                            .into(),
                    ));
                }
                PurgeBy::Prefixes { host }
            }
            tags => tags,
        };
        Ok(Cloudflare {
            name: format!("cloudflare:{zone_id}"),
            api,
            zone_id: zone_id.to_owned(),
            token: token.to_owned(),
            by,
            client,
        })
    }

    /// The JSON body that purges `video_ids`.
    pub fn body(&self, video_ids: &[String]) -> serde_json::Value {
        match &self.by {
            PurgeBy::Tags => {
                let tags: Vec<String> = video_ids.iter().map(|id| surrogate_key(id)).collect();
                serde_json::json!({ "tags": tags })
            }
            PurgeBy::Prefixes { host } => {
                let prefixes: Vec<String> = video_ids
                    .iter()
                    .flat_map(|id| path_prefixes(id))
                    .map(|p| format!("{host}{p}"))
                    .collect();
                serde_json::json!({ "prefixes": prefixes })
            }
        }
    }

    /// The request that purges `video_ids` (at most [`CdnDriver::max_batch`]).
    pub fn request(&self, video_ids: &[String]) -> Result<reqwest::Request, DriverError> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .map_err(|()| DriverError("Cloudflare API URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["zones", &self.zone_id, "purge_cache"]);
        self.client
            .post(url)
            .bearer_auth(&self.token)
            .json(&self.body(video_ids))
            .build()
            .map_err(|e| DriverError(format!("{}: {e}", self.name)))
    }
}

#[async_trait::async_trait]
impl CdnDriver for Cloudflare {
    fn target(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        match self.by {
            PurgeBy::Tags => MAX_ITEMS,
            PurgeBy::Prefixes { .. } => MAX_ITEMS / 3,
        }
    }

    async fn purge(&self, batch: &Batch) -> Result<(), DriverError> {
        if batch.video_ids.is_empty() {
            return Ok(());
        }
        let req = self.request(&batch.video_ids)?;
        let body = check_answer(&self.name, self.client.execute(req).await).await?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| DriverError(format!("{}: answer is not JSON: {e}", self.name)))?;
        if answer["success"] == true {
            Ok(())
        } else {
            Err(DriverError(format!(
                "{}: not purged: {}",
                self.name,
                answer["errors"]
                    .to_string()
                    .chars()
                    .take(300)
                    .collect::<String>()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::serve_once;
    use super::*;

    const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn cf(api: &str, by: PurgeBy) -> Cloudflare {
        Cloudflare::new(api, ZONE, "cf-t0ken", by, reqwest::Client::new()).unwrap()
    }

    #[test]
    fn tags_are_the_origins_cache_tags() {
        // https://developers.cloudflare.com/api/resources/cache/methods/purge/
        let r = cf(DEFAULT_API_URL, PurgeBy::Tags)
            .request(&["v_a".into(), "v_b".into()])
            .unwrap();
        assert_eq!(r.method(), reqwest::Method::POST);
        assert_eq!(
            r.url().as_str(),
            format!("https://api.cloudflare.com/client/v4/zones/{ZONE}/purge_cache")
        );
        assert_eq!(r.headers()["authorization"], "Bearer cf-t0ken");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: serde_json::Value =
            serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"tags": ["video-v_a", "video-v_b"]})
        );
    }

    #[test]
    fn prefixes_are_host_and_path_without_scheme() {
        let c = cf(
            DEFAULT_API_URL,
            PurgeBy::Prefixes {
                host: "https://cdn.example.com/".into(),
            },
        );
        assert_eq!(c.max_batch(), 10);
        let r = c.request(&["v_a".into()]).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"prefixes": [
                "cdn.example.com/v/v_a/",
                "cdn.example.com/t/v_a/",
                "cdn.example.com/s/v_a/"
            ]})
        );
        assert!(Cloudflare::new(
            DEFAULT_API_URL,
            ZONE,
            "t",
            PurgeBy::Prefixes { host: " ".into() },
            reqwest::Client::new()
        )
        .is_err());
        assert!(!format!("{c:?}").contains("t0ken"));
    }

    #[tokio::test]
    async fn success_false_is_not_an_acknowledgement() {
        let batch = Batch {
            video_ids: vec!["v_1".into()],
            reference: "r".into(),
        };
        let (base, got) = serve_once(
            200,
            "application/json",
            r#"{"success":true,"errors":[],"messages":[],"result":{"id":"x"}}"#.into(),
        )
        .await;
        cf(&base, PurgeBy::Tags).purge(&batch).await.unwrap();
        let got = got.await.unwrap();
        assert_eq!(
            got.request_line,
            format!("POST /zones/{ZONE}/purge_cache HTTP/1.1")
        );
        assert_eq!(got.body, br#"{"tags":["video-v_1"]}"#);

        let (base, _got) = serve_once(
            200,
            "application/json",
            r#"{"success":false,"errors":[{"code":1134,"message":"rate limited"}]}"#.into(),
        )
        .await;
        let e = cf(&base, PurgeBy::Tags).purge(&batch).await.unwrap_err();
        assert!(e.0.contains("rate limited"), "{e}");
    }
}
