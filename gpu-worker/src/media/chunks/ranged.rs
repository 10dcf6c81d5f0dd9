//! The ranged plan of an MP4/MOV original: each chunk fetches the
//! container's boxes and its own span of the media data, and extracts
//! its packets from that sparse copy.

use super::cut::{cut, PacketEntry};
use super::remux::remux;
use super::spec::{ChunkSettings, ChunkSpec, SourceRead};
use crate::media::error::MediaError;
use crate::media::probe::{Limits, SourceInfo};
use std::path::{Path, PathBuf};

/// Video packets (decode order) and audio packets (demux order) at the
/// start of the media data that the plan's probe decodes: a ranged plan
/// must have fetched them.
const HEAD_VIDEO_PACKETS: usize = 32;
const HEAD_AUDIO_PACKETS: usize = 8;

/// Plans an MP4/MOV original of `size` bytes from `path`, a sparse copy
/// holding only `fetched` (its boxes and the start of its media data):
/// no remux, each chunk gets the byte ranges it reads itself
/// ([`ChunkSpec::source_read`]): `header` (the boxes but the media data)
/// and the span of the media data its packets lie in. `None` when the
/// source stays one job. An error means the sparse copy was not enough
/// (or the source is bad): the caller plans from the whole original.
pub fn plan_ranged(
    path: &Path,
    size: u64,
    header: &[[u64; 2]],
    fetched: &[[u64; 2]],
    settings: ChunkSettings,
    limits: &Limits,
) -> Result<Option<(SourceInfo, Vec<ChunkSpec>)>, MediaError> {
    let Some(cut) = cut(path, settings, limits, true)? else {
        return Ok(None);
    };
    let inside = |e: &PacketEntry| {
        e.position
            .is_some_and(|p| fetched.iter().any(|[a, b]| p >= *a && p + e.size <= *b))
    };
    let head_video = cut.packets.iter().filter(|e| e.video_index.is_some());
    let head_audio = cut.packets.iter().filter(|e| e.video_index.is_none());
    let unfetched = head_video
        .take(HEAD_VIDEO_PACKETS)
        .chain(head_audio.take(HEAD_AUDIO_PACKETS))
        .any(|e| !inside(e));
    if unfetched {
        return Err(MediaError::Internal(
            "the start of the media data was not fetched".into(),
        ));
    }
    let mut specs = cut.specs;
    for (spec, r) in specs.iter_mut().zip(&cut.ranges) {
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for e in &cut.packets {
            let (wanted, _) = r.wants(
                e.video_index.is_some(),
                e.video_index.unwrap_or(0),
                e.seconds,
            );
            if !wanted {
                continue;
            }
            let p = e.position.ok_or_else(|| {
                MediaError::Internal("a packet of the original has no position".into())
            })?;
            lo = lo.min(p);
            hi = hi.max(p + e.size);
        }
        let mut ranges: Vec<[u64; 2]> = header.to_vec();
        if lo < hi {
            ranges.push([lo, hi.min(size)]);
        }
        spec.source_read = Some(SourceRead {
            size,
            ranges: merge_ranges(ranges),
            video_stream: cut.info.video_stream,
            audio_stream: cut.info.audio_stream,
            video_packets: [r.video.0, r.video.1],
            audio_seconds: (r.audio.0 <= r.audio.1).then(|| {
                [
                    r.audio.0.is_finite().then_some(r.audio.0),
                    r.audio.1.is_finite().then_some(r.audio.1),
                ]
            }),
            shift_seconds: cut.shift,
        });
    }
    Ok(Some((cut.info, specs)))
}

/// `ranges` sorted, with overlapping and touching ones joined.
pub fn merge_ranges(mut ranges: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    ranges.retain(|[a, b]| a < b);
    ranges.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
    for [a, b] in ranges {
        match out.last_mut() {
            Some(last) if a <= last[1] => last[1] = last[1].max(b),
            _ => out.push([a, b]),
        }
    }
    out
}

