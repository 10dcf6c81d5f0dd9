//! libav fields that ffmpeg-next has no safe setter (or getter) for:
//! the codec tag of a stream copy, and a stream's `extradata` (the
//! `avcC`/`hvcC` parameter sets NVDEC's Annex B input must carry in band).

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

/// A copy of the codec parameters' extradata (empty when there is none).
pub fn extradata(params: &ffmpeg_next::codec::Parameters) -> Vec<u8> {
    // SAFETY: `as_ptr` only returns the AVCodecParameters pointer that
    // `params` owns or borrows (alive for this call); we only read through
    // it. libav keeps `extradata` either null or valid for
    // `extradata_size` bytes.
    unsafe {
        let p = params.as_ptr();
        if p.is_null() {
            return Vec::new();
        }
        let data = (*p).extradata;
        let size = usize::try_from((*p).extradata_size).unwrap_or(0);
        if data.is_null() || size == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(data, size).to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_parameters_have_no_extradata() {
        assert!(extradata(&ffmpeg_next::codec::Parameters::new()).is_empty());
    }
}
