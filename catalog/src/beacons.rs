//! `POST /v1/videos/{video_id}/beacons`: the player's playback events.
//!
//! A batch of at most 100 events and 64 KiB, for a video the caller may
//! watch (unknown, deleted, non-ready and other people's private videos
//! are 404). Each event is checked (positions within the video, watch
//! time and client clock plausible), stamped with the viewer (user id
//! when a token came) and the api's clock, and appended to the event bus;
//! 202 once the bus holds them all. Event ids are the client's, so a
//! retried batch counts once (`vodfarm counts` deduplicates). Each
//! client address has a budget of requests per window, checked first
//! (429 `rate_limited` past it): a view counts once per session, and
//! session ids are the player's, so one address must not send sessions
//! without end.

use crate::state::CatalogState;
use crate::validate::unprocessable;
use crate::videos::visible_video;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vodfarm_analytics::event::{EventKind, PlaybackEvent};
use vodfarm_analytics::rate::Verdict;
use vodfarm_core::auth::optional_user;
use vodfarm_core::http::{ApiError, ApiJson};
use vodfarm_core::throttle::Peer;

/// Most events in one request.
pub const MAX_EVENTS: usize = 100;
/// Largest request body (bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest cumulative watch time of one session (seconds).
const MAX_WATCHED: f64 = 86_400.0;
/// How far the client's clock may be behind the api's (seconds).
const MAX_CLOCK_BEHIND: f64 = 86_400.0;
/// How far the client's clock may be ahead of the api's (seconds).
const MAX_CLOCK_AHEAD: f64 = 600.0;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconBatch {
    /// The player's session: 1..=64 of `A-Z a-z 0-9 _ -` (a UUID will do).
    pub session_id: String,
    /// 1..=100 events.
    pub events: Vec<Beacon>,
}

/// One event of the player.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// Chosen by the client (UUID): a retry sends the same id.
    pub event_id: uuid::Uuid,
    /// `start`, `progress` or `end`.
    pub kind: EventKind,
    /// Where the player is (seconds, 0..=duration).
    pub position_seconds: f64,
    /// The session's cumulative watch time (seconds).
    pub watched_seconds: f64,
    /// The client's clock, seconds since the Unix epoch.
    pub at: f64,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Events appended to the bus.
    pub accepted: usize,
}

fn valid_session(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 429 `rate_limited` with `Retry-After: secs`.
fn rate_limited(secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many beacon requests from this address; retry in {secs} seconds"),
    )
    .with_retry_after(secs)
}

/// Checks one event against the video's duration and the api's clock.
fn check(i: usize, b: &Beacon, duration: i32, now: f64) -> Result<(), ApiError> {
    let field = |name: &str| format!("events[{i}].{name}");
    // A little slack: players report the end a fraction past the last
    // frame; an unknown duration (0) allows up to a day.
    let max_position = if duration > 0 {
        f64::from(duration) + 5.0
    } else {
        MAX_WATCHED
    };
    if !(0.0..=max_position).contains(&b.position_seconds) {
        return Err(ApiError::invalid_field(
            &field("position_seconds"),
            format!("position_seconds must be 0..={max_position}"),
        ));
    }
    if !(0.0..=MAX_WATCHED).contains(&b.watched_seconds) {
        return Err(ApiError::invalid_field(
            &field("watched_seconds"),
            format!("watched_seconds must be 0..={MAX_WATCHED}"),
        ));
    }
    if !(now - MAX_CLOCK_BEHIND..=now + MAX_CLOCK_AHEAD).contains(&b.at) {
        return Err(ApiError::invalid_field(
            &field("at"),
            "at must be the client's clock in seconds since the Unix epoch, within a day of now",
        ));
    }
    Ok(())
}

/// `POST /v1/videos/{video_id}/beacons`.
pub async fn post_beacons(
    State(s): State<CatalogState>,
    Path(video_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<BeaconBatch>,
) -> Result<Response, ApiError> {
    let client = s.throttle.client(&headers, peer);
    if let Verdict::Refused { retry_after } = s.beacon_limit.take(&client.to_string()).await {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        tracing::info!(client = %client, retry_after = secs, "beacons refused: budget spent");
        return Err(rate_limited(secs));
    }
    let viewer = optional_user(&s.pool, &headers).await?;
    let v = visible_video(&s, &video_id, viewer.as_ref()).await?;
    if v.view.status != "ready" {
        return Err(ApiError::not_found("no such video"));
    }
    if !valid_session(&batch.session_id) {
        return Err(ApiError::invalid_field(
            "session_id",
            "session_id must be 1..=64 letters, digits, _ or -",
        ));
    }
    if batch.events.is_empty() || batch.events.len() > MAX_EVENTS {
        return Err(unprocessable(format!("send 1..={MAX_EVENTS} events")));
    }
    let now = chrono::Utc::now();
    let now_s = now.timestamp_millis() as f64 / 1000.0;
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, b) in batch.events.iter().enumerate() {
        check(i, b, v.view.duration_seconds, now_s)?;
        events.push(PlaybackEvent {
            event_id: b.event_id,
            video_id: v.view.video_id.clone(),
            session_id: batch.session_id.clone(),
            user_id: viewer.as_ref().map(|u| u.user_id.clone()),
            kind: b.kind,
            position_seconds: b.position_seconds,
            watched_seconds: b.watched_seconds,
            at: b.at,
            received_at_ms: now.timestamp_millis(),
            duration_seconds: v.view.duration_seconds,
        });
    }
    s.analytics.bus.publish(&events).await.map_err(|e| {
        tracing::warn!(video_id = %video_id, error = %e, "event bus unavailable");
        ApiError::unavailable("the event bus is unavailable, retry shortly")
    })?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Accepted {
            accepted: events.len(),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(position: f64, watched: f64, at: f64) -> Beacon {
        Beacon {
            event_id: uuid::Uuid::nil(),
            kind: EventKind::Progress,
            position_seconds: position,
            watched_seconds: watched,
            at,
        }
    }

    #[test]
    fn absurd_values_are_refused() {
        let now = 1_800_000_000.0;
        assert!(check(0, &beacon(10.0, 10.0, now), 60, now).is_ok());
        assert!(check(0, &beacon(64.0, 10.0, now), 60, now).is_ok());
        assert!(check(0, &beacon(70.0, 10.0, now), 60, now).is_err());
        assert!(check(0, &beacon(-1.0, 10.0, now), 60, now).is_err());
        assert!(check(0, &beacon(1.0, 1e9, now), 60, now).is_err());
        assert!(check(0, &beacon(1.0, 1.0, now + 3600.0), 60, now).is_err());
        assert!(check(0, &beacon(1.0, 1.0, 0.0), 60, now).is_err());
        assert!(valid_session("0b4f-uuid_like"));
        assert!(!valid_session(""));
        assert!(!valid_session("a b"));
    }
}
