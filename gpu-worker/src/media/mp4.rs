//! Progressive MP4 downloads: one rung's packaged segments, remuxed by
//! stream copy (no decoding, no re-encoding) into a single MP4 whose
//! `moov` comes before `mdat` (`movflags=+faststart`), so players start
//! at once and seek by Range.
//!
//! Inputs are whole tracks on disk: a TS rung's segments concatenated
//! (MPEG-TS concatenates byte-wise: video and audio), or a CMAF rung's
//! `init.mp4` + fragments and the shared audio track's, each as one
//! fragmented MP4. Timestamps are shifted so the earliest packet starts
//! at 0 (as `ffmpeg -c copy` does); ADTS audio from TS is converted by the
//! muxer's automatic `aac_adtstoasc`.

use super::MediaError;
use ffmpeg::{format, media, Dictionary, Rational, Rescale};
use ffmpeg_next as ffmpeg;
use std::path::Path;

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mp4Written {
    /// The longest track, milliseconds.
    pub duration_ms: i64,
    /// Packets copied.
    pub packets: u64,
}

/// Microseconds (`AV_TIME_BASE`).
const MICROS: Rational = Rational(1, 1_000_000);

/// Remuxes the video and audio streams of `inputs`, in order, into `out`
/// (MP4, faststart). Fails when no video stream is found.
pub fn remux(inputs: &[&Path], out: &Path) -> Result<Mp4Written, MediaError> {
    let mut ins = Vec::with_capacity(inputs.len());
    for p in inputs {
        ins.push(format::input(p).map_err(|e| {
            MediaError::Damaged(format!("cannot read the packaged rendition: {e}"))
        })?);
    }
    let mut output =
        format::output_as(out, "mp4").map_err(|e| MediaError::internal("open mp4", e))?;
    // (input, input stream) → output stream, with the input's time base.
    let mut map: Vec<Vec<Option<(usize, Rational)>>> = Vec::with_capacity(ins.len());
    let mut video = false;
    // The earliest start of a copied stream over every input, in
    // microseconds.
    let mut start: Option<i64> = None;
    for input in &ins {
        let mut streams = Vec::new();
        for s in input.streams() {
            let kind = s.parameters().medium();
            let keep = matches!(kind, media::Type::Video | media::Type::Audio);
            if !keep {
                streams.push(None);
                continue;
            }
            video |= kind == media::Type::Video;
            if s.start_time() != ffmpeg::ffi::AV_NOPTS_VALUE {
                let t = s.start_time().rescale(s.time_base(), MICROS);
                start = Some(start.map_or(t, |m| m.min(t)));
            }
            let mut o = output
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
                .map_err(|e| MediaError::internal("add mp4 stream", e))?;
            let mut params = s.parameters();
            vodfarm_native::av::clear_codec_tag(&mut params);
            o.set_parameters(params);
            o.set_time_base(s.time_base());
            streams.push(Some((o.index(), s.time_base())));
        }
        map.push(streams);
    }
    if !video {
        return Err(MediaError::NoVideo);
    }
    let start = start.unwrap_or(0);
    let mut opts = Dictionary::new();
    // Index first: the muxer moves `moov` ahead of `mdat` after writing.
    opts.set("movflags", "+faststart");
    output
        .write_header_with(opts)
        .map_err(|e| MediaError::internal("mp4 header", e))?;
    let out_tbs: Vec<Rational> = output.streams().map(|s| s.time_base()).collect();
    let mut ends = vec![0i64; out_tbs.len()];
    let mut packets = 0u64;
    // Several inputs (CMAF video + audio) are merged by decode time, so
    // the muxer's interleaving never buffers a whole track.
    let mut iters: Vec<_> = ins.iter_mut().map(|i| i.packets()).collect();
    let mut heads: Vec<Option<(usize, ffmpeg::Packet)>> = iters
        .iter_mut()
        .map(|it| it.next().map(|(s, p)| (s.index(), p)))
        .collect();
    loop {
        let key = |i: usize, h: &(usize, ffmpeg::Packet)| -> i64 {
            let tb = map[i].get(h.0).copied().flatten().map_or(MICROS, |m| m.1);
            h.1.dts().or(h.1.pts()).unwrap_or(0).rescale(tb, MICROS)
        };
        let Some(i) = (0..heads.len())
            .filter_map(|i| heads[i].as_ref().map(|h| (i, key(i, h))))
            .min_by_key(|&(_, k)| k)
            .map(|(i, _)| i)
        else {
            break;
        };
        let Some((s, mut packet)) = heads[i].take() else {
            break;
        };
        heads[i] = iters[i].next().map(|(s, p)| (s.index(), p));
        let Some(Some((o, in_tb))) = map[i].get(s).copied() else {
            continue;
        };
        let shift = start.rescale(MICROS, in_tb);
        packet.set_pts(packet.pts().map(|p| p - shift));
        packet.set_dts(packet.dts().map(|d| d - shift));
        packet.rescale_ts(in_tb, out_tbs[o]);
        packet.set_stream(o);
        packet.set_position(-1);
        if let Some(end) = packet.pts().map(|p| p + packet.duration().max(0)) {
            ends[o] = ends[o].max(end);
        }
        packet
            .write_interleaved(&mut output)
            .map_err(|e| MediaError::Damaged(format!("cannot copy a packet: {e}")))?;
        packets += 1;
    }
    drop(iters);
    output
        .write_trailer()
        .map_err(|e| MediaError::internal("mp4 trailer", e))?;
    let duration_ms = ends
        .iter()
        .zip(&out_tbs)
        .map(|(&end, &tb)| end.rescale(tb, Rational(1, 1000)))
        .max()
        .unwrap_or(0);
    Ok(Mp4Written {
        duration_ms,
        packets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ffmpeg(args: &[&str]) {
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .status()
            .expect("run ffmpeg")
            .success();
        assert!(ok, "ffmpeg {args:?}");
    }

    fn probe(path: &Path) -> serde_json::Value {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_streams",
                "-show_format",
            ])
            .arg(path)
            .output()
            .expect("run ffprobe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Top-level box types in order.
    fn boxes(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + 8 <= bytes.len() {
            let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            out.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
            assert!(size >= 8);
            at += size as usize;
        }
        out
    }

    fn src(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        ffmpeg(&args);
        path
    }

    #[test]
    fn ts_and_fragmented_tracks_become_one_faststart_mp4() {
        crate::media::init();
        let dir = tempfile::tempdir().unwrap();
        // A TS rung (as the HLS segmenter writes: H.264 + ADTS AAC).
        let ts = src(dir.path(), "rung.ts", &["-f", "mpegts"]);
        let out = dir.path().join("from-ts.mp4");
        let w = remux(&[&ts], &out).expect("remux ts");
        assert!(w.packets > 75, "{w:?}");
        assert!((w.duration_ms - 3000).abs() <= 40, "{w:?}");
        let b = boxes(&std::fs::read(&out).unwrap());
        let moov = b.iter().position(|x| x == "moov").expect("moov");
        let mdat = b.iter().position(|x| x == "mdat").expect("mdat");
        assert!(moov < mdat, "{b:?}");
        let p = probe(&out);
        let tags: Vec<&str> = p["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_tag_string"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["avc1", "mp4a"]);
        ffmpeg(&["-xerror", "-i", out.to_str().unwrap(), "-f", "null", "-"]);
        // CMAF: a video track and the shared audio track, each fragmented.
        let frag = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"];
        let v = src(dir.path(), "video.mp4", &[&["-an"][..], &frag].concat());
        let a = src(dir.path(), "audio.mp4", &[&["-vn"][..], &frag].concat());
        let out = dir.path().join("from-cmaf.mp4");
        remux(&[&v, &a], &out).expect("remux cmaf");
        let b = boxes(&std::fs::read(&out).unwrap());
        assert_eq!(b.iter().filter(|x| *x == "moof").count(), 0, "{b:?}");
        assert!(b.iter().position(|x| x == "moov") < b.iter().position(|x| x == "mdat"));
        let p = probe(&out);
        assert_eq!(p["streams"].as_array().unwrap().len(), 2);
        ffmpeg(&["-xerror", "-i", out.to_str().unwrap(), "-f", "null", "-"]);
        // Not media: a clear error, no panic.
        let junk = dir.path().join("junk.ts");
        std::fs::write(&junk, b"not a video").unwrap();
        assert!(remux(&[&junk], &dir.path().join("junk.mp4")).is_err());
    }
}
