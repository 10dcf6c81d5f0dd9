//! [`AacEncoder`]: the source's audio decoded, resampled to 48 kHz stereo
//! and encoded AAC-LC once for every rendition.

use super::packets::drain_packets;
use crate::media::error::MediaError;
use ffmpeg::{codec, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

/// Output audio sample rate.
pub const AUDIO_RATE: i32 = 48_000;

/// Decodes the source's audio, resamples it to 48 kHz stereo and encodes
/// AAC-LC once; every rendition muxes the same packets.
pub struct AacEncoder {
    decoder: ffmpeg::decoder::Audio,
    resampler: Option<ffmpeg::software::resampling::Context>,
    encoder: ffmpeg::encoder::audio::Encoder,
    pending: [Vec<f32>; 2],
    next_pts: i64,
    frame_size: usize,
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
            drain_packets(&mut self.encoder, "aac", out)?;
        }
        Ok(())
    }

    fn append(&mut self, f: &frame::Audio) {
        let n = f.samples();
        if n == 0 {
            return;
        }
        for ch in 0..2 {
            let plane: &[f32] = f.plane(ch);
            self.pending[ch].extend_from_slice(&plane[..n.min(plane.len())]);
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
            drain_packets(&mut self.encoder, "aac", out)?;
        }
        Ok(())
    }
}
