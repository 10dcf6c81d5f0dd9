//! The origin/shield server: serves the seed's CDN URLs from the object
//! store (or from the next tier, in shield mode) with an in-memory,
//! single-flight cache, HTTP caching semantics, and access rules kept
//! strongly consistent with PostgreSQL.
//!
//! - [`route`]: CDN path → object key, refusing anything else.
//! - [`upstream`]: the object store or the next tier.
//! - [`cache`]: byte-bounded cache in front of the upstream.
//! - [`flight`]: single-flight fetches that waiters stream from; a fetch
//!   task that dies fails its waiters instead of leaving them hanging.
//! - [`access`]: video state from PostgreSQL, invalidated by NOTIFY;
//!   playback tokens.
//! - [`server`]: each request through named phases (route → access →
//!   lookup → respond → log): HTTP semantics and the access log.
//! - [`run`]: the `vodfarm origin` role.

#![warn(missing_docs)]

pub mod access;
pub mod cache;
pub mod flight;
pub mod metrics;
pub mod server;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_core::config::parse_duration;
use vodfarm_core::layout::{self, ObjectKey, ThumbFile};

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The video's public id.
    pub video_id: String,
    /// The object to serve.
    pub key: ObjectKey,
    /// Whether it is a playlist or another file that can change under
    /// its URL (subtitles): short cache lifetime, rather than an
    /// immutable segment or image. Only `.m3u8` ones get a viewer's token
    /// added to their URIs.
    pub is_playlist: bool,
    /// An MP4 download (`/v/{id}/{rung}/video.mp4`): answered with a
    /// `Content-Disposition` naming the file after the video's title.
    pub is_download: bool,
}

/// Maps a request path to an object key, or `None` for anything that is
/// not one of the seed's routes:
/// `/v/{id}/master.m3u8`, `/v/{id}/{rendition}/playlist.m3u8`,
/// `/v/{id}/{rendition}/segment_{n}.ts`, `/t/{id}/default.jpg`,
/// `/t/{id}/sprite.jpg`, `/t/{id}/storyboard.vtt`, `/s/{id}/{lang}.vtt`,
/// `/s/{id}/{lang}.m3u8` (the WebVTT playlist the HLS master points at),
/// and a CMAF video's `/v/{id}/manifest.mpd`,
/// `/v/{id}/{rendition|audio}/init.mp4` and `…/segment_{n}.m4s`.
///
/// The path is matched raw (not percent-decoded): an encoded dot, slash
/// or NUL is simply not a valid id or name, so it cannot reach a key.
pub fn route(path: &str) -> Option<Route> {
    if path.len() > 256 {
        return None;
    }
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (id, key, is_playlist) = match parts.as_slice() {
        ["v", id, "master.m3u8"] => (*id, layout::master_playlist(id).ok()?, true),
        ["v", id, "manifest.mpd"] => (*id, layout::dash_manifest(id).ok()?, true),
        ["v", id, rung, "playlist.m3u8"] => (*id, layout::rendition_playlist(id, rung).ok()?, true),
        ["v", id, rung, "init.mp4"] => (*id, layout::cmaf_init(id, rung).ok()?, false),
        ["v", id, rung, "video.mp4"] => (*id, layout::download_mp4(id, rung).ok()?, false),
        ["v", id, rung, file] => {
            let n = file.strip_prefix("segment_")?;
            let (n, cmaf) = match n.strip_suffix(".ts") {
                Some(n) => (n, false),
                None => (n.strip_suffix(".m4s")?, true),
            };
            if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = n.parse().ok()?;
            let key = if cmaf {
                layout::cmaf_segment(id, rung, n)
            } else {
                layout::segment(id, rung, n)
            };
            (*id, key.ok()?, false)
        }
        ["t", id, "default.jpg"] => (*id, layout::thumb_file(id, ThumbFile::Default).ok()?, false),
        ["t", id, "sprite.jpg"] => (*id, layout::thumb_file(id, ThumbFile::Sprite).ok()?, false),
        ["t", id, "storyboard.vtt"] => (
            *id,
            layout::thumb_file(id, ThumbFile::Storyboard).ok()?,
            false,
        ),
        // Subtitles can be replaced under the same URL: cached like
        // playlists (short-lived, revalidated), not like segments.
        ["s", id, file] => match file.strip_suffix(".vtt") {
            Some(lang) => (*id, layout::subtitles(id, lang).ok()?, true),
            None => (
                *id,
                layout::subtitle_playlist(id, file.strip_suffix(".m3u8")?).ok()?,
                true,
            ),
        },
        _ => return None,
    };
    Some(Route {
        video_id: id.to_owned(),
        is_download: key.as_str().ends_with("/video.mp4"),
        key,
        is_playlist,
    })
}

