//! Accounts: sign-up (`POST /v1/users`) and log-in (`POST /v1/tokens`),
//! with argon2id password hashes.

use crate::state::CatalogState;
use crate::validate::unprocessable;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use vodfarm_core::auth::{db_error, issue_token};
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::{new_public_id, IdKind};

/// `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3..=50 of `A-Z a-z 0-9 _ . -`, unique ignoring case.
    pub username: String,
    /// Unique ignoring case.
    pub email: String,
    /// 8..=1024 characters.
    pub password: String,
}

/// A new account.
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    /// Public id.
    pub user_id: String,
    /// A user token (shown once).
    pub token: String,
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

async fn hash_password(password: String) -> Result<String, ApiError> {
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

async fn verify_password(password: String, phc: String) -> Result<bool, ApiError> {
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

pub(crate) async fn create_user(
    State(s): State<CatalogState>,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    if !valid_username(&req.username) {
        return Err(unprocessable(
            "username must be 3..=50 letters, digits, `_`, `.` or `-`",
        ));
    }
    if !valid_email(&req.email) {
        return Err(unprocessable("email is not an address"));
    }
    // Characters, as the document's minLength and maxLength count them.
    if !(8..=1024).contains(&req.password.chars().count()) {
        return Err(unprocessable("password must be 8..=1024 characters"));
    }
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
    let token = issue_token(&mut tx, id, Some("sign-up"))
        .await
        .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user_id, "user created");
    Ok((StatusCode::CREATED, ApiJson(CreatedUser { user_id, token })).into_response())
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
}

/// A PHC string of a throwaway password, verified when the account does
/// not exist so that a login takes as long either way.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1yJ4yW9ETDgWQzyg3WJLK4ytl2yZJTk6d8AVRmyZ9l0";

pub(crate) async fn create_token(
    State(s): State<CatalogState>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let login = req
        .username
        .or(req.email)
        .ok_or_else(|| unprocessable("username (or email) is required"))?;
    if login.chars().count() > 255 || login.contains('\0') || req.password.chars().count() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
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
            r.try_get::<i64, _>("id").map_err(|e| db_error(&e))?,
            r.try_get::<String, _>("user_id")
                .map_err(|e| db_error(&e))?,
            r.try_get::<String, _>("password_hash")
                .map_err(|e| db_error(&e))?,
        ),
        None => (0, String::new(), DUMMY_PHC.to_owned()),
    };
    let ok = verify_password(req.password, phc).await?;
    if !ok || row.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        ));
    }
    let mut conn = s.pool.acquire().await.map_err(|e| db_error(&e))?;
    let token = issue_token(&mut conn, id, Some("login"))
        .await
        .map_err(|e| db_error(&e))?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken { token, user_id }),
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
        assert!(PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
