//! The GPU worker: leases jobs from the coordinator and runs the media
//! pipeline on them.
//!
//! - [`client`]: the coordinator client (lease, heartbeat, complete, fail).
//!
//! The media pipeline (probe, decode once, scale to every rung, encode,
//! HLS packaging, thumbnails) arrives with the worker role; GPU stages
//! come from `vodfarm-native`.

#![warn(missing_docs)]

pub mod client;

pub use client::{ClientError, CoordinatorClient};
