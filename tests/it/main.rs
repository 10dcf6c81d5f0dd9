//! vodfarm's integration tests: one test binary, so the workspace links
//! once (eight binaries each linked everything, minutes per run on two
//! cores). Each module starts real `vodfarm` processes against real
//! servers; the support modules start them.
//!
//! - `queue`: the leased job queue over two coordinator replicas.
//! - `api`, `uploads`: the creator API, tus with tuspy, schemathesis.
//! - `worker`: source shapes and bad uploads through real workers.
//! - `origin`: every HTTP rule of the origin/shield.
//! - `downloads`: MP4 downloads made by a real worker, served with Range.
//! - `e2e`: every role its own process on s3s-fs.
//! - `dev`: `vodfarm dev` and the page in headless chromium.
//! - `edge`: Varnish in front of the tiers; CDN purges; streaming
//!   through a database outage.
//! - `search`: search on PostgreSQL (and Elasticsearch when configured):
//!   relevance, typos, accents, the outbox under kills, bad input.
//! - `ops`: the operator CLI (`vodfarm jobs`, `workers`, `videos`).
//! - `metrics`: every role's `/metrics` through `promtool check metrics`.
//! - `security`: throttling, passwords, tokens, the operator token, slow
//!   clients, the page's headers, text rules.
//! - `webhooks`: signed webhooks through real receivers: retries, a
//!   receiver down for a while, replay, a SIGKILLed sender, SSRF rules,
//!   disabling.
//! - `counts`: analytics: beacons, the event bus (Redis Stream and
//!   Kafka), `vodfarm counts` under SIGKILL, the flush, likes, history,
//!   recommendations.
//! - `tidy`: the architecture's invariants, checked on the source tree.

mod api_support;
mod common;
mod counts_support;
mod edge_support;
mod media_support;
mod origin_support;
mod search_support;

mod api;
mod chunks;
mod counts;
mod dev;
mod downloads;
mod e2e;
mod edge;
mod metrics;
mod ops;
mod origin;
mod queue;
mod search;
mod security;
mod subtitles;
mod tidy;
mod uploads;
mod webhooks;
mod worker;
