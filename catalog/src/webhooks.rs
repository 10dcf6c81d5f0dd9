//! A creator's webhooks: `POST|GET /v1/webhooks`, `GET|PATCH|DELETE
//! /v1/webhooks/{id}`, `GET /v1/webhooks/{id}/deliveries` and `POST
//! /v1/webhooks/{id}/deliveries/{delivery_id}/replay`.
//!
//! Events are written by triggers on `videos` (migration
//! `…000200_webhooks`) in the transaction of each change; `vodfarm
//! webhooks` sends them. Here the owner manages endpoints and sees what
//! was sent. URLs are checked against the SSRF rules
//! (`core::destination`) when registered or changed, after resolving
//! the name; the sender checks again at every connection.

use crate::state::CatalogState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::Row;
use vodfarm_core::auth::{db_error, require_user, AuthUser};
use vodfarm_core::destination::DestinationError;
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::ids::{is_valid_public_id, new_public_id, new_secret_token, IdKind};

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 5] = [
    "upload.completed",
    "video.ready",
    "video.failed",
    "video.deleted",
    "video.updated",
];

/// Most endpoints one user may have.
pub const MAX_WEBHOOKS_PER_USER: i64 = 20;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST events (`https`; `http` only where the api allows it).
    pub url: String,
    /// Event types to deliver (at least one of [`EVENT_TYPES`]).
    pub events: Vec<String>,
}

/// `PATCH /v1/webhooks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// A new URL (checked like a new endpoint's).
    #[serde(default)]
    pub url: Option<String>,
    /// A new set of event types.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `true` enables again (and forgets past failures), `false`
    /// pauses deliveries.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An endpoint as its owner sees it (never its secret).
#[derive(Debug, Serialize)]
pub struct WebhookView {
    /// Public id (`wh_…`).
    pub webhook_id: String,
    /// Where events go.
    pub url: String,
    /// Event types delivered.
    pub events: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why the sender disabled the endpoint, if it did.
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/webhooks`'s answer: the endpoint and its signing secret,
/// shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedWebhook {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The HMAC key of `Vodfarm-Signature` (`whsec_…`).
    pub secret: String,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<WebhookView>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// Public id (`dlv_…`).
    pub delivery_id: String,
    /// The event's id (`evt_…`): the same in every retry and replay.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// HTTP attempts made.
    pub attempts: i32,
    /// The last answer's status code (none after a network error).
    pub last_status_code: Option<i32>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a 2xx answer came.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The delivery this one replays.
    pub replay_of: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize)]
pub struct DeliveryQuery {
    /// Page size, 1..=100 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Only deliveries in this status.
    #[serde(default)]
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The columns of an endpoint a view needs (a macro, so statements are
/// `&'static str` built at compile time).
macro_rules! webhook_columns {
    () => {
        "id, webhook_id, url, events, enabled, disabled_reason, consecutive_failures,
         created_at, updated_at"
    };
}

fn webhook_from_row(r: &PgRow) -> Result<WebhookView, sqlx::Error> {
    Ok(WebhookView {
        webhook_id: r.try_get("webhook_id")?,
        url: r.try_get("url")?,
        events: r.try_get("events")?,
        enabled: r.try_get("enabled")?,
        disabled_reason: r.try_get("disabled_reason")?,
        consecutive_failures: r.try_get("consecutive_failures")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A delivery with its event (a macro, like `webhook_columns!`).
macro_rules! delivery_select {
    () => {
        "SELECT d.id, d.delivery_id, ev.event_id, ev.event_type, d.status,
        d.attempts, d.last_status_code, d.last_error, d.last_attempt_at,
        CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
        d.delivered_at, r.delivery_id AS replay_of, d.created_at
 FROM webhook_deliveries d
 JOIN webhook_events ev ON ev.id = d.event_id
 LEFT JOIN webhook_deliveries r ON r.id = d.replay_of"
    };
}

fn delivery_from_row(r: &PgRow) -> Result<DeliveryView, sqlx::Error> {
    Ok(DeliveryView {
        delivery_id: r.try_get("delivery_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_status_code: r.try_get("last_status_code")?,
        last_error: r.try_get("last_error")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
        replay_of: r.try_get("replay_of")?,
        created_at: r.try_get("created_at")?,
    })
}

fn no_such_webhook() -> ApiError {
    ApiError::not_found("no such webhook")
}

/// The events list, checked: 1..=5 known types, each once, sorted.
fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid_field(
            "events",
            "name at least one event type",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::invalid_field(
                "events",
                format!("unknown event type (known: {})", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// The URL, checked against the SSRF rules after resolving its host.
async fn check_url(s: &CatalogState, raw: &str) -> Result<String, ApiError> {
    let policy = s.settings.webhook_destinations;
    match policy.check_and_resolve(raw).await {
        Ok(url) => Ok(url.to_string()),
        Err(e @ DestinationError::Refused { .. }) => {
            tracing::info!(error = %e, "webhook URL refused");
            Err(ApiError::invalid_field("url", e.to_string()))
        }
        Err(e) => Err(ApiError::invalid_field("url", e.to_string())),
    }
}

fn secret() -> String {
    format!("whsec_{}", new_secret_token())
}

pub(crate) async fn create_webhook(
    State(s): State<CatalogState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let events = check_events(&req.events)?;
    let url = check_url(&s, &req.url).await?;
    let secret = secret();
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    // One user's creations serialize on their row, so the cap holds.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(&e))?;
    if count >= MAX_WEBHOOKS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_webhooks",
            format!("at most {MAX_WEBHOOKS_PER_USER} webhooks per account"),
        ));
    }
    let row = sqlx::query(concat!(
        "INSERT INTO webhook_endpoints (webhook_id, user_id, url, events, secret)
         VALUES ($1, $2, $3, $4, $5) RETURNING ",
        webhook_columns!()
    ))
    .bind(new_public_id(IdKind::Webhook))
    .bind(user.id)
    .bind(&url)
    .bind(&events)
    .bind(&secret)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    let webhook = webhook_from_row(&row).map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user.user_id, webhook_id = %webhook.webhook_id, "webhook created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedWebhook { webhook, secret }),
    )
        .into_response())
}

pub(crate) async fn list_webhooks(
    State(s): State<CatalogState>,
    headers: HeaderMap,
) -> Result<ApiJson<WebhookList>, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhook_endpoints WHERE user_id = $1 ORDER BY id"
    ))
    .bind(user.id)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let webhooks = rows
        .iter()
        .map(webhook_from_row)
        .collect::<Result<_, _>>()
        .map_err(|e| db_error(&e))?;
    Ok(ApiJson(WebhookList { webhooks }))
}

