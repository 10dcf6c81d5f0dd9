//! The plan proper: the keyframe index of a source cut at segment
//! starts into chunks, and which packets of the original each needs.

use super::remux::open_source;
use super::spec::{ChunkSettings, ChunkSpec, PlannedSource, Range, NO_AUDIO};
use crate::media::error::MediaError;
use crate::media::hls::segment_start_frame;
use crate::media::probe::{self, Limits, Rotation, SourceInfo};
use crate::media::stages::{AudioWindow, Decoder, LibavDecoder, AAC_FRAME, AUDIO_RATE};
use ffmpeg::{codec, format, Rational};
use ffmpeg_next as ffmpeg;
use std::path::Path;

/// AAC frames of pre-roll a chunk encodes and drops before its first kept
/// packet (~340 ms at 48 kHz).
pub const AUDIO_PREROLL_FRAMES: i64 = 16;

/// Seconds of source audio kept in a chunk file around what it encodes
/// (the source decoder's own warm-up).
const AUDIO_MARGIN_SECONDS: f64 = 1.0;

/// A chunk's video ends before the first keyframe this long after its
/// end (room for reordered pictures).
const VIDEO_TAIL_SECONDS: f64 = 0.5;

/// Segments per chunk: `chunk_seconds` rounded to whole segments, ≥ 1.
pub fn segments_per_chunk(segment_seconds: u32, chunk_seconds: u32) -> u32 {
    let seg = segment_seconds.max(1);
    ((chunk_seconds + seg / 2) / seg).max(1)
}

/// How many chunks a source of `duration` seconds becomes (the last one
/// takes the remainder: between half and one and a half chunks).
pub fn chunk_count(duration: f64, segment_seconds: u32, chunk_seconds: u32) -> u32 {
    let len = f64::from(segments_per_chunk(segment_seconds, chunk_seconds) * segment_seconds);
    ((duration / len).round() as u32).max(1)
}

/// The first AAC packet timestamp at or after output frame `frame` (the
/// audio seam before that frame's chunk).
pub fn audio_seam(frame: i64, fps: Rational, offset_samples: i64) -> i64 {
    let samples = (frame as i128 * i128::from(fps.denominator()) * i128::from(AUDIO_RATE)
        + i128::from(fps.numerator())
        - 1)
        / i128::from(fps.numerator().max(1));
    let b = samples as i64 - offset_samples;
    b.div_euclid(AAC_FRAME) * AAC_FRAME
        + if b.rem_euclid(AAC_FRAME) > 0 {
            AAC_FRAME
        } else {
            0
        }
}

/// The first decoded picture's and audio frame's times, seconds.
fn origins(path: &Path, info: &SourceInfo) -> Result<(f64, Option<f64>), MediaError> {
    let mut input = format::input(&path).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let vstream = input.stream(info.video_stream).ok_or(MediaError::NoVideo)?;
    let vtb = vstream.time_base();
    let mut video = LibavDecoder::open(vstream.parameters(), false)?;
    let (mut audio, atb) = match info.audio_stream.and_then(|i| input.stream(i)) {
        Some(s) => (
            codec::Context::from_parameters(s.parameters())
                .and_then(|c| c.decoder().audio())
                .ok(),
            s.time_base(),
        ),
        None => (None, Rational::new(1, 1)),
    };
    let mut first_video: Option<i64> = None;
    let mut first_audio: Option<i64> = None;
    let mut packets = 0u64;
    for (stream, packet) in input.packets() {
        packets += 1;
        if stream.index() == info.video_stream && first_video.is_none() {
            video.decode(Some(&packet), &mut |p| {
                first_video.get_or_insert(p.timestamp().or(p.pts()).unwrap_or(0));
                Ok(())
            })?;
        } else if Some(stream.index()) == info.audio_stream && first_audio.is_none() {
            if let Some(dec) = audio.as_mut() {
                let _ = dec.send_packet(&packet);
                let mut f = ffmpeg::frame::Audio::empty();
                if dec.receive_frame(&mut f).is_ok() {
                    first_audio = Some(f.timestamp().or(f.pts()).unwrap_or(0));
                }
            }
        }
        let audio_done = first_audio.is_some() || audio.is_none();
        if (first_video.is_some() && audio_done) || packets > 100_000 {
            break;
        }
    }
    if first_video.is_none() {
        video.decode(None, &mut |p| {
            first_video.get_or_insert(p.timestamp().or(p.pts()).unwrap_or(0));
            Ok(())
        })?;
    }
    let v = first_video.ok_or(MediaError::NoFrames)?;
    Ok((
        v as f64 * f64::from(vtb),
        first_audio.map(|a| a as f64 * f64::from(atb)),
    ))
}

