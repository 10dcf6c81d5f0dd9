//! The `Vodfarm-Signature` header of webhook deliveries (the scheme
//! Stripe uses): `t={unix seconds},v1={hex HMAC-SHA256(secret,
//! "{t}.{body}")}`.
//!
//! The sender ([`sign`]) signs the exact body bytes it sends, with the
//! time of that attempt; a receiver ([`verify`]) recomputes the HMAC over
//! the raw body it received, compares in constant time, and refuses a
//! timestamp further than its tolerance from its clock (a captured
//! delivery cannot be replayed later). Several `v1=` entries may appear
//! (secret rotation); any one matching is enough.
//!
//! ```
//! use vodfarm_core::webhook_signature::{sign, verify, SignatureError};
//! let body = br#"{"id":"evt_1","type":"video.ready"}"#;
//! let header = sign(b"whsec_abc", 1_900_000_000, body);
//! assert_eq!(verify(b"whsec_abc", &header, body, 1_900_000_100, 300), Ok(()));
//! assert_eq!(
//!     verify(b"whsec_abc", &header, body, 1_900_001_000, 300),
//!     Err(SignatureError::TooOld)
//! );
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "Vodfarm-Signature";

/// How far from the receiver's clock a timestamp may be, by default
/// (seconds).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `t=` or no `v1=`, or a `t=` that is not a number.
    #[error("malformed Vodfarm-Signature header")]
    Malformed,
    /// The timestamp is outside the tolerance (a replay, or a clock far
    /// off).
    #[error("Vodfarm-Signature timestamp outside the tolerance")]
    TooOld,
    /// No `v1=` matches the body and secret.
    #[error("Vodfarm-Signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `header` against `body` at `now` (unix seconds), allowing
/// `tolerance_secs` of difference between the timestamp and `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => tags.push(unhex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::TooOld);
    }
    if tags
        .iter()
        .any(|tag| mac(secret, t, body).verify_slice(tag).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_stripe() {
        // HMAC-SHA256("secret", "1.{}"), computed independently
        // (`printf '1.{}' | openssl dgst -sha256 -hmac secret`).
        assert_eq!(
            sign(b"secret", 1, b"{}"),
            "t=1,v1=1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
        );
        let h = sign(b"k", 100, b"body");
        assert!(h.starts_with("t=100,v1="));
        assert_eq!(h.len(), "t=100,v1=".len() + 64);
    }

    #[test]
    fn verification_refuses_tampering_old_stamps_and_junk() {
        let h = sign(b"k", 1000, b"body");
        assert_eq!(verify(b"k", &h, b"body", 1000, 300), Ok(()));
        assert_eq!(verify(b"k", &h, b"body", 1299, 300), Ok(()));
        assert_eq!(
            verify(b"k", &h, b"body", 1301, 300),
            Err(SignatureError::TooOld)
        );
        assert_eq!(
            verify(b"k", &h, b"bodx", 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &h, b"body", 1000, 300),
            Err(SignatureError::Mismatch)
        );
        // A second v1 (rotation) may match.
        let rotated = format!("{h},v1={}", "00".repeat(32));
        assert_eq!(verify(b"k", &rotated, b"body", 1000, 300), Ok(()));
        for junk in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "t=1,v1=0"] {
            assert_eq!(
                verify(b"k", junk, b"body", 1, 300),
                Err(SignatureError::Malformed),
                "{junk}"
            );
        }
    }
}
