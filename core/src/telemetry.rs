//! Logs and metrics: tracing setup shared by every role, and Prometheus
//! text exposition.

use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The tracing target of per-request access lines (one per HTTP request
/// an origin serves); [`AccessLog`] decides where they go.
pub const ACCESS_TARGET: &str = "vodfarm::access";

/// Where per-request access lines (target [`ACCESS_TARGET`]) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// With every other line, on stderr (a role in production: the log
    /// shipper wants them).
    Console,
    /// Appended to this file, off the console (`vodfarm dev`, where one
    /// playing video would otherwise bury the story under segment lines).
    File(std::path::PathBuf),
}

/// Installs the global tracing subscriber with access lines on the
/// console. See [`init_tracing_with`].
pub fn init_tracing(format: LogFormat) {
    // The console cannot fail to open.
    let _ = init_tracing_with(format, AccessLog::Console);
}

/// Installs the global tracing subscriber. The filter comes from
/// `RUST_LOG` (default `info,sqlx=warn`). Colours only when stderr is a
/// terminal, so a log file or CI output holds no escape codes. Calling it
/// twice is harmless (the first subscriber stays). Fails only when the
/// access-log file cannot be opened.
pub fn init_tracing_with(format: LogFormat, access: AccessLog) -> std::io::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let env_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let console: Boxed = match format {
        LogFormat::Text => console.boxed(),
        LogFormat::Json => console.json().flatten_event(true).boxed(),
    };
    let mut layers: Vec<Boxed> = Vec::new();
    match access {
        AccessLog::Console => layers.push(console.with_filter(env_filter()).boxed()),
        AccessLog::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let not_access = filter_fn(|m| m.target() != ACCESS_TARGET);
            layers.push(
                console
                    .with_filter(not_access)
                    .with_filter(env_filter())
                    .boxed(),
            );
            let only_access = filter_fn(|m| m.target() == ACCESS_TARGET);
            let file_layer = tracing_subscriber::fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_target(false);
            let file_layer: Boxed = match format {
                LogFormat::Text => file_layer.boxed(),
                LogFormat::Json => file_layer.json().flatten_event(true).boxed(),
            };
            layers.push(
                file_layer
                    .with_filter(only_access)
                    .with_filter(env_filter())
                    .boxed(),
            );
        }
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    // Encoding into a Vec cannot fail for I/O reasons; a metric family with
    // an inconsistent shape would be a programming error caught in tests.
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The `Content-Type` of [`render_metrics`]' output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer of a role's `GET /metrics`: every metric of `registry` in
/// the Prometheus text format, with its content type.
pub fn metrics_response(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        render_metrics(registry),
    )
        .into_response()
}
