//! The request bodies sent to Elasticsearch, as pure functions so unit
//! tests can check them without a server: the index template (analyzers
//! and mappings), bulk lines with external versions, searches (query,
//! filters, facets, highlights, sort and `search_after`), suggestions and
//! the alias swap.

use crate::cursor::Mode;
use crate::document::{Change, Document};
use crate::index::{MARK_END, MARK_START};
use crate::query::{DurationBucket, Filters, SearchRequest, Sort, SuggestRequest};
use crate::text::{Term, TextQuery};
use serde_json::{json, Value};

/// Fields a word is looked for in, with their boosts (the PostgreSQL
/// index's weights: title A, tags and channel B, description C).
const FIELDS: [&str; 4] = ["title^4", "tags^2", "channel_name^2", "description"];

/// The most matches counted exactly (Elasticsearch's own default).
pub(crate) const TRACK_TOTAL_HITS: u64 = 10_000;

/// The index template: every index named `{alias}-*` gets these
/// analyzers and mappings.
///
/// - `vodfarm_text`: standard tokens, lower case, ASCII folding
///   (crème → creme), English stop words and stems;
/// - `vodfarm_words`: the same without stemming (exact words, what a
///   prefix is compared with);
/// - `vodfarm_prefix`: edge n-grams of folded words (1..20), indexed on
///   `title.prefix` so as-you-type prefixes are a plain term lookup.
pub(crate) fn template(alias: &str) -> Value {
    let words = json!({"type": "text", "analyzer": "vodfarm_words"});
    json!({
        "index_patterns": [format!("{alias}-*")],
        "priority": 100,
        "template": {
            "settings": {
                "number_of_shards": 1,
                // New documents searchable within half a second of the
                // indexer's write (the lag target is one second).
                "refresh_interval": "500ms",
                "analysis": {
                    "filter": {
                        "vodfarm_folding": {"type": "asciifolding", "preserve_original": false},
                        "vodfarm_stop": {"type": "stop", "stopwords": "_english_"},
                        "vodfarm_stem": {"type": "stemmer", "language": "english"},
                        "vodfarm_edge": {"type": "edge_ngram", "min_gram": 1, "max_gram": 20}
                    },
                    "normalizer": {
                        "vodfarm_keyword": {"type": "custom", "filter": ["lowercase", "asciifolding"]}
                    },
                    "analyzer": {
                        "vodfarm_text": {
                            "type": "custom", "tokenizer": "standard",
                            "filter": ["lowercase", "vodfarm_folding", "vodfarm_stop", "vodfarm_stem"]
                        },
                        "vodfarm_words": {
                            "type": "custom", "tokenizer": "standard",
                            "filter": ["lowercase", "vodfarm_folding"]
                        },
                        "vodfarm_prefix": {
                            "type": "custom", "tokenizer": "standard",
                            "filter": ["lowercase", "vodfarm_folding", "vodfarm_edge"]
                        }
                    }
                }
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "row": {"type": "long"},
                    "video_id": {"type": "keyword"},
                    "channel_id": {"type": "keyword"},
                    "channel_name": {
                        "type": "text", "analyzer": "vodfarm_text",
                        "fields": {"words": words}
                    },
                    "title": {
                        "type": "text", "analyzer": "vodfarm_text",
                        "fields": {
                            "words": words,
                            "prefix": {
                                "type": "text", "analyzer": "vodfarm_prefix",
                                "search_analyzer": "vodfarm_words"
                            }
                        }
                    },
                    "description": {"type": "text", "analyzer": "vodfarm_text"},
                    "tags": {
                        "type": "text", "analyzer": "vodfarm_text",
                        "fields": {
                            "words": words,
                            "exact": {"type": "keyword", "normalizer": "vodfarm_keyword"}
                        }
                    },
                    "category": {
                        "type": "keyword", "normalizer": "vodfarm_keyword",
                        "fields": {"raw": {"type": "keyword"}}
                    },
                    "duration_seconds": {"type": "integer"},
                    "view_count": {"type": "long"},
                    "like_count": {"type": "integer"},
                    "uploaded_at": {"type": "date"}
                }
            }
        }
    })
}

/// The bulk request's lines for `changes` into `index`: each write
/// carries its version as an external version, so Elasticsearch refuses
/// (409) anything older than what it holds.
pub(crate) fn bulk_lines(index: &str, changes: &[Change]) -> Vec<Value> {
    let mut lines = Vec::with_capacity(changes.len() * 2);
    for c in changes {
        match c {
            Change::Upsert(doc) => {
                lines.push(json!({"index": {
                    "_index": index, "_id": doc.row.to_string(),
                    "version": doc.version, "version_type": "external"
                }}));
                lines.push(document(doc));
            }
            Change::Remove { row, version } => {
                lines.push(json!({"delete": {
                    "_index": index, "_id": row.to_string(),
                    "version": version, "version_type": "external"
                }}));
            }
        }
    }
    lines
}

