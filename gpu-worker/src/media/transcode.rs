//! The transcode: decode once, scale to every rung, encode, package.
//!
//! ```text
//!                      ┌─ rung thread: scale → encode → segment ─► on_segment (upload)
//! demux → decode → CFR ├─ rung thread: …
//!    └─ audio → AAC ───┴─ (same AAC packets into every rung's segments)
//! ```
//!
//! The decode thread hands each constant-frame-rate picture to every rung
//! over a bounded channel (memory stays bounded: a few pictures per
//! rung); each rung's thread scales, encodes and cuts segments on its
//! own, so scaling and encoding of all rungs run in parallel with
//! decoding.

use super::chunks::ChunkSpec;
use super::cmaf::{CmafPackager, CmafTrack};
use super::error::MediaError;
use super::hls::{is_segment_start, RenditionSummary, SegmentFile, SegmenterConfig, TsSegmenter};
use super::probe::{self, rung_size, Limits, SourceInfo};
use super::stages::{
    AacEncoder, Decoder, Encoder, LibavDecoder, LibavH264Encoder, Packager, Scaler, StageChoice,
    SwsScaler, VideoEncoderSettings,
};
use super::JobControl;
use ffmpeg::{format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::{Packaging, AUDIO_TRACK};

/// Pictures queued per rung between the decoder and the rung's thread.
const RUNG_QUEUE: usize = 4;

/// What to transcode, and how.
#[derive(Debug, Clone)]
pub struct TranscodeRequest {
    /// The original, in scratch space.
    pub source: PathBuf,
    /// Scratch directory for segments (one subdirectory per rung).
    pub work_dir: PathBuf,
    /// The ladder from the job.
    pub ladder: RenditionLadder,
    /// Target segment duration, seconds.
    pub segment_seconds: u32,
    /// x264 preset.
    pub preset: String,
    /// Which implementations to use.
    pub stages: StageChoice,
    /// Input limits.
    pub limits: Limits,
    /// MPEG-TS, or CMAF (video-only renditions and one audio track).
    pub packaging: Packaging,
    /// Only this chunk of the video (`source` is the chunk's file; MPEG-TS
    /// only); `None`: the whole video.
    pub chunk: Option<ChunkSpec>,
}

/// What a transcode produced.
#[derive(Debug, Clone)]
pub struct TranscodeOutput {
    /// The probe of the source.
    pub source: SourceInfo,
    /// Every rendition, lowest first.
    pub renditions: Vec<RenditionSummary>,
    /// The shared audio track (CMAF with audio only).
    pub audio: Option<RenditionSummary>,
    /// Output frames per rendition.
    pub frames: i64,
    /// Which decoder ran.
    pub decoder: String,
}

/// Hands one constant-rate picture (and its output index) to the rungs.
type EmitPicture<'a> = dyn FnMut(&Arc<frame::Video>, i64) -> Result<(), MediaError> + 'a;

enum RungMessage {
    Picture(Arc<frame::Video>, i64),
    Audio(Packet),
    End(i64),
}

/// Turns variable-rate decoded pictures into a constant-rate sequence:
/// each output slot gets the latest picture at or before its time
/// (duplicating or dropping as the ffmpeg `fps` filter does).
struct ConstantRate {
    fps: Rational,
    time_base: Rational,
    origin: Option<i64>,
    pending: Option<(Arc<frame::Video>, i64)>,
    next_slot: i64,
    max_gap_slots: i64,
}

impl ConstantRate {
    fn slot(&self, ts: i64) -> i64 {
        let secs = (ts - self.origin.unwrap_or(ts)) as f64 * f64::from(self.time_base);
        (secs * f64::from(self.fps)).round() as i64
    }

    fn push(
        &mut self,
        picture: frame::Video,
        emit: &mut EmitPicture<'_>,
    ) -> Result<(), MediaError> {
        let ts = picture.timestamp().or(picture.pts());
        let ts = match (ts, self.origin, &self.pending) {
            (Some(t), _, _) => t,
            // No timestamp: the slot after the pending picture's.
            (None, Some(_), Some((_, last_ts))) => {
                last_ts + (f64::from(self.fps.invert()) / f64::from(self.time_base)).round() as i64
            }
            (None, _, _) => 0,
        };
        if self.origin.is_none() {
            self.origin = Some(ts);
        }
        let slot = self.slot(ts);
        if let Some((last, last_ts)) = self.pending.take() {
            if slot - self.next_slot > self.max_gap_slots {
                let fps = f64::from(self.fps);
                return Err(MediaError::Gap {
                    at: self.next_slot as f64 / fps,
                    seconds: (slot - self.next_slot) as f64 / fps,
                    max: self.max_gap_slots as f64 / fps,
                });
            }
            if slot <= self.next_slot {
                // Two pictures for one slot: the later one wins.
                let _ = (last, last_ts);
            } else {
                while self.next_slot < slot {
                    emit(&last, self.next_slot)?;
                    self.next_slot += 1;
                }
            }
        }
        self.pending = Some((Arc::new(picture), ts));
        Ok(())
    }

    /// A chunk's end: the last picture fills the slots up to `end` (the
    /// next chunk's first frame); returns the frame count (`end`).
    fn finish_until(&mut self, end: i64, emit: &mut EmitPicture<'_>) -> Result<i64, MediaError> {
        if let Some((last, _)) = self.pending.take() {
            while self.next_slot < end {
                emit(&last, self.next_slot)?;
                self.next_slot += 1;
            }
        }
        Ok(self.next_slot.min(end))
    }

    /// Emits the last picture for its own slot(s); returns the frame count.
    fn finish(
        &mut self,
        last_duration: i64,
        emit: &mut EmitPicture<'_>,
    ) -> Result<i64, MediaError> {
        if let Some((last, ts)) = self.pending.take() {
            let end = self.slot(ts + last_duration.max(0)).max(self.next_slot + 1);
            let end = end.min(self.next_slot + self.max_gap_slots);
            while self.next_slot < end {
                emit(&last, self.next_slot)?;
                self.next_slot += 1;
            }
        }
        Ok(self.next_slot)
    }
}

/// What one rung's thread needs besides its queue.
struct RungJob {
    name: String,
    settings: VideoEncoderSettings,
    nvenc: bool,
    segment_dir: PathBuf,
    segment_seconds: u32,
    first_segment: u32,
    audio: Option<(ffmpeg::codec::Parameters, Rational)>,
    packaging: Packaging,
    on_segment: Box<dyn FnMut(SegmentFile) -> Result<(), MediaError> + Send>,
}

fn rung_thread(
    rx: Receiver<RungMessage>,
    scaler: &mut dyn Scaler,
    control: &JobControl,
    job: RungJob,
) -> Result<RenditionSummary, MediaError> {
    let RungJob {
        name,
        settings,
        nvenc,
        segment_dir,
        segment_seconds,
        first_segment,
        audio,
        packaging,
        on_segment,
    } = job;
    std::fs::create_dir_all(&segment_dir)?;
    let mut encoder = LibavH264Encoder::open(&settings, nvenc)?;
    let mut packager: Box<dyn Packager> = match packaging {
        Packaging::Ts => Box::new(TsSegmenter::new(
            SegmenterConfig {
                name,
                dir: segment_dir,
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                video: (encoder.parameters(), encoder.time_base()),
                audio,
                segment_seconds,
                first_index: first_segment,
            },
            on_segment,
        )),
        // Video only: the audio is its own track.
        Packaging::Cmaf => Box::new(CmafPackager::open(
            name,
            segment_dir,
            CmafTrack::Video {
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
            },
            (encoder.parameters(), encoder.time_base()),
            segment_seconds,
            on_segment,
        )?),
    };
    let mut total = 0;
    for msg in rx {
        match msg {
            RungMessage::Picture(picture, index) => {
                let mut scaled = scaler.scale(&picture)?;
                drop(picture);
                scaled.set_pts(Some(index));
                let key = is_segment_start(index, segment_seconds, settings.fps);
                encoder.encode(Some((&mut scaled, key)), &mut |p| packager.write_video(p))?;
                control.add_frames(1);
            }
            RungMessage::Audio(p) => packager.write_audio(p)?,
            RungMessage::End(frames) => {
                total = frames;
                break;
            }
        }
    }
    encoder.encode(None, &mut |p| packager.write_video(p))?;
    packager.finish(total)
}

/// The shared audio track of a CMAF video: takes the audio the decode
/// thread broadcasts, ignores the pictures.
fn audio_thread(
    rx: Receiver<RungMessage>,
    mut packager: CmafPackager,
) -> Result<RenditionSummary, MediaError> {
    let mut total = 0;
    for msg in rx {
        match msg {
            RungMessage::Picture(..) => {}
            RungMessage::Audio(p) => packager.write_audio(p)?,
            RungMessage::End(frames) => {
                total = frames;
                break;
            }
        }
    }
    packager.finish(total)
}

/// Runs the transcode, handing each finished segment to `on_segment`
/// (which may block: that is the backpressure that bounds scratch disk).
pub fn transcode(
    request: &TranscodeRequest,
    control: &JobControl,
    on_segment: impl Fn(SegmentFile) -> Result<(), MediaError> + Clone + Send + 'static,
) -> Result<TranscodeOutput, MediaError> {
    super::init();
    if request.chunk.is_some() && request.packaging != Packaging::Ts {
        return Err(MediaError::Internal(
            "chunked transcodes are MPEG-TS only".into(),
        ));
    }
    let info = match &request.chunk {
        None => probe::probe(&request.source, &request.limits)?,
        Some(c) => {
            let input =
                format::input(&request.source).map_err(|e| MediaError::NotMedia(e.to_string()))?;
            let has_audio = c.audio.is_some()
                && input
                    .stream(1)
                    .is_some_and(|s| s.parameters().medium() == ffmpeg::media::Type::Audio);
            c.source.source_info(has_audio)
        }
    };
    let mut input =
        format::input(&request.source).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let (video_params, video_tb, video_start) = {
        let s = input.stream(info.video_stream).ok_or(MediaError::NoVideo)?;
        (s.parameters(), s.time_base(), s.start_time())
    };
    let mut decoder = LibavDecoder::open(video_params, request.stages.nvdec)?;
    let decoder_name = decoder.name().to_owned();
    let mut audio = match info.audio_stream.and_then(|i| input.stream(i)) {
        Some(s) => {
            let start = s.start_time();
            let offset = if start != ffmpeg::ffi::AV_NOPTS_VALUE
                && video_start != ffmpeg::ffi::AV_NOPTS_VALUE
            {
                start as f64 * f64::from(s.time_base()) - video_start as f64 * f64::from(video_tb)
            } else {
                0.0
            };
            let opened = match request.chunk.as_ref().and_then(|c| c.audio) {
                // A chunk: its window of the grid, and the whole video's
                // audio offset (the chunk file's start times are its own).
                Some(window) => AacEncoder::open_window(
                    s.parameters(),
                    request.ladder.audio_bitrate,
                    Some((window, s.time_base())),
                )
                .map(|enc| {
                    let offset = request
                        .chunk
                        .as_ref()
                        .map_or(0, |c| c.source.audio_offset_samples);
                    (enc, offset)
                }),
                None => AacEncoder::open(s.parameters(), request.ladder.audio_bitrate).map(|enc| {
                    (
                        enc,
                        (offset * f64::from(super::stages::AUDIO_RATE)).round() as i64,
                    )
                }),
            };
            match opened {
                Ok(pair) => Some(pair),
                Err(e) => {
                    tracing::warn!(error = %e, "audio track unusable; renditions will be video-only");
                    None
                }
            }
        }
        None => None,
    };
    let audio_params = audio.as_ref().map(|(a, _)| (a.parameters(), a.time_base()));
    let rungs = request.ladder.rungs_for_source(info.short_side());
    let fps = info.output_fps;
    let gop = (f64::from(fps) * request.segment_seconds as f64)
        .round()
        .max(1.0) as u32;
    let max_gap_slots = (request.limits.max_gap * f64::from(fps)).ceil() as i64;
    let duration = info.duration;
    // A chunk's frames, and its part of the timeline for progress.
    let first_segment = request.chunk.as_ref().map_or(0, |c| c.first_segment);
    let start_frame = request.chunk.as_ref().map_or(0, |c| c.start_frame);
    let end_frame = request.chunk.as_ref().and_then(|c| c.end_frame);
    let origin = request
        .chunk
        .as_ref()
        .map(|c| (c.source.video_origin_seconds / f64::from(video_tb)).round() as i64);
    let (span_from, span) = {
        let from = start_frame as f64 / f64::from(fps);
        let to = end_frame.map_or(duration, |e| e as f64 / f64::from(fps));
        (from, (to - from).max(1e-3))
    };

    let result = std::thread::scope(
        |scope| -> Result<(i64, Vec<RenditionSummary>, Option<RenditionSummary>), MediaError> {
            let mut senders: Vec<SyncSender<RungMessage>> = Vec::new();
            let mut handles = Vec::new();
            for rung in &rungs {
                let (w, h) = rung_size(info.display_width, info.display_height, rung.height);
                let (tx, rx) = sync_channel(RUNG_QUEUE);
                senders.push(tx);
                let settings = VideoEncoderSettings {
                    width: w,
                    height: h,
                    fps,
                    bitrate: rung.video_bitrate,
                    gop,
                    preset: request.preset.clone(),
                    global_header: request.packaging == Packaging::Cmaf,
                };
                let name = rung.name.clone();
                let dir = request.work_dir.join(&rung.name);
                let audio_params = audio_params.clone();
                let on_segment = on_segment.clone();
                let rotation = info.rotation;
                let nvenc = request.stages.nvenc;
                let segment_seconds = request.segment_seconds;
                let packaging = request.packaging;
                handles.push(scope.spawn(move || {
                    let mut scaler = SwsScaler::new(w, h, rotation, format::Pixel::YUV420P);
                    rung_thread(
                        rx,
                        &mut scaler,
                        control,
                        RungJob {
                            name,
                            settings,
                            nvenc,
                            segment_dir: dir,
                            segment_seconds,
                            first_segment,
                            audio: audio_params,
                            packaging,
                            on_segment: Box::new(on_segment),
                        },
                    )
                }));
            }
            let mut audio_handle = None;
            if let (Packaging::Cmaf, Some(params)) = (request.packaging, audio_params.clone()) {
                let (tx, rx) = sync_channel(RUNG_QUEUE);
                senders.push(tx);
                let packager = CmafPackager::open(
                    AUDIO_TRACK.to_owned(),
                    request.work_dir.join(AUDIO_TRACK),
                    CmafTrack::Audio,
                    params,
                    request.segment_seconds,
                    Box::new(on_segment.clone()),
                )?;
                audio_handle = Some(scope.spawn(move || audio_thread(rx, packager)));
            }
            let broadcast = |senders: &[SyncSender<RungMessage>],
                             make: &dyn Fn() -> RungMessage|
             -> Result<(), MediaError> {
                for tx in senders {
                    // A closed channel means that rung failed; its error is
                    // reported when it is joined.
                    tx.send(make()).map_err(|_| MediaError::Cancelled)?;
                }
                Ok(())
            };
            let decode_result = (|| -> Result<i64, MediaError> {
                let mut cfr = ConstantRate {
                    fps,
                    time_base: video_tb,
                    origin,
                    pending: None,
                    next_slot: start_frame,
                    max_gap_slots,
                };
                let mut emit =
                    |picture: &Arc<frame::Video>, index: i64| -> Result<(), MediaError> {
                        if end_frame.is_some_and(|e| index >= e) {
                            // The next chunk's frames.
                            return Ok(());
                        }
                        broadcast(&senders, &|| RungMessage::Picture(picture.clone(), index))
                    };
                let send_audio = |p: Packet| -> Result<(), MediaError> {
                    broadcast(&senders, &|| RungMessage::Audio(p.clone()))
                };
                let mut last_duration = 0;
                let mut invalid = 0u32;
                let max_dim = request.limits.max_dimension;
                let check = |picture: &frame::Video| -> Result<(), MediaError> {
                    if picture.width() > max_dim || picture.height() > max_dim {
                        return Err(MediaError::BadDimensions {
                            width: picture.width(),
                            height: picture.height(),
                            max: max_dim,
                        });
                    }
                    Ok(())
                };
                loop {
                    if control.is_cancelled() {
                        return Err(MediaError::Cancelled);
                    }
                    let mut packet = Packet::empty();
                    match packet.read(&mut input) {
                        Ok(()) => {}
                        Err(ffmpeg::Error::Eof) => break,
                        Err(ffmpeg::Error::InvalidData) => {
                            invalid += 1;
                            if invalid > 1000 {
                                return Err(MediaError::Damaged("too much invalid data".into()));
                            }
                            continue;
                        }
                        Err(e) => return Err(MediaError::Damaged(format!("reading stopped: {e}"))),
                    }
                    if packet.stream() == info.video_stream {
                        if packet.duration() > 0 {
                            last_duration = packet.duration();
                        }
                        if let Some(ts) = packet.pts().or(packet.dts()) {
                            if origin.is_some() {
                                let secs = ts as f64 * f64::from(video_tb)
                                    - request
                                        .chunk
                                        .as_ref()
                                        .map_or(0.0, |c| c.source.video_origin_seconds);
                                control.set_progress((secs - span_from) / span);
                            } else if duration > 0.0 {
                                let secs = (ts - video_start.max(0)) as f64 * f64::from(video_tb);
                                control.set_progress(secs / duration);
                            }
                        }
                        decoder.decode(Some(&packet), &mut |picture| {
                            check(&picture)?;
                            cfr.push(picture, &mut emit)
                        })?;
                    } else if Some(packet.stream()) == info.audio_stream {
                        if let Some((aac, offset)) = audio.as_mut() {
                            let offset = *offset;
                            aac.push(Some(&packet), &mut |mut p| {
                                p.set_pts(p.pts().map(|t| t + offset));
                                p.set_dts(p.dts().map(|t| t + offset));
                                send_audio(p)
                            })?;
                        }
                    }
                }
                decoder.decode(None, &mut |picture| {
                    check(&picture)?;
                    cfr.push(picture, &mut emit)
                })?;
                if let Some((aac, offset)) = audio.as_mut() {
                    let offset = *offset;
                    aac.push(None, &mut |mut p| {
                        p.set_pts(p.pts().map(|t| t + offset));
                        p.set_dts(p.dts().map(|t| t + offset));
                        send_audio(p)
                    })?;
                }
                let frames = match end_frame {
                    Some(end) => cfr.finish_until(end, &mut emit)?,
                    None => cfr.finish(last_duration, &mut emit)?,
                };
                if frames <= start_frame {
                    return Err(MediaError::NoFrames);
                }
                broadcast(&senders, &|| RungMessage::End(frames))?;
                Ok(frames)
            })();
            drop(senders);
            let mut renditions = Vec::new();
            let mut rung_error = None;
            for h in handles {
                match h.join() {
                    Ok(Ok(r)) => renditions.push(r),
                    Ok(Err(e)) => {
                        rung_error.get_or_insert(e);
                    }
                    Err(_) => {
                        rung_error
                            .get_or_insert(MediaError::Internal("a rung thread panicked".into()));
                    }
                }
            }
            let mut audio_track = None;
            if let Some(h) = audio_handle {
                match h.join() {
                    Ok(Ok(r)) => audio_track = Some(r),
                    Ok(Err(e)) => {
                        rung_error.get_or_insert(e);
                    }
                    Err(_) => {
                        rung_error.get_or_insert(MediaError::Internal(
                            "the audio thread panicked".into(),
                        ));
                    }
                }
            }
            match (decode_result, rung_error) {
                (Ok(frames), None) => Ok((frames, renditions, audio_track)),
                // The decoder stopping because a rung closed its channel:
                // the rung's error is the cause.
                (Err(MediaError::Cancelled), Some(e)) if !control.is_cancelled() => Err(e),
                (Err(e), _) => Err(e),
                (Ok(_), Some(e)) => Err(e),
            }
        },
    );
    let (frames, renditions, audio_track) = result?;
    control.set_progress(1.0);
    Ok(TranscodeOutput {
        source: info,
        renditions,
        audio: audio_track,
        frames,
        decoder: decoder_name,
    })
}
