//! Playback tokens for private videos: the contract between the api
//! (which issues them to a video's owner) and the origin (which accepts
//! them as `?token=`).
//!
//! A token is `{expires_at}.{mac}`: `expires_at` in unix seconds (decimal),
//! `mac` the URL-safe, unpadded base64 of
//! HMAC-SHA256(secret, `"vodfarm-playback-v1\n{video_id}\n{expires_at}"`).
//! Only URL-safe characters appear, so a token goes into a query string
//! as it is. The secret is shared by the api and every origin tier
//! (`VODFARM_SIGNING_SECRET`). A token opens every file of one video
//! (playlists, segments, images, subtitles) until it expires.
//!
//! ```
//! use vodfarm_core::signing::{sign_playback_token, verify_playback_token, TokenError};
//! let t = sign_playback_token(b"secret", "v_abc", 2_000_000_000);
//! assert_eq!(verify_playback_token(b"secret", "v_abc", &t, 1_900_000_000), Ok(()));
//! assert_eq!(
//!     verify_playback_token(b"secret", "v_other", &t, 1_900_000_000),
//!     Err(TokenError::BadSignature)
//! );
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a playback token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `{expires}.{mac}`.
    #[error("malformed playback token")]
    Malformed,
    /// Its expiry has passed.
    #[error("playback token expired")]
    Expired,
    /// The MAC does not match (wrong video, wrong secret, or tampered).
    #[error("playback token signature mismatch")]
    BadSignature,
}

fn mac(secret: &[u8], video_id: &str, expires_at: i64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(b"vodfarm-playback-v1\n");
    m.update(video_id.as_bytes());
    m.update(b"\n");
    m.update(expires_at.to_string().as_bytes());
    m
}

/// A token that lets its bearer play `video_id` until `expires_at` (unix
/// seconds).
pub fn sign_playback_token(secret: &[u8], video_id: &str, expires_at: i64) -> String {
    let tag = mac(secret, video_id, expires_at).finalize().into_bytes();
    format!("{expires_at}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks a token for `video_id` at time `now_unix` (unix seconds). The
/// MAC comparison takes constant time.
pub fn verify_playback_token(
    secret: &[u8],
    video_id: &str,
    token: &str,
    now_unix: i64,
) -> Result<(), TokenError> {
    let (expires, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if expires.is_empty() || expires.len() > 18 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    if tag.len() != 43 {
        return Err(TokenError::Malformed);
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    mac(secret, video_id, expires_at)
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if now_unix > expires_at {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = sign_playback_token(b"k", "v_a", 100);
        assert!(t.starts_with("100."));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(verify_playback_token(b"k", "v_a", &t, 100), Ok(()));
        assert_eq!(
            verify_playback_token(b"k", "v_a", &t, 101),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_playback_token(b"other", "v_a", &t, 50),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_playback_token(b"k", "v_b", &t, 50),
            Err(TokenError::BadSignature)
        );
        // A later expiry with the old MAC is not accepted.
        let forged = t.replacen("100.", "999.", 1);
        assert_eq!(
            verify_playback_token(b"k", "v_a", &forged, 50),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            ".",
            "100",
            "x.abc",
            "100.abc",
            "-1.aaaa",
            &format!("{t}x"),
        ] {
            assert_eq!(
                verify_playback_token(b"k", "v_a", bad, 50),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }
}
