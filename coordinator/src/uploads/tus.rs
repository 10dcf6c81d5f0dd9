//! The tus 1.0 protocol's header vocabulary: parsing and formatting of
//! `Upload-Metadata`, `Upload-Checksum`, offsets, lengths and dates.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use vodfarm_core::http::ApiError;

/// The protocol version we speak.
pub const TUS_VERSION: &str = "1.0.0";
/// Extensions we implement (`Tus-Extension`).
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// Checksum algorithms we accept (`Tus-Checksum-Algorithm`).
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The only body type of PATCH (and of creation-with-upload).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// `Tus-Resumable`.
pub static TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
/// `Tus-Version`.
pub static TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
/// `Tus-Extension`.
pub static TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
/// `Tus-Max-Size`.
pub static TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
/// `Tus-Checksum-Algorithm`.
pub static TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
/// `Upload-Offset`.
pub static UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// `Upload-Length`.
pub static UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// `Upload-Defer-Length` (not supported: the part size needs the length).
pub static UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
/// `Upload-Metadata`.
pub static UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
/// `Upload-Checksum`.
pub static UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
/// `Upload-Expires`.
pub static UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
/// `Upload-Concat` (not supported).
pub static UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
/// `X-HTTP-Method-Override` (tus-js-client's `overridePatchMethod`).
pub static METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
/// vodfarm's answer on the final PATCH: the video's status (`processing`).
pub static VIDEO_STATUS: HeaderName = HeaderName::from_static("vodfarm-video-status");
/// vodfarm's answer on creation: the video's public id.
pub static VIDEO_ID: HeaderName = HeaderName::from_static("vodfarm-video-id");

/// 460 Checksum Mismatch (tus checksum extension).
pub fn checksum_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
        "checksum_mismatch",
        "the chunk's checksum does not match Upload-Checksum; it was discarded",
    )
}

/// 412 when the client does not speak tus 1.0.0.
pub fn check_resumable(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(&TUS_RESUMABLE).map(HeaderValue::as_bytes) {
        Some(TUS_VERSION_BYTES) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
            "this server speaks tus 1.0.0 (see Tus-Version)",
        )),
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_resumable_missing",
            "Tus-Resumable: 1.0.0 is required",
        )),
    }
}
const TUS_VERSION_BYTES: &[u8] = TUS_VERSION.as_bytes();

/// A non-negative integer header (`Upload-Offset`, `Upload-Length`):
/// `Ok(None)` when absent, 400 when not a plain decimal number.
pub fn u64_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "{name} must be a non-negative integer"
        )));
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is out of range")))
}

/// Whether the request's `Content-Type` is `application/offset+octet-stream`.
pub fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs
/// (the value may be absent). Keys are unique, ASCII, without spaces or
/// commas; values must be UTF-8 here (they become titles and filenames).
pub fn parse_metadata(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for pair in raw.split(',') {
        let pair = pair.trim();
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || key.len() > 100 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_request(format!(
                "Upload-Metadata: invalid key {key:?}"
            )));
        }
        let bytes = STANDARD.decode(value).map_err(|_| {
            ApiError::bad_request(format!("Upload-Metadata: value of {key} is not base64"))
        })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            ApiError::bad_request(format!("Upload-Metadata: value of {key} is not UTF-8"))
        })?;
        if value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "Upload-Metadata: value of {key} contains NUL"
            )));
        }
        if out.insert(key.to_owned(), value).is_some() {
            return Err(ApiError::bad_request(format!(
                "Upload-Metadata: key {key} repeated"
            )));
        }
    }
    Ok(out)
}

/// Formats metadata back into an `Upload-Metadata` value.
pub fn format_metadata(meta: &BTreeMap<String, String>) -> String {
    meta.iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k} {}", STANDARD.encode(v))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An `Upload-Checksum` to verify a request body against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha1` or `sha256`.
    pub algorithm: &'static str,
    /// The expected digest.
    pub expected: Vec<u8>,
}

/// A running digest of a body.
pub enum Hasher {
    /// SHA-1.
    Sha1(Sha1),
    /// SHA-256.
    Sha256(Sha256),
}

// By hand: the digest state is not worth printing, the algorithm is.
impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hasher::Sha1(_) => "Hasher::Sha1",
            Hasher::Sha256(_) => "Hasher::Sha256",
        })
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

impl Checksum {
    /// Parses `Upload-Checksum: <algorithm> <base64 digest>`: `Ok(None)`
    /// when absent; 400 for an unknown algorithm or a malformed digest.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
        let Some(v) = headers.get(&UPLOAD_CHECKSUM) else {
            return Ok(None);
        };
        let s = v.to_str().unwrap_or("").trim();
        let (alg, digest) = s
            .split_once(' ')
            .ok_or_else(|| ApiError::bad_request("Upload-Checksum: `<algorithm> <base64>`"))?;
        let (algorithm, len) = match alg.to_ascii_lowercase().as_str() {
            "sha1" => ("sha1", 20),
            "sha256" => ("sha256", 32),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "checksum_algorithm_unsupported",
                    format!("Upload-Checksum: unsupported algorithm {alg:?} (use sha1 or sha256)"),
                ))
            }
        };
        let expected = STANDARD
            .decode(digest.trim())
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| {
                ApiError::bad_request(format!("Upload-Checksum: not a base64 {algorithm} digest"))
            })?;
        Ok(Some(Checksum {
            algorithm,
            expected,
        }))
    }

    /// A fresh hasher for the algorithm.
    pub fn hasher(&self) -> Hasher {
        if self.algorithm == "sha1" {
            Hasher::Sha1(Sha1::new())
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate), as `Upload-Expires` wants it.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Puts a header whose value is known to be valid ASCII.
pub fn put(headers: &mut HeaderMap, name: &HeaderName, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let m = parse_metadata("filename ZmlsZS5tcDQ=,title SGVsbG8gd29ybGQ=,flag").unwrap();
        assert_eq!(m["filename"], "file.mp4");
        assert_eq!(m["title"], "Hello world");
        assert_eq!(m["flag"], "");
        assert_eq!(parse_metadata(&format_metadata(&m)).unwrap(), m);
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("title AA==").is_err(), "NUL");
    }

    #[test]
    fn checksums_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            &UPLOAD_CHECKSUM,
            HeaderValue::from_static("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
        );
        let c = Checksum::from_headers(&h).unwrap().unwrap();
        let mut hasher = c.hasher();
        hasher.update(b"hello world");
        assert_eq!(hasher.finish(), c.expected);
        h.insert(&UPLOAD_CHECKSUM, HeaderValue::from_static("md5 abc="));
        assert_eq!(
            Checksum::from_headers(&h).unwrap_err().code,
            "checksum_algorithm_unsupported"
        );
        h.insert(&UPLOAD_CHECKSUM, HeaderValue::from_static("sha256 YQ=="));
        assert!(Checksum::from_headers(&h).is_err());
    }

    #[test]
    fn integer_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(u64_header(&h, &UPLOAD_OFFSET).unwrap(), None);
        h.insert(&UPLOAD_OFFSET, HeaderValue::from_static("42"));
        assert_eq!(u64_header(&h, &UPLOAD_OFFSET).unwrap(), Some(42));
        for bad in ["-1", "1e3", "", "99999999999999999999", "+5"] {
            h.insert(&UPLOAD_OFFSET, HeaderValue::from_static(bad));
            assert!(u64_header(&h, &UPLOAD_OFFSET).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let t = DateTime::from_timestamp(784111777, 0).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
