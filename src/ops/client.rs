//! The coordinator's operator API as the CLI calls it.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// Where the coordinator is and how to prove we are its operator.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Base URL of the coordinator (or a load balancer in front of
    /// several).
    #[arg(
        long,
        env = "VODFARM_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub coordinator: String,
    /// The coordinator's operator token (its --operator-token).
    /// `--admin-token` and VODFARM_ADMIN_TOKEN still work but are
    /// deprecated.
    #[arg(
        long,
        alias = "admin-token",
        env = "VODFARM_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    pub operator_token: Option<String>,
    /// Print JSON (the API's answer) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client of the operator API.
#[derive(Debug)]
pub(crate) struct Operator {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Operator {
    pub(crate) fn new(args: &OperatorArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Operator {
            http,
            base: args.coordinator.trim_end_matches('/').to_owned(),
            token: vodfarm_core::config::operator_token(args.operator_token.as_deref(), None)?,
        })
    }

    /// `GET path`, decoded.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path).await
    }

    /// `POST path` with no body, decoded.
    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::POST, path).await
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    anyhow!(
                        "cannot reach the coordinator at {} ({e}); is it running? (set --coordinator or VODFARM_COORDINATOR_URL)",
                        self.base
                    )
                } else {
                    anyhow!("calling {url}: {e}")
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json::<T>()
                .await
                .with_context(|| format!("reading the coordinator's answer to {url}"));
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .or_else(|| body["message"].as_str())
            .unwrap_or("")
            .to_owned();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => anyhow!(
                "the coordinator refused the operator token ({message}); set --operator-token or VODFARM_OPERATOR_TOKEN to the coordinator's --operator-token"
            ),
            StatusCode::NOT_FOUND => anyhow!("not found: {message}"),
            _ => anyhow!("the coordinator answered {status}: {message}"),
        })
    }
}
