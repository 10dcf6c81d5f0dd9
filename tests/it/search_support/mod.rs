//! Harness for the search tests: a fresh database, a real `vodfarm api`
//! (local-directory store) and real `vodfarm search-indexer` processes,
//! and a fixed corpus written straight into `videos` (the triggers make
//! the outbox rows, as for any writer).

#![allow(dead_code)]

use crate::api_support::ApiProcess;
use crate::common::{free_port, metric, terminate_child, TestDb};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfarm_core::ids::{new_public_id, IdKind};

/// A `vodfarm search-indexer` process.
pub(crate) struct IndexerProcess {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl IndexerProcess {
    /// Starts an indexer on `db` (extra flags, extra environment) and
    /// waits for `/readyz`.
    pub(crate) async fn start(
        db_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> IndexerProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("search-indexer")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db_url])
            .args(extra)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vodfarm search-indexer");
        let base = format!("http://127.0.0.1:{port}");
        crate::common::wait_readyz(&base, "search indexer").await;
        IndexerProcess { child, base }
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn stop(&mut self) -> Option<std::process::ExitStatus> {
        terminate_child(&mut self.child, Duration::from_secs(20))
    }

    /// SIGKILL: whatever batch is in flight is cut.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The indexer's `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for IndexerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database, an api and (optionally) an indexer.
pub(crate) struct SearchEnv {
    pub(crate) indexer: Option<IndexerProcess>,
    pub(crate) api: ApiProcess,
    pub(crate) http: reqwest::Client,
    _store: tempfile::TempDir,
    pub(crate) db: TestDb,
    /// The channel the corpus goes to (row id, public id).
    pub(crate) channel: (i64, String),
}

/// One video of a corpus.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub(crate) title: &'static str,
    pub(crate) description: &'static str,
    pub(crate) tags: &'static [&'static str],
    pub(crate) category: Option<&'static str>,
    pub(crate) duration: i32,
    pub(crate) views: i64,
    /// Days before now it was uploaded.
    pub(crate) age_days: i32,
}

impl Default for Doc {
    fn default() -> Self {
        Doc {
            title: "untitled",
            description: "",
            tags: &[],
            category: None,
            duration: 60,
            views: 0,
            age_days: 1,
        }
    }
}