/// Flags and environment of `vodfarm origin`.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// Address to serve on (HTTP/1.1 keep-alive and HTTP/2 cleartext).
    #[arg(long, env = "VODFARM_ORIGIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Where bytes come from: `store` (the object store named by --store)
    /// or `http://HOST:PORT`, another vodfarm origin (shield mode, so tiers
    /// chain edge → shield → origin → store).
    #[arg(long, env = "VODFARM_ORIGIN_UPSTREAM", default_value = "store")]
    pub upstream: String,
    /// The object store when --upstream is `store`: `s3://BUCKET[/PREFIX]`
    /// (endpoint and credentials from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or `file:///abs/dir`.
    #[arg(long, env = "VODFARM_STORE")]
    pub store: Option<String>,
    /// PostgreSQL URL: every tier reads video state (ready, private,
    /// deleted) from it and LISTENs for changes.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Secret shared with the api for playback tokens of private videos
    /// (`?token=`). Without it private videos always answer 403.
    #[arg(long, env = "VODFARM_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Most memory the object cache holds (e.g. 512MiB, 4GiB).
    #[arg(long, env = "VODFARM_ORIGIN_CACHE_SIZE", default_value = "1GiB", value_parser = vodfarm_core::config::parse_size)]
    pub cache_size: u64,
    /// Objects larger than this stream through without being cached.
    #[arg(long, env = "VODFARM_ORIGIN_MAX_OBJECT_SIZE", default_value = "64MiB", value_parser = vodfarm_core::config::parse_size)]
    pub max_object_size: u64,
    /// Longest wait for the upstream's answer, and for each next chunk of
    /// its body.
    #[arg(long, env = "VODFARM_ORIGIN_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Playlists' `max-age`, and how long this tier keeps one before
    /// asking the upstream again (an expired copy is served if that fails).
    #[arg(long, env = "VODFARM_ORIGIN_PLAYLIST_MAX_AGE", default_value = "10s", value_parser = parse_duration)]
    pub playlist_max_age: Duration,
    /// Playlists' `stale-while-revalidate` for CDNs.
    #[arg(long, env = "VODFARM_ORIGIN_PLAYLIST_SWR", default_value = "30s", value_parser = parse_duration)]
    pub playlist_swr: Duration,
    /// Playlists' `stale-if-error` for CDNs.
    #[arg(long, env = "VODFARM_ORIGIN_STALE_IF_ERROR", default_value = "1h", value_parser = parse_duration)]
    pub stale_if_error: Duration,
    /// Longest a video's state is kept without a notification (a safety
    /// net: notifications invalidate it at once).
    #[arg(long, env = "VODFARM_ORIGIN_STATE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub state_ttl: Duration,
    /// While the database cannot be reached, videos whose state this tier
    /// confirmed less than this long ago keep being served from that
    /// last known state (private ones still need a valid token); others
    /// answer 503. 0s: answer 503 for every video instead.
    #[arg(long, env = "VODFARM_STALE_STATE_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub stale_state_grace: Duration,
    /// Size of the database connection pool.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
}

