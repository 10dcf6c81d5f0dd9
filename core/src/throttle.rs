//! Throttling of guesses at secrets (log-in passwords, the current
//! password of a password change, upload tokens) and of sign-ups, shared
//! by every api replica through PostgreSQL (`auth_throttle`).
//!
//! Failures are counted in buckets: one per account (`login:user:<id>`,
//! or `login:name:<login>` for a login that names no account, so unknown
//! and known accounts behave alike) and one per client address (IPv4, or
//! the /64 of IPv6). A bucket that spends its budget within the window is
//! blocked: every request it covers answers 429 with `Retry-After`, before
//! any secret is checked. Each block lasts twice the one before (from
//! `--auth-lockout` up to `--auth-max-lockout`); a bucket with no failure
//! for twice the longest block forgets its past. A successful log-in
//! resets its account's bucket (not the address's: an attacker's own
//! account must not reset the address they guess from).
//!
//! Why PostgreSQL rather than Redis: every api replica already shares it
//! (the throttle adds no service to deploy or to lose), a bucket's count
//! moves in one atomic upsert, and a failed log-in already costs an
//! argon2 hash, next to which the statement is cheap. A blocked client
//! costs one indexed read per request.
//!
//! Trade-off: an account's budget is shared by everyone, so a stranger
//! who knows a username can lock its owner out for a while; the address
//! budget stops one client from locking many accounts quickly.

use crate::http::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use prometheus::{IntCounterVec, Opts, Registry};
use sqlx::PgPool;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Flags of the throttle (flattened into `vodfarm api`'s).
#[derive(Debug, Clone, clap::Args)]
pub struct ThrottleArgs {
    /// Failed log-ins (or wrong current passwords) one account may see per
    /// --auth-throttle-window; the next attempts answer 429 until its
    /// lock ends.
    #[arg(long, env = "VODFARM_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_failures_per_account: u32,
    /// Failed guesses (log-ins, password changes, upload tokens) one
    /// client address may make per --auth-throttle-window.
    #[arg(long, env = "VODFARM_AUTH_FAILURES_PER_ADDRESS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failures_per_address: u32,
    /// Sign-ups one client address may make per --auth-throttle-window.
    #[arg(long, env = "VODFARM_SIGNUPS_PER_ADDRESS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub signups_per_address: u32,
    /// The window those budgets count over.
    #[arg(long, env = "VODFARM_AUTH_THROTTLE_WINDOW", default_value = "15m", value_parser = crate::config::parse_duration)]
    pub auth_throttle_window: Duration,
    /// The first lock once a budget is spent; each further lock of the
    /// same account or address doubles, up to --auth-max-lockout.
    #[arg(long, env = "VODFARM_AUTH_LOCKOUT", default_value = "15m", value_parser = crate::config::parse_duration)]
    pub auth_lockout: Duration,
    /// The longest lock.
    #[arg(long, env = "VODFARM_AUTH_MAX_LOCKOUT", default_value = "24h", value_parser = crate::config::parse_duration)]
    pub auth_max_lockout: Duration,
    /// The header a trusted reverse proxy puts the client's address in
    /// (`X-Forwarded-For`: its last address is used; `X-Real-IP`, …).
    /// Unset: the TCP peer's address. Set it only behind such a proxy,
    /// or clients choose the address they are counted under.
    #[arg(long, env = "VODFARM_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<HeaderName>,
}

/// What the throttle allows.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failures per account per window.
    pub account_failures: u32,
    /// Failures per client address per window.
    pub address_failures: u32,
    /// Sign-ups per client address per window.
    pub signups: u32,
    /// The counting window.
    pub window: Duration,
    /// The first lock.
    pub lockout: Duration,
    /// The longest lock.
    pub max_lockout: Duration,
    /// Where a trusted proxy puts the client's address.
    pub client_ip_header: Option<HeaderName>,
}

impl From<&ThrottleArgs> for ThrottleSettings {
    fn from(a: &ThrottleArgs) -> Self {
        ThrottleSettings {
            account_failures: a.login_failures_per_account,
            address_failures: a.auth_failures_per_address,
            signups: a.signups_per_address,
            window: a.auth_throttle_window,
            lockout: a.auth_lockout,
            max_lockout: a.auth_max_lockout.max(a.auth_lockout),
            client_ip_header: a.client_ip_header.clone(),
        }
    }
}

/// What a throttled request was doing (the metrics' `endpoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/tokens`.
    Login,
    /// `POST /v1/users`.
    Signup,
    /// `PUT /v1/me/password`.
    Password,
    /// The tus routes of one upload (upload token).
    Upload,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Login => "login",
            Endpoint::Signup => "signup",
            Endpoint::Password => "password",
            Endpoint::Upload => "upload",
        }
    }
}

