//! The search routes `vodfarm api` serves:
//!
//! - `GET /v1/search?q=&channel=&category=&tag=&duration=&uploaded_after=&sort=&cursor=&limit=`:
//!   hits with highlighted title and description, channel, duration,
//!   thumbnail and view count; a keyset `next_cursor`; on first pages the
//!   total and facet counts (category, duration bucket). When the words
//!   match nothing, a typo-tolerant title match answers (`"typo": true`).
//! - `GET /v1/search/suggest?q=&limit=`: titles for as-you-type.
//!
//! Every candidate is checked against PostgreSQL before it is answered
//! ([`crate::visibility`]), on every request: also when the index's
//! answer comes from the short-lived cache ([`crate::cache`]). Bad input
//! is a 400 naming the parameter.

use crate::cache::{AnswerCache, CacheSettings};
use crate::cursor::Mode;
use crate::index::{
    Facets, IndexError, IndexPage, SearchIndex, Suggestion, Total, MARK_END, MARK_START,
};
use crate::metrics::SearchMetrics;
use crate::query::{QueryError, SearchRequest, SuggestRequest};
use crate::visibility::{self, VisibleVideo};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Instant;
use vodfarm_core::auth::db_error;
use vodfarm_core::http::{ApiError, ApiJson};

/// Shared state of the search routes.
#[derive(Debug, Clone)]
pub struct SearchState {
    /// For the visibility check (the search pool).
    pub pool: PgPool,
    /// The index.
    pub index: Arc<dyn SearchIndex>,
    /// Base URL of the origin/CDN (thumbnail URLs).
    pub public_origin_url: String,
    /// Metrics.
    pub metrics: SearchMetrics,
    /// The index's answers to searches, reused for a while.
    pages: AnswerCache<IndexAnswer>,
    /// The index's suggestions, reused for a while.
    suggestions: AnswerCache<Vec<Suggestion>>,
}

/// What the index answered to a search: its page, and whether that came
/// from the typo-tolerant match.
#[derive(Debug)]
struct IndexAnswer {
    page: IndexPage,
    typo: bool,
}

impl SearchState {
    /// The routes' state: candidates from `index` (answers reused per
    /// `cache`), checked against `pool`.
    pub fn new(
        pool: PgPool,
        index: Arc<dyn SearchIndex>,
        public_origin_url: String,
        metrics: SearchMetrics,
        cache: CacheSettings,
    ) -> SearchState {
        SearchState {
            pages: AnswerCache::new(cache, "search", metrics.cache.clone()),
            suggestions: AnswerCache::new(cache, "suggest", metrics.cache.clone()),
            pool,
            index,
            public_origin_url,
            metrics,
        }
    }
}

/// The routes.
pub fn router(state: SearchState) -> Router {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/search/suggest", get(suggest))
        .with_state(state)
}

/// A video's channel.
#[derive(Debug, Serialize)]
pub struct ChannelRef {
    /// Public id.
    pub channel_id: String,
    /// Name.
    pub name: String,
}

/// One hit.
#[derive(Debug, Serialize)]
pub struct Hit {
    /// Public id.
    pub video_id: String,
    /// Title (plain text).
    pub title: String,
    /// Title as HTML: escaped, matches in `<mark>`.
    pub title_html: String,
    /// Fragments of the description as HTML, matches in `<mark>`.
    pub description_html: String,
    /// Its channel.
    pub channel: ChannelRef,
    /// Seconds.
    pub duration_seconds: i32,
    /// Views.
    pub view_count: i64,
    /// Upload time.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// The poster image on the origin, once made.
    pub thumbnail_url: Option<String>,
}

/// A count with its precision.
#[derive(Debug, Serialize)]
pub struct TotalView {
    /// Matches.
    pub value: u64,
    /// `eq`, or `gte` when counting stopped at a limit.
    pub relation: &'static str,
}

/// A facet value and its count.
#[derive(Debug, Serialize)]
pub struct FacetCount {
    /// The value (a category, or `short`/`medium`/`long`).
    pub value: String,
    /// Matches with it.
    pub count: u64,
}

/// Facets.
#[derive(Debug, Serialize)]
pub struct FacetsView {
    /// By category.
    pub category: Vec<FacetCount>,
    /// By duration bucket.
    pub duration: Vec<FacetCount>,
}

