//! Shared vocabulary of vodfarm: what every role agrees on.
//!
//! - [`auth`]: bearer user-token authentication (tokens stored hashed).
//! - [`backoff`]: retry delays (exponential, jittered, capped).
//! - [`ids`]: public identifiers (video, channel, user ids) and secrets.
//! - [`jobs`]: job types and states, and the worker ⇄ coordinator wire
//!   protocol (lease, heartbeat, complete, fail).
//! - [`layout`]: the object-key layout. Nothing else builds object keys.
//! - [`dash`]: the DASH MPD of a CMAF video.
//! - [`playlists`]: the renditions/subtitles sidecars and the HLS master
//!   and media playlists built from them (worker and api both write them).
//! - [`ladder`]: the rendition ladder (240p/720p/1080p by default).
//! - [`outbox_loop`]: the claim/sleep/LISTEN loop of every outbox
//!   consumer (purger, webhook sender, search indexer).
//! - [`outbox_role`]: the process of an outbox-sending role (loop,
//!   LISTEN, prune, /healthz /readyz /metrics).
//! - [`config`]: helpers for flags and env vars.
//! - [`http`]: the JSON error body every HTTP API answers with.
//! - [`serve`]: the HTTP server every role runs, with its limits on slow,
//!   idle and too many connections.
//! - [`signing`]: playback tokens for private videos (api issues, origin checks).
//! - [`store`]: the `ObjectStore` trait, S3 and local-directory stores.
//! - [`testing`]: a real S3-protocol server for tests and benches.
//! - [`text`]: what text people give us may hold (no controls, no bidi
//!   overrides).
//! - [`throttle`]: throttling of password and token guesses and of
//!   sign-ups, shared by every api replica (PostgreSQL).
//! - [`destination`]: where user-chosen URLs (webhooks) may point (SSRF
//!   rules, checked again after DNS resolution).
//! - [`webhook_signature`]: the `Vodfarm-Signature` header (sign, verify).
//! - [`telemetry`]: tracing setup and the Prometheus registry helpers.

#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod config;
pub mod dash;
pub mod destination;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod ladder;
pub mod layout;
pub mod outbox_loop;
pub mod outbox_role;
pub mod playlists;
pub mod serve;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod text;
pub mod throttle;
pub mod webhook_signature;
