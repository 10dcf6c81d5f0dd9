//! The jobs an upload becomes: the per-video DAG.
//!
//! ```text
//! transcode ──► manifest ──► (video ready when every job completed)
//! thumbnail ─────────────────┘
//! ```
//!
//! One `transcode` job decodes the original once and encodes every rung
//! (decoding per rung would multiply the decode cost); `thumbnail` runs in
//! parallel; `manifest` writes the master playlist once the renditions
//! exist.
//!
//! With [`Chunking`], the transcode job first probes the source: one
//! longer than `min_seconds` is planned into chunk jobs instead (see
//! `queue::chunks`), and the DAG grows when the plan completes:
//!
//! ```text
//! transcode (plan) ──► chunk 0 … chunk n−1 ──► manifest (stitch) ──► ready
//! thumbnail ──────────────────────────────────────────┘
//! ```
//!
//! A rung asked for as an MP4 download gets an `mp4` job after the
//! manifest (`mp4_jobs`): the video becomes ready once its MP4s exist
//! too.

use crate::queue::NewJob;
use serde_json::json;
use vodfarm_core::jobs::JobType;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::layout::{self, LayoutError, ObjectKey};
use vodfarm_core::playlists::Packaging;

/// Default HLS segment duration, seconds (the seed's default).
pub const DEFAULT_SEGMENT_SECONDS: u32 = 10;

/// Seconds between thumbnails.
pub const THUMBNAIL_INTERVAL_SECONDS: u32 = 10;

/// Leases before a job fails for good.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

/// Default `--chunk-min-seconds`: sources longer than this are chunked.
pub const DEFAULT_CHUNK_MIN_SECONDS: u32 = 120;

/// Default `--chunk-seconds`: about how long each chunk is.
pub const DEFAULT_CHUNK_SECONDS: u32 = 60;

/// When a transcode job splits its source into chunk jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    /// Sources longer than this many seconds are chunked; shorter ones
    /// are transcoded by one job.
    pub min_seconds: u32,
    /// About this many seconds per chunk, rounded to a whole number of
    /// segments (at least one).
    pub chunk_seconds: u32,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            min_seconds: DEFAULT_CHUNK_MIN_SECONDS,
            chunk_seconds: DEFAULT_CHUNK_SECONDS,
        }
    }
}

/// The jobs for a finished upload of `original`, never chunked (see
/// [`upload_jobs_chunked`]).
pub fn upload_jobs(
    video_id: &str,
    original: &ObjectKey,
    ladder: &RenditionLadder,
    segment_seconds: u32,
    packaging: Packaging,
    priority: i32,
) -> Result<Vec<NewJob>, LayoutError> {
    upload_jobs_chunked(
        video_id,
        original,
        ladder,
        segment_seconds,
        packaging,
        priority,
        None,
    )
}

/// The jobs for a finished upload of `original`; with `chunking`, the
/// transcode job plans long sources into chunk jobs.
pub fn upload_jobs_chunked(
    video_id: &str,
    original: &ObjectKey,
    ladder: &RenditionLadder,
    segment_seconds: u32,
    packaging: Packaging,
    priority: i32,
    chunking: Option<Chunking>,
) -> Result<Vec<NewJob>, LayoutError> {
    let encoded = layout::encoded_prefix(video_id)?;
    let thumbs = layout::thumbnails_prefix(video_id)?;
    let job = |job_type, output: &ObjectKey, parameters, depends_on| NewJob {
        job_type,
        input_path: original.to_string(),
        output_path: Some(output.to_string()),
        parameters,
        priority,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        depends_on,
        required_capabilities: Vec::new(),
    };
    Ok(vec![
        job(
            JobType::Transcode,
            &encoded,
            json!({
                "ladder": ladder,
                "segment_duration": segment_seconds,
                "packaging": packaging,
                "chunking": chunking,
            }),
            vec![],
        ),
        job(
            JobType::Thumbnail,
            &thumbs,
            json!({ "interval_seconds": THUMBNAIL_INTERVAL_SECONDS, "sprite_columns": 10, "sprite_tile_width": 160 }),
            vec![],
        ),
        job(
            JobType::Manifest,
            &encoded,
            json!({ "segment_duration": segment_seconds, "packaging": packaging }),
            vec![0],
        ),
    ])
}

/// One `mp4` job per rung in `renditions` (a progressive MP4 download of
/// that rung, remuxed from its segments), each depending on the job at
/// index `after` of the same batch (the manifest: every rung is complete
/// then). Rungs the ladder does not make for the source are skipped by
/// the worker.
pub fn mp4_jobs(
    video_id: &str,
    renditions: &[String],
    after: Option<usize>,
    priority: i32,
) -> Result<Vec<NewJob>, LayoutError> {
    let encoded = layout::encoded_prefix(video_id)?;
    renditions
        .iter()
        .map(|r| {
            Ok(NewJob {
                job_type: JobType::Mp4,
                input_path: encoded.to_string(),
                output_path: Some(layout::download_mp4(video_id, r)?.to_string()),
                parameters: json!({ "rendition": r }),
                priority,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                depends_on: after.into_iter().collect(),
                required_capabilities: Vec::new(),
            })
        })
        .collect()
}

/// `jobs` (an upload's DAG) plus the [`mp4_jobs`] of `mp4_renditions`,
/// after its manifest job.
pub fn with_downloads(
    video_id: &str,
    mut jobs: Vec<NewJob>,
    mp4_renditions: &[String],
) -> Result<Vec<NewJob>, LayoutError> {
    let manifest = jobs.iter().position(|j| j.job_type == JobType::Manifest);
    jobs.extend(mp4_jobs(video_id, mp4_renditions, manifest, 0)?);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_waits_for_transcode() {
        let original = layout::original("v_abc", "mp4").unwrap();
        let jobs = upload_jobs(
            "v_abc",
            &original,
            &RenditionLadder::default(),
            6,
            Packaging::Ts,
            0,
        )
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[2].job_type, JobType::Manifest);
        assert_eq!(jobs[2].depends_on, vec![0]);
        assert_eq!(jobs[0].job_type, JobType::Transcode);
        assert_eq!(jobs[0].parameters["segment_duration"], 6);
        assert_eq!(jobs[0].output_path.as_deref(), Some("encoded/v_abc/"));
        assert!(jobs[0].parameters["chunking"].is_null(), "never chunked");
    }

    #[test]
    fn chunking_travels_with_the_transcode_job() {
        let original = layout::original("v_abc", "mp4").unwrap();
        let jobs = upload_jobs_chunked(
            "v_abc",
            &original,
            &RenditionLadder::default(),
            6,
            Packaging::Ts,
            0,
            Some(Chunking::default()),
        )
        .unwrap();
        assert_eq!(jobs[0].parameters["chunking"]["min_seconds"], 120);
        assert_eq!(jobs[0].parameters["chunking"]["chunk_seconds"], 60);
    }

    #[test]
    fn mp4_downloads_wait_for_the_manifest() {
        let original = layout::original("v_abc", "mp4").unwrap();
        let plan = upload_jobs(
            "v_abc",
            &original,
            &RenditionLadder::default(),
            6,
            Packaging::Ts,
            0,
        )
        .unwrap();
        let jobs = with_downloads("v_abc", plan, &["720p".to_owned()]).unwrap();
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[3].job_type, JobType::Mp4);
        assert_eq!(jobs[3].depends_on, vec![2]);
        assert_eq!(
            jobs[3].output_path.as_deref(),
            Some("encoded/v_abc/720p/video.mp4")
        );
        assert!(mp4_jobs("v_abc", &["../x".to_owned()], None, 0).is_err());
    }
}
