//! vodfarm search: a transactional outbox, the indexer that applies it,
//! two [`SearchIndex`] implementations and the search API.
//!
//! ```text
//! videos / channels ──(trigger, same transaction)──► search_outbox
//!        │                                                │ SKIP LOCKED batches
//!        │                                                ▼
//!        │                         vodfarm search-indexer ──► index (PostgreSQL | Elasticsearch)
//!        │                                                        │ candidates
//!        └──────── visibility check (ready + public, now) ◄── GET /v1/search
//! ```
//!
//! - `text.rs`: what a viewer types, parsed (quotes, `or`, `-word`, the
//!   last word as a prefix) into a [`TextQuery`] that only holds letters
//!   and digits; `query.rs`: the routes' parameters checked;
//!   `cursor.rs`: keyset cursors.
//! - `index.rs`: the [`SearchIndex`] trait; `postgres/`: PostgreSQL full
//!   text (the default); `elastic/`: Elasticsearch; `document.rs`: the
//!   document an external index stores.
//! - `outbox.rs`: claiming and finishing outbox rows; `indexer.rs`: the
//!   `search-indexer` role.
//! - `visibility.rs`: the final check of every hit against PostgreSQL;
//!   `cache.rs`: the api's short-lived cache of index answers (checked
//!   by `visibility.rs` like any other); `api.rs`: the routes; `metrics.rs`; `args.rs`: flags;
//!   `reindex.rs`: `vodfarm search reindex`.
//!
//! Invariants: a hit is answered only if `videos` says it is ready and
//! public in the same request; an index never replaces a document with
//! an older version; an outbox row is deleted only in the transaction
//! that applied it.

#![warn(missing_docs)]

pub mod api;
pub mod args;
pub mod cache;
pub mod cursor;
pub mod document;
pub mod elastic;
pub mod index;
pub mod indexer;
pub mod metrics;
pub mod outbox;
pub mod postgres;
pub mod query;
pub mod reindex;
pub mod text;
pub mod visibility;

pub use index::SearchIndex;
pub use text::TextQuery;
