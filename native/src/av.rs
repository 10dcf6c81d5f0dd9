//! libav fields that ffmpeg-next has no safe setter for.

/// Clears a stream's codec tag (`AVCodecParameters.codec_tag`), so a
/// muxer writing a stream copy picks its own tag for the codec instead of
/// carrying the source container's (an MP4 `mp4a` tag means nothing in
/// NUT), as the ffmpeg CLI does for `-c copy`.
pub fn clear_codec_tag(params: &mut ffmpeg_next::codec::Parameters) {
    // SAFETY: `as_mut_ptr` points at the AVCodecParameters that `params`
    // owns or borrows, valid and not aliased for this `&mut` borrow;
    // `codec_tag` is a plain integer field.
    unsafe {
        (*params.as_mut_ptr()).codec_tag = 0;
    }
}
