//! Object storage: one trait, two implementations that pass one test
//! suite.
//!
//! - [`S3Store`]: any S3-protocol service through `aws-sdk-s3`
//!   (`VODFARM_STORE=s3://BUCKET`; endpoint, region and credentials from
//!   the SDK's own `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`; path-style addressing with a custom
//!   endpoint).
//! - [`LocalStore`]: a directory (`VODFARM_STORE=file:///abs/dir`), for
//!   `vodfarm dev` and single-machine setups.
//!
//! Reads and writes stream: a video is never held in memory whole.
//! Writes are atomic: a reader sees the old object or the new one, never
//! a partial one.

mod local;
mod s3;

pub use local::LocalStore;
pub use s3::S3Store;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use std::path::Path;
use std::sync::Arc;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object has this key (or the multipart upload is unknown).
    #[error("object not found: {0}")]
    NotFound(String),
    /// The key is empty, too long, or tries to leave the store.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The requested range lies outside the object.
    #[error("range not satisfiable (object is {size} bytes)")]
    RangeNotSatisfiable {
        /// The object's size.
        size: u64,
    },
    /// A multipart part was refused (too small, wrong number, …).
    #[error("invalid multipart upload: {0}")]
    InvalidPart(String),
    /// `VODFARM_STORE` could not be understood.
    #[error("store configuration: {0}")]
    Config(String),
    /// Local I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 service failed or refused.
    #[error("S3: {0}")]
    S3(String),
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: String,
    /// Total size in bytes.
    pub size: u64,
    /// A strong validator: changes whenever the content changes.
    pub etag: String,
    /// When it was written.
    pub last_modified: DateTime<Utc>,
}

/// A byte range of an HTTP `Range` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (both inclusive).
    Bounded(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive `(first, last)` byte positions within an object of
    /// `size` bytes, or `None` when unsatisfiable (RFC 9110 §14.1.2).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        match self {
            ByteRange::Bounded(a, b) if a <= b && a < size => Some((a, b.min(size - 1))),
            ByteRange::From(a) if a < size => Some((a, size - 1)),
            ByteRange::Suffix(n) if n > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        }
    }

    /// Parses a `Range` header value with one range (`bytes=0-99`,
    /// `bytes=100-`, `bytes=-50`). `None` for anything else, which HTTP
    /// servers answer by ignoring the header.
    pub fn parse_header(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        match (a.trim(), b.trim()) {
            ("", n) => num(n).map(ByteRange::Suffix),
            (a, "") => num(a).map(ByteRange::From),
            (a, b) => Some(ByteRange::Bounded(num(a)?, num(b)?)),
        }
    }
}

/// An object being read.
pub struct GetObject {
    /// The whole object's metadata (size is the full size, not the range's).
    pub meta: ObjectMeta,
    /// The inclusive byte range the body covers.
    pub range: (u64, u64),
    /// The bytes.
    pub body: ByteStream,
}

impl std::fmt::Debug for GetObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObject")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish()
    }
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: i32,
    /// The part's ETag as the store returned it.
    pub etag: String,
}

/// S3's smallest part but the last (5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// An object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes a small object in one request.
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError>;

    /// Writes an object of unknown size from a stream, in parts: memory
    /// stays bounded by one part whatever the object's size.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StoreError>;

    /// Writes a local file (streamed).
    async fn put_file(&self, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let file = tokio::fs::File::open(path).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        self.put_stream(
            key,
            Box::pin(futures::StreamExt::map(stream, |r| {
                r.map_err(StoreError::from)
            })),
        )
        .await
    }

    /// Reads an object, or a byte range of it.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, StoreError>;

    /// An object's metadata.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deletes every object under `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::InvalidKey(prefix.to_owned()));
        }
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&o.key).await?;
        }
        Ok(objects.len() as u64)
    }

    /// Starts a multipart upload; returns its id.
    async fn create_multipart(&self, key: &str) -> Result<String, StoreError>;

    /// Uploads part `part_number` (1-based). Every part but the last must
    /// be at least [`MIN_PART_SIZE`]. Re-uploading a part replaces it.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError>;

    /// Assembles the parts into the object.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError>;

    /// Abandons a multipart upload and frees its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;
}

