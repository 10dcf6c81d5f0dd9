//! The stitch: the manifest job of a chunked video first joins its
//! chunks' sidecars into one rendition per rung (segments in order,
//! checked to be contiguous), writes each rendition's playlist and the
//! renditions sidecar, and reports the renditions (bitrates over the
//! whole video) so the completing transaction records them; the manifest
//! job then writes the master as for any video, and the chunk files and
//! sidecars are removed.

use super::chunk::ChunkRecord;
use super::manifest::read_bounded;
use super::transcode::{delete_segments_past, encoding_output};
use crate::media::hls::{RenditionSet, RenditionSummary};
use crate::media::MediaError;
use crate::worker::failure::{layout_error, JobFailure};
use crate::worker::Worker;
use std::sync::Arc;
use vodfarm_core::jobs::EncodingOutput;
use vodfarm_core::layout;
use vodfarm_core::playlists::Packaging;

/// What the stitch made.
#[derive(Debug)]
pub(super) struct Stitched {
    /// The renditions' rows.
    pub(super) encodings: Vec<EncodingOutput>,
    /// The video's duration, seconds (frames / fps).
    pub(super) duration: f64,
}

/// Joins `records` (chunk 0 first) into one summary per rung.
fn join(records: &[ChunkRecord]) -> Result<Vec<RenditionSummary>, JobFailure> {
    let Some(first) = records.first() else {
        return Err(JobFailure::Incomplete("no chunks".into()));
    };
    let mut joined: Vec<RenditionSummary> = first
        .renditions
        .iter()
        .map(|r| RenditionSummary {
            segments: Vec::new(),
            ..r.clone()
        })
        .collect();
    let mut next_frame = 0;
    for (k, rec) in records.iter().enumerate() {
        let bad = |what: String| JobFailure::Incomplete(format!("chunk {k}: {what}"));
        if rec.index as usize != k || rec.count as usize != records.len() {
            return Err(bad(format!(
                "recorded as chunk {} of {}",
                rec.index, rec.count
            )));
        }
        if rec.start_frame != next_frame {
            return Err(bad(format!(
                "starts at frame {}, the previous chunk ended at {next_frame}",
                rec.start_frame
            )));
        }
        next_frame = rec.end_frame;
        if rec.renditions.len() != joined.len() {
            return Err(bad("has a different set of renditions".into()));
        }
        for (all, part) in joined.iter_mut().zip(&rec.renditions) {
            if part.name != all.name || part.width != all.width || part.height != all.height {
                return Err(bad(format!("rendition {} does not match", part.name)));
            }
            if all.segments.len() != rec.first_segment as usize {
                return Err(bad(format!(
                    "{} starts at segment {}, after {} segments",
                    part.name,
                    rec.first_segment,
                    all.segments.len()
                )));
            }
            all.segments.extend(part.segments.iter().cloned());
        }
    }
    Ok(joined)
}

