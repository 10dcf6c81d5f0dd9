//! Public identifiers and secrets.
//!
//! Rows have a `BIGSERIAL` primary key for joins, and a public id
//! (`videos.video_id`, `channels.channel_id`, `users.user_id`) that appears
//! in URLs. Public ids are random, so they reveal neither how many videos
//! exist nor when one was made, and cannot be guessed.

use rand::Rng;
use sha2::{Digest, Sha256};

/// The alphabet of public ids: URL-safe, no characters that need escaping.
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of the random part of a public id (11 × 6 bits = 66 bits).
const ID_RANDOM_LEN: usize = 11;

/// Longest public id the schema stores (`VARCHAR(50)`).
pub const MAX_PUBLIC_ID_LEN: usize = 50;

/// What a public id names; its prefix keeps ids of different kinds apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A video (`v_…`).
    Video,
    /// A channel (`c_…`).
    Channel,
    /// A user (`u_…`).
    User,
    /// A user token's public id (`t_…`; the secret is never shown again).
    Token,
    /// A webhook endpoint (`wh_…`).
    Webhook,
}

impl IdKind {
    fn prefix(self) -> &'static str {
        match self {
            IdKind::Video => "v_",
            IdKind::Channel => "c_",
            IdKind::User => "u_",
            IdKind::Token => "t_",
            IdKind::Webhook => "wh_",
        }
    }
}

/// Makes a new random public id of `kind`, e.g. `v_Qm3x-9ZbT0a`.
pub fn new_public_id(kind: IdKind) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(kind.prefix().len() + ID_RANDOM_LEN);
    id.push_str(kind.prefix());
    for _ in 0..ID_RANDOM_LEN {
        id.push(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char);
    }
    id
}

/// Whether `s` could be a public id: 1..=50 characters of the id alphabet.
///
/// Everything that puts an id into an object key or a SQL lookup checks
/// this first, so path tricks (`..`, `/`, `%2e`, NUL) never get that far.
pub fn is_valid_public_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PUBLIC_ID_LEN && s.bytes().all(|b| ID_ALPHABET.contains(&b))
}

/// A fresh 256-bit secret token, URL-safe (for API and upload tokens).
pub fn new_secret_token() -> String {
    let mut rng = rand::rng();
    (0..43)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// SHA-256 of a token, as stored in the database instead of the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two byte strings in time independent of where they differ, so
/// a bearer-token check leaks nothing through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_prefixed_valid_and_distinct() {
        let a = new_public_id(IdKind::Video);
        let b = new_public_id(IdKind::Video);
        assert!(a.starts_with("v_"));
        assert_eq!(a.len(), 13);
        assert!(is_valid_public_id(&a));
        assert_ne!(a, b);
        assert!(new_public_id(IdKind::Channel).starts_with("c_"));
    }

    #[test]
    fn path_tricks_are_not_ids() {
        for bad in ["", "..", "a/b", "a%2e", "a\0b", "a.b", &"x".repeat(51)] {
            assert!(!is_valid_public_id(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn secret_tokens_have_256_bits() {
        let t = new_secret_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, new_secret_token());
        assert_eq!(token_digest(&t), token_digest(&t));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
