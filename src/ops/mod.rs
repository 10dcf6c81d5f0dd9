//! The operator's command line: `vodfarm jobs`, `vodfarm workers` and
//! `vodfarm videos`, over the coordinator's operator API (the same routes
//! a dashboard or script would use), so running the farm needs neither
//! `curl` nor `psql`.
//!
//! - `client.rs`: the HTTP client, the operator token, and errors that
//!   say what to fix (wrong token, coordinator unreachable).
//! - `table.rs`: aligned columns for people; every command also has
//!   `--json` for scripts.
//! - `jobs.rs`, `workers.rs`, `videos.rs`: one command each.

mod client;
mod jobs;
mod table;
mod videos;
mod workers;

pub use client::OperatorArgs;
pub use jobs::run as run_jobs;
pub use jobs::{JobsArgs, JobsCommand};
pub use videos::run as run_videos;
pub use videos::{VideosArgs, VideosCommand};
pub use workers::run as run_workers;
pub use workers::WorkersArgs;
