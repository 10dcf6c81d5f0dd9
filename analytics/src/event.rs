//! The playback event: one beacon of a player, validated and stamped by
//! the api, then carried by the bus to `vodfarm counts`.

use serde::{Deserialize, Serialize};

/// What happened in the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Playback started.
    Start,
    /// Playback goes on (sent periodically).
    Progress,
    /// Playback ended (end of the video, or the viewer left).
    End,
}

/// One event on the bus (JSON). `event_id` is the client's, so a retried
/// beacon carries the same ids and counts once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybackEvent {
    /// The client's id of the event (idempotency key).
    pub event_id: uuid::Uuid,
    /// The video's public id.
    pub video_id: String,
    /// The player's session (one viewing of one video).
    pub session_id: String,
    /// The signed-in viewer's public user id, if any.
    pub user_id: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// Where the player is, in seconds.
    pub position_seconds: f64,
    /// The session's cumulative watch time, in seconds.
    pub watched_seconds: f64,
    /// The client's clock (seconds since the Unix epoch).
    pub at: f64,
    /// When the api accepted the event (milliseconds since the epoch):
    /// the hour it counts in and the order of history writes.
    pub received_at_ms: i64,
    /// The video's duration when the api accepted the event (0: unknown).
    pub duration_seconds: i32,
}

/// The longest a view must be watched to count (seconds).
pub const VIEW_THRESHOLD_CAP_SECONDS: i64 = 30;

impl PlaybackEvent {
    /// Seconds of watching after which the session's view counts:
    /// min(30 s, half the duration); 30 s when the duration is unknown.
    pub fn view_threshold_seconds(&self) -> i64 {
        view_threshold_seconds(self.duration_seconds)
    }

    /// The start of the hour the event counts in (seconds since the epoch).
    pub fn hour_bucket(&self) -> i64 {
        let secs = self.received_at_ms.div_euclid(1000);
        secs - secs.rem_euclid(3600)
    }

    /// Whole seconds watched (never negative).
    pub fn watched_whole_seconds(&self) -> i64 {
        if self.watched_seconds.is_finite() && self.watched_seconds > 0.0 {
            self.watched_seconds.floor() as i64
        } else {
            0
        }
    }

    /// The viewer for unique-viewer counts: the user when signed in, the
    /// session otherwise.
    pub fn viewer_key(&self) -> String {
        match &self.user_id {
            Some(u) => format!("u:{u}"),
            None => format!("s:{}", self.session_id),
        }
    }
}

/// min(30 s, half of `duration_seconds`), at least 1 s; 30 s when the
/// duration is unknown (0).
pub fn view_threshold_seconds(duration_seconds: i32) -> i64 {
    if duration_seconds <= 0 {
        return VIEW_THRESHOLD_CAP_SECONDS;
    }
    (i64::from(duration_seconds) / 2).clamp(1, VIEW_THRESHOLD_CAP_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_rule() {
        assert_eq!(view_threshold_seconds(0), 30);
        assert_eq!(view_threshold_seconds(600), 30);
        assert_eq!(view_threshold_seconds(60), 30);
        assert_eq!(view_threshold_seconds(20), 10);
        assert_eq!(view_threshold_seconds(1), 1);
    }

    #[test]
    fn hours_are_utc_hour_starts() {
        let e = PlaybackEvent {
            event_id: uuid::Uuid::nil(),
            video_id: "v".into(),
            session_id: "s".into(),
            user_id: None,
            kind: EventKind::Start,
            position_seconds: 0.0,
            watched_seconds: 12.9,
            at: 0.0,
            received_at_ms: 7_200_000 + 3_599_999,
            duration_seconds: 0,
        };
        assert_eq!(e.hour_bucket(), 7200);
        assert_eq!(e.watched_whole_seconds(), 12);
        assert_eq!(e.viewer_key(), "s:s");
    }
}
