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

use super::cfr::ConstantRate;
use super::chunks::ChunkSpec;
use super::cmaf::{CmafPackager, CmafTrack};
use super::error::MediaError;
use super::gpu::front::{FrontRung, FrontSettings, GpuFront};
use super::gpu::plan::{Device, Stage, StagePlan};
use super::gpu::select::{choose_path, GpuAccess, PathChoice, SourceFacts, VideoPath};
use super::hls::{is_segment_start, RenditionSummary, SegmentFile, SegmenterConfig, TsSegmenter};
use super::probe::{self, rung_size, Limits, SourceInfo};
use super::stages::{
    h264_stream_parameters, AacEncoder, Decoder, Encoder, LibavDecoder, LibavH264Encoder, Packager,
    Scaler, StageChoice, SwsScaler, VideoEncoderSettings,
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
    /// The worker's GPUs (`None`: the software path, as `stages` says).
    pub gpu: Option<GpuAccess>,
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
    /// Where each stage ran, and why on the CPU.
    pub plan: StagePlan,
}

/// What the decode side sends each rung's thread.
pub(crate) enum RungMessage {
    /// A decoded picture the rung scales and encodes (software path).
    Picture(Arc<frame::Video>, i64),
    /// The rung's picture, already scaled (GPU scaler, downloaded), to
    /// encode as output frame `i64`.
    Scaled(frame::Video, i64),
    /// An encoded access unit (NVENC) to package.
    Encoded(Packet),
    /// Audio, the same packets for every rung.
    Audio(Packet),
    /// The end, with the frame count.
    End(i64),
}

/// Where the decode side's frames go: every rung's queue (and the CMAF
/// audio thread's, last), within the job's frame range and limits.
pub(crate) struct RungOut<'a> {
    senders: &'a [SyncSender<RungMessage>],
    end_frame: Option<i64>,
    max_dimension: u32,
    /// The job's progress and frame counter.
    pub(crate) control: &'a JobControl,
}

impl RungOut<'_> {
    /// Whether output frame `index` belongs to this job (a chunk stops
    /// before the next chunk's first frame).
    pub(crate) fn wants(&self, index: i64) -> bool {
        self.end_frame.is_none_or(|e| index < e)
    }

    /// Refuses pictures beyond `--max-dimension` (decompression bombs).
    pub(crate) fn check_size(&self, width: u32, height: u32) -> Result<(), MediaError> {
        if width > self.max_dimension || height > self.max_dimension {
            return Err(MediaError::BadDimensions {
                width,
                height,
                max: self.max_dimension,
            });
        }
        Ok(())
    }

    /// Sends `msg` to rung `i`.
    pub(crate) fn send(&self, i: usize, msg: RungMessage) -> Result<(), MediaError> {
        // A closed channel means that rung failed; its error is reported
        // when it is joined.
        self.senders
            .get(i)
            .ok_or_else(|| MediaError::Internal(format!("no rung {i}")))?
            .send(msg)
            .map_err(|_| MediaError::Cancelled)
    }

    /// Sends what `make` makes to every queue.
    fn broadcast(&self, make: &dyn Fn() -> RungMessage) -> Result<(), MediaError> {
        for i in 0..self.senders.len() {
            self.send(i, make())?;
        }
        Ok(())
    }

    /// One constant-rate picture for every rung to scale.
    fn picture(&self, picture: &Arc<frame::Video>, index: i64) -> Result<(), MediaError> {
        if !self.wants(index) {
            return Ok(());
        }
        self.broadcast(&|| RungMessage::Picture(picture.clone(), index))
    }
}

/// The decode side: libav's decoder and the rungs' swscale, or the GPU
/// front (NVDEC and the fused scaler, and NVENC when the path has it).
enum Front {
    Cpu {
        decoder: LibavDecoder,
        cfr: ConstantRate<Arc<frame::Video>>,
    },
    Gpu(Box<GpuFront>),
}

