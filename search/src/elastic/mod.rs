//! The Elasticsearch index, used when `ELASTICSEARCH_URL` is set, through
//! the official `elasticsearch` crate (rustls, no OpenSSL).
//!
//! - Searches and the indexer use an alias (`--elasticsearch-index`,
//!   default `vodfarm-videos`); indexes behind it are `{alias}-…` and get
//!   their analyzers and mappings from an index template (`body.rs`).
//! - Writes are bulk requests with `version_type=external` and the
//!   video's `search_version`: Elasticsearch refuses (409) a write older
//!   than the document it holds, so a replayed or late batch never
//!   brings an older state back.
//! - `vodfarm search reindex` builds a new index while indexers write to
//!   it as well as to the alias (`search_reindex_targets`), then swaps the
//!   alias in one atomic request and deletes the old index: searches
//!   never see a missing or half-built index.

pub(crate) mod body;

use crate::cursor::{Cursor, Mode};
use crate::document::{self, Change};
use crate::index::{
    Applied, ClaimedVideo, Facets, IndexError, IndexHit, IndexPage, ReindexReport, SearchIndex,
    Suggestion, Total,
};
use crate::query::{DurationBucket, SearchRequest, SuggestRequest};
use async_trait::async_trait;
use elasticsearch::auth::Credentials;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Url;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesGetAliasParts, IndicesPutIndexTemplateParts,
};
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// The Elasticsearch index.
#[derive(Debug, Clone)]
pub struct EsIndex {
    client: Elasticsearch,
    alias: String,
}

fn es_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Elastic(e.to_string())
}

/// The first index behind a new alias (a fixed name, so replicas starting
/// together create one index, not one each).
fn first_index(alias: &str) -> String {
    format!("{alias}-000001")
}

impl EsIndex {
    /// A client for `url` (`http[s]://[user:password@]host:port`; the
    /// credentials, if any, become Basic authentication).
    pub fn new(url: &str, alias: &str) -> Result<EsIndex, IndexError> {
        let mut url = Url::parse(url).map_err(|e| es_err(format!("ELASTICSEARCH_URL: {e}")))?;
        let credentials = (!url.username().is_empty()).then(|| {
            Credentials::Basic(
                url.username().to_owned(),
                url.password().unwrap_or_default().to_owned(),
            )
        });
        // Credentials travel in the header, not in every request line.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(Duration::from_secs(30));
        if let Some(c) = credentials {
            builder = builder.auth(c);
        }
        let transport = builder.build().map_err(es_err)?;
        Ok(EsIndex {
            client: Elasticsearch::new(transport),
            alias: alias.to_owned(),
        })
    }

    /// Installs the index template and, when the alias does not exist
    /// yet, its first index. Idempotent; every role using the index calls
    /// it at start.
    pub async fn prepare(&self) -> Result<(), IndexError> {
        let r = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&self.alias))
            .body(body::template(&self.alias))
            .send()
            .await
            .map_err(es_err)?;
        check(r, &[]).await?;
        if self.alias_indexes().await?.is_empty() {
            let first = first_index(&self.alias);
            let r = self
                .client
                .indices()
                .create(IndicesCreateParts::Index(&first))
                .send()
                .await
                .map_err(es_err)?;
            // Another replica may have created it first.
            check(r, &[400]).await?;
            let r = self
                .client
                .indices()
                .update_aliases()
                .body(body::swap_alias(&self.alias, &[], &first))
                .send()
                .await
                .map_err(es_err)?;
            check(r, &[]).await?;
            tracing::info!(alias = %self.alias, index = %first, "elasticsearch index created");
        }
        Ok(())
    }

    /// The indexes the alias points at.
    async fn alias_indexes(&self) -> Result<Vec<String>, IndexError> {
        let r = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[&self.alias]))
            .send()
            .await
            .map_err(es_err)?;
        if r.status_code().as_u16() == 404 {
            return Ok(Vec::new());
        }
        let v: Value = check(r, &[]).await?;
        Ok(v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Sends `changes` to `index` in one bulk request.
    async fn bulk(&self, index: &str, changes: &[Change]) -> Result<Applied, IndexError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let lines: Vec<JsonBody<Value>> = body::bulk_lines(index, changes)
            .into_iter()
            .map(JsonBody::new)
            .collect();
        let r = self
            .client
            .bulk(BulkParts::Index(index))
            .body(lines)
            .send()
            .await
            .map_err(es_err)?;
        let v: Value = check(r, &[]).await?;
        bulk_outcome(&v)
    }

    async fn run_search(&self, body: Value) -> Result<Value, IndexError> {
        let r = self
            .client
            .search(SearchParts::Index(&[&self.alias]))
            .body(body)
            .send()
            .await
            .map_err(es_err)?;
        check(r, &[]).await
    }
}

/// The body of a successful answer (or one of the `allowed` statuses),
/// or the error Elasticsearch reported.
async fn check(
    r: elasticsearch::http::response::Response,
    allowed: &[u16],
) -> Result<Value, IndexError> {
    let status = r.status_code();
    if status.is_success() || allowed.contains(&status.as_u16()) {
        return r.json::<Value>().await.map_err(es_err);
    }
    let text = r.text().await.unwrap_or_default();
    Err(IndexError::Elastic(format!(
        "HTTP {status}: {}",
        text.chars().take(500).collect::<String>()
    )))
}