/// `GET /v1/search`.
#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    /// The hits of this page.
    pub hits: Vec<Hit>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Matches (first pages only).
    pub total: Option<TotalView>,
    /// Facet counts (first pages only).
    pub facets: Option<FacetsView>,
    /// The words matched nothing as typed; these are titles similar to
    /// them.
    pub typo: bool,
}

/// A suggestion.
#[derive(Debug, Serialize)]
pub struct SuggestionView {
    /// Public id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// Title as HTML, what was typed in `<mark>`.
    pub title_html: String,
}

/// `GET /v1/search/suggest`.
#[derive(Debug, Serialize)]
pub struct SuggestAnswer {
    /// Most viewed first.
    pub suggestions: Vec<SuggestionView>,
}

/// Escapes `marked` for HTML and turns the index's markers into
/// `<mark>` elements (balanced whatever the input holds).
pub fn marked_to_html(marked: &str) -> String {
    let mut out = String::with_capacity(marked.len() + 16);
    let mut open = false;
    for c in marked.chars() {
        match c {
            MARK_START if !open => {
                out.push_str("<mark>");
                open = true;
            }
            MARK_END if open => {
                out.push_str("</mark>");
                open = false;
            }
            MARK_START | MARK_END => {}
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

fn query_error(e: QueryError) -> ApiError {
    let code = match e {
        QueryError::Cursor(_) => "invalid_cursor",
        QueryError::Unknown { .. } | QueryError::Repeated(_) => "invalid_parameter",
        _ => "invalid_query",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::Cursor(c) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            format!("cursor: {c}"),
        ),
        IndexError::Database(d) => {
            // A search that ran past the pool's statement timeout.
            if let sqlx::Error::Database(db) = &d {
                if db.code().as_deref() == Some("57014") {
                    return ApiError::unavailable(
                        "the search took too long; try fewer or rarer words",
                    );
                }
            }
            db_error(&d)
        }
        IndexError::Elastic(m) => {
            tracing::warn!(error = %m, "search index unavailable");
            ApiError::unavailable("the search index is unavailable")
        }
    }
}

fn pairs(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(p)| p).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("the query string cannot be read: {}", e.body_text()),
        )
    })
}

fn total_view(t: Total) -> TotalView {
    TotalView {
        value: t.value,
        relation: if t.exact { "eq" } else { "gte" },
    }
}

fn facets_view(f: Facets) -> FacetsView {
    let counts = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(value, count)| FacetCount { value, count })
            .collect()
    };
    FacetsView {
        category: counts(f.category),
        duration: counts(f.duration),
    }
}

impl SearchState {
    fn thumbnail(&self, v: &VisibleVideo) -> Option<String> {
        v.has_thumbnail.then(|| {
            format!(
                "{}/t/{}/default.jpg",
                self.public_origin_url.trim_end_matches('/'),
                v.video_id
            )
        })
    }

    /// The candidates PostgreSQL allows, in order; counts the others.
    async fn check(
        &self,
        rows: &[i64],
    ) -> Result<std::collections::HashMap<i64, VisibleVideo>, ApiError> {
        let visible = visibility::visible(&self.pool, rows)
            .await
            .map_err(|e| db_error(&e))?;
        let hidden = rows.iter().filter(|r| !visible.contains_key(r)).count();
        if hidden > 0 {
            self.metrics.hidden.inc_by(hidden as u64);
            tracing::debug!(hidden, "search candidates withheld by the visibility check");
        }
        Ok(visible)
    }

    /// The index's page for `req`: the strict match, or on a first page
    /// that found nothing, the typo-tolerant one if it finds something.
    async fn ask_index(&self, req: &SearchRequest) -> Result<IndexAnswer, ApiError> {
        let mode = req.after.as_ref().map_or(Mode::Strict, |c| c.mode);
        let page = self.index.search(req, mode).await.map_err(index_error)?;
        if mode == Mode::Strict && req.after.is_none() && page.hits.is_empty() {
            let fuzzy = self
                .index
                .search(req, Mode::Fuzzy)
                .await
                .map_err(index_error)?;
            if !fuzzy.hits.is_empty() {
                return Ok(IndexAnswer {
                    page: fuzzy,
                    typo: true,
                });
            }
        }
        Ok(IndexAnswer {
            page,
            typo: mode == Mode::Fuzzy,
        })
    }

