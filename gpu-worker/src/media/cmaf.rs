//! CMAF packaging: one fragmented MP4 per track (each video rendition
//! video-only, one AAC track shared by all), split into `init.mp4`
//! (`ftyp` + `moov`) and `segment_{n}.m4s` (`moof` + `mdat` …), served
//! to HLS (version 7, `EXT-X-MAP`) and DASH alike.
//!
//! One libavformat `mp4` muxer writes a track's whole fragmented file
//! (`empty_moov+default_base_moof+cmaf`), so `tfdt`, `trun` and sequence
//! numbers are continuous across segments by construction. Video
//! fragments are cut at every key frame (`frag_keyframe`); key frames are
//! the forced IDRs at [`is_segment_start`] frames, and a fragment whose
//! key frame does not start a segment (a scene-cut IDR) joins the
//! previous segment, so segments stay aligned across renditions exactly
//! as the MPEG-TS path cuts them. The audio track is cut every
//! `segment_seconds` (`frag_duration`).
//!
//! Timestamps are shifted by the same [`MPEGTS_START_90K`] as the TS
//! segments, so B-frames' negative decode times need no edit list and
//! audio and video stay in step across separate files; the MPD carries
//! the shift (`presentationTimeOffset`).
//!
//! The file is split once the track is complete: its segments are
//! uploaded after the rung's encode, not during it (scratch holds one
//! rendition at a time per rung).

use super::error::MediaError;
use super::hls::{is_segment_start, SegmentFile, SegmentKind};
use super::rendition::{RenditionSummary, SegmentEntry};
use super::stages::Packager;
use ffmpeg::{codec, format, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::path::PathBuf;
use vodfarm_core::playlists::MPEGTS_START_90K;

/// What a [`CmafPackager`] packages.
#[derive(Debug, Clone, Copy)]
pub enum CmafTrack {
    /// A video rendition (its packets through `write_video`).
    Video {
        /// Frame size.
        width: u32,
        /// Frame size.
        height: u32,
        /// Frame rate.
        fps: Rational,
    },
    /// The shared audio track (its packets through `write_audio`).
    Audio,
}

/// Writes one CMAF track.
pub struct CmafPackager {
    name: String,
    dir: PathBuf,
    track: CmafTrack,
    segment_seconds: u32,
    src_tb: Rational,
    output: Option<format::context::Output>,
    path: PathBuf,
    /// Frame index of every key frame written, in order (video).
    keyframes: Vec<i64>,
    /// End of the last packet written, the muxer's time base.
    audio_end: i64,
    on_segment: Box<dyn FnMut(SegmentFile) -> Result<(), MediaError> + Send>,
}

impl std::fmt::Debug for CmafPackager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmafPackager")
            .field("name", &self.name)
            .field("track", &self.track)
            .finish_non_exhaustive()
    }
}

impl CmafPackager {
    /// Opens the track's muxer. `params`/`tb`: the encoder's (a video
    /// encoder must be opened with global headers: its `avcC` goes in the
    /// init segment).
    pub fn open(
        name: String,
        dir: PathBuf,
        track: CmafTrack,
        (params, tb): (codec::Parameters, Rational),
        segment_seconds: u32,
        on_segment: Box<dyn FnMut(SegmentFile) -> Result<(), MediaError> + Send>,
    ) -> Result<Self, MediaError> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("track.mp4");
        let mut output = format::output_as(&path, "mp4")
            .map_err(|e| MediaError::internal("open cmaf track", e))?;
        {
            let mut s = output
                .add_stream(ffmpeg::encoder::find(codec::Id::None))
                .map_err(|e| MediaError::internal("add cmaf stream", e))?;
            s.set_parameters(params);
            s.set_time_base(match track {
                CmafTrack::Video { .. } => Rational::new(1, 90_000),
                CmafTrack::Audio => tb,
            });
        }
        let mut opts = Dictionary::new();
        // `frag_discont` without an edit list: `tfdt` is each sample's own
        // decode time (shift included), not time since the track's first
        // sample, so separate tracks share one timeline.
        opts.set("use_editlist", "0");
        match track {
            CmafTrack::Video { .. } => {
                opts.set(
                    "movflags",
                    "+frag_keyframe+empty_moov+default_base_moof+frag_discont+cmaf",
                );
            }
            CmafTrack::Audio => {
                opts.set(
                    "movflags",
                    "+empty_moov+default_base_moof+frag_discont+cmaf",
                );
                opts.set(
                    "frag_duration",
                    &(u64::from(segment_seconds.max(1)) * 1_000_000).to_string(),
                );
            }
        }
        output
            .write_header_with(opts)
            .map_err(|e| MediaError::internal("cmaf header", e))?;
        Ok(CmafPackager {
            name,
            dir,
            track,
            segment_seconds,
            src_tb: tb,
            output: Some(output),
            path,
            keyframes: Vec::new(),
            audio_end: 0,
            on_segment,
        })
    }

    fn out_tb(&self) -> Rational {
        self.output
            .as_ref()
            .and_then(|o| o.stream(0).map(|s| s.time_base()))
            .unwrap_or(Rational::new(1, 90_000))
    }

    fn mux(&mut self, mut packet: Packet) -> Result<(), MediaError> {
        let out_tb = self.out_tb();
        let Some(output) = self.output.as_mut() else {
            return Err(MediaError::Internal("cmaf track already finished".into()));
        };
        packet.rescale_ts(self.src_tb, out_tb);
        let offset = shift(out_tb);
        packet.set_pts(packet.pts().map(|p| p + offset));
        packet.set_dts(packet.dts().map(|d| d + offset));
        packet.set_stream(0);
        packet.set_position(-1);
        if let Some(end) = packet.pts().map(|p| p + packet.duration().max(0)) {
            self.audio_end = self.audio_end.max(end);
        }
        packet
            .write_interleaved(output)
            .map_err(|e| MediaError::internal("write cmaf track", e))
    }
}