/// One video packet of the keyframe index.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    seconds: f64,
    key: bool,
}

/// One video or audio packet of the original, as the plan read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PacketEntry {
    /// Decode-order number of a video packet; `None` for audio.
    pub(super) video_index: Option<usize>,
    /// An audio packet's time, seconds.
    pub(super) seconds: f64,
    /// Byte offset in the original (`None`: unknown).
    pub(super) position: Option<u64>,
    /// Bytes.
    pub(super) size: u64,
}

/// The chunks of a source, before any of them is written.
pub(super) struct Cut {
    pub(super) info: SourceInfo,
    pub(super) specs: Vec<ChunkSpec>,
    pub(super) ranges: Vec<Range>,
    pub(super) shift: f64,
    pub(super) packets: Vec<PacketEntry>,
}

/// Reads the keyframe index of `path` and cuts it into chunks; `None`
/// when it stays one job.
pub(super) fn cut(
    path: &Path,
    settings: ChunkSettings,
    limits: &Limits,
    ranged: bool,
) -> Result<Option<Cut>, MediaError> {
    crate::media::init();
    let info = probe::probe(path, limits)?;
    if info.duration <= f64::from(settings.min_seconds) {
        return Ok(None);
    }
    let n = chunk_count(
        info.duration,
        settings.segment_seconds,
        settings.chunk_seconds,
    );
    if n < 2 {
        return Ok(None);
    }
    let (video_origin, audio_origin) = origins(path, &info)?;
    let mut input = open_source(path, ranged)?;
    let (vtb, vstart) = {
        let s = input.stream(info.video_stream).ok_or(MediaError::NoVideo)?;
        (s.time_base(), s.start_time())
    };
    let audio = info.audio_stream.and_then(|i| input.stream(i)).map(|s| {
        let start = s.start_time();
        let offset =
            if start != ffmpeg::ffi::AV_NOPTS_VALUE && vstart != ffmpeg::ffi::AV_NOPTS_VALUE {
                start as f64 * f64::from(s.time_base()) - vstart as f64 * f64::from(vtb)
            } else {
                0.0
            };
        (offset * f64::from(AUDIO_RATE)).round() as i64
    });
    // The keyframe index, in decode order, the earliest timestamp, and
    // where each packet lies (a ranged plan's byte spans).
    let mut index: Vec<IndexEntry> = Vec::new();
    let mut packets: Vec<PacketEntry> = Vec::new();
    let mut earliest = 0.0f64;
    for (stream, packet) in input.packets() {
        let tb = stream.time_base();
        for ts in [packet.pts(), packet.dts()].into_iter().flatten() {
            earliest = earliest.min(ts as f64 * f64::from(tb));
        }
        let ts = packet.pts().or(packet.dts()).unwrap_or(0);
        let is_video = stream.index() == info.video_stream;
        if is_video || Some(stream.index()) == info.audio_stream {
            packets.push(PacketEntry {
                video_index: is_video.then_some(index.len()),
                seconds: ts as f64 * f64::from(tb),
                position: u64::try_from(packet.position()).ok(),
                size: packet.size() as u64,
            });
        }
        if is_video {
            index.push(IndexEntry {
                seconds: ts as f64 * f64::from(vtb),
                key: packet.is_key(),
            });
        }
    }
    // Chunk files hold no negative timestamps (a muxer would shift them,
    // and differently in each chunk): every chunk's timeline is the
    // original's moved by this many whole seconds.
    let shift = if earliest < 0.0 {
        (-earliest).ceil() + 1.0
    } else {
        0.0
    };
    if index.is_empty() {
        return Err(MediaError::NoFrames);
    }
    let fps = info.output_fps;
    let per = segments_per_chunk(settings.segment_seconds, settings.chunk_seconds);
    let frame_seconds = |f: i64| f as f64 * f64::from(fps.invert());
    let source = PlannedSource {
        duration: info.duration,
        coded_width: info.coded_width,
        coded_height: info.coded_height,
        display_width: info.display_width,
        display_height: info.display_height,
        rotation_degrees: match info.rotation {
            Rotation::None => 0,
            Rotation::Clockwise90 => 90,
            Rotation::Half => 180,
            Rotation::Counterclockwise90 => 270,
        },
        output_fps: [fps.numerator(), fps.denominator()],
        source_fps: info.source_fps,
        codec: info.codec.clone(),
        video_origin_seconds: video_origin,
        audio_offset_samples: audio.unwrap_or(0),
    };
    let mut specs = Vec::new();
    let mut ranges = Vec::new();
    for k in 0..n {
        let first_segment = k * per;
        let start_frame =
            segment_start_frame(u64::from(first_segment), settings.segment_seconds, fps);
        let end_frame = (k + 1 < n).then(|| {
            segment_start_frame(
                u64::from(first_segment + per),
                settings.segment_seconds,
                fps,
            )
        });
        let start_s = video_origin + frame_seconds(start_frame);
        // Video: from the keyframe at or before the start (the first packet
        // for chunk 0) to the first keyframe well past the end.
        let first = if k == 0 {
            0
        } else {
            index
                .iter()
                .rposition(|e| e.key && e.seconds <= start_s + 1e-9)
                .unwrap_or(0)
        };
        let end = match end_frame {
            None => index.len(),
            Some(f) => {
                let after = video_origin + frame_seconds(f) + VIDEO_TAIL_SECONDS;
                index
                    .iter()
                    .enumerate()
                    .skip(first + 1)
                    .find(|(_, e)| e.key && e.seconds >= after)
                    .map_or(index.len(), |(i, _)| i)
            }
        };
        let window = match (audio, audio_origin) {
            (Some(offset), Some(origin)) => {
                let keep_from = (k > 0).then(|| audio_seam(start_frame, fps, offset));
                let keep_until = end_frame.map(|f| audio_seam(f, fps, offset));
                let feed_from =
                    keep_from.map_or(0, |f| (f - AUDIO_PREROLL_FRAMES * AAC_FRAME).max(0));
                Some(AudioWindow {
                    origin_seconds: origin,
                    feed_from,
                    keep_from,
                    keep_until,
                })
            }
            _ => None,
        };
        let audio_range = match window {
            Some(w) => (
                if k == 0 {
                    f64::NEG_INFINITY
                } else {
                    w.origin_seconds + w.feed_from as f64 / f64::from(AUDIO_RATE)
                        - AUDIO_MARGIN_SECONDS
                },
                match w.keep_until {
                    Some(u) => {
                        w.origin_seconds
                            + (u + 8 * AAC_FRAME) as f64 / f64::from(AUDIO_RATE)
                            + AUDIO_MARGIN_SECONDS
                    }
                    None => f64::INFINITY,
                },
            ),
            None => NO_AUDIO,
        };
        specs.push(ChunkSpec {
            index: k,
            count: n,
            first_segment,
            start_frame,
            end_frame,
            source: source.clone(),
            audio: window,
            source_read: None,
        });
        ranges.push(Range {
            video: (first, end),
            audio: audio_range,
        });
    }
    for spec in &mut specs {
        spec.source.video_origin_seconds += shift;
        if let Some(w) = spec.audio.as_mut() {
            w.origin_seconds += shift;
        }
    }
    Ok(Some(Cut {
        info,
        specs,
        ranges,
        shift,
        packets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_segments_and_cover_the_source() {
        assert_eq!(segments_per_chunk(10, 60), 6);
        assert_eq!(segments_per_chunk(10, 64), 6);
        assert_eq!(segments_per_chunk(10, 4), 1);
        assert_eq!(segments_per_chunk(6, 60), 10);
        assert_eq!(chunk_count(300.0, 10, 60), 5);
        assert_eq!(chunk_count(299.9, 10, 60), 5);
        assert_eq!(chunk_count(121.0, 10, 60), 2);
        assert_eq!(chunk_count(20.0, 10, 60), 1);
    }

    #[test]
    fn audio_seams_are_on_the_aac_grid_at_or_after_the_frame() {
        let fps = Rational::new(30, 1);
        // Frame 1800 = 60 s = 2,880,000 samples = 2812.5 frames of 1024.
        assert_eq!(audio_seam(1800, fps, 0), 2813 * 1024);
        assert_eq!(audio_seam(0, fps, 0), 0);
        // Audio starting 0.1 s after the video: the seam moves earlier.
        let s = audio_seam(1800, fps, 4800);
        assert_eq!(s % 1024, 0);
        assert!(s + 4800 >= 2_880_000 && s + 4800 - 1024 < 2_880_000);
        let ntsc = Rational::new(30000, 1001);
        let s = audio_seam(1798, ntsc, 0);
        assert!(s as f64 >= 1798.0 * 1001.0 / 30000.0 * 48000.0 - 1e-6);
    }
}
