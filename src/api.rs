//! `vodfarm api`: the creator API. Composes the catalog's routes
//! (accounts, channels, video metadata) with the coordinator's upload
//! routes (initiate + tus) and the search routes, and adds health,
//! metrics, OpenAPI and CORS.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounterVec, Opts, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfarm_catalog::{CatalogSettings, CatalogState};
use vodfarm_coordinator::uploads::{self, UploadMetrics, UploadSettings, UploadState};
use vodfarm_core::config::parse_duration;
use vodfarm_core::http::{not_found_fallback, ApiError};
use vodfarm_core::playlists::Packaging;
use vodfarm_core::store::SharedStore;
use vodfarm_core::telemetry::metrics_response;
use vodfarm_search::api::SearchState;
use vodfarm_search::args::SearchApiArgs;
use vodfarm_search::metrics::SearchMetrics;

/// Flags and environment of `vodfarm api`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address to serve the creator API on.
    #[arg(long, env = "VODFARM_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL URL (the schema must be applied: `vodfarm migrate`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = vodfarm_core::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
    /// Object store for originals: s3://BUCKET[/PREFIX] (endpoint, region
    /// and keys from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY) or file:///absolute/dir.
    #[arg(long, env = "VODFARM_STORE")]
    pub store: String,
    /// The api's public base URL, used in upload_url and tus Location
    /// (default: http://{Host header}).
    #[arg(long, env = "VODFARM_PUBLIC_API_URL")]
    pub public_url: Option<String>,
    /// Base URL of the origin/CDN that playback URLs point at.
    #[arg(
        long,
        env = "VODFARM_PUBLIC_ORIGIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub public_origin_url: String,
    /// Secret shared with the origin to sign private videos' playback
    /// URLs (?token=).
    #[arg(long, env = "VODFARM_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: String,
    /// How long a private video's playback URLs stay valid.
    #[arg(long, env = "VODFARM_PLAYBACK_TOKEN_TTL", default_value = "6h", value_parser = parse_duration)]
    pub playback_token_ttl: Duration,
    /// Packaging of videos whose `POST /v1/videos` does not choose one:
    /// `ts` (MPEG-TS, HLS only: the seed's URLs) or `cmaf` (fMP4 for HLS
    /// and DASH, one set of segments).
    #[arg(long, env = "VODFARM_DEFAULT_PACKAGING", default_value = "ts", value_parser = parse_packaging)]
    pub default_packaging: Packaging,
    /// Sources longer than this many seconds are transcoded as chunk jobs
    /// that any worker can take (then stitched); shorter ones by one job.
    /// 0 turns chunking off.
    #[arg(long, env = "VODFARM_CHUNK_MIN_SECONDS", default_value_t = vodfarm_coordinator::pipeline::DEFAULT_CHUNK_MIN_SECONDS)]
    pub chunk_min_seconds: u32,
    /// About how long each chunk of a chunked source is, seconds (rounded
    /// to a whole number of segments, at least one).
    #[arg(long, env = "VODFARM_CHUNK_SECONDS", default_value_t = vodfarm_coordinator::pipeline::DEFAULT_CHUNK_SECONDS, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_seconds: u32,
    /// Largest subtitle file accepted by
    /// `PUT /v1/videos/{id}/subtitles/{lang}` (larger ones get 413).
    #[arg(long, env = "VODFARM_MAX_SUBTITLE_SIZE", default_value = "2MiB", value_parser = vodfarm_core::config::parse_size)]
    pub max_subtitle_size: u64,
    /// Largest upload accepted (Tus-Max-Size), e.g. 128GiB.
    #[arg(long, env = "VODFARM_MAX_UPLOAD_SIZE", default_value = "128GiB", value_parser = vodfarm_core::config::parse_size)]
    pub max_upload_size: u64,
    /// An unfinished upload expires this long after its last stored bytes
    /// (Upload-Expires); its video becomes failed.
    #[arg(long, env = "VODFARM_UPLOAD_TTL", default_value = "24h", value_parser = parse_duration)]
    pub upload_ttl: Duration,
    /// A PATCH whose body sends nothing for this long is abandoned (and
    /// commits nothing).
    #[arg(long, env = "VODFARM_UPLOAD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upload_idle_timeout: Duration,
    /// Multipart parts of one PATCH sent to the object store at once
    /// (memory per PATCH is about this many parts).
    #[arg(long, env = "VODFARM_UPLOAD_PARALLEL_PARTS", default_value_t = 4)]
    pub upload_parallel_parts: usize,
    /// A deleted video's objects are removed at once and again this long
    /// after the deletion, once no worker can still be writing them (a
    /// worker running one of its jobs stops at its next heartbeat): keep
    /// it above the workers' --heartbeat-interval and the coordinator's
    /// --lease-ttl.
    #[arg(long, env = "VODFARM_PURGE_SETTLE", default_value = "10m", value_parser = parse_duration)]
    pub purge_settle: Duration,
    /// How often expired uploads are cleaned up and unfinished purges of
    /// deleted videos retried.
    #[arg(long, env = "VODFARM_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Size of the database connection pool. Every PATCH in flight holds
    /// one connection (its upload's row lock) for its whole body.
    #[arg(long, env = "VODFARM_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
    /// How long a user token (from sign-up or log-in) stays valid.
    #[arg(long, env = "VODFARM_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Beacon requests (`POST /v1/videos/{id}/beacons`) one client
    /// address may make per --beacon-window, over all replicas (counted in
    /// Redis); past it, 429 with Retry-After. A player sends about one
    /// per 10 s; the default leaves room for a household or an office
    /// behind one address. 0: no limit.
    #[arg(long, env = "VODFARM_BEACONS_PER_CLIENT", default_value_t = 600)]
    pub beacons_per_client: u32,
    /// The window --beacons-per-client counts over.
    #[arg(long, env = "VODFARM_BEACON_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub beacon_window: Duration,
    /// Throttling of log-ins, sign-ups and upload tokens.
    #[command(flatten)]
    pub throttle: vodfarm_core::throttle::ThrottleArgs,
    /// Connection limits of the HTTP server.
    #[command(flatten)]
    pub server: vodfarm_core::serve::ServerArgs,
    /// Search: the index and how PostgreSQL full text is searched.
    #[command(flatten)]
    pub search: SearchApiArgs,
    /// Where webhook URLs may point (checked at registration).
    #[command(flatten)]
    pub webhooks: vodfarm_core::destination::DestinationArgs,
    /// Analytics: Redis (live counts, recommendations), the event bus
    /// playback beacons go to, the watch store.
    #[command(flatten)]
    pub analytics: vodfarm_analytics::args::AnalyticsArgs,
}