/// Why the origin could not run.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The object store could not be opened.
    #[error("object store: {0}")]
    Store(#[from] vodfarm_core::store::StoreError),
    /// The upstream setting is unusable.
    #[error("--upstream: {0}")]
    Upstream(String),
    /// The listen address could not be bound.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the origin until `shutdown` completes, then stops accepting,
/// lets in-flight requests finish (up to 10 s) and returns.
pub async fn run(
    args: OriginArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OriginError> {
    let secret: Option<Arc<[u8]>> = args
        .signing_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| Arc::from(s.as_bytes()));
    let upstream = if args.upstream == "store" {
        let url = args
            .store
            .as_deref()
            .ok_or_else(|| OriginError::Upstream("`store` needs --store / VODFARM_STORE".into()))?;
        upstream::Upstream::Store(vodfarm_core::store::open(url).await?)
    } else {
        upstream::Upstream::Origin(Box::new(
            upstream::HttpUpstream::new(&args.upstream, secret.clone())
                .map_err(|e| OriginError::Upstream(e.to_string()))?,
        ))
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.db_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| OriginError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let metrics = metrics::OriginMetrics::new()?;
    let connections = vodfarm_core::serve::ConnectionMetrics::new(&metrics.registry)?;
    let cache = Arc::new(cache::ObjectCache::new(
        upstream,
        cache::CacheSettings {
            max_bytes: args.cache_size,
            max_object: args.max_object_size,
            upstream_timeout: args.upstream_timeout,
            playlist_ttl: args.playlist_max_age,
        },
        metrics.clone(),
    ));
    let access = Arc::new(access::Access::new(
        pool,
        secret,
        args.state_ttl,
        args.stale_state_grace,
        metrics.clone(),
    ));
    let stop = CancellationToken::new();
    let listen_task = tokio::spawn(access.clone().listen(cache.clone(), stop.clone()));
    let probe_task = tokio::spawn(access.clone().probe(stop.clone()));
    let app = Arc::new(server::App::new(
        cache,
        access,
        metrics,
        &server::ServeSettings {
            playlist_max_age: args.playlist_max_age.as_secs(),
            playlist_swr: args.playlist_swr.as_secs(),
            stale_if_error: args.stale_if_error.as_secs(),
        },
    ));
    tracing::info!(%addr, upstream = %args.upstream, "origin listening");

    let serving = CancellationToken::new();
    let stop_serving = serving.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("origin stopping");
        stop_serving.cancel();
    });
    let svc = hyper::service::service_fn(move |req| server::handle(app.clone(), req));
    let limits = vodfarm_core::serve::ServerLimits {
        // Segments are small: a connection still busy after this long is
        // a client that stopped reading.
        drain_timeout: Some(Duration::from_secs(10)),
        ..args.server.limits()
    };
    vodfarm_core::serve::serve(listener, svc, limits, connections, serving).await;
    stop.cancel();
    let _ = listen_task.await;
    let _ = probe_task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_routes_map_to_the_layout() {
        let r = route("/v/v_abc/720p/segment_12.ts").unwrap();
        assert_eq!(r.key.as_str(), "encoded/v_abc/720p/segment_12.ts");
        assert!(!r.is_playlist);
        assert!(route("/v/v_abc/master.m3u8").unwrap().is_playlist);
        assert_eq!(
            route("/t/v_abc/sprite.jpg").unwrap().key.as_str(),
            "thumbnails/v_abc/sprite.jpg"
        );
        assert_eq!(
            route("/s/v_abc/en.vtt").unwrap().key.as_str(),
            "subtitles/v_abc/en.vtt"
        );
        assert!(route("/s/v_abc/en.vtt").unwrap().is_playlist);
        assert_eq!(
            route("/s/v_abc/pt-BR.m3u8").unwrap().key.as_str(),
            "subtitles/v_abc/pt-BR.m3u8"
        );
        assert!(route("/s/v_abc/en.json").is_none());
        assert_eq!(
            route("/v/v_abc/manifest.mpd").unwrap().key.as_str(),
            "encoded/v_abc/manifest.mpd"
        );
        assert!(route("/v/v_abc/manifest.mpd").unwrap().is_playlist);
        assert_eq!(
            route("/v/v_abc/audio/init.mp4").unwrap().key.as_str(),
            "encoded/v_abc/audio/init.mp4"
        );
        let seg = route("/v/v_abc/720p/segment_3.m4s").unwrap();
        assert_eq!(seg.key.as_str(), "encoded/v_abc/720p/segment_3.m4s");
        assert!(!seg.is_playlist);
        assert!(route("/v/v_abc/720p/segment_3.mp4").is_none());
        assert!(route("/v/v_abc/video/init.mp4").is_none());
    }

    #[test]
    fn tricks_and_unknown_paths_are_refused() {
        for p in [
            "/v/../master.m3u8",
            "/v/v_abc/%2e%2e/playlist.m3u8",
            "/v/v_abc/720p/segment_1.ts/..",
            "/v/v_abc/720p/segment_.ts",
            "/v/v_abc/720p/segment_-1.ts",
            "/v/v_abc%2F..%2F/master.m3u8",
            "/v/v_abc/720p/../../x",
            "/t/v_abc/thumb.png",
            "/s/v_abc/..vtt",
            "/v/v_a\0bc/master.m3u8",
            "/originals/v_abc/original.mp4",
            "",
            "/",
        ] {
            assert_eq!(route(p), None, "{p:?} was routed");
        }
        assert_eq!(route(&format!("/v/{}/master.m3u8", "a".repeat(300))), None);
    }
}