/// A chunk job's input: extracts the packets `read` keeps from `sparse`
/// (the original with only `read.ranges` fetched) into `dir/chunk_0.nut`,
/// by the plan-time remux's rule. A kept packet outside the fetched
/// ranges is an error, never zeros passed on as media.
pub fn extract_chunk(sparse: &Path, dir: &Path, read: &SourceRead) -> Result<PathBuf, MediaError> {
    crate::media::init();
    let files = remux(
        sparse,
        dir,
        read.streams(),
        &[read.range()],
        read.shift_seconds,
        Some(&read.ranges),
    )?;
    files
        .into_iter()
        .next()
        .ok_or_else(|| MediaError::Internal("no chunk file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_source(dir: &Path, secs: u32) -> PathBuf {
        let path = dir.join("source.mp4");
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("testsrc2=size=320x180:rate=10:duration={secs}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate=48000:duration={secs}"
            ))
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2",
            ])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
            .arg(&path)
            .status()
            .expect("run ffmpeg")
            .success();
        assert!(ok);
        path
    }

    #[test]
    fn a_ranged_plan_gives_each_chunk_its_share_and_a_sparse_copy_extracts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = mp4_source(dir.path(), 150);
        let size = std::fs::metadata(&path).unwrap().len();
        let settings = ChunkSettings {
            segment_seconds: 10,
            chunk_seconds: 30,
            min_seconds: 60,
        };
        let (_, specs) = plan_ranged(&path, size, &[], &[[0, size]], settings, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(specs.len(), 5);
        // Planned from a sparse copy with the boxes and the first 256 KiB
        // of the media data only: the same plan.
        let whole = std::fs::read(&path).unwrap();
        let moov = whole.windows(4).rposition(|w| w == b"moov").unwrap() - 4;
        let mut head_only = vec![0u8; whole.len()];
        head_only[..48 + (256 << 10)].copy_from_slice(&whole[..48 + (256 << 10)]);
        head_only[moov..].copy_from_slice(&whole[moov..]);
        let head_path = dir.path().join("head.mp4");
        std::fs::write(&head_path, &head_only).unwrap();
        let header = [[0, 48], [moov as u64, size]];
        let fetched = merge_ranges(vec![[0, 48 + (256 << 10)], [moov as u64, size]]);
        let (_, from_head) = plan_ranged(
            &head_path,
            size,
            &header,
            &fetched,
            settings,
            &Limits::default(),
        )
        .unwrap()
        .unwrap();
        for (a, b) in specs.iter().zip(&from_head) {
            let (ra, rb) = (
                a.source_read.as_ref().unwrap(),
                b.source_read.as_ref().unwrap(),
            );
            let with_header = merge_ranges(ra.ranges.iter().chain(&header).copied().collect());
            assert_eq!(with_header, rb.ranges, "chunk {}", a.index);
            assert_eq!(ra.video_packets, rb.video_packets);
            assert_eq!(a.source, b.source);
        }
        for s in &specs {
            let read = s.source_read.as_ref().unwrap();
            assert_eq!(read.ranges.len(), 1);
            // A fifth of the media, with the margins (keyframes every 2.5 s,
            // a second of audio each side).
            assert!(
                read.bytes() < size * 3 / 10,
                "chunk {}: {} of {size}",
                s.index,
                read.bytes()
            );
        }
        // A sparse copy holding only chunk 2's span (and the boxes) gives
        // the packets the whole original gives.
        let mut read = specs[2].source_read.clone().unwrap();
        let [a, b] = read.ranges[0];
        read.ranges = vec![[0, size]];
        let from_whole = extract_chunk(&path, &dir.path().join("whole"), &read).unwrap();
        let sparse = dir.path().join("sparse.mp4");
        let mut original = whole.clone();
        original[..a as usize].fill(0);
        original[b as usize..].fill(0);
        original[..48].copy_from_slice(&whole[..48]);
        original[moov..].copy_from_slice(&whole[moov..]);
        std::fs::write(&sparse, &original).unwrap();
        let mut with_boxes = read.clone();
        with_boxes.ranges = merge_ranges(vec![[0, 48], [a, b], [moov as u64, size]]);
        let from_sparse = extract_chunk(&sparse, &dir.path().join("sparse"), &with_boxes).unwrap();
        // The same packets: data, times, flags (the stream headers, and
        // the DTS the NUT demuxer derives from them, may differ: the probe
        // of a sparse copy decodes zeros).
        let packets = |p: &Path| {
            let out = std::process::Command::new("ffprobe")
                .args(["-v", "error", "-show_data_hash", "md5", "-show_entries"])
                .args(["packet=stream_index,pts,size,flags,data_hash", "-of", "csv"])
                .arg(p)
                .output()
                .expect("run ffprobe");
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let (pw, ps) = (packets(&from_whole), packets(&from_sparse));
        assert!(pw.lines().count() > 300, "{pw}");
        let diff = pw.lines().zip(ps.lines()).find(|(a, b)| a != b);
        assert!(
            pw == ps,
            "the chunk from the sparse copy differs: {diff:?}, {} and {} packets",
            pw.lines().count(),
            ps.lines().count()
        );
        // Without its span, extraction fails rather than passing zeros on.
        with_boxes.ranges = vec![[0, 48], [moov as u64, size]];
        assert!(extract_chunk(&sparse, &dir.path().join("none"), &with_boxes).is_err());
    }
}
