//! CloudFront: a `CreateInvalidation` of each video's path prefixes
//! (`/v/{id}/*`, `/t/{id}/*`, `/s/{id}/*`) through the AWS SDK, with
//! credentials from the SDK's usual chain (environment, profile, IRSA,
//! instance role). CloudFront has no tags, and allows 15 wildcard paths
//! in progress per distribution: a batch holds 5 videos, and an
//! invalidation refused because too many are in progress is retried
//! with the outbox's backoff. The batch's `CallerReference` is stable
//! across retries of the same rows, so a retry after a lost answer does
//! not create a second invalidation.

use super::{path_prefixes, Batch, CdnDriver, DriverError};
use aws_sdk_cloudfront::error::DisplayErrorContext;
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};

/// Videos per invalidation: 3 wildcard paths each, 15 at most in flight.
const MAX_VIDEOS: usize = 5;

/// One CloudFront distribution.
#[derive(Debug)]
pub struct CloudFront {
    client: aws_sdk_cloudfront::Client,
    distribution_id: String,
    name: String,
}

impl CloudFront {
    /// Distribution `distribution_id`, through the SDK's default
    /// configuration (credentials never leave the SDK). `endpoint`
    /// overrides the API endpoint (tests, proxies); the generic
    /// `AWS_ENDPOINT_URL`, which may point at an S3-compatible store, is
    /// not used.
    pub async fn from_env(
        distribution_id: &str,
        endpoint: Option<&str>,
    ) -> Result<CloudFront, DriverError> {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut conf = aws_sdk_cloudfront::config::Builder::from(&shared);
        conf.set_endpoint_url(endpoint.map(str::to_owned));
        if shared.region().is_none() {
            // CloudFront is global; its API lives in us-east-1.
            conf.set_region(Some(aws_sdk_cloudfront::config::Region::from_static(
                "us-east-1",
            )));
        }
        Self::with_client(
            aws_sdk_cloudfront::Client::from_conf(conf.build()),
            distribution_id,
        )
    }

    /// Distribution `distribution_id` through an already configured client.
    pub fn with_client(
        client: aws_sdk_cloudfront::Client,
        distribution_id: &str,
    ) -> Result<CloudFront, DriverError> {
        if distribution_id.is_empty() || !distribution_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(DriverError(
                "CloudFront distribution id must be letters and digits".into(),
            ));
        }
        Ok(CloudFront {
            client,
            name: format!("cloudfront:{distribution_id}"),
            distribution_id: distribution_id.to_owned(),
        })
    }

    /// The invalidation batch for `batch`: every video's path prefixes
    /// with a trailing `*`, and the batch's reference.
    pub fn invalidation_batch(batch: &Batch) -> Result<InvalidationBatch, DriverError> {
        let items: Vec<String> = batch
            .video_ids
            .iter()
            .flat_map(|id| path_prefixes(id))
            .map(|p| format!("{p}*"))
            .collect();
        let paths = Paths::builder()
            .quantity(items.len() as i32)
            .set_items(Some(items))
            .build()
            .map_err(|e| DriverError(format!("CloudFront paths: {e}")))?;
        InvalidationBatch::builder()
            .paths(paths)
            .caller_reference(&batch.reference)
            .build()
            .map_err(|e| DriverError(format!("CloudFront batch: {e}")))
    }
}

#[async_trait::async_trait]
impl CdnDriver for CloudFront {
    fn target(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        MAX_VIDEOS
    }

