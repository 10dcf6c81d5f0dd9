//! Why the worker as a whole could not run (one job's failure is a
//! `JobFailure`, reported to the coordinator instead).

use crate::client::ClientError;
use std::net::SocketAddr;
use std::path::PathBuf;
use vodfarm_core::store::StoreError;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store URL was unusable.
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    /// The coordinator client could not be built.
    #[error("coordinator client: {0}")]
    Client(#[from] ClientError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listen address could not be bound.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The scratch directory is unusable.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
