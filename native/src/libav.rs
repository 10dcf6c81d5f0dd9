//! What ffmpeg-next does not expose safely and the GPU path needs: a
//! stream's `extradata` (the `avcC`/`hvcC` parameter sets NVDEC's Annex B
//! input must carry in band).

use ffmpeg_next as ffmpeg;

/// A copy of the codec parameters' extradata (empty when there is none).
pub fn extradata(params: &ffmpeg::codec::Parameters) -> Vec<u8> {
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
        assert!(extradata(&ffmpeg::codec::Parameters::new()).is_empty());
    }
}
