//! Configuration helpers shared by every role's flags.

use std::time::Duration;

/// The database every role uses when `DATABASE_URL` is not set: the local
/// server's `vodfarm` database as the `postgres` user.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/vodfarm";

/// Parses a duration such as `250ms`, `5s`, `10m`, `1h`, `30d` or a bare
/// number of seconds (`30`). Used as a clap value parser.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 500ms, 5s, 10m)"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size, as flags give it: a bare number of bytes, binary
/// units (`KiB`, `MiB`, `GiB`, `TiB`, and their shorthands `k`, `m`, `g`,
/// `t`) or decimal ones (`kB`, `MB`, `GB`, `TB`). At most `i64::MAX`, so
/// every size fits the database's `BIGINT`. Used as a clap value parser.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (try 512MiB or 128GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// The deprecated name of the operator token's variable, still read when
/// `VODFARM_OPERATOR_TOKEN` is unset.
pub const DEPRECATED_OPERATOR_TOKEN_ENV: &str = "VODFARM_ADMIN_TOKEN";

/// Why there is no usable operator token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorTokenError {
    /// Neither the flag nor either variable is set.
    #[error("the operator token is required: set --operator-token or VODFARM_OPERATOR_TOKEN")]
    Missing,
    /// It equals the worker token.
    #[error(
        "the operator token must differ from the worker token \
         (workers parse untrusted media: their token opens only the worker routes)"
    )]
    SameAsWorker,
}

/// The operator token: `flag` (`--operator-token`, `--admin-token` or
/// `VODFARM_OPERATOR_TOKEN`, as clap read them), else the deprecated
/// `VODFARM_ADMIN_TOKEN` (with a warning). Never empty, never equal to
/// `worker_token`.
pub fn operator_token(
    flag: Option<&str>,
    worker_token: Option<&str>,
) -> Result<String, OperatorTokenError> {
    let token = match flag {
        Some(t) => t.to_owned(),
        None => {
            let t = std::env::var(DEPRECATED_OPERATOR_TOKEN_ENV)
                .map_err(|_| OperatorTokenError::Missing)?;
            tracing::warn!("VODFARM_ADMIN_TOKEN is deprecated: rename it VODFARM_OPERATOR_TOKEN");
            t
        }
    };
    if token.trim().is_empty() {
        return Err(OperatorTokenError::Missing);
    }
    if worker_token.is_some_and(|w| crate::ids::constant_time_eq(w.as_bytes(), token.as_bytes())) {
        return Err(OperatorTokenError::SameAsWorker);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn operator_tokens() {
        assert_eq!(operator_token(Some("op"), Some("w")), Ok("op".to_owned()));
        assert_eq!(
            operator_token(Some("same"), Some("same")),
            Err(OperatorTokenError::SameAsWorker)
        );
        assert_eq!(
            operator_token(Some(" "), None),
            Err(OperatorTokenError::Missing)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("5MiB"), Ok(5 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("128GiB"), Ok(128 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
