//! The upload API: "initiate" (`POST /v1/videos`) and tus 1.0 at
//! `/v1/uploads/{id}`, ending by enqueuing the video's jobs.
//!
//! - [`tus`]: the protocol's headers.
//! - [`session`]: `upload_sessions` rows: creation, lock, progress,
//!   completion (the transaction that enqueues).
//! - [`writer`]: streams bodies into multipart parts and tail objects.
//! - `initiate`: `POST /v1/videos`, the JSON way to start an upload.
//! - `tus_handlers`: the tus routes (creation, HEAD, PATCH, DELETE).
//! - `expire`: the expiry of idle uploads, and freeing what an unfinished
//!   upload holds in the store.
//!
//! Invariants:
//! - The offset lives in PostgreSQL only, and moves only in a transaction
//!   that holds the session row lock (`FOR UPDATE NOWAIT`, taken for the
//!   whole PATCH; a second writer gets 423) after the whole body arrived
//!   and matched its checksum. A failed PATCH commits nothing.
//! - Every multipart part but the last is exactly `part_size` bytes.
//! - Completion assembles the original, then in one transaction marks the
//!   session `completed`, the video `processing` with its size, and
//!   inserts its jobs.

pub mod session;
pub mod tus;
pub mod writer;

mod expire;
mod initiate;
mod tus_handlers;

pub use expire::{expire_once, expire_uploads};
pub use initiate::{InitiateRequest, InitiateResponse};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{post, MethodRouter};
use axum::Router;
use initiate::initiate;
use prometheus::{IntCounter, Registry};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tus::*;
use tus_handlers::{create_tus, head, method_override, options, options_upload, patch, terminate};
use uuid::Uuid;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::store::SharedStore;

/// How uploads behave.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Largest accepted upload (`Tus-Max-Size`).
    pub max_size: u64,
    /// An upload expires this long after its last stored bytes.
    pub ttl: Duration,
    /// The api's public base URL for `upload_url` and `Location`
    /// (`http://{Host}` of the request when unset).
    pub public_url: Option<String>,
    /// A PATCH body that sends nothing for this long is abandoned.
    pub idle_timeout: Duration,
    /// Parts of one PATCH uploaded to the store at once.
    pub parallel_parts: usize,
    /// The ladder the transcode job gets.
    pub ladder: RenditionLadder,
    /// Packaging of videos whose upload does not choose one.
    pub default_packaging: vodfarm_core::playlists::Packaging,
    /// When long sources are split into chunk jobs (`None`: never).
    pub chunking: Option<crate::pipeline::Chunking>,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            max_size: 128 << 30,
            ttl: Duration::from_secs(24 * 3600),
            public_url: None,
            idle_timeout: Duration::from_secs(60),
            parallel_parts: 4,
            ladder: RenditionLadder::default(),
            default_packaging: vodfarm_core::playlists::Packaging::Ts,
            chunking: Some(crate::pipeline::Chunking::default()),
        }
    }
}

/// The upload API's metrics.
#[derive(Debug, Clone)]
pub struct UploadMetrics {
    /// Body bytes received by PATCH and creation-with-upload.
    pub bytes_received: IntCounter,
    /// Uploads created.
    pub uploads_created: IntCounter,
    /// Uploads completed (video `processing`, jobs enqueued).
    pub uploads_completed: IntCounter,
    /// Multipart parts uploaded to the object store.
    pub parts_uploaded: IntCounter,
}

impl UploadMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = UploadMetrics {
            bytes_received: IntCounter::new(
                "vodfarm_upload_bytes_total",
                "Upload body bytes received",
            )?,
            uploads_created: IntCounter::new("vodfarm_uploads_created_total", "Uploads created")?,
            uploads_completed: IntCounter::new(
                "vodfarm_uploads_completed_total",
                "Uploads completed and enqueued for processing",
            )?,
            parts_uploaded: IntCounter::new(
                "vodfarm_upload_parts_total",
                "Multipart parts uploaded to the object store",
            )?,
        };
        registry.register(Box::new(m.bytes_received.clone()))?;
        registry.register(Box::new(m.uploads_created.clone()))?;
        registry.register(Box::new(m.uploads_completed.clone()))?;
        registry.register(Box::new(m.parts_uploaded.clone()))?;
        Ok(m)
    }
}

/// Shared state of the upload handlers.
#[derive(Debug, Clone)]
pub struct UploadState {
    /// The database.
    pub pool: PgPool,
    /// Where originals go.
    pub store: SharedStore,
    /// Settings.
    pub settings: Arc<UploadSettings>,
    /// Metrics.
    pub metrics: UploadMetrics,
    /// Throttling of wrong upload tokens per client address.
    pub throttle: vodfarm_core::throttle::Throttle,
}

/// The routes: `POST /v1/videos`, `POST /v1/uploads` and
/// `OPTIONS|HEAD|PATCH|DELETE|POST /v1/uploads/{id}`.
pub fn router(state: UploadState) -> Router {
    let upload: MethodRouter<UploadState> = MethodRouter::new()
        .options(options_upload)
        .head(head)
        .patch(patch)
        .delete(terminate)
        .post(method_override);
    let tus = Router::new()
        .route("/v1/uploads", post(create_tus).options(options))
        .route("/v1/uploads/{id}", upload)
        .route_layer(middleware::from_fn(tus_response_headers))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/v1/videos", post(initiate))
        .merge(tus)
        .with_state(state)
}

/// Every tus answer says which protocol it speaks; a 412 (the client's
/// `Tus-Resumable` is missing or not ours) also says which versions we
/// support (`Tus-Version`), as tus 1.0 requires.
async fn tus_response_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let precondition_failed = resp.status() == axum::http::StatusCode::PRECONDITION_FAILED;
    let h = resp.headers_mut();
    h.insert(&TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    if precondition_failed {
        h.insert(&TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
    }
    resp
}

fn base_url(state: &UploadState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.settings.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn upload_url(state: &UploadState, headers: &HeaderMap, id: Uuid) -> String {
    format!("{}/v1/uploads/{}", base_url(state, headers), id)
}
