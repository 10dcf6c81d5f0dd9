//! [`SearchIndex`]: what a search backend does. Two implementations:
//! [`crate::postgres::PgIndex`] (PostgreSQL full text, the default) and
//! [`crate::elastic::EsIndex`] (Elasticsearch, when `ELASTICSEARCH_URL`
//! is set).
//!
//! An index answers with *candidates*: row ids, sort keys and highlighted
//! snippets. Whether a candidate may be shown is never the index's call:
//! the api checks every candidate against PostgreSQL in the same request
//! ([`crate::visibility`]), so a lagging index cannot show a deleted,
//! private or unfinished video.

use crate::cursor::{Cursor, CursorError, Mode};
use crate::query::{SearchRequest, SuggestRequest};
use async_trait::async_trait;
use sqlx::PgConnection;

/// Opens a highlighted stretch inside snippets (never in stored text:
/// both indexes strip it from titles and descriptions first).
pub const MARK_START: char = '\u{2}';
/// Closes a highlighted stretch.
pub const MARK_END: char = '\u{3}';

/// One candidate hit.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHit {
    /// `videos.id`.
    pub video_row: i64,
    /// The title with matches between [`MARK_START`] and [`MARK_END`].
    pub title_marked: String,
    /// Fragments of the description, marked the same way.
    pub description_marked: String,
}

/// A count of matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    /// Matches counted.
    pub value: u64,
    /// `false` when counting stopped at a limit: there are at least
    /// `value`.
    pub exact: bool,
}

/// Facet counts over the matches (each ignoring its own filter, so the
/// other choices stay visible).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    /// Category → matches, most first.
    pub category: Vec<(String, u64)>,
    /// Duration bucket (`short`, `medium`, `long`) → matches.
    pub duration: Vec<(String, u64)>,
}

/// A page of candidates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexPage {
    /// In order.
    pub hits: Vec<IndexHit>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Cursor>,
    /// Matches (first pages only).
    pub total: Option<Total>,
    /// Facets (first pages only).
    pub facets: Option<Facets>,
}

/// A title suggested while typing.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// `videos.id`.
    pub video_row: i64,
    /// The title, the typed words marked.
    pub title_marked: String,
}

/// One video's outbox rows claimed in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedVideo {
    /// `videos.id`.
    pub video_row: i64,
    /// The highest outbox sequence claimed for it: the version of a
    /// hard-deleted video's removal.
    pub max_seq: i64,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Documents written (searchable videos).
    pub upserted: u64,
    /// Documents removed (videos no longer searchable or gone).
    pub removed: u64,
    /// Changes the index already held a newer or equal version of.
    pub skipped: u64,
}

/// What a full rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Searchable videos written.
    pub documents: u64,
    /// Where they went (an index name, or `search_documents`).
    pub target: String,
    /// The index the alias pointed at before, now deleted
    /// (Elasticsearch only).
    pub replaced: Option<String>,
}

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Elasticsearch could not be reached or answered with an error.
    #[error("elasticsearch: {0}")]
    Elastic(String),
    /// The cursor's keys do not fit this order (a 400).
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

impl IndexError {
    /// Whether this is the client's fault (a bad cursor) rather than the
    /// backend's.
    pub fn is_client_error(&self) -> bool {
        matches!(self, IndexError::Cursor(_))
    }
}

/// A search backend.
///
/// Writes are versioned: every document carries the `search_version` of
/// the row state it was built from, and an index never replaces a
/// document with an older version. So batches may be replayed and
/// indexer replicas may race: the newest state always ends up indexed.
#[async_trait]
pub trait SearchIndex: Send + Sync + std::fmt::Debug {
    /// `postgres` or `elasticsearch` (logs, metrics).
    fn kind(&self) -> &'static str;

    /// Makes the index hold the current state of `videos` (a document
    /// for each searchable one, none for the others), inside the
    /// indexer's claim transaction `tx`. Idempotent.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        videos: &[ClaimedVideo],
    ) -> Result<Applied, IndexError>;

    /// A page of candidates for `req` from the `mode` match, after
    /// `req.after` if set. First pages (no cursor) also count matches and
    /// facets.
    async fn search(&self, req: &SearchRequest, mode: Mode) -> Result<IndexPage, IndexError>;

    /// Titles starting with what was typed, most viewed first.
    async fn suggest(&self, req: &SuggestRequest) -> Result<Vec<Suggestion>, IndexError>;

    /// Rebuilds the index from `videos` without downtime.
    async fn reindex(&self, pool: &sqlx::PgPool) -> Result<ReindexReport, IndexError>;

    /// Forgets what only guarded against late writes and is older than
    /// `older_than` (the PostgreSQL index's tombstones); returns how many.
    async fn prune(&self, older_than: std::time::Duration) -> Result<u64, IndexError>;

    /// Whether the backend answers (readiness).
    async fn ping(&self) -> Result<(), IndexError>;
}
