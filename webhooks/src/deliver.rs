//! One HTTP attempt: POST the event's exact body, signed, to the
//! endpoint, through a client that cannot be steered to a forbidden
//! address.
//!
//! - Every name is resolved by [`GuardedResolver`], which refuses the
//!   connection when any address is loopback, private, link-local,
//!   multicast or reserved (per [`DestinationPolicy`]); IP literals are
//!   checked before the request. The check is made on the addresses the
//!   connection uses, so a name that changes its answer after
//!   registration (DNS rebinding) gains nothing.
//! - Redirects are not followed (a 3xx is a failed attempt), proxies
//!   from the environment are not used (they would connect for us).
//! - The whole attempt has a timeout (10 s by default).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;
use std::time::Duration;
use vodfarm_core::destination::{DestinationError, DestinationPolicy};
use vodfarm_core::webhook_signature;

/// Resolves names for the client, refusing forbidden addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    policy: DestinationPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let addrs = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Anything else: an answer that is not 2xx (`status`), a network
    /// error, a timeout, or a refused destination.
    Failed {
        /// The answer's status, if one came.
        status: Option<u16>,
        /// What went wrong, in words.
        error: String,
        /// Whether the destination was refused by the SSRF rules.
        refused: bool,
    },
}

/// Sends deliveries.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: DestinationPolicy,
}

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("vodfarm-webhooks/", env!("CARGO_PKG_VERSION"));

impl Sender {
    /// A sender with `timeout` per attempt.
    pub fn new(policy: DestinationPolicy, timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .user_agent(USER_AGENT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Sender { client, policy })
    }

    /// POSTs `body` to `url`, signed with `secret` at the current time.
    pub async fn send(&self, url: &str, secret: &str, event_id: &str, body: &str) -> Attempt {
        // Scheme and IP literals (which never reach the resolver).
        if let Err(e) = self.policy.check_url(url) {
            return Attempt::Failed {
                status: None,
                error: format!("destination refused: {e}"),
                refused: true,
            };
        }
        let t = chrono::Utc::now().timestamp();
        let signature = webhook_signature::sign(secret.as_bytes(), t, body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(webhook_signature::HEADER, signature)
            .header("Vodfarm-Event-Id", event_id)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered {
                status: resp.status().as_u16(),
            },
            Ok(resp) => {
                let status = resp.status();
                let error = if status.is_redirection() {
                    format!("HTTP {status}: redirects are not followed")
                } else {
                    format!("HTTP {status}")
                };
                Attempt::Failed {
                    status: Some(status.as_u16()),
                    error,
                    refused: false,
                }
            }
            Err(e) => {
                let refused = chain(&e).any(<dyn std::error::Error>::is::<DestinationError>);
                Attempt::Failed {
                    status: None,
                    error: describe(&e.without_url()),
                    refused,
                }
            }
        }
    }
}

/// An error and its sources.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// A network error in words: each cause once, outermost first.
fn describe(e: &reqwest::Error) -> String {
    let prefix = if e.is_timeout() {
        "timed out: "
    } else if e.is_connect() {
        "cannot connect: "
    } else {
        ""
    };
    let mut parts: Vec<String> = Vec::new();
    for cause in chain(e) {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    format!("{prefix}{}", parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(a: &Attempt) -> (bool, &str) {
        match a {
            Attempt::Failed { refused, error, .. } => (*refused, error.as_str()),
            Attempt::Delivered { .. } => (false, "delivered"),
        }
    }

    #[tokio::test]
    async fn forbidden_destinations_are_refused_before_any_connection() {
        let strict = Sender::new(
            DestinationPolicy {
                allow_http: true,
                allow_private: false,
            },
            Duration::from_secs(2),
        )
        .unwrap();
        // An IP literal never reaches the resolver: checked up front.
        let a = strict
            .send(
                "http://169.254.169.254/latest/meta-data/",
                "k",
                "evt_1",
                "{}",
            )
            .await;
        let (refused, error) = failed(&a);
        assert!(refused && error.contains("link-local"), "{a:?}");
        // A name is refused by the resolver, on what it resolves to.
        let a = strict
            .send("http://localhost:9/hook", "k", "evt_1", "{}")
            .await;
        let (refused, error) = failed(&a);
        assert!(refused && error.contains("loopback"), "{a:?}");
        // Even with private addresses allowed, link-local stays refused.
        let dev = Sender::new(
            DestinationPolicy {
                allow_http: true,
                allow_private: true,
            },
            Duration::from_secs(2),
        )
        .unwrap();
        let a = dev.send("http://[fe80::1]:80/", "k", "evt_1", "{}").await;
        assert!(failed(&a).0, "{a:?}");
        // A port where nothing listens is a network error, not a refusal.
        let a = dev
            .send("http://127.0.0.1:9/hook", "k", "evt_1", "{}")
            .await;
        let (refused, error) = failed(&a);
        assert!(!refused && error.starts_with("cannot connect"), "{a:?}");
    }
}