    async fn purge(&self, batch: &Batch) -> Result<(), DriverError> {
        if batch.video_ids.is_empty() {
            return Ok(());
        }
        let out = self
            .client
            .create_invalidation()
            .distribution_id(&self.distribution_id)
            .invalidation_batch(Self::invalidation_batch(batch)?)
            .send()
            .await
            .map_err(|e| DriverError(format!("{}: {}", self.name, DisplayErrorContext(&e))))?;
        tracing::debug!(
            target = %self.name,
            invalidation = out
                .invalidation()
                .map(aws_sdk_cloudfront::types::Invalidation::id)
                .unwrap_or_default(),
            "CloudFront invalidation created"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::serve_once;
    use super::*;

    fn client(endpoint: &str) -> aws_sdk_cloudfront::Client {
        let creds = aws_sdk_cloudfront::config::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let conf = aws_sdk_cloudfront::Config::builder()
            .behavior_version(aws_sdk_cloudfront::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudfront::config::Region::from_static("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .build();
        aws_sdk_cloudfront::Client::from_conf(conf)
    }

    #[test]
    fn a_batch_invalidates_every_prefix_of_each_video() {
        let b = CloudFront::invalidation_batch(&Batch {
            video_ids: vec!["v_a".into(), "v_b".into()],
            reference: "vodfarm-0123abcd".into(),
        })
        .unwrap();
        assert_eq!(b.caller_reference(), "vodfarm-0123abcd");
        let paths = b.paths().unwrap();
        assert_eq!(paths.quantity(), 6);
        assert_eq!(
            paths.items(),
            ["/v/v_a/*", "/t/v_a/*", "/s/v_a/*", "/v/v_b/*", "/t/v_b/*", "/s/v_b/*"]
        );
    }

    #[tokio::test]
    async fn create_invalidation_is_the_documented_signed_xml_request() {
        // https://docs.aws.amazon.com/cloudfront/latest/APIReference/API_CreateInvalidation.html
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<Invalidation xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/"><Id>I2J0I21PCUYOIK</Id><Status>InProgress</Status><CreateTime>2026-01-01T00:00:00Z</CreateTime><InvalidationBatch><Paths><Quantity>3</Quantity><Items><Path>/v/v_a/*</Path><Path>/t/v_a/*</Path><Path>/s/v_a/*</Path></Items></Paths><CallerReference>vodfarm-ref</CallerReference></InvalidationBatch></Invalidation>"#;
        let (base, got) = serve_once(201, "text/xml", answer.into()).await;
        let cf = CloudFront::with_client(client(&base), "EDFDVBD6EXAMPLE").unwrap();
        assert_eq!(cf.target(), "cloudfront:EDFDVBD6EXAMPLE");
        cf.purge(&Batch {
            video_ids: vec!["v_a".into()],
            reference: "vodfarm-ref".into(),
        })
        .await
        .unwrap();
        let got = got.await.unwrap();
        assert_eq!(
            got.request_line,
            "POST /2020-05-31/distribution/EDFDVBD6EXAMPLE/invalidation HTTP/1.1"
        );
        assert!(got.header("authorization").is_some_and(|a| a
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && a.contains("/us-east-1/cloudfront/aws4_request")));
        let body = String::from_utf8(got.body).unwrap();
        let want = concat!(
            r#"<InvalidationBatch xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/">"#,
            "<Paths><Quantity>3</Quantity><Items>",
            "<Path>/v/v_a/*</Path><Path>/t/v_a/*</Path><Path>/s/v_a/*</Path>",
            "</Items></Paths><CallerReference>vodfarm-ref</CallerReference></InvalidationBatch>"
        );
        assert!(body.contains(want), "{body}");
        assert!(!body.contains("wJalrXUtnFEMI"));
    }

    #[tokio::test]
    async fn too_many_invalidations_is_an_error_to_retry() {
        let answer = r#"<?xml version="1.0"?><ErrorResponse xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/"><Error><Type>Sender</Type><Code>TooManyInvalidationsInProgress</Code><Message>Processing your request will cause you to exceed the maximum number of in-progress wildcard invalidations.</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        let (base, _got) = serve_once(400, "text/xml", answer.into()).await;
        let cf = CloudFront::with_client(client(&base), "EDFDVBD6EXAMPLE").unwrap();
        let e = cf
            .purge(&Batch {
                video_ids: vec!["v_a".into()],
                reference: "r".into(),
            })
            .await
            .unwrap_err();
        assert!(e.0.contains("TooManyInvalidationsInProgress"), "{e}");
    }
}