/// What a bulk answer says: 2xx written, 409 an equal or newer version
/// held already, 404 on a delete nothing to delete; anything else fails
/// the batch (it is retried).
pub(crate) fn bulk_outcome(v: &Value) -> Result<Applied, IndexError> {
    let mut out = Applied::default();
    for item in v["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (op, result) = match item.as_object().and_then(|o| o.iter().next()) {
            Some((op, result)) => (op.as_str(), result),
            None => continue,
        };
        match (op, result["status"].as_u64().unwrap_or(0)) {
            (_, 409) => out.skipped += 1,
            ("delete", 200 | 404) => out.removed += 1,
            ("index", 200 | 201) => out.upserted += 1,
            (_, status) => {
                return Err(IndexError::Elastic(format!(
                    "bulk {op} of document {} failed ({status}): {}",
                    result["_id"], result["error"]
                )))
            }
        }
    }
    Ok(out)
}

/// The row id and highlights of a hit.
fn hit(h: &Value) -> Option<IndexHit> {
    let src = &h["_source"];
    let first = |field: &str| -> Option<String> {
        let frags = h["highlight"][field].as_array()?;
        let parts: Vec<&str> = frags.iter().filter_map(Value::as_str).collect();
        (!parts.is_empty()).then(|| parts.join(" … "))
    };
    Some(IndexHit {
        video_row: src["row"].as_i64()?,
        title_marked: first("title")
            .or_else(|| src["title"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        description_marked: first("description").unwrap_or_else(|| {
            src["description"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect()
        }),
    })
}

/// A search answer as a page: one more hit than wanted means there is a
/// next page, which starts after the last hit's sort values.
pub(crate) fn page_of(v: &Value, req: &SearchRequest, mode: Mode) -> IndexPage {
    let all = v["hits"]["hits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let limit = req.limit as usize;
    let next = (all.len() > limit)
        .then(|| all[limit - 1]["sort"].as_array().cloned())
        .flatten()
        .map(|keys| Cursor { mode, keys });
    let hits = all.iter().take(limit).filter_map(hit).collect();
    let (total, facets) = if req.after.is_none() {
        let t = &v["hits"]["total"];
        let total = Total {
            value: t["value"].as_u64().unwrap_or(0),
            exact: t["relation"].as_str() != Some("gte"),
        };
        let category = v["aggregations"]["category"]["values"]["buckets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|b| Some((b["key"].as_str()?.to_owned(), b["doc_count"].as_u64()?)))
            .collect();
        let buckets = &v["aggregations"]["duration"]["buckets"]["buckets"];
        let duration = DurationBucket::ALL
            .iter()
            .map(|b| {
                let n = buckets[b.as_str()]["doc_count"].as_u64().unwrap_or(0);
                (b.as_str().to_owned(), n)
            })
            .collect();
        (Some(total), Some(Facets { category, duration }))
    } else {
        (None, None)
    };
    IndexPage {
        hits,
        next,
        total,
        facets,
    }
}

#[async_trait]
impl SearchIndex for EsIndex {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        videos: &[ClaimedVideo],
    ) -> Result<Applied, IndexError> {
        let changes = document::changes(&mut *tx, videos).await?;
        // Read after the claim, in its transaction: a change committed
        // after a rebuild registered its index reaches that index too.
        let extra: Vec<String> =
            sqlx::query_scalar("SELECT index_name FROM search_reindex_targets")
                .fetch_all(&mut *tx)
                .await?;
        let applied = self.bulk(&self.alias, &changes).await?;
        for index in &extra {
            self.bulk(index, &changes).await?;
        }
        Ok(applied)
    }

    async fn search(&self, req: &SearchRequest, mode: Mode) -> Result<IndexPage, IndexError> {
        let v = self.run_search(body::search(req, mode)).await?;
        Ok(page_of(&v, req, mode))
    }

    async fn suggest(&self, req: &SuggestRequest) -> Result<Vec<Suggestion>, IndexError> {
        let v = self.run_search(body::suggest(req)).await?;
        Ok(v["hits"]["hits"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|h| {
                let marked = h["highlight"]["title"][0]
                    .as_str()
                    .or_else(|| h["highlight"]["title.prefix"][0].as_str())
                    .or_else(|| h["_source"]["title"].as_str())?;
                Some(Suggestion {
                    video_row: h["_source"]["row"].as_i64()?,
                    title_marked: marked.to_owned(),
                })
            })
            .collect())
    }

    async fn reindex(&self, pool: &PgPool) -> Result<ReindexReport, IndexError> {
        const BATCH: i64 = 1000;
        self.prepare().await?;
        let new = format!(
            "{}-{}",
            self.alias,
            chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
        );
        let r = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&new))
            .send()
            .await
            .map_err(es_err)?;
        check(r, &[]).await?;
        // From here on every indexer batch also writes to the new index.
        sqlx::query("INSERT INTO search_reindex_targets (index_name) VALUES ($1)")
            .bind(&new)
            .execute(pool)
            .await?;
        let loaded = async {
            let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM videos")
                .fetch_one(pool)
                .await?;
            let mut documents = 0;
            let mut after = 0;
            let mut conn = pool.acquire().await?;
            while after < max.unwrap_or(0) {
                let docs = document::searchable_range(&mut conn, after, BATCH).await?;
                let changes: Vec<Change> = docs.into_iter().map(Change::Upsert).collect();
                let applied = self.bulk(&new, &changes).await?;
                documents += applied.upserted + applied.skipped;
                after += BATCH;
            }
            Ok::<u64, IndexError>(documents)
        }
        .await;
        let outcome = match loaded {
            Ok(documents) => {
                let old = self.alias_indexes().await?;
                let r = self
                    .client
                    .indices()
                    .update_aliases()
                    .body(body::swap_alias(&self.alias, &old, &new))
                    .send()
                    .await
                    .map_err(es_err)?;
                check(r, &[]).await?;
                Ok((documents, old))
            }
            Err(e) => Err(e),
        };
        // The new index is the alias's now (or abandoned): no more
        // double writes either way.
        sqlx::query("DELETE FROM search_reindex_targets WHERE index_name = $1")
            .bind(&new)
            .execute(pool)
            .await?;
        let (documents, old) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = self
                    .client
                    .indices()
                    .delete(IndicesDeleteParts::Index(&[&new]))
                    .send()
                    .await;
                return Err(e);
            }
        };
        let old_refs: Vec<&str> = old.iter().map(String::as_str).collect();
        if !old_refs.is_empty() {
            let r = self
                .client
                .indices()
                .delete(IndicesDeleteParts::Index(&old_refs))
                .send()
                .await
                .map_err(es_err)?;
            check(r, &[404]).await?;
        }
        tracing::info!(alias = %self.alias, index = %new, documents, "elasticsearch reindexed");
        Ok(ReindexReport {
            documents,
            target: new,
            replaced: (!old.is_empty()).then(|| old.join(",")),
        })
    }

    async fn prune(&self, _older_than: Duration) -> Result<u64, IndexError> {
        // Elasticsearch keeps its own delete tombstones
        // (index.gc_deletes).
        Ok(0)
    }

    async fn ping(&self) -> Result<(), IndexError> {
        let r = self.client.ping().send().await.map_err(es_err)?;
        check(r, &[]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_answers_are_read_per_item() {
        let v = json!({"errors": true, "items": [
            {"index": {"_id": "1", "status": 201}},
            {"index": {"_id": "2", "status": 409}},
            {"delete": {"_id": "3", "status": 404}},
            {"delete": {"_id": "4", "status": 200}}
        ]});
        let a = bulk_outcome(&v).expect("ok");
        assert_eq!((a.upserted, a.skipped, a.removed), (1, 1, 2));
        let bad = json!({"items": [{"index": {"_id": "5", "status": 429,
                                               "error": {"type": "es_rejected_execution_exception"}}}]});
        let e = bulk_outcome(&bad).expect_err("a rejected write fails the batch");
        assert!(e.to_string().contains("429"), "{e}");
    }

    #[test]
    fn answers_become_pages() {
        let p: Vec<(String, String)> =
            vec![("q".into(), "guitar".into()), ("limit".into(), "1".into())];
        let req = SearchRequest::parse(&p).expect("valid");
        let v = json!({
            "hits": {"total": {"value": 10000, "relation": "gte"}, "hits": [
                {"_source": {"row": 5, "title": "Guitar", "description": "d"},
                 "highlight": {"title": ["\u{2}Guitar\u{3}"]}, "sort": [1.5, 5]},
                {"_source": {"row": 6, "title": "Guitars"}, "sort": [1.2, 6]}
            ]},
            "aggregations": {
                "category": {"values": {"buckets": [{"key": "Music", "doc_count": 7}]}},
                "duration": {"buckets": {"buckets": {
                    "short": {"doc_count": 4}, "medium": {"doc_count": 2}, "long": {"doc_count": 1}}}}
            }
        });
        let page = page_of(&v, &req, Mode::Strict);
        assert_eq!(page.hits.len(), 1);
        assert_eq!(page.hits[0].video_row, 5);
        assert_eq!(page.hits[0].title_marked, "\u{2}Guitar\u{3}");
        assert_eq!(page.hits[0].description_marked, "d");
        assert_eq!(
            page.next.as_ref().map(|c| c.keys.clone()),
            Some(vec![json!(1.5), json!(5)])
        );
        assert_eq!(
            page.total,
            Some(Total {
                value: 10000,
                exact: false
            })
        );
        let f = page.facets.expect("facets");
        assert_eq!(f.category, [("Music".to_owned(), 7)]);
        assert_eq!(
            f.duration,
            [
                ("short".to_owned(), 4),
                ("medium".to_owned(), 2),
                ("long".to_owned(), 1)
            ]
        );
    }
}
