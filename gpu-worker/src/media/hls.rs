//! HLS packaging (RFC 8216): MPEG-TS segments cut at the forced IDR
//! frames, their continuity counters sealed per segment
//! ([`super::continuity`]). The playlists' text is
//! `vodfarm_core::playlists`'.

pub use super::rendition::{RenditionSet, RenditionSummary, SegmentEntry};

use super::continuity::seal_segment;
use super::error::MediaError;
use super::stages::Packager;
use ffmpeg::{codec, format, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Timestamps in the segments start here (90 kHz ticks): room for the
/// negative decode timestamps of B-frames, as the ffmpeg CLI does.
const MUX_OFFSET_90K: i64 = vodfarm_core::playlists::MPEGTS_START_90K;

/// Video packets held back waiting for audio before writing anyway
/// (bounds memory when the audio track ends early).
const MAX_HELD_VIDEO: usize = 600;

/// A finished segment file, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    /// Rendition name, e.g. `720p`.
    pub rendition: String,
    /// Segment number (0-based).
    pub index: u32,
    /// Where it is in scratch space.
    pub path: PathBuf,
    /// Bytes.
    pub bytes: u64,
    /// What file of the rendition it is.
    pub kind: SegmentKind,
}

/// The kinds of files a packager writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// `segment_{n}.ts`.
    Ts,
    /// `init.mp4` of a CMAF track.
    CmafInit,
    /// `segment_{n}.m4s` of a CMAF track.
    Cmaf,
}

/// `avc1.PPCCLL` from the SPS in an Annex B H.264 packet.
pub fn avc1_codec_string(annex_b: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 < annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            let nal = i + 3;
            if annex_b[nal] & 0x1f == 7 && nal + 3 < annex_b.len() {
                return Some(format!(
                    "avc1.{:02x}{:02x}{:02x}",
                    annex_b[nal + 1],
                    annex_b[nal + 2],
                    annex_b[nal + 3]
                ));
            }
            i = nal;
        } else {
            i += 1;
        }
    }
    None
}

/// Where segment `n` of a rendition starts: the first output frame whose
/// time is at or after `n * segment_seconds`.
pub fn segment_start_frame(n: u64, segment_seconds: u32, fps: Rational) -> i64 {
    // ceil(n * seg * num / den)
    let num = n as i128 * segment_seconds as i128 * fps.numerator() as i128;
    let den = fps.denominator().max(1) as i128;
    ((num + den - 1) / den) as i64
}

/// Whether output frame `index` starts a segment.
pub fn is_segment_start(index: i64, segment_seconds: u32, fps: Rational) -> bool {
    if index <= 0 {
        return true;
    }
    let seg_of = |i: i64| -> i64 {
        // floor(i * den / (num * seg))
        let num = i as i128 * fps.denominator() as i128;
        let den = fps.numerator().max(1) as i128 * segment_seconds.max(1) as i128;
        (num / den) as i64
    };
    // i starts a segment when its segment differs from i-1's and i is
    // that segment's first frame.
    let s = seg_of(index);
    s != seg_of(index - 1) || segment_start_frame(s as u64, segment_seconds, fps) == index
}

struct OpenSegment {
    index: u32,
    output: format::context::Output,
    path: PathBuf,
    start_frame: i64,
    has_video: bool,
}