fn document(doc: &Document) -> Value {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

/// What one word matches: its folded, stemmed form in any field; in the
/// typo mode, also words one or two edits away.
fn word(w: &str, mode: Mode) -> Value {
    let mut m = json!({"query": w, "fields": FIELDS});
    if mode == Mode::Fuzzy {
        m["fuzziness"] = json!("AUTO");
        m["prefix_length"] = json!(1);
    }
    json!({"multi_match": m})
}

fn term(t: &Term, mode: Mode) -> Value {
    if t.phrase {
        return json!({"multi_match": {
            "query": t.words.join(" "), "type": "phrase", "fields": FIELDS
        }});
    }
    let mut all: Vec<Value> = Vec::with_capacity(t.words.len());
    for (i, w) in t.words.iter().enumerate() {
        if t.prefix && i + 1 == t.words.len() {
            // Being typed: the word itself, or a title word it begins.
            all.push(json!({"bool": {
                "should": [word(w, mode), {"match": {"title.prefix": {"query": w}}}],
                "minimum_should_match": 1
            }}));
        } else {
            all.push(word(w, mode));
        }
    }
    if all.len() == 1 {
        all.remove(0)
    } else {
        json!({"bool": {"must": all}})
    }
}

/// The text query: any group, each group all of its terms.
pub(crate) fn text_query(q: &TextQuery, mode: Mode) -> Value {
    let groups: Vec<Value> = q
        .groups
        .iter()
        .map(|g| {
            let must: Vec<Value> = g
                .iter()
                .filter(|t| !t.negated)
                .map(|t| term(t, mode))
                .collect();
            let must_not: Vec<Value> = g
                .iter()
                .filter(|t| t.negated)
                .map(|t| term(t, mode))
                .collect();
            json!({"bool": {"must": must, "must_not": must_not}})
        })
        .collect();
    if groups.len() == 1 {
        groups.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({"bool": {"should": groups, "minimum_should_match": 1}})
    }
}

fn category_filter(f: &Filters) -> Option<Value> {
    f.category
        .as_ref()
        .map(|c| json!({"match": {"category": {"query": c}}}))
}

fn duration_filter(f: &Filters) -> Option<Value> {
    f.duration.map(|b| {
        let (min, max) = b.range();
        let mut r = serde_json::Map::new();
        if let Some(min) = min {
            r.insert("gte".into(), json!(min));
        }
        if let Some(max) = max {
            r.insert("lt".into(), json!(max));
        }
        json!({"range": {"duration_seconds": r}})
    })
}

/// Filters that apply to hits and facets alike.
fn base_filters(f: &Filters) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(c) = &f.channel {
        out.push(json!({"term": {"channel_id": c}}));
    }
    if let Some(t) = &f.tag {
        out.push(json!({"match": {"tags.exact": {"query": t}}}));
    }
    if let Some(t) = f.uploaded_after {
        out.push(json!({"range": {"uploaded_at": {"gt": t.to_rfc3339()}}}));
    }
    out
}

fn all_of(filters: Vec<Value>) -> Value {
    if filters.is_empty() {
        json!({"match_all": {}})
    } else {
        json!({"bool": {"filter": filters}})
    }
}

/// The sort of an order; ties broken by row so `search_after` is exact.
fn sort(s: Sort) -> Value {
    match s {
        Sort::Relevance => json!([{"_score": "desc"}, {"row": "asc"}]),
        Sort::Views => json!([{"view_count": "desc"}, {"row": "asc"}]),
        Sort::Newest => json!([{"uploaded_at": "desc"}, {"row": "desc"}]),
    }
}

