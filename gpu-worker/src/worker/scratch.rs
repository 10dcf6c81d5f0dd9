//! Scratch space: the worker's directory, each job's subdirectory
//! (removed when the job ends), and the download of the original into it.

use super::failure::JobFailure;
use super::Worker;
use crate::media::MediaError;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use vodfarm_core::jobs::LeasedJob;
use vodfarm_core::store::StoreError;

/// Creates the worker's scratch directory and removes what a crashed run
/// left in it.
pub(super) async fn prepare(root: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(root).await?;
    // Leftovers of a crashed run: no job of this process uses them.
    if let Ok(mut dir) = tokio::fs::read_dir(root).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with("job-") {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }
    Ok(())
}

/// A job's scratch directory, removed when dropped.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    /// Creates a fresh directory for `job` under the worker's scratch.
    pub(super) async fn create(worker: &Worker, job: &LeasedJob) -> Result<Scratch, JobFailure> {
        let dir = worker
            .scratch
            .join(format!("job-{}-{}", job.id, uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| JobFailure::Media(MediaError::Io(e)))?;
        Ok(Scratch(dir))
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "scratch not removed");
            }
        }
    }
}

/// Streams the original (or a chunk's file) to `dest`, refusing more than
/// the size limit; returns the bytes read (also counted in the metrics).
pub(super) async fn download(
    worker: &Worker,
    job: &LeasedJob,
    dest: &Path,
) -> Result<u64, JobFailure> {
    let key = job.input_path.as_str();
    let object = match worker.store.get(key, None).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_) | StoreError::InvalidKey(_)) => {
            return Err(JobFailure::MissingOriginal)
        }
        Err(e) => return Err(e.into()),
    };
    if object.meta.size > worker.limits.max_input_bytes {
        return Err(MediaError::FileTooLarge {
            size: object.meta.size,
            max: worker.limits.max_input_bytes,
        }
        .into());
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(MediaError::Io)?;
    let mut body = object.body;
    let mut bytes = 0u64;
    let counter = worker
        .metrics
        .source_bytes
        .with_label_values(&[job.job_type.as_str()]);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        counter.inc_by(chunk.len() as u64);
        file.write_all(&chunk).await.map_err(MediaError::Io)?;
    }
    file.flush().await.map_err(MediaError::Io)?;
    Ok(bytes)
}