/// A shared store.
pub type SharedStore = Arc<dyn ObjectStore>;

/// Opens the store a `VODFARM_STORE` URL names: `s3://BUCKET[/PREFIX]` or
/// `file:///absolute/dir`.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Config(format!("no bucket in {url:?}")));
        }
        Ok(Arc::new(S3Store::from_env(bucket, prefix).await))
    } else if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StoreError::Config(format!(
                "{url:?}: file:// needs an absolute path"
            )));
        }
        Ok(Arc::new(LocalStore::new(path).await?))
    } else {
        Err(StoreError::Config(format!(
            "{url:?}: use s3://BUCKET or file:///absolute/dir"
        )))
    }
}

/// Checks a key: 1..=1024 bytes, relative, no empty, `.` or `..`
/// segments, no backslash or control characters.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && !key.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

/// The `Content-Type` for a key, from its extension.
pub fn content_type_for(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or("") {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        // CMAF media segments (RFC 8216bis; the DASH-IF registration).
        "m4s" => "video/iso.segment",
        "mpd" => "application/dash+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "vtt" => "text/vtt; charset=utf-8",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// The part size for an upload of `total` bytes: at least 5 MiB, and
/// large enough that the whole file fits in 10,000 parts; every part but
/// the last has exactly this size (some S3 services refuse unequal parts).
pub fn part_size_for(total: u64) -> u64 {
    let needed = total.div_ceil(MAX_PARTS);
    // Round up to a whole MiB for tidy numbers.
    let mib = 1024 * 1024;
    needed.div_ceil(mib).saturating_mul(mib).max(MIN_PART_SIZE)
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_per_rfc_9110() {
        assert_eq!(ByteRange::Bounded(0, 99).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::Bounded(10, 19).resolve(50), Some((10, 19)));
        assert_eq!(ByteRange::Bounded(50, 60).resolve(50), None);
        assert_eq!(ByteRange::Bounded(5, 4).resolve(50), None);
        assert_eq!(ByteRange::From(49).resolve(50), Some((49, 49)));
        assert_eq!(ByteRange::From(50).resolve(50), None);
        assert_eq!(ByteRange::Suffix(10).resolve(50), Some((40, 49)));
        assert_eq!(ByteRange::Suffix(100).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::Suffix(0).resolve(50), None);
        assert_eq!(ByteRange::From(0).resolve(0), None);
    }

    #[test]
    fn range_headers_parse() {
        assert_eq!(
            ByteRange::parse_header("bytes=0-99"),
            Some(ByteRange::Bounded(0, 99))
        );
        assert_eq!(
            ByteRange::parse_header("bytes=100-"),
            Some(ByteRange::From(100))
        );
        assert_eq!(
            ByteRange::parse_header("bytes=-50"),
            Some(ByteRange::Suffix(50))
        );
        for bad in [
            "bytes=0-1,5-6",
            "bytes=a-b",
            "items=0-1",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert_eq!(ByteRange::parse_header(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_checked() {
        check_key("encoded/v_a/720p/segment_0.ts").unwrap();
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "..",
            &"x".repeat(1025),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn part_sizes_fit_10000_parts() {
        assert_eq!(part_size_for(1), MIN_PART_SIZE);
        assert_eq!(part_size_for(48 * 1024 * 1024 * 1024), MIN_PART_SIZE);
        let big = 200 * 1024 * 1024 * 1024u64;
        let p = part_size_for(big);
        assert!(big.div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % (1024 * 1024), 0);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type_for("encoded/v/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(
            content_type_for("encoded/v/720p/segment_1.ts"),
            "video/mp2t"
        );
        assert_eq!(content_type_for("thumbnails/v/sprite.jpg"), "image/jpeg");
        assert_eq!(content_type_for("x"), "application/octet-stream");
    }
}
