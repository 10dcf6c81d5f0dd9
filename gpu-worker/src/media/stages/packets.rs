//! Draining an opened libavcodec encoder of its ready packets, shared by
//! the video and audio encoders.

use crate::media::error::MediaError;
use ffmpeg::Packet;
use ffmpeg_next as ffmpeg;

/// Hands every packet `encoder` has ready to `out`; stops at "needs more
/// input" or end of stream.
pub(super) fn drain_packets(
    encoder: &mut ffmpeg::encoder::Encoder,
    name: &str,
    out: &mut dyn FnMut(Packet) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    loop {
        let mut packet = Packet::empty();
        match encoder.receive_packet(&mut packet) {
            Ok(()) => out(packet)?,
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(())
            }
            Err(e) => return Err(MediaError::internal(name, e)),
        }
    }
}
