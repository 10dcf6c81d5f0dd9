//! Why one job did not complete, and whether another attempt may succeed
//! (what the coordinator is told with `fail`).

use crate::media::MediaError;
use vodfarm_core::layout::LayoutError;
use vodfarm_core::store::StoreError;

/// Why one job did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobFailure {
    #[error("{0}")]
    Media(#[from] MediaError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadParameters(String),
    #[error("The uploaded original is missing from storage.")]
    MissingOriginal,
    #[error("{0}")]
    Incomplete(String),
}

impl JobFailure {
    /// Whether another attempt may succeed: bad input and bad parameters
    /// fail the same way every time.
    pub(super) fn retryable(&self) -> bool {
        match self {
            JobFailure::Media(e) => !e.is_bad_input(),
            JobFailure::Store(_) | JobFailure::Incomplete(_) => true,
            JobFailure::BadParameters(_) | JobFailure::MissingOriginal => false,
        }
    }
}

/// A media thread that panicked or was cancelled.
pub(super) fn media_blocking_error(e: tokio::task::JoinError) -> JobFailure {
    JobFailure::Media(MediaError::Internal(format!("media thread: {e}")))
}

/// An object key the job's video id or rung names cannot make.
pub(super) fn layout_error(e: LayoutError) -> JobFailure {
    JobFailure::BadParameters(format!("object key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_not_retried() {
        assert!(!JobFailure::Media(MediaError::Empty).retryable());
        assert!(JobFailure::Media(MediaError::Internal("x".into())).retryable());
        assert!(!JobFailure::MissingOriginal.retryable());
    }
}
