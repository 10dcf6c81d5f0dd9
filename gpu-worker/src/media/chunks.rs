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

use super::error::MediaError;
use super::hls::segment_start_frame;
use super::probe::{self, Limits, Rotation, SourceInfo};
use super::stages::{AudioWindow, Decoder, LibavDecoder, AAC_FRAME, AUDIO_RATE};
use ffmpeg::{codec, format, Packet, Rational};
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// AAC frames of pre-roll a chunk encodes and drops before its first kept
/// packet (~340 ms at 48 kHz).
pub const AUDIO_PREROLL_FRAMES: i64 = 16;

/// Seconds of source audio kept in a chunk file around what it encodes
/// (the source decoder's own warm-up).
const AUDIO_MARGIN_SECONDS: f64 = 1.0;

/// A chunk's video ends before the first keyframe this long after its
/// end (room for reordered pictures).
const VIDEO_TAIL_SECONDS: f64 = 0.5;

/// What a chunk job needs to know of the whole source (the chunk file
/// alone cannot say: frame rate, rotation and size are the original's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedSource {
    /// The original's duration, seconds.
    pub duration: f64,
    /// Stored frame size.
    pub coded_width: u32,
    /// Stored frame size.
    pub coded_height: u32,
    /// Upright display size.
    pub display_width: u32,
    /// Upright display size.
    pub display_height: u32,
    /// Clockwise degrees to turn the picture (0, 90, 180, 270).
    pub rotation_degrees: u32,
    /// Output frame rate `[num, den]`.
    pub output_fps: [i32; 2],
    /// The source's average frame rate.
    pub source_fps: f64,
    /// Source video codec.
    pub codec: String,
    /// Time of the source's first decoded picture, seconds: frame 0 (in
    /// the chunk files' timeline: the original's, moved so that no
    /// timestamp is negative).
    pub video_origin_seconds: f64,
    /// Audio start minus video start, 48 kHz samples (as an unchunked
    /// transcode computes it from the streams' start times).
    pub audio_offset_samples: i64,
}

impl PlannedSource {
    /// The probe a chunk transcodes with: the original's, with the chunk
    /// file's stream indexes (video 0, audio 1).
    pub fn source_info(&self, has_audio: bool) -> SourceInfo {
        SourceInfo {
            duration: self.duration,
            coded_width: self.coded_width,
            coded_height: self.coded_height,
            display_width: self.display_width,
            display_height: self.display_height,
            rotation: Rotation::from_clockwise_degrees(f64::from(self.rotation_degrees)),
            output_fps: self.fps(),
            source_fps: self.source_fps,
            codec: self.codec.clone(),
            video_stream: 0,
            audio_stream: has_audio.then_some(1),
        }
    }

    /// The output frame rate.
    pub fn fps(&self) -> Rational {
        Rational::new(self.output_fps[0].max(1), self.output_fps[1].max(1))
    }
}

/// One chunk: the output range it encodes. Travels in the chunk job's
/// parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSpec {
    /// 0-based chunk number.
    pub index: u32,
    /// How many chunks the video has.
    pub count: u32,
    /// Number of its first segment.
    pub first_segment: u32,
    /// First output frame it encodes (a segment start).
    pub start_frame: i64,
    /// Output frame it stops before (a segment start); `None`: the end.
    pub end_frame: Option<i64>,
    /// The whole source.
    pub source: PlannedSource,
    /// Its part of the audio; `None` when the source has no audio.
    pub audio: Option<AudioWindow>,
}

impl ChunkSpec {
    /// Why this chunk cannot be encoded as it says, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let [num, den] = self.source.output_fps;
        if !(1..=240_000).contains(&num) || !(1..=1001).contains(&den) {
            return Err(format!("output_fps {num}/{den} is not a frame rate"));
        }
        if self.index >= self.count {
            return Err(format!("chunk {} of {}", self.index, self.count));
        }
        if self.start_frame < 0 || self.end_frame.is_some_and(|e| e <= self.start_frame) {
            return Err(format!(
                "frames {}..{:?} are not a range",
                self.start_frame, self.end_frame
            ));
        }
        if (self.index + 1 == self.count) != self.end_frame.is_none() {
            return Err("only the last chunk runs to the end".into());
        }
        let finite = |v: f64| v.is_finite() && v.abs() < 1e9;
        if !finite(self.source.video_origin_seconds)
            || self.audio.is_some_and(|a| !finite(a.origin_seconds))
        {
            return Err("origin out of range".into());
        }
        Ok(())
    }
}

