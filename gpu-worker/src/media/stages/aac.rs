//! [`AacEncoder`]: the source's audio decoded, resampled to 48 kHz stereo
//! and encoded AAC-LC once for every rendition.

use super::packets::drain_packets;
use crate::media::error::MediaError;
use ffmpeg::{codec, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

/// Output audio sample rate.
pub const AUDIO_RATE: i32 = 48_000;

/// AAC-LC samples per frame (per packet).
pub const AAC_FRAME: i64 = 1024;

/// The part of the audio one chunk encodes, on the whole video's sample
/// grid (48 kHz samples counted from the source's first decoded audio
/// sample; the encoder's packet timestamps are on that grid).
///
/// Seams: chunk `k` keeps the AAC packets whose timestamps lie in
/// `[keep_from, keep_until)`, both multiples of the frame size, so the
/// chunks' packets tile the timeline with no gap and no overlap. Its
/// encoder starts `feed_from` (a few frames earlier) on the same input
/// samples, so the kept packets are encoded with the MDCT overlap and
/// the encoder's state warmed up as in one continuous encode; the
/// pre-roll packets are dropped (encode with overlap, trim).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AudioWindow {
    /// Time of the source's first decoded audio sample, seconds (in the
    /// chunk files' timeline).
    pub origin_seconds: f64,
    /// First input sample fed to the encoder (a multiple of the frame
    /// size; earlier samples are dropped).
    pub feed_from: i64,
    /// First packet timestamp kept (`None`: from the start).
    pub keep_from: Option<i64>,
    /// Packets at or after this timestamp are dropped (`None`: to the end).
    pub keep_until: Option<i64>,
}

impl AudioWindow {
    /// Input past this sample is not needed (`keep_until` plus the
    /// encoder's lookahead and a margin).
    fn feed_until(&self) -> Option<i64> {
        self.keep_until.map(|u| u + 4 * AAC_FRAME)
    }

    fn keeps(&self, pts: i64) -> bool {
        self.keep_from.is_none_or(|f| pts >= f) && self.keep_until.is_none_or(|u| pts < u)
    }
}

/// Decodes the source's audio, resamples it to 48 kHz stereo and encodes
/// AAC-LC once; every rendition muxes the same packets.
pub struct AacEncoder {
    decoder: ffmpeg::decoder::Audio,
    resampler: Option<ffmpeg::software::resampling::Context>,
    encoder: ffmpeg::encoder::audio::Encoder,
    pending: [Vec<f32>; 2],
    next_pts: i64,
    frame_size: usize,
    window: Option<AudioWindow>,
    /// With a window: the grid position of the next resampled sample.
    position: Option<i64>,
    source_tb: Rational,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("next_pts", &self.next_pts)
            .field("frame_size", &self.frame_size)
            .finish_non_exhaustive()
    }
}

impl AacEncoder {
    /// Opens the source stream's decoder and an AAC-LC encoder at `bitrate`.
    pub fn open(parameters: codec::Parameters, bitrate: u32) -> Result<Self, MediaError> {
        Self::open_window(parameters, bitrate, None)
    }

    /// [`AacEncoder::open`] for one chunk's [`AudioWindow`]: input samples
    /// are placed on the grid by their timestamps (`time_base` is the
    /// source stream's), and only the window's packets come out.
    pub fn open_window(
        parameters: codec::Parameters,
        bitrate: u32,
        window: Option<(AudioWindow, Rational)>,
    ) -> Result<Self, MediaError> {
        let mut encoder = Self::open_plain(parameters, bitrate)?;
        if let Some((w, tb)) = window {
            encoder.window = Some(w);
            encoder.source_tb = tb;
            encoder.next_pts = w.feed_from;
        }
        Ok(encoder)
    }

