//! The PostgreSQL index (the default: no extra server).
//!
//! `search_documents` (migration `…_search.sql`) holds one row per video
//! the indexer has seen: the searchable ones with a weighted `tsvector`
//! (title A, tags B, channel name B, description C; English stems and
//! whole words, accents folded) under a GIN index, the others as
//! tombstones that keep their version. Queries:
//!
//! - strict: `to_tsquery('vodfarm', …)` of the parsed text (quotes, `or`,
//!   `-word`, the last word as a prefix), ranked with `ts_rank` over the
//!   [`PgSearchSettings::rank_window`] most viewed matches, or ordered by
//!   views or upload time; `ts_headline` marks the matches of the page's
//!   rows only;
//! - the plan follows how many documents the words match (estimated
//!   from the planner's statistics as if words were independent,
//!   [`PgSearchSettings::band_threshold`]): a few are read all through
//!   the GIN index; more are found views band by views band (a column of
//!   the GIN index, `sql::Plan::Banded`), so a common word costs about a
//!   window of rows, not its share of the table; a phrase of common
//!   words is checked in a bounded number of candidates; a word being
//!   typed after rarer words is checked in their documents; other
//!   prefixes are left to the planner;
//! - typo-tolerant, when the strict match finds nothing: each word is
//!   replaced by the up to three most similar known words (trigram
//!   similarity, `pg_trgm`, over the `search_terms` vocabulary) and the
//!   corrected query runs like a strict one;
//! - facets and the total over at most [`PgSearchSettings::facet_limit`]
//!   matches, the most viewed ones when banded (beyond it they are lower
//!   bounds, as Elasticsearch's `track_total_hits` default is); a first
//!   page without hits has no facet statement (nothing matched).
//!
//! Writes compare versions in the statement (`WHERE d.version <
//! excluded.version`), so replays and racing replicas are harmless.

mod plan;
mod sql;

use plan::{choose, Estimate, WordShares, WALK_SHARE};
use sql::Plan;

use crate::cursor::{Cursor, CursorError, Mode};
use crate::index::{
    Applied, ClaimedVideo, Facets, IndexError, IndexHit, IndexPage, ReindexReport, SearchIndex,
    Suggestion, Total,
};
use crate::query::{DurationBucket, SearchRequest, Sort, SuggestRequest};
use crate::text::TextQuery;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the PostgreSQL index answers.
#[derive(Debug, Clone, Copy)]
pub struct PgSearchSettings {
    /// Relevance is ranked over this many matches, the most viewed ones
    /// (all of them when fewer match).
    pub rank_window: i64,
    /// Facets and the total count at most this many matches.
    pub facet_limit: i64,
    /// Queries whose words match more than this many documents (an
    /// estimate from the planner's statistics) find their window and
    /// facet matches views band by views band; fewer are read all. 0:
    /// always banded (prefixes excepted).
    pub band_threshold: i64,
    /// Least trigram similarity of a known word to a typed one for a typo
    /// correction (0..1; `pg_trgm.similarity_threshold`).
    pub typo_similarity: f32,
}

impl Default for PgSearchSettings {
    fn default() -> Self {
        PgSearchSettings {
            rank_window: 500,
            facet_limit: 500,
            band_threshold: 2000,
            typo_similarity: 0.3,
        }
    }
}

/// A phrase of common words is looked for in at most this many times the
/// window's documents holding all its words (the first the GIN index
/// yields).
const PHRASE_CANDIDATES_PER_ROW: i64 = 4;

/// How long word shares are kept before the statistics are read again.
const SHARES_TTL: Duration = Duration::from_secs(60);

/// Most words whose share is kept.
const SHARES_MAX: usize = 100_000;

/// Word shares of documents (`vodfarm_search_shares`), kept a while.
#[derive(Debug, Default)]
struct Shares {
    read_at: Option<Instant>,
    /// Documents (all of them, tombstones included: an upper bound);
    /// `None` before the first ANALYZE.
    docs: Option<f64>,
    words: HashMap<String, f64>,
}

/// The PostgreSQL index.
#[derive(Debug, Clone)]
pub struct PgIndex {
    pool: PgPool,
    settings: PgSearchSettings,
    shares: Arc<Mutex<Shares>>,
}