fn parse_packaging(s: &str) -> Result<Packaging, String> {
    Packaging::parse(s).ok_or_else(|| format!("{s:?} is not ts or cmaf"))
}

/// Why the api could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiRunError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The object store could not be opened.
    #[error("object store: {0}")]
    Store(#[from] vodfarm_core::store::StoreError),
    /// The listen address could not be bound, or serving failed.
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
    /// The search index could not be opened.
    #[error("search index: {0}")]
    Search(#[from] vodfarm_search::index::IndexError),
    /// Redis, the event bus or the watch store could not be opened.
    #[error("analytics: {0}")]
    Analytics(#[from] vodfarm_analytics::args::OpenError),
}

#[derive(Clone)]
struct Shared {
    pool: sqlx::PgPool,
    store: SharedStore,
    registry: Registry,
    http_requests: IntCounterVec,
}

/// Builds the api's router, with `extra` routes (dev's), which get the
/// security headers but never CORS. `public_url` (the api's own, when set) and the catalog's
/// origin URL are the other servers the page may reach.
pub fn router(
    catalog: CatalogState,
    uploads: UploadState,
    search: SearchState,
    registry: Registry,
    public_url: Option<&str>,
    extra: Router,
) -> Result<Router, prometheus::Error> {
    let mut others = vec![catalog.settings.public_origin_url.as_str()];
    others.extend(public_url);
    let page_policy = crate::web::content_security_policy(&others);
    let http_requests = IntCounterVec::new(
        Opts::new(
            "vodfarm_http_requests_total",
            "HTTP requests by route and status",
        ),
        &["route", "status"],
    )?;
    registry.register(Box::new(http_requests.clone()))?;
    let shared = Shared {
        pool: catalog.pool.clone(),
        store: catalog.store.clone(),
        registry,
        http_requests,
    };
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .with_state(shared.clone());
    let api = Router::new()
        .merge(vodfarm_catalog::router(catalog))
        .merge(uploads::router(uploads))
        .merge(vodfarm_search::api::router(search))
        .merge(ops)
        .merge(crate::web::router(&page_policy))
        .fallback(not_found_fallback)
        .layer(middleware::from_fn_with_state(shared, count_requests))
        .layer(middleware::from_fn(cors));
    // `extra` joins after the CORS layer on purpose: dev's session route
    // hands out a token, and a CORS answer would let any web page read
    // it. The security headers cover both.
    Ok(api
        .merge(extra)
        .layer(middleware::from_fn(security_headers)))
}

/// Headers on every answer: no MIME sniffing, no referrer, no framing;
/// and, on anything but the page (which sets its own), a policy that
/// lets an answer run or load nothing if a browser ever renders it.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    resp
}

/// Methods a browser may use on any route.
const CORS_METHODS: &str = "GET, POST, PATCH, HEAD, DELETE, OPTIONS";
/// Request headers a browser may send (tus-js-client's and ours).
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Upload-Length, Upload-Offset, \
     Upload-Metadata, Upload-Checksum, Upload-Defer-Length, Upload-Concat, Tus-Resumable, \
     X-HTTP-Method-Override, X-Requested-With";
/// Response headers a browser script may read (tus needs every one).
const CORS_EXPOSE_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, \
     Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, \
     Tus-Checksum-Algorithm, Vodfarm-Video-Id, Vodfarm-Video-Status, Vodfarm-Upload-Token";

/// CORS for browsers (tus-js-client, Uppy): any origin, bearer tokens (no
/// cookies). A preflight (OPTIONS with Origin and
/// Access-Control-Request-Method) is answered here; a plain OPTIONS goes
/// on to the route, where tus answers it with its capabilities.
async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().contains_key(header::ORIGIN);
    let preflight = origin
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(CORS_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    if origin {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    s.http_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

async fn readyz(State(s): State<Shared>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1 FROM upload_sessions LIMIT 1")
        .execute(&s.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready: database");
            ApiError::unavailable("database or schema not available")
        })?;
    match s.store.head("readyz-probe").await {
        Ok(_) | Err(vodfarm_core::store::StoreError::NotFound(_)) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: object store");
            Err(ApiError::unavailable("object store not available"))
        }
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    metrics_response(&s.registry)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

/// Runs the api until `shutdown` completes, then stops cleanly (requests
/// in flight finish).
pub async fn run(
    args: ApiArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiRunError> {
    run_with(args, Router::new(), shutdown).await
}

/// [`run`], serving `extra` routes beside the api's (`vodfarm dev` adds
/// its demo session and queue view this way).
pub async fn run_with(
    args: ApiArgs,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiRunError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.db_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await?;
    let store = vodfarm_core::store::open(&args.store).await?;
    let analytics = args.analytics.open(pool.clone()).await?;
    let beacon_limit = vodfarm_analytics::rate::RateLimit::new(
        analytics.counters.connection(),
        analytics.counters.prefix(),
        "beacons",
        args.beacons_per_client,
        args.beacon_window,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ApiRunError::Serve {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, store = %args.store, "api listening");
    let registry = Registry::new();
    analytics.bus.register_metrics(&registry)?;
    let throttle =
        vodfarm_core::throttle::Throttle::new(pool.clone(), (&args.throttle).into(), &registry)?;
    let upload_state = UploadState {
        pool: pool.clone(),
        store: store.clone(),
        settings: Arc::new(UploadSettings {
            max_size: args.max_upload_size,
            ttl: args.upload_ttl,
            public_url: args.public_url.clone(),
            idle_timeout: args.upload_idle_timeout,
            parallel_parts: args.upload_parallel_parts.max(1),
            default_packaging: args.default_packaging,
            chunking: (args.chunk_min_seconds > 0).then_some(
                vodfarm_coordinator::pipeline::Chunking {
                    min_seconds: args.chunk_min_seconds,
                    chunk_seconds: args.chunk_seconds,
                },
            ),
            ..UploadSettings::default()
        }),
        metrics: UploadMetrics::new(&registry)?,
        throttle: throttle.clone(),
    };
    let catalog_state = CatalogState {
        pool: pool.clone(),
        store: store.clone(),
        settings: Arc::new(CatalogSettings {
            public_origin_url: args.public_origin_url.clone(),
            signing_secret: args.signing_secret.as_bytes().into(),
            playback_token_ttl: args.playback_token_ttl,
            token_ttl: args.token_ttl,
            max_subtitle_size: args.max_subtitle_size,
            webhook_destinations: args.webhooks.into(),
            purge_settle: args.purge_settle,
        }),
        throttle: throttle.clone(),
        analytics,
        beacon_limit,
    };
    let connections = vodfarm_core::serve::ConnectionMetrics::new(&registry)?;
    let search_settings = args.search.pg_settings();
    let search_pool = vodfarm_search::postgres::search_pool(
        &args.database_url,
        args.search.search_db_max_connections,
        &search_settings,
    )
    .await?;
    let search_state = SearchState::new(
        search_pool.clone(),
        args.search
            .backend
            .open(search_pool.clone(), search_settings)
            .await?,
        args.public_origin_url.clone(),
        SearchMetrics::new(&registry)?,
        args.search.cache_settings(),
    );
    tracing::info!(index = search_state.index.kind(), "search ready");
    let app = router(
        catalog_state.clone(),
        upload_state.clone(),
        search_state,
        registry,
        args.public_url.as_deref(),
        extra,
    )?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(uploads::expire_uploads(
        upload_state,
        args.sweep_interval,
        stop.clone().cancelled_owned(),
    ));
    let (sweep_stop, every) = (stop.clone(), args.sweep_interval);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sweep_stop.cancelled() => return,
            }
            match vodfarm_catalog::videos::sweep_deleted(&catalog_state).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "deleted videos' objects removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge sweep failed"),
            }
            if let Err(e) = throttle.sweep().await {
                tracing::warn!(error = %e, "throttle sweep failed");
            }
        }
    });
    vodfarm_core::http::serve_until_shutdown(
        listener,
        app,
        (args.server.limits(), connections),
        stop.clone(),
        shutdown,
        "api",
    )
    .await;
    while tasks.join_next().await.is_some() {}
    pool.close().await;
    search_pool.close().await;
    tracing::info!("api stopped");
    Ok(())
}