/// [`MPEGTS_START_90K`] in time base `tb`.
fn shift(tb: Rational) -> i64 {
    MPEGTS_START_90K * i64::from(tb.denominator()) / (90_000 * i64::from(tb.numerator().max(1)))
}

impl Packager for CmafPackager {
    fn write_video(&mut self, packet: Packet) -> Result<(), MediaError> {
        if !matches!(self.track, CmafTrack::Video { .. }) {
            return Ok(());
        }
        if packet.is_key() {
            self.keyframes.push(packet.pts().unwrap_or(0));
        }
        self.mux(packet)
    }

    fn write_audio(&mut self, packet: Packet) -> Result<(), MediaError> {
        if !matches!(self.track, CmafTrack::Audio) {
            return Ok(());
        }
        self.mux(packet)
    }

    fn finish(&mut self, total_frames: i64) -> Result<RenditionSummary, MediaError> {
        let out_tb = self.out_tb();
        if let Some(mut output) = self.output.take() {
            output
                .write_trailer()
                .map_err(|e| MediaError::internal("cmaf trailer", e))?;
        }
        let file = std::fs::read(&self.path)?;
        let _ = std::fs::remove_file(&self.path);
        let boxes = boxes_in(&file)?;
        let moov = boxes
            .iter()
            .find(|b| &b.kind == b"moov")
            .copied()
            .ok_or_else(|| MediaError::Internal("no moov in the CMAF track".into()))?;
        let frags = fragments(&boxes, file.len());
        if frags.is_empty() {
            return Err(MediaError::Internal(format!(
                "the {} CMAF track has no fragments",
                self.name
            )));
        }
        let (segments, durations, codecs) = match self.track {
            CmafTrack::Video { fps, .. } => {
                if frags.len() != self.keyframes.len() {
                    return Err(MediaError::Internal(format!(
                        "{}: {} fragments for {} key frames",
                        self.name,
                        frags.len(),
                        self.keyframes.len()
                    )));
                }
                let mut segs: Vec<(usize, usize)> = Vec::new();
                let mut starts: Vec<i64> = Vec::new();
                for (f, &k) in frags.iter().zip(&self.keyframes) {
                    match segs.last_mut() {
                        Some(last) if !is_segment_start(k, self.segment_seconds, fps) => {
                            last.1 = f.1;
                        }
                        _ => {
                            segs.push(*f);
                            starts.push(k);
                        }
                    }
                }
                let fps_f = f64::from(fps);
                let durations = starts
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        let end = starts.get(i + 1).copied().unwrap_or(total_frames);
                        (end - s) as f64 / fps_f
                    })
                    .collect::<Vec<f64>>();
                let codecs = avc1_in(&file[moov.start..moov.end]).ok_or_else(|| {
                    MediaError::Internal("no avcC in the CMAF init segment".into())
                })?;
                (segs, durations, codecs)
            }
            CmafTrack::Audio => {
                let mut times = Vec::new();
                for &(s, e) in &frags {
                    times.push(fragment_decode_time(&file[s..e]).ok_or_else(|| {
                        MediaError::Internal("an audio fragment without tfdt".into())
                    })? as i64);
                }
                let end = self.audio_end;
                let durations = times
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        let next = times.get(i + 1).copied().unwrap_or(end);
                        (next - t).max(0) as f64 * f64::from(out_tb)
                    })
                    .collect::<Vec<f64>>();
                (frags, durations, "mp4a.40.2".to_owned())
            }
        };
        let init_path = self.dir.join("init.mp4");
        std::fs::write(&init_path, &file[..moov.end])?;
        (self.on_segment)(SegmentFile {
            rendition: self.name.clone(),
            index: 0,
            path: init_path,
            bytes: moov.end as u64,
            kind: SegmentKind::CmafInit,
        })?;
        let mut entries = Vec::new();
        for (i, (&(s, e), d)) in segments.iter().zip(&durations).enumerate() {
            let path = self.dir.join(format!("segment_{i}.m4s"));
            std::fs::write(&path, &file[s..e])?;
            (self.on_segment)(SegmentFile {
                rendition: self.name.clone(),
                index: i as u32,
                path,
                bytes: (e - s) as u64,
                kind: SegmentKind::Cmaf,
            })?;
            entries.push(SegmentEntry {
                duration: *d,
                bytes: (e - s) as u64,
            });
        }
        let (width, height, frame_rate) = match self.track {
            CmafTrack::Video { width, height, fps } => (width, height, f64::from(fps)),
            CmafTrack::Audio => (0, 0, 0.0),
        };
        Ok(RenditionSummary {
            name: self.name.clone(),
            width,
            height,
            frame_rate,
            codecs,
            segments: entries,
        })
    }
}