/// One counter of failures with its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    key: String,
    budget: u32,
    scope: &'static str,
}

/// The client's address as the throttle counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(String);

impl ClientAddr {
    /// IPv4 as is; IPv6 by its /64 (one host has a whole /64).
    pub fn from_ip(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        ClientAddr(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        })
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The TCP peer of a request (set by [`crate::serve`]); `None` where a
/// router is called without that server (in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

#[derive(Debug, Clone)]
struct ThrottleMetrics {
    failures: IntCounterVec,
    refused: IntCounterVec,
    lockouts: IntCounterVec,
}

/// The throttle: cheap to clone, shared by the catalog and the uploads.
#[derive(Debug, Clone)]
pub struct Throttle {
    pool: PgPool,
    settings: Arc<ThrottleSettings>,
    metrics: ThrottleMetrics,
}

impl Throttle {
    /// A throttle over `pool`'s `auth_throttle`, its metrics registered in
    /// `registry`.
    pub fn new(
        pool: PgPool,
        settings: ThrottleSettings,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let metrics = ThrottleMetrics {
            failures: IntCounterVec::new(
                Opts::new(
                    "vodfarm_auth_failures_total",
                    "Failed guesses at a secret (sign-ups: every sign-up), by endpoint",
                ),
                &["endpoint"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "vodfarm_auth_throttled_total",
                    "Requests refused with 429 because their account or address is locked, by endpoint",
                ),
                &["endpoint"],
            )?,
            lockouts: IntCounterVec::new(
                Opts::new(
                    "vodfarm_auth_lockouts_total",
                    "Locks started because a budget was spent, by scope (account, address, signup)",
                ),
                &["scope"],
            )?,
        };
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.lockouts.clone()))?;
        for e in [
            Endpoint::Login,
            Endpoint::Signup,
            Endpoint::Password,
            Endpoint::Upload,
        ] {
            metrics.failures.with_label_values(&[e.as_str()]);
            metrics.refused.with_label_values(&[e.as_str()]);
        }
        for scope in ["account", "address", "signup"] {
            metrics.lockouts.with_label_values(&[scope]);
        }
        Ok(Throttle {
            pool,
            settings: Arc::new(settings),
            metrics,
        })
    }

    /// The client's address: from the trusted proxy's header when one is
    /// configured and present, else the TCP peer.
    pub fn client(&self, headers: &HeaderMap, peer: Peer) -> ClientAddr {
        let from_header = self
            .settings
            .client_ip_header
            .as_ref()
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(parse_ip);
        match (from_header, peer.0) {
            (Some(ip), _) => ClientAddr::from_ip(ip),
            (None, Some(p)) => ClientAddr::from_ip(p.ip()),
            (None, None) => ClientAddr("unknown".to_owned()),
        }
    }

    /// An account's log-in bucket: `user` is its row id, or `None` for a
    /// login that names no account (then the login text, lowercased).
    pub fn account(&self, user: Option<i64>, login: &str) -> Bucket {
        let key = match user {
            Some(id) => format!("login:user:{id}"),
            None => format!("login:name:{}", login.to_lowercase()),
        };
        Bucket {
            key,
            budget: self.settings.account_failures,
            scope: "account",
        }
    }

    /// A client address's bucket for failed guesses.
    pub fn address(&self, client: &ClientAddr) -> Bucket {
        Bucket {
            key: format!("guess:addr:{client}"),
            budget: self.settings.address_failures,
            scope: "address",
        }
    }

    /// A client address's bucket for sign-ups.
    pub fn signups(&self, client: &ClientAddr) -> Bucket {
        Bucket {
            key: format!("signup:addr:{client}"),
            budget: self.settings.signups,
            scope: "signup",
        }
    }

    /// 429 `too_many_attempts` with `Retry-After` if any of `buckets` is
    /// locked now.
    pub async fn check(&self, endpoint: Endpoint, buckets: &[&Bucket]) -> Result<(), ApiError> {
        let keys: Vec<&str> = buckets.iter().map(|b| b.key.as_str()).collect();
        let wait: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(blocked_until) - now())::float8 FROM auth_throttle
             WHERE bucket = ANY($1) AND blocked_until > now()",
        )
        .bind(&keys)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| crate::auth::db_error(&e))?;
        match wait {
            Some(secs) => {
                self.metrics
                    .refused
                    .with_label_values(&[endpoint.as_str()])
                    .inc();
                let secs = secs.ceil().max(1.0) as u64;
                tracing::info!(
                    endpoint = endpoint.as_str(),
                    retry_after = secs,
                    "refused: too many attempts"
                );
                Err(ApiError::too_many_attempts(secs))
            }
            None => Ok(()),
        }
    }

    /// Counts one failure (for sign-ups: one attempt) in each bucket; a
    /// bucket that reaches its budget is locked.
    pub async fn failed(&self, endpoint: Endpoint, buckets: &[&Bucket]) -> Result<(), ApiError> {
        self.metrics
            .failures
            .with_label_values(&[endpoint.as_str()])
            .inc();
        let s = &self.settings;
        for b in buckets {
            // Built from constant pieces only: no request value in the text.
            let locked: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(COUNT_SQL.as_str()))
                .bind(&b.key)
                .bind(i32::try_from(b.budget).unwrap_or(i32::MAX))
                .bind(s.window.as_secs_f64())
                .bind(s.lockout.as_secs_f64())
                .bind(s.max_lockout.as_secs_f64())
                .bind(self.forget_after().as_secs_f64())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| crate::auth::db_error(&e))?;
            if locked {
                self.metrics.lockouts.with_label_values(&[b.scope]).inc();
                tracing::warn!(
                    scope = b.scope,
                    endpoint = endpoint.as_str(),
                    "budget spent: locked"
                );
            }
        }
        Ok(())
    }

    /// A success: forgets `bucket`'s failures and past locks (a lock that
    /// began meanwhile stays).
    pub async fn succeeded(&self, bucket: &Bucket) -> Result<(), ApiError> {
        sqlx::query(
            "DELETE FROM auth_throttle WHERE bucket = $1
             AND (blocked_until IS NULL OR blocked_until <= now())",
        )
        .bind(&bucket.key)
        .execute(&self.pool)
        .await
        .map_err(|e| crate::auth::db_error(&e))?;
        Ok(())
    }

    /// Deletes buckets that have been quiet long enough to be forgotten;
    /// answers how many.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM auth_throttle
             WHERE last_failure_at < now() - make_interval(secs => $1)
               AND (blocked_until IS NULL OR blocked_until < now())",
        )
        .bind(self.forget_after().as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// A bucket with no failure for this long forgets its past locks.
    fn forget_after(&self) -> Duration {
        (self.settings.max_lockout * 2).max(self.settings.window)
    }
}