/// A pool for searching: plans are made for each query's own words (a
/// generic plan cannot tell a word in half the videos from a rare one,
/// and picks one strategy for both), the typo threshold is set, and
/// statements stop after 10 s.
pub async fn search_pool(
    database_url: &str,
    max_connections: u32,
    settings: &PgSearchSettings,
) -> Result<PgPool, sqlx::Error> {
    let threshold = settings.typo_similarity.clamp(0.0, 1.0);
    let options = PgConnectOptions::from_str(database_url)?
        .options([
            ("plan_cache_mode", "force_custom_plan"),
            // A search that runs away answers 503 instead of holding a
            // connection (the routes report SQLSTATE 57014 so).
            ("statement_timeout", "10s"),
        ])
        .application_name("vodfarm-search");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // pg_trgm's setting: a placeholder until the library
                // loads, which the typo statement does.
                sqlx::query("SELECT set_config('pg_trgm.similarity_threshold', $1, false)")
                    .bind(threshold.to_string())
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

impl PgIndex {
    /// An index over `pool` (see [`search_pool`]).
    pub fn new(pool: PgPool, settings: PgSearchSettings) -> PgIndex {
        PgIndex {
            pool,
            settings,
            shares: Arc::default(),
        }
    }

    fn after(&self, req: &SearchRequest) -> Result<(Option<Value>, Option<i64>), CursorError> {
        let Some(c) = &req.after else {
            return Ok((None, None));
        };
        // Relevance cursors carry a third key: whether the window was
        // found as for many matches (the next pages must rank the same
        // window).
        let keys = match req.sort {
            Sort::Relevance => 2..=3,
            Sort::Views | Sort::Newest => 2..=2,
        };
        if !keys.contains(&c.len()) {
            return Err(CursorError::BadKeys);
        }
        let first = match req.sort {
            Sort::Relevance => Value::from(c.float(0)?),
            Sort::Views | Sort::Newest => Value::from(c.int(0)?),
        };
        Ok((Some(first), Some(c.int(1)?)))
    }

    /// The shares of `words` (kept ones, the missing ones read) and how
    /// many documents there are; `None` before the first ANALYZE.
    async fn shares(&self, words: &[&String]) -> Result<Option<WordShares>, IndexError> {
        let mut missing: Vec<String> = Vec::new();
        {
            let mut s = self
                .shares
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let stale =
                s.read_at.is_none_or(|t| t.elapsed() > SHARES_TTL) || s.words.len() > SHARES_MAX;
            if stale {
                *s = Shares::default();
            } else if s.docs.is_none() {
                return Ok(None);
            }
            for w in words {
                if !s.words.contains_key(*w) && !missing.contains(*w) {
                    missing.push((*w).clone());
                }
            }
        }
        if !missing.is_empty() {
            let rows: Vec<(String, f64, f64)> = sqlx::query_as(sql::SHARES)
                .bind(&missing)
                .fetch_all(&self.pool)
                .await?;
            let mut s = self
                .shares
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.read_at.get_or_insert_with(Instant::now);
            for (word, share, docs) in rows {
                s.docs = Some(docs);
                s.words.insert(word, share);
            }
        }
        let s = self
            .shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(docs) = s.docs else {
            return Ok(None);
        };
        let words = words
            .iter()
            .map(|w| ((*w).clone(), s.words.get(*w).copied().unwrap_or(1.0)))
            .collect();
        Ok(Some(WordShares { docs, words }))
    }

    /// How many documents `query` may match, by the planner's statistics
    /// (`None`: none yet); see [`Estimate`].
    async fn estimate(&self, query: &TextQuery) -> Result<Option<Estimate>, IndexError> {
        let driver = query.without_prefix();
        let groups = query.required_words();
        let words: Vec<&String> = groups.iter().flatten().flatten().collect();
        let Some(shares) = self.shares(&words).await? else {
            return Ok(None);
        };
        let prefix = groups
            .iter()
            .flatten()
            .flatten()
            .find(|w| w.ends_with('*'))
            .map(|w| shares.share(w) * shares.docs);
        Ok(Some(Estimate {
            docs: shares.docs,
            matches: shares.matches(&groups),
            driver: driver.map(|d| shares.matches(&d.required_words())),
            prefix,
        }))
    }

    /// How the matches of `query` are found (see [`Plan`]), and whether
    /// that is as for many matches (the window of a relevance page is
    /// then the most viewed matches at band granularity; later pages
    /// keep that choice through their cursor).
    async fn plan(
        &self,
        req: &SearchRequest,
        query: &TextQuery,
    ) -> Result<(Plan, Plan, bool), IndexError> {
        let estimate = self.estimate(query).await?;
        let threshold = self.settings.band_threshold;
        let many = match (&req.after, req.sort) {
            // A relevance page continues its first page's window (the
            // statistics may have changed since).
            (Some(c), Sort::Relevance) => c.len() == 3 && c.int(2)? == 1,
            _ if threshold <= 0 => true,
            _ => estimate.is_some_and(|e| e.many(self.settings.rank_window, threshold)),
        };
        // Driven candidates are capped like a phrase's (at
        // `PHRASE_CANDIDATES_PER_ROW` × the window or the facet limit):
        // half that leaves room for an estimate that is short.
        let most = self.settings.rank_window.min(self.settings.facet_limit)
            * PHRASE_CANDIDATES_PER_ROW
            / 2;
        let driven = !many && estimate.is_some_and(|e| e.driven(most));
        // By views in a category: bands, unless the words are so common
        // that the walk down the views index finds a page at once.
        // (A band threshold of 0 bands whatever can be.)
        let category_bands = req.filters.category.is_some()
            && (threshold <= 0 || estimate.is_some_and(|e| e.matches < WALK_SHARE * e.docs));
        Ok(choose(req.sort, category_bands, query, many, driven))
    }

    async fn page(
        &self,
        req: &SearchRequest,
        text: &str,
        loose: &str,
        plan: Plan,
    ) -> Result<Vec<PgRow>, IndexError> {
        let f = &req.filters;
        let (dmin, dmax) = f.duration.map_or((None, None), DurationBucket::range);
        let (key, row) = self.after(req)?;
        let q = sqlx::query(sql::page_statement(req.sort, plan))
            .bind(text)
            .bind(&f.channel)
            .bind(&f.category)
            .bind(&f.tag)
            .bind(dmin)
            .bind(dmax)
            .bind(f.uploaded_after);
        let q = match req.sort {
            Sort::Relevance => {
                let q = q
                    .bind(key.and_then(|k| k.as_f64()).map(|k| k as f32))
                    .bind(row)
                    .bind(i64::from(req.limit) + 1)
                    .bind(self.settings.rank_window);
                if plan == Plan::PhraseCapped {
                    q.bind(self.settings.rank_window * PHRASE_CANDIDATES_PER_ROW)
                        .bind(loose)
                } else {
                    q
                }
            }
            Sort::Views => q
                .bind(key.and_then(|k| k.as_i64()))
                .bind(row)
                .bind(i64::from(req.limit) + 1),
            Sort::Newest => {
                let t = match key.and_then(|k| k.as_i64()) {
                    Some(micros) => Some(
                        DateTime::<Utc>::from_timestamp_micros(micros)
                            .ok_or(CursorError::BadKeys)?,
                    ),
                    None => None,
                };
                q.bind(t).bind(row).bind(i64::from(req.limit) + 1)
            }
        };
        Ok(q.fetch_all(&self.pool).await?)
    }

    async fn facets(
        &self,
        req: &SearchRequest,
        text: &str,
        loose: &str,
        plan: Plan,
    ) -> Result<(Total, Facets), IndexError> {
        let f = &req.filters;
        let (dmin, dmax) = f.duration.map_or((None, None), DurationBucket::range);
        let q = sqlx::query(sql::facet_statement(plan))
            .bind(text)
            .bind(&f.channel)
            .bind(&f.category)
            .bind(&f.tag)
            .bind(dmin)
            .bind(dmax)
            .bind(f.uploaded_after)
            .bind(self.settings.facet_limit);
        let q = if plan == Plan::PhraseCapped {
            q.bind(self.settings.facet_limit * PHRASE_CANDIDATES_PER_ROW)
                .bind(loose)
        } else {
            q
        };
        let rows = q.fetch_all(&self.pool).await?;
        self.facets_of(&rows)
    }

    /// A banded first page by relevance and its facets in one statement
    /// (no category or duration filter: the window and the facets count
    /// the same matches): `(page rows, facet rows)`.
    async fn page_with_facets(
        &self,
        req: &SearchRequest,
        text: &str,
    ) -> Result<(Vec<PgRow>, Vec<PgRow>), IndexError> {
        let f = &req.filters;
        let rows = sqlx::query(sql::page_with_facets_statement())
            .bind(text)
            .bind(&f.channel)
            .bind(None::<String>)
            .bind(&f.tag)
            .bind(None::<i32>)
            .bind(None::<i32>)
            .bind(f.uploaded_after)
            .bind(None::<f32>)
            .bind(None::<i64>)
            .bind(i64::from(req.limit) + 1)
            .bind(self.settings.rank_window)
            .bind(self.settings.facet_limit)
            .fetch_all(&self.pool)
            .await?;
        let mut page = Vec::with_capacity(rows.len());
        let mut facets = Vec::new();
        for r in rows {
            if r.try_get::<Option<String>, _>("kind")?.is_some() {
                facets.push(r);
            } else {
                page.push(r);
            }
        }
        Ok((page, facets))
    }

    /// The total and facets of the rows of a facet statement.
    fn facets_of(&self, rows: &[PgRow]) -> Result<(Total, Facets), IndexError> {
        let mut facets = Facets::default();
        let mut total = Total {
            value: 0,
            exact: true,
        };
        for r in rows {
            let kind: String = r.try_get("kind")?;
            let value: Option<String> = r.try_get("value")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            match (kind.as_str(), value) {
                ("total", _) => {
                    let scanned: i64 = r.try_get("scanned")?;
                    total = Total {
                        value: n,
                        exact: scanned < self.settings.facet_limit,
                    };
                }
                ("category", Some(v)) if n > 0 => facets.category.push((v, n)),
                ("duration", Some(v)) => facets.duration.push((v, n)),
                _ => {}
            }
        }
        facets
            .category
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // Every bucket, in order, zeros included.
        facets.duration = DurationBucket::ALL
            .iter()
            .map(|b| {
                let n = facets
                    .duration
                    .iter()
                    .find(|(v, _)| v == b.as_str())
                    .map_or(0, |(_, n)| *n);
                (b.as_str().to_owned(), n)
            })
            .collect();
        Ok((total, facets))
    }
}

impl PgIndex {
    /// The query with its words replaced by the known words they are
    /// most similar to; `None` when no word has a different one.
    async fn corrected(&self, text: &TextQuery) -> Result<Option<TextQuery>, IndexError> {
        let words = text.correctable_words();
        if words.is_empty() {
            return Ok(None);
        }
        let rows: Vec<(String, String)> = sqlx::query_as(sql::CORRECTIONS)
            .bind(&words)
            .fetch_all(&self.pool)
            .await?;
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (word, candidate) in rows {
            map.entry(word).or_default().push(candidate);
        }
        Ok(text.corrected(&map))
    }
}

fn next_key(sort: Sort, row: &PgRow, many: bool) -> Result<Vec<Value>, sqlx::Error> {
    let id: i64 = row.try_get("video_id")?;
    Ok(match sort {
        Sort::Relevance => vec![
            Value::from(f64::from(row.try_get::<f32, _>("key")?)),
            Value::from(id),
            Value::from(u8::from(many)),
        ],
        Sort::Views => vec![Value::from(row.try_get::<i64, _>("key")?), Value::from(id)],
        Sort::Newest => vec![
            Value::from(row.try_get::<DateTime<Utc>, _>("key")?.timestamp_micros()),
            Value::from(id),
        ],
    })
}

/// A first page's facets when nothing matched.
fn no_facets() -> (Total, Facets) {
    let facets = Facets {
        category: Vec::new(),
        duration: DurationBucket::ALL
            .iter()
            .map(|b| (b.as_str().to_owned(), 0))
            .collect(),
    };
    (
        Total {
            value: 0,
            exact: true,
        },
        facets,
    )
}

#[async_trait]
impl SearchIndex for PgIndex {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        videos: &[ClaimedVideo],
    ) -> Result<Applied, IndexError> {
        let ids: Vec<i64> = videos.iter().map(|v| v.video_row).collect();
        let seqs: Vec<i64> = videos.iter().map(|v| v.max_seq).collect();
        let upserted = sqlx::query(sql::upsert())
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(sql::ADD_TERMS)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query(sql::TOMBSTONE)
            .bind(&ids)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        Ok(Applied {
            upserted,
            removed,
            skipped: (ids.len() as u64).saturating_sub(upserted + removed),
        })
    }

    async fn search(&self, req: &SearchRequest, mode: Mode) -> Result<IndexPage, IndexError> {
        let corrected;
        let query = match mode {
            Mode::Strict => &req.text,
            Mode::Fuzzy => match self.corrected(&req.text).await? {
                Some(q) => {
                    corrected = q;
                    &corrected
                }
                None => return Ok(IndexPage::default()),
            },
        };
        let text = query.to_tsquery();
        let (plan, facet_plan, many) = self.plan(req, query).await?;
        // Capped plans look for the query among the candidates of a
        // looser one: a phrase's words anywhere, or the words besides
        // the one being typed.
        let loose = match query.without_prefix() {
            Some(driver) if plan == Plan::PhraseCapped => driver.to_loose_tsquery(),
            _ => query.to_loose_tsquery(),
        };
        // The common case (a first page by relevance of common words, no
        // category or duration filter) reads its window once for the
        // page and the facets.
        let combined = plan == Plan::Banded
            && req.sort == Sort::Relevance
            && req.after.is_none()
            && req.filters.category.is_none()
            && req.filters.duration.is_none();
        let (rows, facet_rows) = if combined {
            let (page, facets) = self.page_with_facets(req, &text).await?;
            (page, Some(facets))
        } else {
            (self.page(req, &text, &loose, plan).await?, None)
        };
        let limit = req.limit as usize;
        let next = if rows.len() > limit {
            Some(Cursor {
                mode,
                keys: next_key(req.sort, &rows[limit - 1], many)?,
            })
        } else {
            None
        };
        let mut hits = Vec::with_capacity(rows.len().min(limit));
        for r in rows.iter().take(limit) {
            hits.push(IndexHit {
                video_row: r.try_get("video_id")?,
                title_marked: r
                    .try_get::<Option<String>, _>("title_marked")?
                    .unwrap_or_default(),
                description_marked: r
                    .try_get::<Option<String>, _>("description_marked")?
                    .unwrap_or_default(),
            });
        }
        let (total, facets) = if req.after.is_some() {
            (None, None)
        } else if rows.is_empty() {
            // A first page without rows: nothing matches.
            let (t, f) = no_facets();
            (Some(t), Some(f))
        } else if let Some(facet_rows) = facet_rows {
            let (t, f) = self.facets_of(&facet_rows)?;
            (Some(t), Some(f))
        } else {
            let (t, f) = self.facets(req, &text, &loose, facet_plan).await?;
            (Some(t), Some(f))
        };
        Ok(IndexPage {
            hits,
            next,
            total,
            facets,
        })
    }

    async fn suggest(&self, req: &SuggestRequest) -> Result<Vec<Suggestion>, IndexError> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(sql::SUGGEST)
            .bind(req.text.to_tsquery())
            .bind(i64::from(req.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(video_row, t)| Suggestion {
                video_row,
                title_marked: t.unwrap_or_default(),
            })
            .collect())
    }

    async fn reindex(&self, pool: &PgPool) -> Result<ReindexReport, IndexError> {
        const BATCH: i64 = 5000;
        let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM videos")
            .fetch_one(pool)
            .await?;
        let mut from = 0;
        let mut documents = 0;
        while from < max.unwrap_or(0) {
            let to = from + BATCH;
            documents += sqlx::query(sql::reindex_range())
                .bind(from)
                .bind(to)
                .execute(pool)
                .await?
                .rows_affected();
            from = to;
        }
        let removed = sqlx::query(sql::REINDEX_STALE)
            .execute(pool)
            .await?
            .rows_affected();
        sqlx::query(sql::REINDEX_TERMS_ADD).execute(pool).await?;
        let stale_terms = sqlx::query(sql::REINDEX_TERMS_STALE)
            .execute(pool)
            .await?
            .rows_affected();
        tracing::info!(
            documents,
            removed,
            stale_terms,
            "search_documents and search_terms rebuilt from videos"
        );
        Ok(ReindexReport {
            documents,
            target: "search_documents".into(),
            replaced: None,
        })
    }

    async fn prune(&self, older_than: Duration) -> Result<u64, IndexError> {
        // A tombstone guards against a write older than it; writes are
        // single statements that read the row they write, so none is
        // still in flight after an hour (the default).
        let secs = older_than.as_secs_f64();
        Ok(sqlx::query(
            "DELETE FROM search_documents
             WHERE NOT visible AND indexed_at < clock_timestamp() - make_interval(secs => $1)",
        )
        .bind(secs)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn ping(&self) -> Result<(), IndexError> {
        sqlx::query("SELECT 1 FROM search_documents LIMIT 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