    fn open_plain(parameters: codec::Parameters, bitrate: u32) -> Result<Self, MediaError> {
        let decoder = codec::Context::from_parameters(parameters)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| MediaError::Damaged(format!("audio track: {e}")))?;
        let codec = ffmpeg::encoder::find_by_name("aac")
            .ok_or_else(|| MediaError::Internal("no AAC encoder".into()))?;
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| MediaError::internal("aac", e))?;
        enc.set_rate(AUDIO_RATE);
        enc.set_format(ffmpeg::format::Sample::F32(
            ffmpeg::format::sample::Type::Planar,
        ));
        enc.set_channel_layout(ffmpeg::ChannelLayout::STEREO);
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, AUDIO_RATE));
        let mut opts = Dictionary::new();
        opts.set("profile", "aac_low");
        let encoder = enc
            .open_with(opts)
            .map_err(|e| MediaError::internal("aac", e))?;
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AacEncoder {
            decoder,
            resampler: None,
            encoder,
            pending: [Vec::new(), Vec::new()],
            next_pts: 0,
            frame_size,
            window: None,
            position: None,
            source_tb: Rational::new(1, AUDIO_RATE),
        })
    }

    /// Codec parameters for a muxer.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.encoder)
    }

    /// The packets' time base (1/48000).
    pub fn time_base(&self) -> Rational {
        Rational::new(1, AUDIO_RATE)
    }

    /// Feeds one source packet (`None`: end) and hands each AAC packet
    /// now ready to `out`. Undecodable audio is skipped.
    pub fn push(
        &mut self,
        packet: Option<&Packet>,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let _ = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        loop {
            let mut decoded = frame::Audio::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                break;
            }
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ffmpeg::ChannelLayout::default(i32::from(
                    decoded.channels().max(1),
                )));
            }
            if self.resampler.is_none() {
                self.resampler = Some(
                    ffmpeg::software::resampling::Context::get(
                        decoded.format(),
                        decoded.channel_layout(),
                        decoded.rate(),
                        ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
                        ffmpeg::ChannelLayout::STEREO,
                        AUDIO_RATE as u32,
                    )
                    .map_err(|e| MediaError::Damaged(format!("audio format: {e}")))?,
                );
            }
            if let (Some(w), None) = (self.window, self.position) {
                // The first decoded sample's place on the grid: the
                // resampler's output starts at its input's time.
                let ts = decoded.timestamp().or(decoded.pts()).unwrap_or(0);
                let secs = ts as f64 * f64::from(self.source_tb) - w.origin_seconds;
                self.position = Some((secs * f64::from(AUDIO_RATE)).round() as i64);
            }
            let mut resampled = frame::Audio::empty();
            if let Some(r) = self.resampler.as_mut() {
                if r.run(&decoded, &mut resampled).is_err() {
                    continue;
                }
            }
            self.append(&resampled);
            self.encode_ready(false, out)?;
        }
        if packet.is_none() {
            if let Some(r) = self.resampler.as_mut() {
                let mut rest = frame::Audio::empty();
                if r.flush(&mut rest).is_ok() && rest.samples() > 0 {
                    self.append(&rest);
                }
            }
            self.encode_ready(true, out)?;
            self.encoder
                .send_eof()
                .map_err(|e| MediaError::internal("aac", e))?;
            let window = self.window;
            drain_packets(&mut self.encoder, "aac", &mut |p| match window {
                Some(w) if !w.keeps(p.pts().unwrap_or(0)) => Ok(()),
                _ => out(p),
            })?;
        }
        Ok(())
    }

    fn append(&mut self, f: &frame::Audio) {
        let n = f.samples();
        if n == 0 {
            return;
        }
        let mut skip = 0;
        if let (Some(w), Some(pos)) = (self.window, self.position) {
            self.position = Some(pos + n as i64);
            // Samples before the window's first are dropped; a source
            // whose audio starts after it is padded with silence so the
            // packets stay on the grid.
            let queued = self.next_pts + self.pending[0].len() as i64;
            if pos > queued {
                let gap = (pos - queued) as usize;
                for ch in 0..2 {
                    self.pending[ch].extend(std::iter::repeat_n(0.0, gap));
                }
            }
            let queued = self.next_pts + self.pending[0].len() as i64;
            skip = usize::try_from(queued - pos).unwrap_or(0).min(n);
            if w.feed_until().is_some_and(|u| queued >= u) {
                return;
            }
        }
        for ch in 0..2 {
            let plane: &[f32] = f.plane(ch);
            self.pending[ch].extend_from_slice(&plane[skip.min(plane.len())..n.min(plane.len())]);
        }
    }

    fn encode_ready(
        &mut self,
        last: bool,
        out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        while self.pending[0].len() >= self.frame_size || (last && !self.pending[0].is_empty()) {
            let n = self.pending[0].len().min(self.frame_size);
            let mut f = frame::Audio::new(
                ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
                n,
                ffmpeg::ChannelLayout::STEREO,
            );
            f.set_rate(AUDIO_RATE as u32);
            for ch in 0..2 {
                let samples: Vec<f32> = self.pending[ch].drain(..n).collect();
                f.plane_mut::<f32>(ch)[..n].copy_from_slice(&samples);
            }
            f.set_pts(Some(self.next_pts));
            self.next_pts += n as i64;
            self.encoder
                .send_frame(&f)
                .map_err(|e| MediaError::internal("aac", e))?;
            let window = self.window;
            drain_packets(&mut self.encoder, "aac", &mut |p| match window {
                Some(w) if !w.keeps(p.pts().unwrap_or(0)) => Ok(()),
                _ => out(p),
            })?;
        }
        Ok(())
    }
}
