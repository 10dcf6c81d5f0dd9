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
    /// Set when the chunk fetches byte ranges of the original itself
    /// (an MP4/MOV original); `None`: its input is a chunk file the plan
    /// remuxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_read: Option<SourceRead>,
}

/// What a chunk reads of an MP4/MOV original, and which of its packets
/// it keeps: the chunk fetches `ranges` into a sparse file of `size`
/// bytes (the container's boxes but the media data, and the span of the
/// media data its packets lie in) and extracts its packets from it by
/// the same rule the plan-time remux applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRead {
    /// The original's size (another object under the key is refused).
    pub size: u64,
    /// Byte ranges `[start, end)` to fetch, sorted, not overlapping.
    pub ranges: Vec<[u64; 2]>,
    /// The original's video stream.
    pub video_stream: usize,
    /// The original's audio stream.
    pub audio_stream: Option<usize>,
    /// Video packets kept, in decode order: `[first, end)`.
    pub video_packets: [usize; 2],
    /// Audio packets kept: those timed in `[from, until]` seconds (an
    /// absent bound is open); `None`: no audio packet.
    pub audio_seconds: Option<[Option<f64>; 2]>,
    /// Seconds added to every timestamp (no negative timestamps).
    pub shift_seconds: f64,
}

impl SourceRead {
    fn range(&self) -> Range {
        Range {
            video: (self.video_packets[0], self.video_packets[1]),
            audio: match self.audio_seconds {
                Some([from, until]) => (
                    from.unwrap_or(f64::NEG_INFINITY),
                    until.unwrap_or(f64::INFINITY),
                ),
                None => NO_AUDIO,
            },
        }
    }

    fn streams(&self) -> Streams {
        Streams {
            video: self.video_stream,
            audio: self.audio_stream,
        }
    }

    /// Bytes the chunk fetches.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|[a, b]| b.saturating_sub(*a)).sum()
    }
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

/// The audio range of a chunk that keeps no audio packet.
const NO_AUDIO: (f64, f64) = (0.0, -1.0);

impl Range {
    /// Whether a packet is kept, and whether it comes before the range
    /// (the ranges of later chunks start later still). A video packet is
    /// known by its decode-order number, an audio one by its time.
    fn wants(&self, is_video: bool, video_index: usize, seconds: f64) -> (bool, bool) {
        if is_video {
            (
                video_index >= self.video.0 && video_index < self.video.1,
                video_index < self.video.0,
            )
        } else {
            (
                seconds >= self.audio.0 && seconds <= self.audio.1,
                seconds < self.audio.0,
            )
        }
    }
}

/// The streams a chunk carries (the original's indexes).
#[derive(Debug, Clone, Copy)]
struct Streams {
    video: usize,
    audio: Option<usize>,
}

/// One video or audio packet of the original, as the plan read it.
#[derive(Debug, Clone, Copy)]
struct PacketEntry {
    /// Decode-order number of a video packet; `None` for audio.
    video_index: Option<usize>,
    /// An audio packet's time, seconds.
    seconds: f64,
    /// Byte offset in the original (`None`: unknown).
    position: Option<u64>,
    /// Bytes.
    size: u64,
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
    super::init();
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

/// Opens a source for its packets. A sparse copy (`ranged`) is read
/// without parsers: a parser reads packet data (zeros in the holes) and
/// would clear the key flags the container's index (`stss`) gives, so the
/// plan and the chunk both take packets, flags and timestamps from the
/// index alone, and count them alike.
fn open_source(path: &Path, ranged: bool) -> Result<format::context::Input, MediaError> {
    let opened = if ranged {
        let mut options = ffmpeg::Dictionary::new();
        options.set("fflags", "+noparse");
        format::input_with_dictionary(&path, options)
    } else {
        format::input(&path)
    };
    opened.map_err(|e| MediaError::NotMedia(e.to_string()))
}

/// The chunks of a source, before any of them is written.
struct Cut {
    info: SourceInfo,
    specs: Vec<ChunkSpec>,
    ranges: Vec<Range>,
    shift: f64,
    packets: Vec<PacketEntry>,
}

/// Reads the keyframe index of `path` and cuts it into chunks; `None`
/// when it stays one job.
fn cut(
    path: &Path,
    settings: ChunkSettings,
    limits: &Limits,
    ranged: bool,
) -> Result<Option<Cut>, MediaError> {
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

/// One chunk file being written.
struct ChunkFile {
    output: format::context::Output,
    video_tb: Rational,
    audio_tb: Option<Rational>,
}

fn open_chunk(
    path: &Path,
    input: &format::context::Input,
    streams: Streams,
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
    add(streams.video)?;
    if let Some(a) = streams.audio {
        add(a)?;
    }
    output
        .write_header()
        .map_err(|e| MediaError::internal("chunk file header", e))?;
    let video_tb = output
        .stream(0)
        .map(|s| s.time_base())
        .unwrap_or(Rational::new(1, 90_000));
    let audio_tb = streams
        .audio
        .and_then(|_| output.stream(1).map(|s| s.time_base()));
    Ok(ChunkFile {
        output,
        video_tb,
        audio_tb,
    })
}

/// Writes each chunk's packets (stream copy) into `dir/chunk_{k}.nut`.
/// With `within`, every packet written must lie in those byte ranges of
/// `path` (a sparse copy holds nothing else).
fn remux(
    path: &Path,
    dir: &Path,
    streams: Streams,
    ranges: &[Range],
    shift_seconds: f64,
    within: Option<&[[u64; 2]]>,
) -> Result<Vec<PathBuf>, MediaError> {
    std::fs::create_dir_all(dir)?;
    let mut input = open_source(path, within.is_some())?;
    let in_tb = |i: usize| input.stream(i).map(|s| s.time_base());
    let vtb = in_tb(streams.video).ok_or(MediaError::NoVideo)?;
    let atb = streams.audio.and_then(in_tb);
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
        let (is_video, seconds) = if stream == streams.video {
            (true, 0.0)
        } else if Some(stream) == streams.audio {
            let ts = packet.pts().or(packet.dts()).unwrap_or(0);
            (false, ts as f64 * f64::from(atb.unwrap_or(vtb)))
        } else {
            continue;
        };
        for k in lowest..ranges.len() {
            let r = ranges[k];
            let (wanted, before) = r.wants(is_video, video_index, seconds);
            if before {
                // Later chunks start later still.
                break;
            }
            if !wanted || done[k] {
                continue;
            }
            if let Some(fetched) = within {
                let at = u64::try_from(packet.position()).ok();
                let size = packet.size() as u64;
                if !at.is_some_and(|p| fetched.iter().any(|[a, b]| p >= *a && p + size <= *b)) {
                    return Err(MediaError::Internal(format!(
                        "packet at byte {at:?} is outside the fetched ranges"
                    )));
                }
            }
            if open[k].is_none() {
                open[k] = Some(open_chunk(&paths[k], &input, streams)?);
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
        if lowest == ranges.len() {
            // Every chunk is complete: the rest is not needed.
            break;
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
            source_read: None,
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