/// A planned chunk with its remuxed input in scratch space.
#[derive(Debug, Clone)]
pub struct PlannedChunk {
    /// What it encodes.
    pub spec: ChunkSpec,
    /// Its stream-copied part of the original.
    pub file: PathBuf,
}

/// The plan of a chunked source.
#[derive(Debug, Clone)]
pub struct ChunkPlan {
    /// The probe of the original.
    pub info: SourceInfo,
    /// The chunks, in order.
    pub chunks: Vec<PlannedChunk>,
    /// Bytes of the original read by the plan (once, for all chunks).
    pub bytes_read: u64,
}

/// How a source is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkSettings {
    /// Segment duration, seconds.
    pub segment_seconds: u32,
    /// About this long per chunk (rounded to whole segments).
    pub chunk_seconds: u32,
    /// Only sources longer than this are chunked.
    pub min_seconds: u32,
}

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

/// Which packets of the original a chunk file holds.
#[derive(Debug, Clone, Copy)]
struct Range {
    /// Video packets (decode order) `[first, end)`.
    video: (usize, usize),
    /// Audio packets whose time is in `[from, until]`, seconds.
    audio: (f64, f64),
}

/// Plans `path` into chunks when it is longer than `settings.min_seconds`
/// and remuxes each chunk's part into `dir`; `None` when the source stays
/// one job. Bad input fails as the unchunked transcode would.
pub fn plan(
    path: &Path,
    dir: &Path,
    settings: ChunkSettings,
    limits: &Limits,
) -> Result<Option<ChunkPlan>, MediaError> {
    super::init();
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
    let mut input = format::input(&path).map_err(|e| MediaError::NotMedia(e.to_string()))?;
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
    // The keyframe index, in decode order, and the earliest timestamp.
    let mut index: Vec<IndexEntry> = Vec::new();
    let mut earliest = 0.0f64;
    for (stream, packet) in input.packets() {
        let tb = stream.time_base();
        for ts in [packet.pts(), packet.dts()].into_iter().flatten() {
            earliest = earliest.min(ts as f64 * f64::from(tb));
        }
        if stream.index() == info.video_stream {
            let ts = packet.pts().or(packet.dts()).unwrap_or(0);
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
            None => (0.0, -1.0),
        };
        specs.push(ChunkSpec {
            index: k,
            count: n,
            first_segment,
            start_frame,
            end_frame,
            source: source.clone(),
            audio: window,
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
    let files = remux(path, dir, &info, &ranges, shift)?;
    let bytes_read = std::fs::metadata(path)?.len();
    Ok(Some(ChunkPlan {
        info,
        chunks: specs
            .into_iter()
            .zip(files)
            .map(|(spec, file)| PlannedChunk { spec, file })
            .collect(),
        bytes_read,
    }))
}

/// One chunk file being written.
struct ChunkFile {
    output: format::context::Output,
    video_tb: Rational,
    audio_tb: Option<Rational>,
}

fn open_chunk(
    path: &Path,
    input: &format::context::Input,
    info: &SourceInfo,
) -> Result<ChunkFile, MediaError> {
    let mut output =
        format::output_as(&path, "nut").map_err(|e| MediaError::internal("chunk file", e))?;
    let mut add = |index: usize| -> Result<(), MediaError> {
        let s = input
            .stream(index)
            .ok_or_else(|| MediaError::Internal("chunk stream".into()))?;
        let mut o = output
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|e| MediaError::internal("chunk stream", e))?;
        let mut params = s.parameters();
        // The source container's codec tag may mean nothing in NUT.
        vodfarm_native::av::clear_codec_tag(&mut params);
        o.set_parameters(params);
        o.set_time_base(s.time_base());
        Ok(())
    };
    add(info.video_stream)?;
    if let Some(a) = info.audio_stream {
        add(a)?;
    }
    output
        .write_header()
        .map_err(|e| MediaError::internal("chunk file header", e))?;
    let video_tb = output
        .stream(0)
        .map(|s| s.time_base())
        .unwrap_or(Rational::new(1, 90_000));
    let audio_tb = info
        .audio_stream
        .and_then(|_| output.stream(1).map(|s| s.time_base()));
    Ok(ChunkFile {
        output,
        video_tb,
        audio_tb,
    })
}

/// Writes each chunk's packets (stream copy) into `dir/chunk_{k}.nut`.
fn remux(
    path: &Path,
    dir: &Path,
    info: &SourceInfo,
    ranges: &[Range],
    shift_seconds: f64,
) -> Result<Vec<PathBuf>, MediaError> {
    std::fs::create_dir_all(dir)?;
    let mut input = format::input(&path).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let in_tb = |i: usize| input.stream(i).map(|s| s.time_base());
    let vtb = in_tb(info.video_stream).ok_or(MediaError::NoVideo)?;
    let atb = info.audio_stream.and_then(in_tb);
    let paths: Vec<PathBuf> = (0..ranges.len())
        .map(|k| dir.join(format!("chunk_{k}.nut")))
        .collect();
    let mut open: Vec<Option<ChunkFile>> = (0..ranges.len()).map(|_| None).collect();
    let mut done = vec![false; ranges.len()];
    let mut video_index = 0usize;
    let mut lowest = 0usize;
    let mut packet = Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) => continue,
            Err(e) => return Err(MediaError::Damaged(format!("reading stopped: {e}"))),
        }
        let stream = packet.stream();
        let (is_video, seconds) = if stream == info.video_stream {
            (true, 0.0)
        } else if Some(stream) == info.audio_stream {
            let ts = packet.pts().or(packet.dts()).unwrap_or(0);
            (false, ts as f64 * f64::from(atb.unwrap_or(vtb)))
        } else {
            continue;
        };
        for k in lowest..ranges.len() {
            let r = ranges[k];
            let (wanted, before) = if is_video {
                (
                    video_index >= r.video.0 && video_index < r.video.1,
                    video_index < r.video.0,
                )
            } else {
                (
                    seconds >= r.audio.0 && seconds <= r.audio.1,
                    seconds < r.audio.0,
                )
            };
            if before {
                // Later chunks start later still.
                break;
            }
            if !wanted || done[k] {
                continue;
            }
            if open[k].is_none() {
                open[k] = Some(open_chunk(&paths[k], &input, info)?);
            }
            if let Some(file) = open[k].as_mut() {
                let mut p = packet.clone();
                let (out_stream, from, to) = if is_video {
                    (0, vtb, file.video_tb)
                } else {
                    (1, atb.unwrap_or(vtb), file.audio_tb.unwrap_or(vtb))
                };
                let shift = (shift_seconds / f64::from(from)).round() as i64;
                p.set_pts(p.pts().map(|t| t + shift));
                p.set_dts(p.dts().map(|t| t + shift));
                p.rescale_ts(from, to);
                p.set_stream(out_stream);
                p.set_position(-1);
                p.write_interleaved(&mut file.output)
                    .map_err(|e| MediaError::internal("chunk file write", e))?;
            }
        }
        if is_video {
            video_index += 1;
        }
        // Close the chunks whose video and audio are both complete.
        while lowest < ranges.len() {
            let r = ranges[lowest];
            let video_done = video_index >= r.video.1;
            let audio_done = !is_video && seconds > r.audio.1 || r.audio.1 < r.audio.0;
            if !(video_done && audio_done) {
                break;
            }
            if let Some(mut f) = open[lowest].take() {
                f.output
                    .write_trailer()
                    .map_err(|e| MediaError::internal("chunk file trailer", e))?;
            }
            done[lowest] = true;
            lowest += 1;
        }
    }
    for (k, f) in open.iter_mut().enumerate() {
        if let Some(mut f) = f.take() {
            f.output
                .write_trailer()
                .map_err(|e| MediaError::internal("chunk file trailer", e))?;
        }
        if !paths[k].exists() {
            return Err(MediaError::Internal(format!(
                "chunk {k} received no packets"
            )));
        }
    }
    Ok(paths)
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
    fn chunk_specs_are_checked() {
        let source = PlannedSource {
            duration: 300.0,
            coded_width: 320,
            coded_height: 180,
            display_width: 320,
            display_height: 180,
            rotation_degrees: 0,
            output_fps: [10, 1],
            source_fps: 10.0,
            codec: "h264".into(),
            video_origin_seconds: 1.0,
            audio_offset_samples: 0,
        };
        let spec = ChunkSpec {
            index: 1,
            count: 3,
            first_segment: 6,
            start_frame: 600,
            end_frame: Some(1200),
            source,
            audio: None,
        };
        spec.check().unwrap();
        let bad = [
            ChunkSpec {
                end_frame: Some(600),
                ..spec.clone()
            },
            ChunkSpec {
                end_frame: None,
                ..spec.clone()
            },
            ChunkSpec {
                index: 3,
                ..spec.clone()
            },
        ];
        for b in bad {
            assert!(b.check().is_err(), "{b:?}");
        }
        let mut zero_fps = spec.clone();
        zero_fps.source.output_fps = [0, 1];
        assert!(zero_fps.check().is_err());
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
