//! Chunk-parallel transcoding: planning a long source into chunks, and
//! what one chunk is.
//!
//! The plan reads the source's keyframe index (a demux of the video
//! packets, no decoding but the first picture and audio frame) and cuts
//! the output timeline at segment starts: chunk `k` encodes output frames
//! `[start_frame, end_frame)` (the last chunk: to the end), which are
//! whole segments numbered from `first_segment`, so the segment numbers,
//! IDR positions and timestamps of the chunks are exactly those of one
//! unchunked transcode. It then remuxes the source once, by stream copy,
//! into one small file per chunk holding only what that chunk decodes:
//! video from the keyframe at or before its start to the first keyframe
//! half a second past its end, audio from a margin before its pre-roll
//! to a margin after its end. A chunk job downloads only its file.
//!
//! The chunk's constant-rate picture sequence is computed against the
//! whole source's origin (its first decoded picture), so frame `n` of a
//! chunk is the picture frame `n` of the unchunked transcode shows; audio
//! follows [`AudioWindow`]'s overlap-and-trim rule.

mod cut;
mod ranged;
mod remux;
mod spec;

pub use cut::{audio_seam, chunk_count, segments_per_chunk, AUDIO_PREROLL_FRAMES};
pub use ranged::{extract_chunk, merge_ranges, plan_ranged};
pub use spec::{ChunkPlan, ChunkSettings, ChunkSpec, PlannedChunk, PlannedSource, SourceRead};

use crate::media::error::MediaError;
use crate::media::probe::Limits;
use cut::cut;
use remux::remux;
use spec::Streams;
use std::path::Path;

/// Plans `path` into chunks when it is longer than `settings.min_seconds`
/// and remuxes each chunk's part into `dir`; `None` when the source stays
/// one job. Bad input fails as the unchunked transcode would.
pub fn plan(
    path: &Path,
    dir: &Path,
    settings: ChunkSettings,
    limits: &Limits,
) -> Result<Option<ChunkPlan>, MediaError> {
    let Some(cut) = cut(path, settings, limits, false)? else {
        return Ok(None);
    };
    let streams = Streams {
        video: cut.info.video_stream,
        audio: cut.info.audio_stream,
    };
    let files = remux(path, dir, streams, &cut.ranges, cut.shift, None)?;
    let bytes_read = std::fs::metadata(path)?.len();
    Ok(Some(ChunkPlan {
        info: cut.info,
        chunks: cut
            .specs
            .into_iter()
            .zip(files)
            .map(|(spec, file)| PlannedChunk { spec, file })
            .collect(),
        bytes_read,
    }))
}