/// Stitches the `chunks` chunks of the job's video (or, when a previous
/// attempt already did and removed the chunk sidecars, reads what it
/// wrote).
pub(super) async fn stitch(
    worker: &Arc<Worker>,
    vid: &str,
    chunks: u32,
    segment_duration: u32,
) -> Result<Stitched, JobFailure> {
    if chunks == 0 {
        return Err(JobFailure::BadParameters("stitch of 0 chunks".into()));
    }
    let last = layout::chunk_sidecar(vid, chunks - 1).map_err(layout_error)?;
    let sidecar_key = layout::renditions_sidecar(vid).map_err(layout_error)?;
    let renditions = match read_bounded(worker, last.as_str()).await? {
        Some(_) => {
            let mut records = Vec::with_capacity(chunks as usize);
            for k in 0..chunks {
                let key = layout::chunk_sidecar(vid, k).map_err(layout_error)?;
                let Some(bytes) = read_bounded(worker, key.as_str()).await? else {
                    return Err(JobFailure::Incomplete(format!(
                        "chunk {k} is not in storage"
                    )));
                };
                let rec: ChunkRecord = serde_json::from_slice(&bytes).map_err(|e| {
                    JobFailure::Incomplete(format!("chunk {k} record unreadable: {e}"))
                })?;
                records.push(rec);
            }
            let renditions = join(&records)?;
            for r in &renditions {
                let playlist = layout::rendition_playlist(vid, &r.name).map_err(layout_error)?;
                worker
                    .store
                    .put(
                        playlist.as_str(),
                        r.media_playlist_for(Packaging::Ts).into(),
                    )
                    .await?;
                delete_segments_past(worker, vid, &r.name, Packaging::Ts, r.segments.len()).await?;
            }
            let set = RenditionSet {
                renditions: renditions.clone(),
                packaging: Packaging::Ts,
                audio: None,
            };
            let json = serde_json::to_vec(&set)
                .map_err(|e| JobFailure::Media(MediaError::internal("sidecar", e)))?;
            worker.store.put(sidecar_key.as_str(), json.into()).await?;
            tracing::info!(chunks, renditions = renditions.len(), "chunks stitched");
            renditions
        }
        // Stitched before (its chunk records removed): what it wrote.
        None => match read_bounded(worker, sidecar_key.as_str()).await? {
            Some(bytes) => {
                let set: RenditionSet = serde_json::from_slice(&bytes).map_err(|e| {
                    JobFailure::Incomplete(format!("renditions record unreadable: {e}"))
                })?;
                set.renditions
            }
            None => {
                return Err(JobFailure::Incomplete(format!(
                    "chunk {} is not in storage",
                    chunks - 1
                )))
            }
        },
    };
    let encodings = renditions
        .iter()
        .map(|r| encoding_output(vid, r, Packaging::Ts, segment_duration))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stitched {
        encodings,
        duration: renditions.first().map_or(0.0, RenditionSummary::duration),
    })
}

/// Removes the chunk sidecars (the last one first: its absence tells a
/// retried stitch the join is done) and the chunk files.
pub(super) async fn remove_chunks(
    worker: &Arc<Worker>,
    vid: &str,
    chunks: u32,
) -> Result<(), JobFailure> {
    for k in (0..chunks).rev() {
        let key = layout::chunk_sidecar(vid, k).map_err(layout_error)?;
        worker.store.delete(key.as_str()).await?;
    }
    for prefix in [
        layout::chunk_sidecars_prefix(vid).map_err(layout_error)?,
        layout::chunk_sources_prefix(vid).map_err(layout_error)?,
    ] {
        for o in worker.store.list(prefix.as_str()).await? {
            worker.store.delete(&o.key).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::hls::SegmentEntry;

    fn record(index: u32, first_segment: u32, start: i64, end: i64, segs: usize) -> ChunkRecord {
        ChunkRecord {
            index,
            count: 2,
            first_segment,
            start_frame: start,
            end_frame: end,
            renditions: vec![RenditionSummary {
                name: "144p".into(),
                width: 256,
                height: 144,
                frame_rate: 24.0,
                codecs: "avc1.64000c,mp4a.40.2".into(),
                segments: vec![
                    SegmentEntry {
                        duration: 2.0,
                        bytes: 1000
                    };
                    segs
                ],
            }],
            source_bytes: 1,
            encode_seconds: 1.0,
        }
    }

    #[test]
    fn chunks_join_in_order_and_gaps_are_refused() {
        let joined = join(&[record(0, 0, 0, 144, 3), record(1, 3, 144, 200, 2)]).unwrap();
        assert_eq!(joined[0].segments.len(), 5);
        assert!(join(&[record(0, 0, 0, 144, 3), record(1, 4, 144, 200, 2)]).is_err());
        assert!(join(&[record(0, 0, 0, 144, 3), record(1, 3, 150, 200, 2)]).is_err());
        assert!(join(&[record(1, 3, 144, 200, 2), record(0, 0, 0, 144, 3)]).is_err());
    }
}