/// The fragments after the init segment: each starts at a `styp` (or a
/// `moof` not preceded by one) and runs to the next; an `mfra` index at
/// the end is left out (segments are addressed by number).
fn fragments(boxes: &[Mp4Box], len: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    let mut prev: Option<[u8; 4]> = None;
    for b in boxes {
        let begins = &b.kind == b"styp" || (&b.kind == b"moof" && prev != Some(*b"styp"));
        if begins || &b.kind == b"mfra" {
            if let Some(s) = start.take() {
                out.push((s, b.start));
            }
            if begins {
                start = Some(b.start);
            }
        }
        prev = Some(b.kind);
    }
    if let Some(s) = start {
        out.push((s, len));
    }
    out
}

/// A box: where it starts and ends, and its type.
#[derive(Debug, Clone, Copy)]
struct Mp4Box {
    start: usize,
    end: usize,
    kind: [u8; 4],
}

/// The boxes one after another in `data` (ISO/IEC 14496-12 §4.2).
fn boxes_in(data: &[u8]) -> Result<Vec<Mp4Box>, MediaError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let size32 =
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let kind = [data[at + 4], data[at + 5], data[at + 6], data[at + 7]];
        let size = match size32 {
            0 => data.len() - at,
            1 if at + 16 <= data.len() => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[at + 8..at + 16]);
                usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX)
            }
            n => n,
        };
        if size < 8 || size > data.len() - at {
            return Err(MediaError::Internal(format!(
                "malformed box {:?} at {at}",
                String::from_utf8_lossy(&kind)
            )));
        }
        out.push(Mp4Box {
            start: at,
            end: at + size,
            kind,
        });
        at += size;
    }
    Ok(out)
}

/// The children of the box `b` of `data` (`skip`: bytes of the box's own
/// fields before its children).
fn child<'a>(data: &'a [u8], kind: &[u8; 4], skip: usize) -> Option<&'a [u8]> {
    let b = boxes_in(data).ok()?.into_iter().find(|b| &b.kind == kind)?;
    data.get(b.start + 8 + skip..b.end)
}

/// `baseMediaDecodeTime` of the first `traf` of the fragment in `data`.
fn fragment_decode_time(data: &[u8]) -> Option<u64> {
    let moof = child(data, b"moof", 0)?;
    let traf = child(moof, b"traf", 0)?;
    let tfdt = child(traf, b"tfdt", 0)?;
    match tfdt.first()? {
        1 => Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)),
        _ => Some(u64::from(u32::from_be_bytes(
            tfdt.get(4..8)?.try_into().ok()?,
        ))),
    }
}

/// `avc1.PPCCLL` from the `avcC` record in a `moov` box (`moov` > `trak`
/// > `mdia` > `minf` > `stbl` > `stsd` > `avc1` > `avcC`).
fn avc1_in(moov: &[u8]) -> Option<String> {
    let moov = child(moov, b"moov", 0)?;
    let trak = child(moov, b"trak", 0)?;
    let mdia = child(trak, b"mdia", 0)?;
    let minf = child(mdia, b"minf", 0)?;
    let stbl = child(minf, b"stbl", 0)?;
    // stsd: version/flags (4) + entry count (4); avc1: 78 bytes of
    // VisualSampleEntry fields before its child boxes.
    let stsd = child(stbl, b"stsd", 8)?;
    let avc1 = child(stsd, b"avc1", 78)?;
    let avcc = child(avc1, b"avcC", 0)?;
    (avcc.len() >= 4 && avcc[0] == 1)
        .then(|| format!("avc1.{:02x}{:02x}{:02x}", avcc[1], avcc[2], avcc[3]))
}
