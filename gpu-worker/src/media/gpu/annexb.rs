//! MP4/MKV carry H.264 and HEVC as length-prefixed NAL units with the
//! parameter sets in `extradata`; NVDEC's parser takes Annex B (start
//! codes, parameter sets in band). This is the conversion
//! (`h264_mp4toannexb` / `hevc_mp4toannexb`).

use crate::media::error::MediaError;

const START: [u8; 4] = [0, 0, 0, 1];

/// Converts a codec's packets to Annex B.
#[derive(Debug, Clone)]
pub struct AnnexB {
    /// NAL length field size (1, 2 or 4); `None`: already Annex B.
    length_size: Option<usize>,
    /// SPS/PPS (and VPS) as Annex B, sent before every keyframe.
    parameter_sets: Vec<u8>,
}

fn damaged(what: &str) -> MediaError {
    MediaError::Damaged(format!("malformed {what}"))
}

impl AnnexB {
    /// From the stream's `extradata` (`avcC` for H.264, `hvcC` for HEVC,
    /// empty or Annex B when the stream already has start codes).
    pub fn new(codec: &str, extradata: &[u8]) -> Result<Self, MediaError> {
        if extradata.is_empty()
            || extradata.starts_with(&[0, 0, 1])
            || extradata.starts_with(&START)
        {
            return Ok(AnnexB {
                length_size: None,
                parameter_sets: extradata.to_vec(),
            });
        }
        match codec {
            "h264" => Self::from_avcc(extradata),
            "hevc" => Self::from_hvcc(extradata),
            other => Err(MediaError::Damaged(format!(
                "{other}: no Annex B conversion"
            ))),
        }
    }

    fn from_avcc(x: &[u8]) -> Result<Self, MediaError> {
        if x.len() < 7 || x[0] != 1 {
            return Err(damaged("avcC"));
        }
        let length_size = usize::from(x[4] & 3) + 1;
        let mut out = Vec::new();
        let mut at = 5;
        for kind in 0..2 {
            let count = if kind == 0 {
                usize::from(*x.get(at).ok_or_else(|| damaged("avcC"))? & 0x1f)
            } else {
                usize::from(*x.get(at).ok_or_else(|| damaged("avcC"))?)
            };
            at += 1;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([
                    *x.get(at).ok_or_else(|| damaged("avcC"))?,
                    *x.get(at + 1).ok_or_else(|| damaged("avcC"))?,
                ]));
                let nal = x.get(at + 2..at + 2 + len).ok_or_else(|| damaged("avcC"))?;
                out.extend_from_slice(&START);
                out.extend_from_slice(nal);
                at += 2 + len;
            }
        }
        Ok(AnnexB {
            length_size: Some(length_size),
            parameter_sets: out,
        })
    }

    fn from_hvcc(x: &[u8]) -> Result<Self, MediaError> {
        if x.len() < 23 {
            return Err(damaged("hvcC"));
        }
        let length_size = usize::from(x[21] & 3) + 1;
        let arrays = usize::from(x[22]);
        let mut at = 23;
        let mut out = Vec::new();
        let get = |i: usize| x.get(i).copied().ok_or_else(|| damaged("hvcC"));
        for _ in 0..arrays {
            at += 1; // array_completeness, NAL type
            let n = usize::from(u16::from_be_bytes([get(at)?, get(at + 1)?]));
            at += 2;
            for _ in 0..n {
                let len = usize::from(u16::from_be_bytes([get(at)?, get(at + 1)?]));
                let nal = x.get(at + 2..at + 2 + len).ok_or_else(|| damaged("hvcC"))?;
                out.extend_from_slice(&START);
                out.extend_from_slice(nal);
                at += 2 + len;
            }
        }
        Ok(AnnexB {
            length_size: Some(length_size),
            parameter_sets: out,
        })
    }

    /// One packet as Annex B; parameter sets go in front of keyframes.
    pub fn convert(&self, packet: &[u8], keyframe: bool) -> Result<Vec<u8>, MediaError> {
        let Some(size) = self.length_size else {
            let mut out = Vec::with_capacity(packet.len() + self.parameter_sets.len());
            if keyframe {
                out.extend_from_slice(&self.parameter_sets);
            }
            out.extend_from_slice(packet);
            return Ok(out);
        };
        let mut out = Vec::with_capacity(packet.len() + 64);
        if keyframe {
            out.extend_from_slice(&self.parameter_sets);
        }
        let mut at = 0;
        while at < packet.len() {
            let field = packet
                .get(at..at + size)
                .ok_or_else(|| damaged("NAL length"))?;
            let len = field
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let nal = packet
                .get(at + size..at + size + len)
                .ok_or_else(|| damaged("NAL unit"))?;
            out.extend_from_slice(&START);
            out.extend_from_slice(nal);
            at += size + len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_packets_become_start_codes_with_parameter_sets_on_keyframes() {
        // avcC: version 1, profile/compat/level, 4-byte lengths, 1 SPS, 1 PPS.
        let avcc = [
            1, 100, 0, 40, 0xff, 0xe1, 0, 3, 0x67, 1, 2, 1, 0, 2, 0x68, 9,
        ];
        let a = AnnexB::new("h264", &avcc).expect("avcC");
        let packet = [0, 0, 0, 2, 0x65, 7, 0, 0, 0, 1, 0x06];
        let key = a.convert(&packet, true).expect("converts");
        assert_eq!(
            key,
            [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9, 0, 0, 0, 1, 0x65, 7, 0, 0, 0, 1, 0x06]
        );
        let delta = a.convert(&packet, false).expect("converts");
        assert_eq!(delta, [0, 0, 0, 1, 0x65, 7, 0, 0, 0, 1, 0x06]);
    }

    #[test]
    fn truncated_input_is_damaged_not_a_panic() {
        assert!(AnnexB::new("h264", &[1, 100, 0]).is_err());
        let a = AnnexB::new("h264", &[1, 100, 0, 40, 0xff, 0xe0, 0]).expect("no sets");
        assert!(a.convert(&[0, 0, 0, 9, 0x65], false).is_err());
        assert!(AnnexB::new("hevc", &[1; 10]).is_err());
    }

    #[test]
    fn annex_b_input_passes_through() {
        let a = AnnexB::new("h264", &[]).expect("empty");
        assert_eq!(
            a.convert(&[0, 0, 1, 0x65], false).expect("ok"),
            [0, 0, 1, 0x65]
        );
    }
}