impl Front {
    /// One packet of the video stream.
    fn feed(&mut self, packet: &Packet, out: &RungOut<'_>) -> Result<(), MediaError> {
        match self {
            Front::Cpu { decoder, cfr } => cpu_decode(decoder, cfr, Some(packet), out),
            Front::Gpu(gpu) => gpu.feed(Some(packet), out),
        }
    }

    /// End of the stream: drains the decoder.
    fn drain(&mut self, out: &RungOut<'_>) -> Result<(), MediaError> {
        match self {
            Front::Cpu { decoder, cfr } => cpu_decode(decoder, cfr, None, out),
            Front::Gpu(gpu) => gpu.feed(None, out),
        }
    }

    /// Fills the last frames (up to `end` for a chunk, else the last
    /// picture's duration); the frame count.
    fn fill(
        &mut self,
        end: Option<i64>,
        last_duration: i64,
        out: &RungOut<'_>,
    ) -> Result<i64, MediaError> {
        match self {
            Front::Cpu { cfr, .. } => {
                let mut emit = |p: &Arc<frame::Video>, index| out.picture(p, index);
                match end {
                    Some(end) => cfr.finish_until(end, &mut emit),
                    None => cfr.finish(last_duration, &mut emit),
                }
            }
            Front::Gpu(gpu) => gpu.fill(end, last_duration, out),
        }
    }
}

fn cpu_decode(
    decoder: &mut LibavDecoder,
    cfr: &mut ConstantRate<Arc<frame::Video>>,
    packet: Option<&Packet>,
    out: &RungOut<'_>,
) -> Result<(), MediaError> {
    decoder.decode(packet, &mut |picture| {
        out.check_size(picture.width(), picture.height())?;
        let ts = picture.timestamp().or(picture.pts());
        cfr.push(Arc::new(picture), ts, &mut |p, index| out.picture(p, index))
    })
}

/// Who encodes a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RungEncode {
    /// The rung thread, through libavcodec (`h264_nvenc` when `nvenc`,
    /// else libx264).
    Libav { nvenc: bool },
    /// NVENC on the GPU front: the rung thread only packages.
    Front,
}