impl SearchEnv {
    /// Starts everything; `api_env` goes to the api and the indexer
    /// (e.g. ELASTICSEARCH_URL). The api's answer cache is off unless
    /// `api_env` sets `VODFARM_SEARCH_CACHE_TTL`: these tests read their
    /// own writes at once, which a cache allows only after its TTL.
    pub(crate) async fn start(api_env: &[(&'static str, String)]) -> SearchEnv {
        let mut api_env = api_env.to_vec();
        if !api_env
            .iter()
            .any(|(k, _)| *k == "VODFARM_SEARCH_CACHE_TTL")
        {
            api_env.push(("VODFARM_SEARCH_CACHE_TTL", "0".into()));
        }
        let db = TestDb::new().await;
        let store = tempfile::tempdir().expect("store dir");
        let args: Vec<String> = [
            "--database-url",
            &db.url,
            "--store",
            &format!("file://{}", store.path().display()),
            "--signing-secret",
            "search-test-secret",
            "--public-origin-url",
            "http://origin.test",
            "--db-max-connections",
            "4",
            "--search-db-max-connections",
            "4",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let api = ApiProcess::start(free_port(), args, api_env).await;
        let channel = insert_channel(&db, "Alice Makes Music").await;
        SearchEnv {
            indexer: None,
            api,
            http: reqwest::Client::new(),
            _store: store,
            db,
            channel,
        }
    }

    /// Starts an indexer (batch size `batch`).
    pub(crate) async fn start_indexer(&mut self, batch: usize, env: &[(&str, &str)]) {
        let b = batch.to_string();
        self.indexer = Some(IndexerProcess::start(&self.db.url, &["--batch-size", &b], env).await);
    }

    /// Inserts `docs` as ready, public videos of the env's channel;
    /// returns their public ids in order.
    pub(crate) async fn insert(&self, docs: &[Doc]) -> Vec<String> {
        insert_videos(&self.db, self.channel.0, docs).await
    }

    /// Waits until the outbox is empty (every change applied). Fails only
    /// when the indexers stop making progress for a long while, not on a
    /// slow (loaded) machine that is still draining the outbox.
    pub(crate) async fn wait_indexed(&self) {
        let stall = Duration::from_secs(60);
        let mut fewest = i64::MAX;
        let mut progressed = Instant::now();
        loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM search_outbox")
                .fetch_one(&self.db.pool)
                .await
                .expect("outbox count");
            if left == 0 {
                return;
            }
            if left < fewest {
                fewest = left;
                progressed = Instant::now();
            }
            assert!(
                progressed.elapsed() < stall,
                "{left} outbox rows never applied (no progress for {stall:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET {path}` with the query pairs; returns status and JSON.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.api.base))
            .query(query)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET /v1/search`, which must answer 200.
    pub(crate) async fn search(&self, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get("/v1/search", query).await;
        assert_eq!(status, 200, "search {query:?}: {body}");
        body
    }

    /// The titles of a search's hits, in order.
    pub(crate) async fn titles(&self, query: &[(&str, &str)]) -> Vec<String> {
        titles(&self.search(query).await)
    }

    /// The titles of the hits that match word for word (none when only
    /// the typo-tolerant match answered).
    pub(crate) async fn strict(&self, query: &[(&str, &str)]) -> Vec<String> {
        let body = self.search(query).await;
        if body["typo"] == true {
            return Vec::new();
        }
        titles(&body)
    }

    /// The titles `GET /v1/search/suggest?q=` suggests, in order.
    pub(crate) async fn suggested(&self, q: &str) -> Vec<String> {
        let (status, s) = self.get("/v1/search/suggest", &[("q", q)]).await;
        assert_eq!(status, 200, "{s}");
        s["suggestions"]
            .as_array()
            .expect("suggestions")
            .iter()
            .filter_map(|x| x["title"].as_str().map(str::to_owned))
            .collect()
    }

    /// A sample of the api's metrics.
    pub(crate) async fn api_metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.api.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metric(&text, name).unwrap_or(0.0)
    }
}

/// The hits' titles.
pub(crate) fn titles(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {body}"))
        .iter()
        .map(|h| h["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A user and a channel named `name`; returns the channel's row id and
/// public id.
pub(crate) async fn insert_channel(db: &TestDb, name: &str) -> (i64, String) {
    let user_pub = new_public_id(IdKind::User);
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (user_id, email, username, password_hash)
         VALUES ($1, $2, $3, 'x') RETURNING id",
    )
    .bind(&user_pub)
    .bind(format!("{user_pub}@example.com"))
    .bind(format!("user{}", &user_pub[2..]))
    .fetch_one(&db.pool)
    .await
    .expect("insert user");
    let channel_pub = new_public_id(IdKind::Channel);
    let channel: i64 = sqlx::query_scalar(
        "INSERT INTO channels (channel_id, user_id, name) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&channel_pub)
    .bind(user)
    .bind(name)
    .fetch_one(&db.pool)
    .await
    .expect("insert channel");
    (channel, channel_pub)
}

/// Inserts `docs` as ready, public videos of `channel`.
pub(crate) async fn insert_videos(db: &TestDb, channel: i64, docs: &[Doc]) -> Vec<String> {
    let mut ids = Vec::new();
    for d in docs {
        let id = new_public_id(IdKind::Video);
        let tags: Vec<String> = d.tags.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO videos (video_id, channel_id, title, description, tags, category,
                                 duration_seconds, view_count, status, privacy, uploaded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ready', 'public',
                     now() - make_interval(days => $9))",
        )
        .bind(&id)
        .bind(channel)
        .bind(d.title)
        .bind(d.description)
        .bind(&tags)
        .bind(d.category)
        .bind(d.duration)
        .bind(d.views)
        .bind(d.age_days)
        .execute(&db.pool)
        .await
        .expect("insert video");
        ids.push(id);
    }
    ids
}

/// What the PostgreSQL index shows, and what `videos` says it must show:
/// `(row, version, title, channel name, view count)` of every searchable
/// video, sorted. Equal when the index is up to date.
pub(crate) async fn index_and_table(
    db: &TestDb,
) -> (
    Vec<(i64, i64, String, String, i64)>,
    Vec<(i64, i64, String, String, i64)>,
) {
    let index = sqlx::query_as(
        "SELECT video_id, version, title, channel_name, view_count FROM search_documents
         WHERE visible ORDER BY video_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("index rows");
    let table = sqlx::query_as(
        "SELECT v.id, v.search_version, v.title, c.name, coalesce(v.view_count, 0)
         FROM videos v JOIN channels c ON c.id = v.channel_id
         WHERE v.status = 'ready' AND v.privacy = 'public' ORDER BY v.id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("table rows");
    (index, table)
}
