//! The GPU worker: leases jobs from the coordinator and runs the media
//! pipeline on them.
//!
//! - [`client`]: the coordinator client (lease, heartbeat, complete, fail).
//! - [`media`]: the pipeline (probe, decode once, scale to every rung,
//!   encode, HLS packaging, thumbnails) with its stages behind traits.
//! - [`worker`]: the `vodfarm worker` role (lease loop, jobs, uploads,
//!   heartbeats, drain on SIGTERM, metrics).

#![warn(missing_docs)]

pub mod client;
pub mod media;
pub mod worker;

pub use client::{ClientError, CoordinatorClient};