    async fn answer(
        &self,
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<(SearchAnswer, &'static str), ApiError> {
        let req = SearchRequest::parse(&pairs(q)?).map_err(query_error)?;
        let answer = self
            .pages
            .get_or_answer(req.cache_key(), || self.ask_index(&req))
            .await?;
        let (page, typo) = (&answer.page, answer.typo);
        let rows: Vec<i64> = page.hits.iter().map(|h| h.video_row).collect();
        let mut visible = self.check(&rows).await?;
        let mut hits = Vec::with_capacity(page.hits.len());
        for h in &page.hits {
            let Some(v) = visible.remove(&h.video_row) else {
                continue;
            };
            hits.push(Hit {
                title_html: marked_to_html(&h.title_marked),
                description_html: marked_to_html(&h.description_marked),
                thumbnail_url: self.thumbnail(&v),
                channel: ChannelRef {
                    channel_id: v.channel_id,
                    name: v.channel_name,
                },
                video_id: v.video_id,
                title: v.title,
                duration_seconds: v.duration_seconds,
                view_count: v.view_count,
                uploaded_at: v.uploaded_at,
            });
        }
        let outcome = match (hits.is_empty(), typo) {
            (true, _) => "none",
            (false, true) => "typo",
            (false, false) => "hits",
        };
        let fingerprint = req.fingerprint();
        Ok((
            SearchAnswer {
                hits,
                next_cursor: page.next.as_ref().map(|c| c.encode(&fingerprint)),
                total: page.total.map(total_view),
                facets: page.facets.clone().map(facets_view),
                typo,
            },
            outcome,
        ))
    }

    async fn suggestions(
        &self,
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<(SuggestAnswer, &'static str), ApiError> {
        let req = SuggestRequest::parse(&pairs(q)?).map_err(query_error)?;
        let found = self
            .suggestions
            .get_or_answer(req.cache_key(), || async {
                self.index.suggest(&req).await.map_err(index_error)
            })
            .await?;
        let rows: Vec<i64> = found.iter().map(|s| s.video_row).collect();
        let mut visible = self.check(&rows).await?;
        let suggestions: Vec<SuggestionView> = found
            .iter()
            .filter_map(|s| {
                let v = visible.remove(&s.video_row)?;
                Some(SuggestionView {
                    title_html: marked_to_html(&s.title_marked),
                    video_id: v.video_id,
                    title: v.title,
                })
            })
            .collect();
        let outcome = if suggestions.is_empty() {
            "none"
        } else {
            "hits"
        };
        Ok((SuggestAnswer { suggestions }, outcome))
    }

    fn record(&self, route: &str, outcome: &str, started: Instant) {
        self.metrics
            .requests
            .with_label_values(&[route, outcome])
            .inc();
        self.metrics
            .seconds
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }
}

fn outcome_of(e: &ApiError) -> &'static str {
    if e.status.is_client_error() {
        "invalid"
    } else {
        "error"
    }
}

async fn search(
    State(s): State<SearchState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    match s.answer(q).await {
        Ok((answer, outcome)) => {
            s.record("search", outcome, started);
            ApiJson(answer).into_response()
        }
        Err(e) => {
            s.record("search", outcome_of(&e), started);
            e.into_response()
        }
    }
}

async fn suggest(
    State(s): State<SearchState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    match s.suggestions(q).await {
        Ok((answer, outcome)) => {
            s.record("suggest", outcome, started);
            ApiJson(answer).into_response()
        }
        Err(e) => {
            s.record("suggest", outcome_of(&e), started);
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_become_safe_html() {
        assert_eq!(
            marked_to_html("a \u{2}b<i>\u{3} & 'c\""),
            "a <mark>b&lt;i&gt;</mark> &amp; &#39;c&quot;"
        );
        // Unbalanced or nested markers still give balanced elements.
        assert_eq!(marked_to_html("\u{2}x\u{2}y"), "<mark>xy</mark>");
        assert_eq!(marked_to_html("x\u{3}y"), "xy");
        assert_eq!(
            marked_to_html("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
    }
}