/// The caller's endpoint `webhook_id` (row id and view); someone else's
/// is "no such webhook".
async fn own_webhook(
    s: &CatalogState,
    user: &AuthUser,
    webhook_id: &str,
) -> Result<(i64, WebhookView), ApiError> {
    if !is_valid_public_id(webhook_id) {
        return Err(no_such_webhook());
    }
    let row = sqlx::query(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhook_endpoints WHERE webhook_id = $1 AND user_id = $2"
    ))
    .bind(webhook_id)
    .bind(user.id)
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error(&e))?
    .ok_or_else(no_such_webhook)?;
    let id: i64 = row.try_get("id").map_err(|e| db_error(&e))?;
    Ok((id, webhook_from_row(&row).map_err(|e| db_error(&e))?))
}

pub(crate) async fn get_webhook(
    State(s): State<CatalogState>,
    Path(webhook_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<WebhookView>, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    Ok(ApiJson(own_webhook(&s, &user, &webhook_id).await?.1))
}

pub(crate) async fn patch_webhook(
    State(s): State<CatalogState>,
    Path(webhook_id): Path<String>,
    headers: HeaderMap,
    ApiJson(p): ApiJson<WebhookPatch>,
) -> Result<ApiJson<WebhookView>, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let (id, _) = own_webhook(&s, &user, &webhook_id).await?;
    let events = match &p.events {
        Some(e) => Some(check_events(e)?),
        None => None,
    };
    let url = match &p.url {
        Some(u) => Some(check_url(&s, u).await?),
        None => None,
    };
    let row = sqlx::query(concat!(
        "UPDATE webhook_endpoints SET
            url = coalesce($2, url),
            events = coalesce($3, events),
            enabled = coalesce($4, enabled),
            disabled_reason = CASE WHEN $4 IS NULL THEN disabled_reason ELSE NULL END,
            consecutive_failures = CASE WHEN $4 THEN 0 ELSE consecutive_failures END,
            failing_since = CASE WHEN $4 THEN NULL ELSE failing_since END,
            updated_at = now()
         WHERE id = $1 RETURNING ",
        webhook_columns!()
    ))
    .bind(id)
    .bind(url)
    .bind(events)
    .bind(p.enabled)
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error(&e))?
    .ok_or_else(no_such_webhook)?;
    if p.enabled == Some(true) {
        // Wake the senders: deliveries held back while disabled are due.
        let _ = sqlx::query("SELECT pg_notify('vodfarm_webhooks', '')")
            .execute(&s.pool)
            .await;
    }
    tracing::info!(user_id = %user.user_id, webhook_id, "webhook updated");
    Ok(ApiJson(webhook_from_row(&row).map_err(|e| db_error(&e))?))
}