/// A search page. Category and duration filters go to `post_filter`, so
/// each facet can be counted without its own filter (and with the other
/// one); first pages (no cursor) count hits and facets.
pub(crate) fn search(req: &SearchRequest, mode: Mode) -> Value {
    let f = &req.filters;
    let mut body = json!({
        "size": req.limit + 1,
        "_source": ["row", "title", "description"],
        "query": {"bool": {
            "must": [text_query(&req.text, mode)],
            "filter": base_filters(f)
        }},
        "sort": sort(req.sort),
        "highlight": {
            "pre_tags": [MARK_START.to_string()],
            "post_tags": [MARK_END.to_string()],
            "require_field_match": false,
            "fields": {
                "title": {"number_of_fragments": 0},
                "description": {"fragment_size": 150, "number_of_fragments": 2,
                                "no_match_size": 150}
            }
        }
    });
    let post: Vec<Value> = [category_filter(f), duration_filter(f)]
        .into_iter()
        .flatten()
        .collect();
    if !post.is_empty() {
        body["post_filter"] = json!({"bool": {"filter": post}});
    }
    if let Some(after) = &req.after {
        body["search_after"] = Value::Array(after.keys.clone());
        body["track_total_hits"] = json!(false);
    } else {
        body["track_total_hits"] = json!(TRACK_TOTAL_HITS);
        let ranges: Vec<Value> = DurationBucket::ALL
            .iter()
            .map(|b| {
                let (min, max) = b.range();
                let mut r = json!({"key": b.as_str()});
                if let Some(min) = min {
                    r["from"] = json!(min);
                }
                if let Some(max) = max {
                    r["to"] = json!(max);
                }
                r
            })
            .collect();
        body["aggs"] = json!({
            "category": {
                "filter": all_of(duration_filter(f).into_iter().collect()),
                "aggs": {"values": {"terms": {"field": "category.raw", "size": 50}}}
            },
            "duration": {
                "filter": all_of(category_filter(f).into_iter().collect()),
                "aggs": {"buckets": {"range": {
                    "field": "duration_seconds", "keyed": true, "ranges": ranges
                }}}
            }
        });
    }
    body
}

/// As-you-type: every word in the title, the last as a prefix; most
/// viewed first.
pub(crate) fn suggest(req: &SuggestRequest) -> Value {
    let mut must = Vec::new();
    for t in req.text.groups.iter().flatten().filter(|t| !t.negated) {
        for (i, w) in t.words.iter().enumerate() {
            let field = if t.prefix && i + 1 == t.words.len() {
                "title.prefix"
            } else {
                "title"
            };
            must.push(json!({"match": {field: {"query": w}}}));
        }
    }
    json!({
        "size": req.limit,
        "_source": ["row", "title"],
        "query": {"bool": {"must": must}},
        "sort": [{"view_count": "desc"}, {"row": "asc"}],
        "highlight": {
            "pre_tags": [MARK_START.to_string()],
            "post_tags": [MARK_END.to_string()],
            "fields": {"title": {"number_of_fragments": 0}, "title.prefix": {"number_of_fragments": 0}}
        }
    })
}

