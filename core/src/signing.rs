//! Signed, expiring playback tokens for private videos.
//!
//! The api issues a token to a private video's owner; the origin checks
//! it (`?token=`). Both share `VODFARM_SIGNING_SECRET`. A token is
//! `{expires_unix}.{base64url(HMAC-SHA256(secret, "{video_id}.{expires_unix}"))}`:
//! it names no user, only the video and the expiry it is valid for.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a playback token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `{expires}.{mac}`.
    #[error("malformed playback token")]
    Malformed,
    /// Its expiry has passed.
    #[error("playback token expired")]
    Expired,
    /// The MAC does not match (another video, a forged token, another secret).
    #[error("invalid playback token")]
    BadSignature,
}

fn mac(secret: &[u8], video_id: &str, expires_at: i64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(video_id.as_bytes());
    mac.update(b".");
    mac.update(expires_at.to_string().as_bytes());
    mac
}

/// A token for `video_id`, valid until `expires_at` (unix seconds).
pub fn sign_playback_token(secret: &[u8], video_id: &str, expires_at: i64) -> String {
    let tag = mac(secret, video_id, expires_at).finalize().into_bytes();
    format!("{expires_at}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks `token` for `video_id` at time `now_unix` (seconds).
pub fn verify_playback_token(
    secret: &[u8],
    video_id: &str,
    token: &str,
    now_unix: i64,
) -> Result<(), TokenError> {
    let (expires, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if expires.is_empty() || expires.len() > 12 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    // verify_slice compares in constant time.
    mac(secret, video_id, expires_at)
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if expires_at < now_unix {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_for_their_video_until_expiry() {
        let t = sign_playback_token(b"secret", "v_abc", 1000);
        assert_eq!(verify_playback_token(b"secret", "v_abc", &t, 999), Ok(()));
        assert_eq!(verify_playback_token(b"secret", "v_abc", &t, 1000), Ok(()));
        assert_eq!(
            verify_playback_token(b"secret", "v_abc", &t, 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_playback_token(b"secret", "v_abd", &t, 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_playback_token(b"other", "v_abc", &t, 999),
            Err(TokenError::BadSignature)
        );
        let forged = t.replacen("1000", "9999", 1);
        assert_eq!(
            verify_playback_token(b"secret", "v_abc", &forged, 999),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "abc", "1000", ".x", "10a.x", "1000.!!"] {
            assert_eq!(
                verify_playback_token(b"secret", "v_abc", bad, 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}