pub(crate) async fn delete_webhook(
    State(s): State<CatalogState>,
    Path(webhook_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let (id, _) = own_webhook(&s, &user, &webhook_id).await?;
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user.user_id, webhook_id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_deliveries(
    State(s): State<CatalogState>,
    Path(webhook_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<DeliveryPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user = require_user(&s.pool, &headers).await?;
    let (id, _) = own_webhook(&s, &user, &webhook_id).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=100"));
    }
    if let Some(st) = &q.status {
        if !["pending", "succeeded", "failed"].contains(&st.as_str()) {
            return Err(ApiError::bad_request(
                "status must be pending, succeeded or failed",
            ));
        }
    }
    let before: Option<i64> = match &q.cursor {
        None => None,
        Some(c) => {
            let row = if is_valid_public_id(c) {
                sqlx::query_scalar(
                    "SELECT id FROM webhook_deliveries WHERE delivery_id = $1 AND endpoint_id = $2",
                )
                .bind(c)
                .bind(id)
                .fetch_optional(&s.pool)
                .await
                .map_err(|e| db_error(&e))?
            } else {
                None
            };
            Some(row.ok_or_else(|| ApiError::bad_request("invalid cursor"))?)
        }
    };
    let rows = sqlx::query(concat!(
        delivery_select!(),
        " WHERE d.endpoint_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
           AND ($3::text IS NULL OR d.status = $3)
         ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(id)
    .bind(before)
    .bind(&q.status)
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| db_error(&e))?;
    let more = rows.len() as i64 > limit;
    let deliveries: Vec<DeliveryView> = rows
        .iter()
        .take(limit as usize)
        .map(delivery_from_row)
        .collect::<Result<_, _>>()
        .map_err(|e| db_error(&e))?;
    let next_cursor = if more {
        deliveries.last().map(|d| d.delivery_id.clone())
    } else {
        None
    };
    Ok(ApiJson(DeliveryPage {
        deliveries,
        next_cursor,
    }))
}

pub(crate) async fn replay_delivery(
    State(s): State<CatalogState>,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = require_user(&s.pool, &headers).await?;
    let (id, hook) = own_webhook(&s, &user, &webhook_id).await?;
    let not_found = || ApiError::not_found("no such delivery");
    if !is_valid_public_id(&delivery_id) {
        return Err(not_found());
    }
    if !hook.enabled {
        return Err(ApiError::conflict(
            "webhook_disabled",
            "the webhook is disabled: enable it (PATCH enabled: true) before replaying",
        ));
    }
    let mut tx = s.pool.begin().await.map_err(|e| db_error(&e))?;
    let new_id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, event_id, replay_of)
         SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), d.endpoint_id, d.event_id, d.id
         FROM webhook_deliveries d WHERE d.delivery_id = $1 AND d.endpoint_id = $2
         RETURNING id",
    )
    .bind(&delivery_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?
    .ok_or_else(not_found)?;
    sqlx::query("SELECT pg_notify('vodfarm_webhooks', '')")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    let row = sqlx::query(concat!(delivery_select!(), " WHERE d.id = $1"))
        .bind(new_id)
        .fetch_one(&s.pool)
        .await
        .map_err(|e| db_error(&e))?;
    tracing::info!(user_id = %user.user_id, webhook_id, delivery_id, "delivery replayed");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(delivery_from_row(&row).map_err(|e| db_error(&e))?),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_known_deduplicated_and_sorted() {
        let e = |v: &[&str]| check_events(&v.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_eq!(
            e(&["video.ready", "upload.completed", "video.ready"]).unwrap(),
            ["upload.completed", "video.ready"]
        );
        assert!(e(&[]).is_err());
        assert!(e(&["video.exploded"]).is_err());
        assert!(secret().starts_with("whsec_"));
    }
}
