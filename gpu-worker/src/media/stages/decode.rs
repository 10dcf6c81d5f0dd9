//! [`LibavDecoder`]: the [`Decoder`] over libavcodec (software with frame
//! threads, or NVDEC through `*_cuvid`).

use super::Decoder;
use crate::media::error::MediaError;
use ffmpeg::{codec, frame, Packet};
use ffmpeg_next as ffmpeg;

/// libavcodec's decoder for the stream (software with frame threads, or
/// `*_cuvid` when asked and available).
pub struct LibavDecoder {
    decoder: ffmpeg::decoder::Video,
    name: String,
    errors: u64,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for LibavDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibavDecoder")
            .field("name", &self.name)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl LibavDecoder {
    /// Opens a decoder for a stream with `parameters`.
    pub fn open(parameters: codec::Parameters, nvdec: bool) -> Result<Self, MediaError> {
        let id = parameters.id();
        let mut ctx = codec::Context::from_parameters(parameters.clone())
            .map_err(|e| MediaError::NotMedia(e.to_string()))?;
        let cuvid = nvdec
            .then(|| ffmpeg::decoder::find_by_name(&format!("{}_cuvid", id.name())))
            .flatten();
        if let Some(codec) = cuvid {
            let name = codec.name().to_owned();
            let opened = codec::Context::from_parameters(parameters)
                .map_err(|e| MediaError::internal("nvdec", e))
                .and_then(|c| {
                    c.decoder()
                        .open_as(codec)
                        .and_then(ffmpeg_next::decoder::Opened::video)
                        .map_err(|e| MediaError::internal("nvdec", e))
                });
            match opened {
                Ok(decoder) => {
                    return Ok(LibavDecoder {
                        decoder,
                        name,
                        errors: 0,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NVDEC decoder failed to open; decoding in software");
                }
            }
        }
        ctx.set_threading(codec::threading::Config::kind(
            codec::threading::Type::Frame,
        ));
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| MediaError::UnsupportedCodec(format!("{} ({e})", id.name())))?;
        Ok(LibavDecoder {
            decoder,
            name: format!("{} (software)", id.name()),
            errors: 0,
        })
    }
}

impl Decoder for LibavDecoder {
    fn decode(
        &mut self,
        packet: Option<&Packet>,
        out: &mut dyn FnMut(frame::Video) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let sent = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        if let Err(e) = sent {
            // A corrupt packet: conceal and go on, as players do; give up
            // when nothing but errors come.
            self.errors += 1;
            if self.errors > 1000 {
                return Err(MediaError::Damaged(format!("video decoding failed: {e}")));
            }
        }
        loop {
            let mut picture = frame::Video::empty();
            match self.decoder.receive_frame(&mut picture) {
                Ok(()) => out(picture)?,
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(())
                }
                Err(e) => {
                    self.errors += 1;
                    if self.errors > 1000 {
                        return Err(MediaError::Damaged(format!("video decoding failed: {e}")));
                    }
                    return Ok(());
                }
            }
        }
    }

    fn reset(&mut self) {
        self.decoder.flush();
    }

    fn name(&self) -> &str {
        &self.name
    }
}