static COUNT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(count_sql);

/// The upsert that counts one failure: `$1` bucket, `$2` budget, `$3`
/// window, `$4` first lock, `$5` longest lock, `$6` forget-after
/// (seconds). Answers whether the bucket is locked now.
fn count_sql() -> String {
    let reset = "t.window_started_at <= now() - make_interval(secs => $3)";
    let failures = format!("(CASE WHEN {reset} THEN 1 ELSE t.failures + 1 END)");
    let lockouts = "(CASE WHEN t.last_failure_at <= now() - make_interval(secs => $6) \
                    THEN 0 ELSE t.lockouts END)";
    let hit = format!("{failures} >= $2");
    format!(
        "INSERT INTO auth_throttle AS t
             (bucket, failures, window_started_at, blocked_until, lockouts, last_failure_at)
         VALUES ($1, CASE WHEN $2 <= 1 THEN 0 ELSE 1 END, now(),
                 CASE WHEN $2 <= 1 THEN now() + make_interval(secs => $4) END,
                 CASE WHEN $2 <= 1 THEN 1 ELSE 0 END, now())
         ON CONFLICT (bucket) DO UPDATE SET
             failures = CASE WHEN {hit} THEN 0 ELSE {failures} END,
             window_started_at = CASE WHEN {hit} OR {reset} THEN now()
                                      ELSE t.window_started_at END,
             blocked_until = CASE WHEN {hit}
                 THEN now() + make_interval(secs => least($4 * power(2, least({lockouts}, 30)), $5))
                 ELSE t.blocked_until END,
             lockouts = CASE WHEN {hit} THEN {lockouts} + 1 ELSE {lockouts} END,
             last_failure_at = now()
         RETURNING coalesce(blocked_until > now(), false)"
    )
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]:5678`.
fn parse_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

impl ApiError {
    /// 429 `too_many_attempts` with `Retry-After: secs`.
    pub fn too_many_attempts(secs: u64) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed attempts; retry in {secs} seconds"),
        )
        .with_retry_after(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = |s: &str| ClientAddr::from_ip(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(a("203.0.113.7").0, "203.0.113.7");
        assert_eq!(a("::ffff:203.0.113.7").0, "203.0.113.7");
        assert_eq!(a("2001:db8:1:2:aaaa::1"), a("2001:db8:1:2:bbbb::9"));
        assert_eq!(a("2001:db8:1:2:aaaa::1").0, "2001:db8:1:2::/64");
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(
            parse_ip(" 198.51.100.1:443"),
            Some(IpAddr::from([198, 51, 100, 1]))
        );
        assert_eq!(
            parse_ip("[::1]:80"),
            Some("::1".parse().unwrap_or(IpAddr::from([0; 16])))
        );
        assert_eq!(parse_ip("unknown"), None);
    }
}
