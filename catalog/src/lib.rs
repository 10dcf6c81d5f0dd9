//! The catalog: users, API tokens, channels, videos and their metadata.
//!
//! - the video vocabulary the api and origin share ([`VideoStatus`],
//!   [`Privacy`]);
//! - [`router`] (`routes.rs`): every route, over [`CatalogState`]
//!   (`state.rs`);
//! - [`accounts`]: sign-up and log-in (throttled); [`passwords`]: the
//!   password policy, hashing, and password changes; [`tokens`]: listing
//!   and revoking tokens (log-out); [`channels`]: channels and their
//!   video pages; [`videos`]: a video's metadata, playback URLs, edits
//!   and deletion; [`subtitles`]: a video's subtitle tracks (checked and
//!   converted by [`webvtt`], listed in the playlists by `manifests.rs`);
//!   [`webhooks`]: a creator's webhook endpoints, their deliveries and
//!   replays; `validate.rs`: the text checks they share;
//! - analytics routes: [`beacons`] (playback events → the event bus),
//!   [`likes`] (likes, subscriptions and the subscriptions feed),
//!   [`history`] (watch history, continue watching, erasure), [`related`]
//!   (related videos and recommendations); `cards.rs` the short video
//!   form they list and which videos a list may show.
//!
//! Dependencies inside the crate point one way: routes → handlers →
//! {state, validate}; no handler module imports another's routes.
//!
//! Uploads (initiate + tus) live in the coordinator crate, which ends them
//! by enqueuing jobs; `vodfarm api` serves both routers.

#![warn(missing_docs)]

pub mod accounts;
pub mod beacons;
mod cards;
pub mod channels;
pub mod history;
pub mod likes;
mod manifests;
pub mod passwords;
pub mod related;
mod routes;
mod state;
pub mod subtitles;
pub mod tokens;
mod validate;
pub mod videos;
pub mod webhooks;
pub mod webvtt;

pub use routes::router;
pub use state::{CatalogSettings, CatalogState};

use std::str::FromStr;

/// `videos.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoStatus {
    /// The upload has not finished.
    Uploading,
    /// Jobs are running.
    Processing,
    /// Every job completed: playable.
    Ready,
    /// A job failed for good (`processing_error` says why).
    Failed,
    /// Deleted: never served again.
    Deleted,
}

/// `videos.privacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Listed and playable by anyone.
    Public,
    /// Playable by anyone with the link, not listed.
    Unlisted,
    /// Owner only (signed origin URLs).
    Private,
}

/// A string that is not a known status or privacy level.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

macro_rules! str_enum {
    ($t:ty, $($v:ident => $s:literal),+) => {
        impl $t {
            /// The value stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl FromStr for $t {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($s => Ok(Self::$v),)+ other => Err(UnknownValue(other.to_owned())) }
            }
        }
    };
}

str_enum!(VideoStatus, Uploading => "uploading", Processing => "processing", Ready => "ready", Failed => "failed", Deleted => "deleted");
str_enum!(Privacy, Public => "public", Unlisted => "unlisted", Private => "private");

impl VideoStatus {
    /// Whether the origin may serve the video's playlists.
    pub fn is_playable(self) -> bool {
        self == VideoStatus::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["uploading", "processing", "ready", "failed", "deleted"] {
            assert_eq!(s.parse::<VideoStatus>().unwrap().as_str(), s);
        }
        for s in ["public", "unlisted", "private"] {
            assert_eq!(s.parse::<Privacy>().unwrap().as_str(), s);
        }
        assert!("gone".parse::<VideoStatus>().is_err());
        assert!(VideoStatus::Ready.is_playable());
        assert!(!VideoStatus::Deleted.is_playable());
    }
}
