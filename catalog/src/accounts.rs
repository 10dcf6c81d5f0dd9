//! Accounts: sign-up (`POST /v1/users`) and log-in (`POST /v1/tokens`),
//! both throttled (`core::throttle`): failed log-ins per account and per
//! client address, sign-ups per address.

use crate::passwords::{check_new_password, hash_password, verify_password, MAX_PASSWORD_CHARS};
use crate::state::CatalogState;
use crate::validate::unprocessable;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use vodfarm_core::auth::{db_error, issue_token};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::{new_public_id, IdKind};
use vodfarm_core::throttle::{Endpoint, Peer};

/// `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3..=50 of `A-Z a-z 0-9 _ . -`, unique ignoring case.
    pub username: String,
    /// Unique ignoring case.
    pub email: String,
    /// 8..=1024 characters, not guessable (`passwords.rs`).
    pub password: String,
}

/// A new account.
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    /// Public id.
    pub user_id: String,
    /// A user token (shown once).
    pub token: String,
    /// The token's public id.
    pub token_id: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

fn valid_username(s: &str) -> bool {
    (3..=50).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// At most 255 characters (as the column holds, and the document says),
/// something before and after the first `@`, no spaces or controls.
fn valid_email(s: &str) -> bool {
    s.chars().count() <= 255
        && s.find('@').is_some_and(|at| at > 0 && at + 1 < s.len())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(crate) async fn create_user(
    State(s): State<CatalogState>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let signups = s.throttle.signups(&s.throttle.client(&headers, peer));
    s.throttle.check(Endpoint::Signup, &[&signups]).await?;
    if !valid_username(&req.username) {
        return Err(ApiError::invalid_field(
            "username",
            "username must be 3..=50 letters, digits, `_`, `.` or `-`",
        ));
    }
    if !valid_email(&req.email) {
        return Err(ApiError::invalid_field("email", "email is not an address"));
    }
    check_new_password("password", &req.password, &req.username, &req.email)?;
    // Every well-formed sign-up counts against the address: each one
    // either makes an account or says a name or email is taken.
    s.throttle.failed(Endpoint::Signup, &[&signups]).await?;
    let phc = hash_password(req.password).await?;
    let user_id = new_public_id(IdKind::User);
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (user_id, email, username, password_hash) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(&user_id)
    .bind(&req.email)
    .bind(&req.username)
    .bind(&phc)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("idx_users_username") => {
            ApiError::conflict("username_taken", "that username is taken")
        }
        sqlx::Error::Database(d) if d.constraint() == Some("idx_users_email") => {
            ApiError::conflict("email_taken", "an account with that email exists")
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
            unprocessable("username or email is not acceptable")
        }
        _ => db_error(&e),
    })?;
    let issued = issue_token(&mut tx, id, Some("sign-up"), s.settings.token_ttl)
        .await
        .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user_id, "user created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedUser {
            user_id,
            token: issued.token,
            token_id: issued.token_id,
            expires_at: issued.expires_at,
        }),
    )
        .into_response())
}

/// `POST /v1/tokens`: log in with a username (or email) and password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Username or email.
    #[serde(default)]
    pub username: Option<String>,
    /// Email (instead of `username`).
    #[serde(default)]
    pub email: Option<String>,
    /// Password.
    pub password: String,
}

/// A new user token.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    /// The token (shown once).
    pub token: String,
    /// Its owner's public id.
    pub user_id: String,
    /// The token's public id (to list or revoke it).
    pub token_id: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A PHC string of a throwaway password, verified when the account does
/// not exist so that a login takes as long either way.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1yJ4yW9ETDgWQzyg3WJLK4ytl2yZJTk6d8AVRmyZ9l0";

/// The answer to every failed log-in: the same whether the account
/// exists or not.
fn wrong_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

pub(crate) async fn create_token(
    State(s): State<CatalogState>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let login = req
        .username
        .or(req.email)
        .ok_or_else(|| unprocessable("username (or email) is required"))?;
    let address = s.throttle.address(&s.throttle.client(&headers, peer));
    if login.chars().count() > 255
        || login.contains('\0')
        || req.password.chars().count() > MAX_PASSWORD_CHARS
    {
        // Cannot match an account: checked against the address only.
        s.throttle.check(Endpoint::Login, &[&address]).await?;
        s.throttle.failed(Endpoint::Login, &[&address]).await?;
        return Err(wrong_credentials());
    }
    let row = sqlx::query(
        "SELECT id, user_id, password_hash FROM users
         WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1",
    )
    .bind(&login)
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let (id, user_id, phc) = match &row {
        Some(r) => (
            Some(r.try_get::<i64, _>("id").map_err(|e| db_error(&e))?),
            r.try_get::<String, _>("user_id")
                .map_err(|e| db_error(&e))?,
            r.try_get::<String, _>("password_hash")
                .map_err(|e| db_error(&e))?,
        ),
        None => (None, String::new(), DUMMY_PHC.to_owned()),
    };
    // Known and unknown logins both have an account bucket, so the
    // throttle's answers do not tell them apart either.
    let account = s.throttle.account(id, &login);
    s.throttle
        .check(Endpoint::Login, &[&account, &address])
        .await?;
    let ok = verify_password(req.password, phc).await?;
    let Some(id) = id.filter(|_| ok) else {
        s.throttle
            .failed(Endpoint::Login, &[&account, &address])
            .await?;
        return Err(wrong_credentials());
    };
    s.throttle.succeeded(&account).await?;
    let mut conn = s.pool.acquire().await.map_err(|e| db_error(&e))?;
    let issued = issue_token(&mut conn, id, Some("login"), s.settings.token_ttl)
        .await
        .map_err(|e| db_error(&e))?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            token: issued.token,
            user_id,
            token_id: issued.token_id,
            expires_at: issued.expires_at,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_emails() {
        assert!(valid_username("alice_01"));
        assert!(!valid_username("al"));
        assert!(!valid_username("al ice"));
        assert!(valid_email("a@b"));
        assert!(!valid_email("@b"));
        assert!(!valid_email("a@"));
        assert!(!valid_email("a b@c"));
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
