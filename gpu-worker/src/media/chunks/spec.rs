//! What a chunk is: the specs a chunk job carries in its parameters,
//! the plan's answer, and which packets of the original a chunk holds.

use crate::media::probe::{Rotation, SourceInfo};
use crate::media::stages::AudioWindow;
use ffmpeg_next::Rational;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    pub(super) fn range(&self) -> Range {
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

    pub(super) fn streams(&self) -> Streams {
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

/// Which packets of the original a chunk file holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    /// Video packets (decode order) `[first, end)`.
    pub(super) video: (usize, usize),
    /// Audio packets whose time is in `[from, until]`, seconds.
    pub(super) audio: (f64, f64),
}

/// The audio range of a chunk that keeps no audio packet.
pub(super) const NO_AUDIO: (f64, f64) = (0.0, -1.0);

impl Range {
    /// Whether a packet is kept, and whether it comes before the range
    /// (the ranges of later chunks start later still). A video packet is
    /// known by its decode-order number, an audio one by its time.
    pub(super) fn wants(&self, is_video: bool, video_index: usize, seconds: f64) -> (bool, bool) {
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
pub(super) struct Streams {
    pub(super) video: usize,
    pub(super) audio: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