/// Points `alias` at `new` only (removing `old` ones) in one atomic
/// request: searches see the old index or the new one, never neither.
pub(crate) fn swap_alias(alias: &str, old: &[String], new: &str) -> Value {
    let mut actions: Vec<Value> = old
        .iter()
        .map(|o| json!({"remove": {"index": o, "alias": alias}}))
        .collect();
    actions.push(json!({"add": {"index": new, "alias": alias, "is_write_index": true}}));
    json!({"actions": actions})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;
    use chrono::{TimeZone, Utc};

    fn req(pairs: &[(&str, &str)]) -> SearchRequest {
        let p: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        SearchRequest::parse(&p).expect("valid request")
    }

    #[test]
    fn the_template_folds_stems_and_prefixes() {
        let t = template("vodfarm-videos");
        assert_eq!(t["index_patterns"], json!(["vodfarm-videos-*"]));
        let a = &t["template"]["settings"]["analysis"];
        assert_eq!(
            a["analyzer"]["vodfarm_text"]["filter"],
            json!([
                "lowercase",
                "vodfarm_folding",
                "vodfarm_stop",
                "vodfarm_stem"
            ])
        );
        assert_eq!(a["filter"]["vodfarm_edge"]["type"], "edge_ngram");
        assert_eq!(a["filter"]["vodfarm_folding"]["type"], "asciifolding");
        let p = &t["template"]["mappings"]["properties"];
        assert_eq!(p["title"]["fields"]["prefix"]["analyzer"], "vodfarm_prefix");
        assert_eq!(
            p["title"]["fields"]["prefix"]["search_analyzer"],
            "vodfarm_words"
        );
        assert_eq!(p["category"]["normalizer"], "vodfarm_keyword");
        assert_eq!(t["template"]["mappings"]["dynamic"], "strict");
    }

    #[test]
    fn bulk_lines_carry_external_versions() {
        let doc = Document {
            row: 7,
            version: 42,
            video_id: "v_a".into(),
            channel_id: "c_a".into(),
            channel_name: "Alice".into(),
            title: "Crème brûlée".into(),
            description: String::new(),
            tags: vec!["dessert".into()],
            category: Some("Food".into()),
            duration_seconds: 61,
            view_count: 3,
            like_count: 1,
            uploaded_at: Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .expect("t"),
        };
        let lines = bulk_lines(
            "vodfarm-videos",
            &[
                Change::Upsert(doc),
                Change::Remove {
                    row: 9,
                    version: 43,
                },
            ],
        );
        assert_eq!(
            lines[0],
            json!({"index": {"_index": "vodfarm-videos", "_id": "7", "version": 42,
                             "version_type": "external"}})
        );
        assert_eq!(lines[1]["title"], "Crème brûlée");
        assert_eq!(lines[1]["row"], 7);
        assert_eq!(lines[1]["uploaded_at"], "2026-01-02T03:04:05Z");
        assert!(lines[1].get("version").is_none(), "the version is metadata");
        assert_eq!(
            lines[2],
            json!({"delete": {"_index": "vodfarm-videos", "_id": "9", "version": 43,
                              "version_type": "external"}})
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_first_page_with_filters_and_facets() {
        let r = req(&[
            ("q", "\"red guitar\" -drums lesso"),
            ("channel", "c_abcdefghijklmnop"),
            ("category", "Music"),
            ("duration", "short"),
            ("tag", "rock"),
            ("sort", "views"),
            ("limit", "10"),
        ]);
        let b = search(&r, Mode::Strict);
        assert_eq!(b["size"], 11);
        assert_eq!(b["track_total_hits"], 10_000);
        assert_eq!(b["sort"], json!([{"view_count": "desc"}, {"row": "asc"}]));
        let q = &b["query"]["bool"]["must"][0]["bool"];
        assert_eq!(q["must"][0]["multi_match"]["type"], "phrase");
        assert_eq!(q["must"][0]["multi_match"]["query"], "red guitar");
        assert_eq!(
            q["must"][1]["bool"]["should"][1],
            json!({"match": {"title.prefix": {"query": "lesso"}}})
        );
        assert!(q["must"][1]["bool"]["should"][0]["multi_match"]
            .get("fuzziness")
            .is_none());
        assert_eq!(q["must_not"][0]["multi_match"]["query"], "drums");
        assert_eq!(
            b["query"]["bool"]["filter"],
            json!([{"term": {"channel_id": "c_abcdefghijklmnop"}},
                   {"match": {"tags.exact": {"query": "rock"}}}])
        );
        assert_eq!(
            b["post_filter"]["bool"]["filter"],
            json!([{"match": {"category": {"query": "Music"}}},
                   {"range": {"duration_seconds": {"lt": 240}}}])
        );
        // Each facet ignores its own filter and applies the other.
        assert_eq!(
            b["aggs"]["category"]["filter"],
            json!({"bool": {"filter": [{"range": {"duration_seconds": {"lt": 240}}}]}})
        );
        assert_eq!(
            b["aggs"]["duration"]["filter"],
            json!({"bool": {"filter": [{"match": {"category": {"query": "Music"}}}]}})
        );
        assert_eq!(
            b["aggs"]["duration"]["aggs"]["buckets"]["range"]["ranges"],
            json!([{"key": "short", "to": 240}, {"key": "medium", "from": 240, "to": 1201},
                   {"key": "long", "from": 1201}])
        );
        assert_eq!(b["highlight"]["pre_tags"], json!(["\u{2}"]));
        assert!(b.get("search_after").is_none());
    }

    #[test]
    fn later_pages_typos_and_alternatives() {
        let mut r = req(&[("q", "cats or dogs "), ("sort", "newest")]);
        r.after = Some(Cursor {
            mode: Mode::Fuzzy,
            keys: vec![json!(1_767_323_045_000_i64), json!(12)],
        });
        let b = search(&r, Mode::Fuzzy);
        assert_eq!(b["search_after"], json!([1_767_323_045_000_i64, 12]));
        assert_eq!(b["track_total_hits"], false);
        assert!(b.get("aggs").is_none());
        assert!(b.get("post_filter").is_none());
        assert_eq!(b["sort"], json!([{"uploaded_at": "desc"}, {"row": "desc"}]));
        let q = &b["query"]["bool"]["must"][0]["bool"];
        assert_eq!(q["minimum_should_match"], 1);
        let cats = &q["should"][0]["bool"]["must"][0]["multi_match"];
        assert_eq!(cats["query"], "cats");
        assert_eq!(cats["fuzziness"], "AUTO");
        assert_eq!(cats["fields"], json!(FIELDS));
    }

    #[test]
    fn suggestions_and_the_alias_swap() {
        let p = vec![("q".to_owned(), "vodfarm dem".to_owned())];
        let s = suggest(&SuggestRequest::parse(&p).expect("valid"));
        assert_eq!(
            s["query"]["bool"]["must"],
            json!([{"match": {"title": {"query": "vodfarm"}}},
                   {"match": {"title.prefix": {"query": "dem"}}}])
        );
        assert_eq!(s["size"], 8);
        assert_eq!(
            swap_alias(
                "vodfarm-videos",
                &["vodfarm-videos-1".into()],
                "vodfarm-videos-2"
            ),
            json!({"actions": [
                {"remove": {"index": "vodfarm-videos-1", "alias": "vodfarm-videos"}},
                {"add": {"index": "vodfarm-videos-2", "alias": "vodfarm-videos",
                         "is_write_index": true}}
            ]})
        );
    }
}
