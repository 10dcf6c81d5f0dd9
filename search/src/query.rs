//! `GET /v1/search` and `GET /v1/search/suggest`: the query string's
//! parameters checked and typed. Anything unknown, repeated, malformed or
//! out of range is a [`QueryError`] (a 400 naming the parameter), never a
//! database error later.

use crate::cursor::{Cursor, CursorError};
use crate::text::{TextError, TextQuery};
use chrono::{DateTime, NaiveDate, Utc};
use vodfarm_core::ids::is_valid_public_id;

/// Hits per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest `limit`.
pub const MAX_LIMIT: u32 = 50;
/// Suggestions unless `limit` says otherwise.
pub const DEFAULT_SUGGEST_LIMIT: u32 = 8;
/// The largest suggestion `limit`.
pub const MAX_SUGGEST_LIMIT: u32 = 20;
/// Longest `category` or `tag` (the catalog's own limits).
const MAX_FILTER_CHARS: usize = 100;
/// Longest cursor accepted (ours are far shorter).
const MAX_CURSOR_CHARS: usize = 1024;

/// The parameters `GET /v1/search` understands.
pub const SEARCH_PARAMS: &[&str] = &[
    "q",
    "channel",
    "category",
    "tag",
    "duration",
    "uploaded_after",
    "sort",
    "cursor",
    "limit",
];
/// The parameters `GET /v1/search/suggest` understands.
pub const SUGGEST_PARAMS: &[&str] = &["q", "limit"];

/// A duration bucket (YouTube's: under 4 minutes, 4 to 20, over 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationBucket {
    /// Under 4 minutes.
    Short,
    /// 4 to 20 minutes.
    Medium,
    /// Over 20 minutes.
    Long,
}

impl DurationBucket {
    /// Every bucket, in display order.
    pub const ALL: [DurationBucket; 3] = [Self::Short, Self::Medium, Self::Long];

    /// The parameter value and facet name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Medium => "medium",
            Self::Long => "long",
        }
    }

    /// `[min, max)` seconds; `None` is unbounded.
    pub fn range(self) -> (Option<i32>, Option<i32>) {
        match self {
            Self::Short => (None, Some(240)),
            Self::Medium => (Some(240), Some(1201)),
            Self::Long => (Some(1201), None),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    /// Best match first.
    Relevance,
    /// Most viewed first.
    Views,
    /// Most recently uploaded first.
    Newest,
}

impl Sort {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::Views => "views",
            Sort::Newest => "newest",
        }
    }
}

/// Filters narrowing a search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// A channel's public id.
    pub channel: Option<String>,
    /// A category (case and accents ignored).
    pub category: Option<String>,
    /// A tag the video carries (case and accents ignored).
    pub tag: Option<String>,
    /// A duration bucket.
    pub duration: Option<DurationBucket>,
    /// Uploaded strictly after this instant.
    pub uploaded_after: Option<DateTime<Utc>>,
}

/// A checked `GET /v1/search`.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// What was typed, parsed.
    pub text: TextQuery,
    /// Filters.
    pub filters: Filters,
    /// Order.
    pub sort: Sort,
    /// Hits per page.
    pub limit: u32,
    /// Where the previous page ended (none: the first page).
    pub after: Option<Cursor>,
}

/// A checked `GET /v1/search/suggest`.
#[derive(Debug, Clone)]
pub struct SuggestRequest {
    /// What was typed so far, parsed.
    pub text: TextQuery,
    /// Suggestions wanted.
    pub limit: u32,
}

/// A parameter that cannot be used (a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not a parameter of this route.
    #[error("unknown parameter {name:?} (known: {known})")]
    Unknown {
        /// The parameter.
        name: String,
        /// The known ones, comma-separated.
        known: String,
    },
    /// Given twice.
    #[error("parameter {0:?} is given more than once")]
    Repeated(String),
    /// `q` is missing.
    #[error("parameter \"q\" is required")]
    MissingQuery,
    /// `q` cannot be searched.
    #[error("q: {0}")]
    Text(#[from] TextError),
    /// A parameter's value is not valid.
    #[error("{name}: {message}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The cursor is not one of ours, or belongs to another search.
    #[error("cursor: {0}")]
    Cursor(#[from] CursorError),
}

fn invalid(name: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        name,
        message: message.into(),
    }
}

/// The pairs of a query string as a map, refusing unknown and repeated
/// names.
fn collect<'a>(
    pairs: &'a [(String, String)],
    known: &[&'static str],
) -> Result<Vec<(&'static str, &'a str)>, QueryError> {
    let mut out: Vec<(&'static str, &'a str)> = Vec::new();
    for (k, v) in pairs {
        let Some(name) = known.iter().find(|n| **n == k.as_str()) else {
            return Err(QueryError::Unknown {
                name: k.chars().take(50).collect(),
                known: known.join(", "),
            });
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(QueryError::Repeated(k.clone()));
        }
        out.push((name, v.as_str()));
    }
    Ok(out)
}