/// What one rung's thread needs besides its queue.
struct RungJob {
    name: String,
    settings: VideoEncoderSettings,
    encode: RungEncode,
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
        encode,
        segment_dir,
        segment_seconds,
        first_segment,
        audio,
        packaging,
        on_segment,
    } = job;
    std::fs::create_dir_all(&segment_dir)?;
    let mut encoder = match encode {
        RungEncode::Libav { nvenc } => Some(LibavH264Encoder::open(&settings, nvenc)?),
        RungEncode::Front => None,
    };
    let video = match &encoder {
        Some(e) => (e.parameters(), e.time_base()),
        None => (h264_stream_parameters(&settings)?, settings.fps.invert()),
    };
    let mut packager: Box<dyn Packager> = match packaging {
        Packaging::Ts => Box::new(TsSegmenter::new(
            SegmenterConfig {
                name,
                dir: segment_dir,
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                video,
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
            video,
            segment_seconds,
            on_segment,
        )?),
    };
    let mut total = 0;
    // Output frame `index`, scaled: an IDR where a segment starts.
    let mut encode_frame = |mut scaled: frame::Video,
                            index: i64,
                            packager: &mut Box<dyn Packager>|
     -> Result<(), MediaError> {
        let encoder = encoder
            .as_mut()
            .ok_or_else(|| MediaError::Internal("a picture for a rung NVENC encodes".into()))?;
        scaled.set_pts(Some(index));
        let key = is_segment_start(index, segment_seconds, settings.fps);
        encoder.encode(Some((&mut scaled, key)), &mut |p| packager.write_video(p))?;
        control.add_frames(1);
        Ok(())
    };
    for msg in rx {
        match msg {
            RungMessage::Picture(picture, index) => {
                let scaled = scaler.scale(&picture)?;
                drop(picture);
                encode_frame(scaled, index, &mut packager)?;
            }
            RungMessage::Scaled(scaled, index) => encode_frame(scaled, index, &mut packager)?,
            RungMessage::Encoded(p) => packager.write_video(p)?,
            RungMessage::Audio(p) => packager.write_audio(p)?,
            RungMessage::End(frames) => {
                total = frames;
                break;
            }
        }
    }
    if let Some(encoder) = encoder.as_mut() {
        encoder.encode(None, &mut |p| packager.write_video(p))?;
    }
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
            RungMessage::Picture(..) | RungMessage::Scaled(..) | RungMessage::Encoded(_) => {}
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
    let rungs = request.ladder.rungs_for_source(info.short_side());
    let fps = info.output_fps;
    let max_gap_slots = (request.limits.max_gap * f64::from(fps)).ceil() as i64;
    // A chunk's frames.
    let first_segment = request.chunk.as_ref().map_or(0, |c| c.first_segment);
    let start_frame = request.chunk.as_ref().map_or(0, |c| c.start_frame);
    let end_frame = request.chunk.as_ref().and_then(|c| c.end_frame);
    let origin = request
        .chunk
        .as_ref()
        .map(|c| (c.source.video_origin_seconds / f64::from(video_tb)).round() as i64);
    let sizes: Vec<FrontRung> = rungs
        .iter()
        .map(|r| {
            let (width, height) = rung_size(info.display_width, info.display_height, r.height);
            FrontRung {
                width,
                height,
                bitrate: r.video_bitrate,
            }
        })
        .collect();
    let OpenedFront {
        mut front,
        choice,
        decoder: decoder_name,
        sessions: _sessions,
    } = open_front(
        request,
        &info,
        video_params,
        FrontSettings {
            ordinal: 0,
            nvenc: false,
            rungs: sizes,
            fps,
            segment_seconds: request.segment_seconds,
            time_base: video_tb,
            origin,
            first_frame: start_frame,
            max_gap_frames: max_gap_slots,
        },
    )?;
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
    let gop = (f64::from(fps) * request.segment_seconds as f64)
        .round()
        .max(1.0) as u32;
    let duration = info.duration;
    // A chunk's part of the timeline, for progress.
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
                let encode = match choice.path {
                    VideoPath::Software => RungEncode::Libav {
                        nvenc: request.stages.nvenc,
                    },
                    VideoPath::Gpu { nvenc: false, .. } => RungEncode::Libav { nvenc: false },
                    VideoPath::Gpu { nvenc: true, .. } => RungEncode::Front,
                };
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
                            encode,
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
            let out = RungOut {
                senders: &senders,
                end_frame,
                max_dimension: request.limits.max_dimension,
                control,
            };
            let decode_result = (|| -> Result<i64, MediaError> {
                let send_audio = |p: Packet| -> Result<(), MediaError> {
                    out.broadcast(&|| RungMessage::Audio(p.clone()))
                };
                let mut last_duration = 0;
                let mut invalid = 0u32;
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
                        front.feed(&packet, &out)?;
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
                front.drain(&out)?;
                if let Some((aac, offset)) = audio.as_mut() {
                    let offset = *offset;
                    aac.push(None, &mut |mut p| {
                        p.set_pts(p.pts().map(|t| t + offset));
                        p.set_dts(p.dts().map(|t| t + offset));
                        send_audio(p)
                    })?;
                }
                let frames = front.fill(end_frame, last_duration, &out)?;
                if frames <= start_frame {
                    return Err(MediaError::NoFrames);
                }
                out.broadcast(&|| RungMessage::End(frames))?;
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
    if let Some(m) = request.gpu.as_ref().and_then(|g| g.metrics.as_ref()) {
        let made = u64::try_from(frames - start_frame).unwrap_or(0);
        m.plan_frames(&choice.plan, made, renditions.len() as u64);
    }
    control.set_progress(1.0);
    Ok(TranscodeOutput {
        source: info,
        renditions,
        audio: audio_track,
        frames,
        decoder: decoder_name,
        plan: choice.plan,
    })
}

/// The decode side, opened, and what chose it.
struct OpenedFront {
    front: Front,
    choice: PathChoice,
    decoder: String,
    /// The NVENC sessions this job holds (one per rung) until it ends.
    sessions: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Chooses the job's path ([`choose_path`]) and opens its decode side.
/// A GPU path that fails to open falls back: NVENC alone to libx264,
/// anything else to the software path; each with a log line.
fn open_front(
    request: &TranscodeRequest,
    info: &SourceInfo,
    params: ffmpeg::codec::Parameters,
    settings: FrontSettings,
) -> Result<OpenedFront, MediaError> {
    let software = |choice: PathChoice| -> Result<OpenedFront, MediaError> {
        let decoder = LibavDecoder::open(params.clone(), request.stages.nvdec)?;
        let name = decoder.name().to_owned();
        let cfr = ConstantRate::new(
            settings.fps,
            settings.time_base,
            settings.origin,
            settings.first_frame,
            settings.max_gap_frames,
        );
        Ok(OpenedFront {
            front: Front::Cpu { decoder, cfr },
            choice,
            decoder: name,
            sessions: None,
        })
    };
    let Some(gpu) = &request.gpu else {
        return software(PathChoice {
            plan: StagePlan::software("this transcode was given no GPU"),
            path: VideoPath::Software,
        });
    };
    let pixel = ffmpeg::codec::context::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().video())
        .map_or(format::Pixel::None, |d| d.format());
    let facts = SourceFacts {
        codec: info.codec.clone(),
        pixel,
        rotation: info.rotation,
        width: info.coded_width,
        height: info.coded_height,
        largest_rung: settings
            .rungs
            .iter()
            .map(|r| (r.width, r.height))
            .max()
            .unwrap_or_default(),
        rungs: settings.rungs.len(),
        packaging: request.packaging,
    };
    let rungs = u32::try_from(settings.rungs.len()).unwrap_or(u32::MAX);
    let sessions = Arc::clone(&gpu.nvenc_sessions)
        .try_acquire_many_owned(rungs)
        .ok();
    let mut choice = choose_path(&gpu.env, &facts, sessions.is_some());
    choice.plan.log_fallbacks();
    let VideoPath::Gpu { ordinal, nvenc } = choice.path else {
        return software(choice);
    };
    let gpu_settings = FrontSettings {
        ordinal,
        nvenc,
        ..settings.clone()
    };
    match GpuFront::open(&params, &info.codec, gpu_settings) {
        Ok((front, nvenc_error)) => {
            if let Some(e) = nvenc_error {
                let reason = format!("NVENC failed to open, scaled rungs are downloaded: {e}");
                tracing::warn!(stage = "encode", implementation = "libx264", %reason, "stage runs on the CPU");
                choice.plan.encode = Stage {
                    device: Device::Cpu,
                    implementation: "libx264",
                    reason,
                };
                choice.path = VideoPath::Gpu {
                    ordinal,
                    nvenc: false,
                };
            }
            let nvenc = matches!(choice.path, VideoPath::Gpu { nvenc: true, .. });
            tracing::info!(stage_plan = %choice.plan.summary(), "frames stay on the GPU");
            Ok(OpenedFront {
                front: Front::Gpu(Box::new(front)),
                choice,
                decoder: "nvdec".to_owned(),
                sessions: sessions.filter(|_| nvenc),
            })
        }
        Err(e) => {
            let reason = format!("the GPU path failed to open: {e}");
            tracing::warn!(%reason, "this job runs on the CPU");
            software(PathChoice {
                plan: StagePlan::software(&reason),
                path: VideoPath::Software,
            })
        }
    }
}