/// Writes one rendition's MPEG-TS segments: a new file at each segment
/// start (an IDR frame), audio interleaved by decode time.
pub struct TsSegmenter {
    name: String,
    dir: PathBuf,
    width: u32,
    height: u32,
    fps: Rational,
    video_params: codec::Parameters,
    video_tb: Rational,
    audio: Option<(codec::Parameters, Rational)>,
    segment_seconds: u32,
    current: Option<OpenSegment>,
    done: Vec<(i64, u64)>,
    held_video: VecDeque<Packet>,
    held_audio: VecDeque<Packet>,
    codecs: Option<String>,
    on_segment: Box<dyn FnMut(SegmentFile) -> Result<(), MediaError> + Send>,
    first_index: u32,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for TsSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsSegmenter")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// Everything a [`TsSegmenter`] needs to know.
pub struct SegmenterConfig {
    /// Rung name.
    pub name: String,
    /// Scratch directory for its files.
    pub dir: PathBuf,
    /// Frame size.
    pub width: u32,
    /// Frame size.
    pub height: u32,
    /// Frame rate.
    pub fps: Rational,
    /// Video encoder parameters and time base.
    pub video: (codec::Parameters, Rational),
    /// Audio encoder parameters and time base, if the source has audio.
    pub audio: Option<(codec::Parameters, Rational)>,
    /// Target segment duration.
    pub segment_seconds: u32,
    /// Number of the first segment written (a chunk's first segment; 0
    /// for a whole video).
    pub first_index: u32,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for SegmenterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmenterConfig")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl TsSegmenter {
    /// A segmenter that hands each finished file to `on_segment`.
    pub fn new(
        config: SegmenterConfig,
        on_segment: Box<dyn FnMut(SegmentFile) -> Result<(), MediaError> + Send>,
    ) -> Self {
        TsSegmenter {
            name: config.name,
            dir: config.dir,
            width: config.width,
            height: config.height,
            fps: config.fps,
            video_params: config.video.0,
            video_tb: config.video.1,
            audio: config.audio,
            segment_seconds: config.segment_seconds,
            current: None,
            done: Vec::new(),
            held_video: VecDeque::new(),
            held_audio: VecDeque::new(),
            codecs: None,
            on_segment,
            first_index: config.first_index,
        }
    }

    fn open_segment(&mut self, start_frame: i64) -> Result<(), MediaError> {
        let index = self.first_index + self.done.len() as u32 + u32::from(self.current.is_some());
        let path = self.dir.join(format!("segment_{index}.ts"));
        let mut output = format::output_as(&path, "mpegts")
            .map_err(|e| MediaError::internal("open segment", e))?;
        {
            let mut s = output
                .add_stream(ffmpeg::encoder::find(codec::Id::None))
                .map_err(|e| MediaError::internal("add video stream", e))?;
            s.set_parameters(self.video_params.clone());
            s.set_time_base(self.video_tb);
        }
        if let Some((params, tb)) = &self.audio {
            let mut s = output
                .add_stream(ffmpeg::encoder::find(codec::Id::None))
                .map_err(|e| MediaError::internal("add audio stream", e))?;
            s.set_parameters(params.clone());
            s.set_time_base(*tb);
        }
        output
            .write_header()
            .map_err(|e| MediaError::internal("segment header", e))?;
        self.current = Some(OpenSegment {
            index,
            output,
            path,
            start_frame,
            has_video: false,
        });
        Ok(())
    }

    fn close_segment(&mut self, end_frame: i64) -> Result<(), MediaError> {
        let Some(mut seg) = self.current.take() else {
            return Ok(());
        };
        seg.output
            .write_trailer()
            .map_err(|e| MediaError::internal("segment trailer", e))?;
        drop(seg.output);
        let ts = seal_segment(&std::fs::read(&seg.path)?)?;
        std::fs::write(&seg.path, &ts)?;
        let bytes = ts.len() as u64;
        self.done.push((end_frame - seg.start_frame, bytes));
        (self.on_segment)(SegmentFile {
            rendition: self.name.clone(),
            index: seg.index,
            path: seg.path,
            bytes,
            kind: SegmentKind::Ts,
        })
    }

    fn mux(&mut self, mut packet: Packet, stream: usize, tb: Rational) -> Result<(), MediaError> {
        let Some(seg) = self.current.as_mut() else {
            return Ok(());
        };
        let out_tb = seg
            .output
            .stream(stream)
            .map(|s| s.time_base())
            .unwrap_or(Rational::new(1, 90_000));
        packet.rescale_ts(tb, out_tb);
        let offset = MUX_OFFSET_90K * i64::from(out_tb.denominator())
            / (90_000 * i64::from(out_tb.numerator().max(1)));
        packet.set_pts(packet.pts().map(|p| p + offset));
        packet.set_dts(packet.dts().map(|d| d + offset));
        packet.set_stream(stream);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut seg.output)
            .map_err(|e| MediaError::internal("write segment", e))
    }