fn get<'a>(params: &[(&'static str, &'a str)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn limit(v: Option<&str>, default: u32, max: u32) -> Result<u32, QueryError> {
    let Some(v) = v else { return Ok(default) };
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            "limit",
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

fn text_filter(name: &'static str, v: Option<&str>) -> Result<Option<String>, QueryError> {
    let Some(v) = v else { return Ok(None) };
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_FILTER_CHARS || v.chars().any(char::is_control) {
        return Err(invalid(
            name,
            format!("must be 1 to {MAX_FILTER_CHARS} characters without control characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

/// An RFC 3339 instant or a date (midnight UTC).
fn instant(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

impl SearchRequest {
    /// Checks the query string's pairs of `GET /v1/search`.
    pub fn parse(pairs: &[(String, String)]) -> Result<SearchRequest, QueryError> {
        let p = collect(pairs, SEARCH_PARAMS)?;
        let text = TextQuery::parse(get(&p, "q").ok_or(QueryError::MissingQuery)?)?;
        let channel = match get(&p, "channel") {
            Some(c) if is_valid_public_id(c) => Some(c.to_owned()),
            Some(_) => return Err(invalid("channel", "not a channel id")),
            None => None,
        };
        let duration = match get(&p, "duration") {
            Some(d) => Some(
                DurationBucket::parse(d)
                    .ok_or_else(|| invalid("duration", "must be short, medium or long"))?,
            ),
            None => None,
        };
        let uploaded_after = match get(&p, "uploaded_after") {
            Some(t) => Some(instant(t).ok_or_else(|| {
                invalid(
                    "uploaded_after",
                    "must be a date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z)",
                )
            })?),
            None => None,
        };
        let sort = match get(&p, "sort") {
            None | Some("relevance") => Sort::Relevance,
            Some("views") => Sort::Views,
            Some("newest") => Sort::Newest,
            Some(_) => return Err(invalid("sort", "must be relevance, views or newest")),
        };
        let filters = Filters {
            channel,
            category: text_filter("category", get(&p, "category"))?,
            tag: text_filter("tag", get(&p, "tag"))?,
            duration,
            uploaded_after,
        };
        let mut req = SearchRequest {
            text,
            filters,
            sort,
            limit: limit(get(&p, "limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
            after: None,
        };
        if let Some(c) = get(&p, "cursor") {
            if c.len() > MAX_CURSOR_CHARS {
                return Err(CursorError::Malformed.into());
            }
            req.after = Some(Cursor::decode(c, &req.fingerprint())?);
        }
        Ok(req)
    }

    /// What identifies this search for its cursors: the query, the
    /// filters and the order (not the page size).
    pub fn fingerprint(&self) -> String {
        let f = &self.filters;
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.text.canonical(),
            f.channel.as_deref().unwrap_or(""),
            f.category.as_deref().unwrap_or("").to_lowercase(),
            f.tag.as_deref().unwrap_or("").to_lowercase(),
            f.duration.map_or("", DurationBucket::as_str),
            f.uploaded_after
                .map(|t| t.timestamp_micros().to_string())
                .unwrap_or_default(),
            self.sort.as_str(),
        )
    }
}

impl SearchRequest {
    /// What identifies the index's answer to this request: the search
    /// ([`SearchRequest::fingerprint`]), the page size and where the page
    /// starts (the cursor's match and keys).
    pub fn cache_key(&self) -> String {
        let fingerprint = self.fingerprint();
        let after = self
            .after
            .as_ref()
            .map(|c| c.encode(&fingerprint))
            .unwrap_or_default();
        format!("{fingerprint}\u{1f}{}\u{1f}{after}", self.limit)
    }
}

impl SuggestRequest {
    /// What identifies the index's answer to this request.
    pub fn cache_key(&self) -> String {
        format!("{}\u{1f}{}", self.text.canonical(), self.limit)
    }

    /// Checks the query string's pairs of `GET /v1/search/suggest`.
    pub fn parse(pairs: &[(String, String)]) -> Result<SuggestRequest, QueryError> {
        let p = collect(pairs, SUGGEST_PARAMS)?;
        let text = TextQuery::parse(get(&p, "q").ok_or(QueryError::MissingQuery)?)?;
        Ok(SuggestRequest {
            text,
            limit: limit(get(&p, "limit"), DEFAULT_SUGGEST_LIMIT, MAX_SUGGEST_LIMIT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(q: &[(&str, &str)]) -> String {
        SearchRequest::parse(&pairs(q))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn a_full_request() {
        let r = SearchRequest::parse(&pairs(&[
            ("q", "guitar"),
            ("channel", "c_abcdefghijklmnop"),
            ("category", " Music "),
            ("tag", "Rock"),
            ("duration", "short"),
            ("uploaded_after", "2026-01-31"),
            ("sort", "views"),
            ("limit", "5"),
        ]));
        let r = r.expect("valid");
        assert_eq!(r.filters.category.as_deref(), Some("Music"));
        assert_eq!(r.filters.duration, Some(DurationBucket::Short));
        assert_eq!(
            r.filters.uploaded_after.map(|t| t.to_rfc3339()),
            Some("2026-01-31T00:00:00+00:00".into())
        );
        assert_eq!((r.sort, r.limit), (Sort::Views, 5));
        let d = SearchRequest::parse(&pairs(&[("q", "x")])).expect("defaults");
        assert_eq!(
            (d.sort, d.limit, d.after.is_none()),
            (Sort::Relevance, 20, true)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(err(&[("q", "a"), ("color", "red")]).starts_with("unknown parameter \"color\""));
        assert!(err(&[("q", "a"), ("q", "b")]).contains("more than once"));
        assert_eq!(err(&[("limit", "3")]), "parameter \"q\" is required");
        assert!(err(&[("q", "")]).contains("empty"));
        assert!(err(&[("q", "a"), ("limit", "0")]).starts_with("limit:"));
        assert!(err(&[("q", "a"), ("limit", "51")]).starts_with("limit:"));
        assert!(err(&[("q", "a"), ("limit", "-1")]).starts_with("limit:"));
        assert!(err(&[("q", "a"), ("sort", "best")]).starts_with("sort:"));
        assert!(err(&[("q", "a"), ("duration", "tiny")]).starts_with("duration:"));
        assert!(err(&[("q", "a"), ("channel", "'; DROP")]).starts_with("channel:"));
        assert!(err(&[("q", "a"), ("uploaded_after", "yesterday")]).starts_with("uploaded_after:"));
        assert!(err(&[("q", "a"), ("category", "")]).starts_with("category:"));
        assert!(err(&[("q", "a"), ("tag", &"t".repeat(101))]).starts_with("tag:"));
        assert!(err(&[("q", "a"), ("cursor", "!!")]).starts_with("cursor:"));
    }

    #[test]
    fn suggest_parameters() {
        let s = SuggestRequest::parse(&pairs(&[("q", "vodf")])).expect("valid");
        assert_eq!(s.limit, DEFAULT_SUGGEST_LIMIT);
        assert!(SuggestRequest::parse(&pairs(&[("q", "a"), ("sort", "views")])).is_err());
        assert!(SuggestRequest::parse(&pairs(&[("q", "a"), ("limit", "21")])).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_the_page_size_only() {
        let a = SearchRequest::parse(&pairs(&[("q", "guitar"), ("limit", "5")])).expect("a");
        let b = SearchRequest::parse(&pairs(&[("q", "Guitar"), ("limit", "7")])).expect("b");
        let c = SearchRequest::parse(&pairs(&[("q", "guitar"), ("sort", "views")])).expect("c");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn the_cache_key_tells_every_answer_apart() {
        let key = |q: &[(&str, &str)]| SearchRequest::parse(&pairs(q)).expect("valid").cache_key();
        assert_eq!(key(&[("q", "Guitar ")]), key(&[("q", "guitar ")]));
        assert_ne!(key(&[("q", "guitar ")]), key(&[("q", "guitar")]), "prefix");
        assert_ne!(
            key(&[("q", "guitar")]),
            key(&[("q", "guitar"), ("limit", "5")])
        );
        assert_ne!(
            key(&[("q", "guitar")]),
            key(&[("q", "guitar"), ("category", "Music")])
        );
        let first = SearchRequest::parse(&pairs(&[("q", "guitar")])).expect("first");
        let cursor = |keys: Vec<serde_json::Value>| {
            Cursor {
                mode: crate::cursor::Mode::Strict,
                keys,
            }
            .encode(&first.fingerprint())
        };
        let page = |c: &str| key(&[("q", "guitar"), ("cursor", c)]);
        let (a, b) = (
            cursor(vec![1.into(), 2.into()]),
            cursor(vec![1.into(), 3.into()]),
        );
        assert_ne!(page(&a), page(&b));
        assert_ne!(page(&a), key(&[("q", "guitar")]));
        let s = |q: &str| {
            SuggestRequest::parse(&pairs(&[("q", q)]))
                .expect("valid")
                .cache_key()
        };
        assert_eq!(s("Vodf"), s("vodf"));
        assert_ne!(s("vodf"), s("vodfa"));
    }
}
