//! Passwords: the policy new ones must meet (NIST SP 800-63B), argon2id
//! hashing, and changing one (`PUT /v1/me/password`).
//!
//! Policy: at least 8 characters, up to 1024 (any characters, spaces
//! included, none composed or truncated), and not guessable: the
//! zxcvbn estimator (common passwords, dictionary words, names, keyboard
//! patterns, sequences, repeats, dates, and the account's own username
//! and email) must rate it at least 3 of 4 ("safely unguessable"). No
//! composition rules and no expiry, as the guideline advises.

use crate::state::CatalogState;
use crate::validate::unprocessable;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vodfarm_core::auth::{db_error, require_user};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::throttle::{Endpoint, Peer};

/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters of a password (NIST asks for at least 64).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// zxcvbn scores below this are refused.
const MIN_SCORE: u8 = 3;
/// zxcvbn looks at this many characters: its matching grows faster than
/// linearly, and a password whose first 100 characters are unguessable
/// is unguessable.
const SCORED_CHARS: usize = 100;

/// Checks a new password for the account `username`/`email`: 422 naming
/// `field` and saying why when it is too short, too long or guessable.
pub fn check_new_password(
    field: &str,
    password: &str,
    username: &str,
    email: &str,
) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(
            field,
            format!("the password must have at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(
            field,
            format!("the password must have at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let scored: String = password.chars().take(SCORED_CHARS).collect();
    let local = email.split('@').next().unwrap_or_default();
    let estimate = zxcvbn::zxcvbn(&scored, &[username, email, local, "vodfarm"]);
    if u8::from(estimate.score()) >= MIN_SCORE {
        return Ok(());
    }
    let mut why = String::from("the password is too easy to guess");
    if let Some(feedback) = estimate.feedback() {
        if let Some(w) = feedback.warning() {
            why.push_str(&format!(": {w}"));
        }
        let tips: Vec<String> = feedback
            .suggestions()
            .iter()
            .map(ToString::to_string)
            .collect();
        if !tips.is_empty() {
            why.push_str(&format!(" ({})", tips.join(" ")));
        }
    } else {
        why.push_str(": add more words or characters");
    }
    Err(ApiError::invalid_field(field, why))
}

/// An argon2id PHC string of `password`.
pub(crate) async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))
}

/// Whether `password` matches the PHC string `phc`.
pub(crate) async fn verify_password(password: String, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| ApiError::internal(&e))
}

/// `PUT /v1/me/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now.
    pub current_password: String,
    /// The new one (the same policy as sign-up).
    pub new_password: String,
}

/// Changes the caller's password. The current one is required (a stolen
/// token alone cannot take the account over), and a wrong one counts
/// against the account and the address like a failed log-in. Every other
/// token of the account is revoked; the one used here stays. 204.
pub(crate) async fn change_password(
    State(s): State<CatalogState>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let account = s.throttle.account(Some(user.id), "");
    let address = s.throttle.address(&s.throttle.client(&headers, peer));
    s.throttle
        .check(Endpoint::Password, &[&account, &address])
        .await?;
    let (username, email, phc): (String, String, String) =
        sqlx::query_as("SELECT username, email, password_hash FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&s.pool)
            .await
            .map_err(|e| db_error(&e))?;
    if req.current_password.chars().count() > MAX_PASSWORD_CHARS
        || !verify_password(req.current_password.clone(), phc).await?
    {
        s.throttle
            .failed(Endpoint::Password, &[&account, &address])
            .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "the current password is wrong",
        ));
    }
    check_new_password("new_password", &req.new_password, &username, &email)?;
    if req.new_password == req.current_password {
        return Err(unprocessable("the new password is the current one"));
    }
    let new_phc = hash_password(req.new_password).await?;
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(user.id)
        .bind(&new_phc)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?;
    let revoked = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
    )
    .bind(user.id)
    .bind(user.token)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?
    .rows_affected();
    tx.commit().await.map_err(|e| db_error(&e))?;
    s.throttle.succeeded(&account).await?;
    tracing::info!(user_id = %user.user_id, revoked, "password changed; other tokens revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &str) -> bool {
        check_new_password("password", p, "alice", "alice@example.com").is_err()
    }

    #[test]
    fn common_short_and_guessable_passwords_are_refused() {
        for weak in [
            "password",
            "12345678",
            "        ",
            "short",
            "qwertyuiop",
            "Password1!",
            "alice2024",
            "alice@example.com",
            "aaaaaaaaaaaa",
            "abcdefghijk",
            "iloveyou123",
        ] {
            assert!(refused(weak), "{weak:?} was accepted");
        }
    }

    /// `n` pseudo-random letters, digits and signs (deterministic).
    fn noise(n: usize) -> String {
        let alphabet: Vec<char> =
            "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%&*+-=?@"
                .chars()
                .collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn long_unusual_passwords_pass() {
        for strong in [
            "correct horse battery staple",
            "vL9#qT2!mZ8x",
            "purple-tractor-sings-at-noon",
            &noise(MAX_PASSWORD_CHARS),
        ] {
            assert!(!refused(strong), "{strong:?} was refused");
        }
        assert!(
            refused(&noise(MAX_PASSWORD_CHARS + 1)),
            "over 1024 characters"
        );
    }

    #[test]
    fn the_refusal_says_why() {
        let e = check_new_password("password", "password", "a", "b@c").expect_err("weak");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("password"));
        assert!(
            e.message.starts_with("the password is too easy to guess"),
            "{}",
            e.message
        );
        let e = check_new_password("password", "short", "a", "b@c").expect_err("short");
        assert!(e.message.contains("at least 8"), "{}", e.message);
    }
}
