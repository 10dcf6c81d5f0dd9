//! Origin test harness: real `vodfarm origin` processes, objects in a real
//! store, videos in the test database.

#![allow(dead_code)]

use crate::common::{free_port, metric, TestDb};
use bytes::Bytes;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vodfarm_core::store::{LocalStore, ObjectStore};

/// The signing secret every test origin shares.
pub(crate) const SECRET: &str = "test-signing-secret";

/// A `vodfarm origin` process, killed on drop.
pub(crate) struct OriginProcess {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) port: u16,
}

impl OriginProcess {
    /// Starts an origin on `db` with `--upstream upstream` and waits until
    /// it listens for video changes.
    pub(crate) async fn start(
        db: &TestDb,
        upstream: &str,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> OriginProcess {
        Self::start_on(free_port(), db, upstream, env, extra).await
    }

    /// Like [`start`](Self::start), on a given port.
    pub(crate) async fn start_on(
        port: u16,
        db: &TestDb,
        upstream: &str,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> OriginProcess {
        Self::start_with_url(port, &db.url, upstream, env, extra).await
    }

    /// Like [`start_on`](Self::start_on), on any database URL.
    pub(crate) async fn start_with_url(
        port: u16,
        database_url: &str,
        upstream: &str,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> OriginProcess {
        // VODFARM_BIN overrides cargo's binary: a build directory shared
        // by several checkouts may hold another checkout's build.
        let bin = std::env::var_os("VODFARM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_vodfarm").into());
        let mut cmd = Command::new(bin);
        cmd.arg("origin")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", upstream])
            .args(["--database-url", database_url])
            .args(["--db-max-connections", "4"])
            .args(extra)
            .env("VODFARM_SIGNING_SECRET", SECRET)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vodfarm origin");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["listening"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "origin did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        OriginProcess { child, base, port }
    }

    /// `base` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One sample of this origin's `/metrics` (0 when absent).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metric(&text, name).unwrap_or(0.0)
    }

    /// Kills the process now.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local object store in a fresh directory, removed on drop.
pub(crate) struct LocalDir {
    pub(crate) dir: PathBuf,
    pub(crate) store: LocalStore,
}

impl LocalDir {
    pub(crate) async fn new() -> LocalDir {
        let dir = std::env::temp_dir().join(format!(
            "vodfarm-origin-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = LocalStore::new(&dir).await.expect("local store");
        LocalDir { dir, store }
    }

    /// `VODFARM_STORE` for it.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![("VODFARM_STORE", format!("file://{}", self.dir.display()))]
    }
}

impl Drop for LocalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes_of(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Writes the files of one video: playlists, three segments, images and
/// subtitles. Returns the 720p segment 0.
pub(crate) async fn put_video(store: &dyn ObjectStore, id: &str, segment_len: usize) -> Bytes {
    let master =
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720\n720p/playlist.m3u8\n";
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\nsegment_0.ts\n#EXTINF:6.0,\nsegment_1.ts\n#EXT-X-ENDLIST\n";
    store
        .put(&format!("encoded/{id}/master.m3u8"), Bytes::from(master))
        .await
        .expect("put");
    store
        .put(
            &format!("encoded/{id}/720p/playlist.m3u8"),
            Bytes::from(playlist),
        )
        .await
        .expect("put");
    let seg = bytes_of(segment_len, 1);
    for n in 0..3u64 {
        store
            .put(
                &format!("encoded/{id}/720p/segment_{n}.ts"),
                if n == 0 {
                    seg.clone()
                } else {
                    bytes_of(segment_len, n + 1)
                },
            )
            .await
            .expect("put");
    }
    for (name, body) in [
        ("default.jpg", bytes_of(2000, 9)),
        ("sprite.jpg", bytes_of(4000, 10)),
        (
            "storyboard.vtt",
            Bytes::from("WEBVTT\n\n00:00.000 --> 00:05.000\nsprite.jpg#xywh=0,0,160,90\n"),
        ),
    ] {
        store
            .put(&format!("thumbnails/{id}/{name}"), body)
            .await
            .expect("put");
    }
    store
        .put(
            &format!("subtitles/{id}/en.vtt"),
            Bytes::from("WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"),
        )
        .await
        .expect("put");
    store
        .put(&format!("originals/{id}/original.mp4"), bytes_of(100, 5))
        .await
        .expect("put");
    seg
}

/// A ready public video row; returns its public id.
pub(crate) async fn ready_video(db: &TestDb) -> String {
    let (_, id) = crate::common::insert_video(&db.pool).await;
    set_video(db, &id, "status = 'ready'").await;
    id
}

/// `UPDATE videos SET {set} WHERE video_id = id`.
pub(crate) async fn set_video(db: &TestDb, id: &str, set: &str) {
    // `set` is a literal from the tests, never outside input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE videos SET {set} WHERE video_id = $1"
    )))
    .bind(id)
    .execute(&db.pool)
    .await
    .expect("update video");
}

/// Sends one raw HTTP/1.1 request line (the path exactly as given, not
/// normalized by a client library) and returns the status code.
pub(crate) async fn raw_status(port: u16, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it returns true or `within` passes; returns the time
/// it took, or panics with `what`.
pub(crate) async fn within<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