    fn write_one_video(&mut self, packet: Packet) -> Result<(), MediaError> {
        let pts = packet.pts().unwrap_or(0);
        if packet.is_key() && is_segment_start(pts, self.segment_seconds, self.fps) {
            if self.codecs.is_none() {
                self.codecs = packet.data().and_then(avc1_codec_string);
            }
            match self.current.as_mut() {
                // Audio that came first already opened this segment.
                Some(seg) if !seg.has_video => seg.start_frame = pts,
                Some(_) => {
                    self.close_segment(pts)?;
                    self.open_segment(pts)?;
                }
                None => self.open_segment(pts)?,
            }
        } else if self.current.is_none() {
            self.open_segment(pts)?;
        }
        if let Some(seg) = self.current.as_mut() {
            seg.has_video = true;
        }
        self.mux(packet, 0, self.video_tb)
    }

    fn seconds(p: &Packet, tb: Rational) -> f64 {
        p.dts().or(p.pts()).unwrap_or(0) as f64 * f64::from(tb)
    }

    /// Writes held packets in decode-time order while both kinds are
    /// known up to that time (or `flush`).
    fn drain(&mut self, flush: bool) -> Result<(), MediaError> {
        let audio_tb = self.audio.as_ref().map(|(_, tb)| *tb);
        loop {
            let next_video = self
                .held_video
                .front()
                .map(|p| Self::seconds(p, self.video_tb));
            let next_audio = match (self.held_audio.front(), audio_tb) {
                (Some(p), Some(tb)) => Some(Self::seconds(p, tb)),
                _ => None,
            };
            let take_video = match (next_video, next_audio) {
                (Some(v), Some(a)) => v <= a,
                (Some(_), None) => {
                    if flush || audio_tb.is_none() || self.held_video.len() > MAX_HELD_VIDEO {
                        true
                    } else {
                        return Ok(());
                    }
                }
                (None, Some(_)) => {
                    if flush || self.held_audio.len() > MAX_HELD_VIDEO {
                        false
                    } else {
                        return Ok(());
                    }
                }
                (None, None) => return Ok(()),
            };
            if take_video {
                if let Some(p) = self.held_video.pop_front() {
                    self.write_one_video(p)?;
                }
            } else if let (Some(p), Some(tb)) = (self.held_audio.pop_front(), audio_tb) {
                if self.current.is_none() {
                    self.open_segment(0)?;
                }
                self.mux(p, 1, tb)?;
            }
        }
    }
}

impl Packager for TsSegmenter {
    fn write_video(&mut self, packet: Packet) -> Result<(), MediaError> {
        self.held_video.push_back(packet);
        self.drain(false)
    }

    fn write_audio(&mut self, packet: Packet) -> Result<(), MediaError> {
        if self.audio.is_some() {
            self.held_audio.push_back(packet);
            self.drain(false)?;
        }
        Ok(())
    }

    fn finish(&mut self, total_frames: i64) -> Result<RenditionSummary, MediaError> {
        self.drain(true)?;
        self.close_segment(total_frames)?;
        let fps = f64::from(self.fps);
        let mut codecs = self
            .codecs
            .clone()
            .ok_or_else(|| MediaError::Internal("no H.264 SPS in the encoder's output".into()))?;
        if self.audio.is_some() {
            codecs.push_str(",mp4a.40.2");
        }
        Ok(RenditionSummary {
            name: self.name.clone(),
            width: self.width,
            height: self.height,
            frame_rate: fps,
            codecs,
            segments: self
                .done
                .iter()
                .map(|&(frames, bytes)| SegmentEntry {
                    duration: frames as f64 / fps,
                    bytes,
                })
                .collect(),
        })
    }
}

/// Scratch directory of a rendition.
pub fn rendition_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn codec_string_from_sps() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac,
        ];
        assert_eq!(avc1_codec_string(&data).as_deref(), Some("avc1.64001f"));
        assert_eq!(avc1_codec_string(&[0, 0, 1, 0x65, 1, 2, 3]), None);
    }

    #[test]
    fn segment_starts() {
        let ntsc = Rational::new(30000, 1001);
        assert_eq!(segment_start_frame(1, 6, ntsc), 180);
        assert_eq!(segment_start_frame(1, 6, Rational::new(30, 1)), 180);
        assert!(is_segment_start(0, 6, ntsc));
        assert!(is_segment_start(180, 6, ntsc));
        assert!(!is_segment_start(179, 6, ntsc));
        assert!(!is_segment_start(181, 6, ntsc));
        let starts: Vec<i64> = (0..1000)
            .filter(|&i| is_segment_start(i, 2, ntsc))
            .collect();
        assert_eq!(
            starts,
            vec![0, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 660, 720, 780, 840, 900, 960]
        );
    }
}
