//! The `vodfarm` binary's library: the command line, the embedded schema
//! migrations, and the glue that starts each role.
//!
//! The roles themselves live in their crates (`vodfarm-coordinator`, …);
//! this crate only parses flags and wires them up, so `main.rs` stays a
//! few lines.

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod dev;
pub mod migrate;
pub mod openapi;
pub mod ops;
pub mod upload;
pub mod web;

/// The schema migrations under `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Completes on SIGTERM or Ctrl-C (SIGINT): what every role stops on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
