//! S3 (and S3-protocol services) through `aws-sdk-s3`.

use super::{
    check_key, ByteRange, ByteStream, CompletedPart, GetObject, ObjectMeta, ObjectStore, StoreError,
};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream as Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;

/// Size of the parts [`ObjectStore::put_stream`] uploads.
const STREAM_PART_SIZE: usize = 8 * 1024 * 1024;

/// An S3 bucket (optionally a prefix within it) as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

fn etag_of(e: Option<&str>) -> String {
    e.unwrap_or_default().trim_matches('"').to_owned()
}

/// Maps an SDK error: 404 → NotFound, anything else → S3 with context.
fn sdk_error<E>(key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + 'static,
{
    match err.raw_response().map(|r| r.status().as_u16()) {
        Some(404) => StoreError::NotFound(key.to_owned()),
        _ => StoreError::S3(format!("{key}: {}", DisplayErrorContext(&err))),
    }
}

impl S3Store {
    /// A store over `bucket` (keys under `prefix`, which may be empty),
    /// configured the SDK's way from the environment. With a custom
    /// endpoint (`AWS_ENDPOINT_URL`), addressing is path-style, which
    /// self-hosted S3 services expect.
    pub async fn from_env(bucket: &str, prefix: &str) -> Self {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        let custom = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if custom {
            conf = conf.force_path_style(true);
        }
        Self::with_client(Client::from_conf(conf.build()), bucket, prefix)
    }

    /// A store over an already configured client.
    pub fn with_client(client: Client, bucket: &str, prefix: &str) -> Self {
        S3Store {
            client,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// Creates the bucket if it does not exist (for development setups).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = DisplayErrorContext(&e).to_string();
                if text.contains("BucketAlreadyOwnedByYou") || text.contains("BucketAlreadyExists")
                {
                    Ok(())
                } else {
                    Err(StoreError::S3(format!(
                        "create bucket {}: {text}",
                        self.bucket
                    )))
                }
            }
        }
    }

    fn full(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }
}

/// Parses `bytes a-b/total`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError> {
        let full = self.full(key)?;
        let size = body.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_type(super::content_type_for(key))
            .body(Body::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: etag_of(out.e_tag()),
            last_modified: Utc::now(),
        })
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<ObjectMeta, StoreError> {
        self.full(key)?;
        let mut buf = BytesMut::with_capacity(STREAM_PART_SIZE);
        let mut upload: Option<String> = None;
        let mut parts = Vec::new();
        let mut total = 0u64;
        let result: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                while buf.len() >= STREAM_PART_SIZE {
                    let part = buf.split_to(STREAM_PART_SIZE).freeze();
                    let id = match &upload {
                        Some(id) => id.clone(),
                        None => {
                            let id = self.create_multipart(key).await?;
                            upload = Some(id.clone());
                            id
                        }
                    };
                    let n = parts.len() as i32 + 1;
                    parts.push(self.upload_part(key, &id, n, part).await?);
                }
            }
            Ok(())
        }
        .await;
        match (result, upload) {
            (Err(e), Some(id)) => {
                let _ = self.abort_multipart(key, &id).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => self.put(key, buf.freeze()).await,
            (Ok(()), Some(id)) => {
                if !buf.is_empty() {
                    let n = parts.len() as i32 + 1;
                    match self.upload_part(key, &id, n, buf.freeze()).await {
                        Ok(p) => parts.push(p),
                        Err(e) => {
                            let _ = self.abort_multipart(key, &id).await;
                            return Err(e);
                        }
                    }
                }
                let mut meta = self.complete_multipart(key, &id, &parts).await?;
                meta.size = total;
                Ok(meta)
            }
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, StoreError> {
        let full = self.full(key)?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some(r) = range {
            // Resolve against the size first: S3 services differ on
            // edge cases (suffix longer than the object, empty objects).
            let size = self.head(key).await?.size;
            let (a, b) = r
                .resolve(size)
                .ok_or(StoreError::RangeNotSatisfiable { size })?;
            req = req.range(format!("bytes={a}-{b}"));
        }
        let out = req.send().await.map_err(|e| sdk_error(key, e))?;
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let (first, last, size) = match out.content_range().and_then(parse_content_range) {
            Some(r) => r,
            None => (0, length.saturating_sub(1), length),
        };
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: etag_of(out.e_tag()),
            last_modified: to_chrono(out.last_modified()),
        };
        let reader = out.body.into_async_read();
        let body = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(|r| r.map_err(StoreError::from));
        Ok(GetObject {
            meta,
            range: (first, last),
            body: Box::pin(body),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let full = self.full(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: etag_of(out.e_tag()),
            last_modified: to_chrono(out.last_modified()),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match sdk_error(key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.contains("..") || prefix.starts_with('/') {
            return Err(StoreError::InvalidKey(prefix.to_owned()));
        }
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                out.push(ObjectMeta {
                    key: self.strip(k).to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: etag_of(o.e_tag()),
                    last_modified: to_chrono(o.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        let full = self.full(key)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .content_type(super::content_type_for(key))
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::S3(format!("{key}: no upload id")))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        let full = self.full(key)?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(Body::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        Ok(CompletedPart {
            part_number,
            etag: etag_of(out.e_tag()),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        let full = self.full(key)?;
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        S3Part::builder()
                            .part_number(p.part_number)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| match sdk_error(key, e) {
                StoreError::S3(m) => StoreError::InvalidPart(m),
                other => other,
            })?;
        self.head(key).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let full = self.full(key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match sdk_error(key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }

    /// The shared suite against a real S3-protocol server (`s3s-fs`,
    /// installed by `.ci/run`), started here on a free port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_store_passes_the_suite() {
        let server = crate::testing::S3Server::start().await;
        let store = S3Store::with_client(server.client(), "vodfarm-test", "tenant-a");
        store.ensure_bucket().await.unwrap();
        crate::store::suite::run(&store).await;
    }
}
