//! The stream-copy remux that writes each chunk's packets of the
//! original into its own NUT file (at plan time from the whole original,
//! or in a chunk job from its sparse copy).

use super::spec::{Range, Streams};
use crate::media::error::MediaError;
use ffmpeg::{codec, format, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::path::{Path, PathBuf};

/// Opens a source for its packets. A sparse copy (`ranged`) is read
/// without parsers: a parser reads packet data (zeros in the holes) and
/// would clear the key flags the container's index (`stss`) gives, so the
/// plan and the chunk both take packets, flags and timestamps from the
/// index alone, and count them alike.
pub(super) fn open_source(path: &Path, ranged: bool) -> Result<format::context::Input, MediaError> {
    let opened = if ranged {
        let mut options = ffmpeg::Dictionary::new();
        options.set("fflags", "+noparse");
        format::input_with_dictionary(&path, options)
    } else {
        format::input(&path)
    };
    opened.map_err(|e| MediaError::NotMedia(e.to_string()))
}

/// One chunk file being written.
struct ChunkFile {
    output: format::context::Output,
    video_tb: Rational,
    audio_tb: Option<Rational>,
}

fn open_chunk(
    path: &Path,
    input: &format::context::Input,
    streams: Streams,
) -> Result<ChunkFile, MediaError> {
    let mut output =
        format::output_as(&path, "nut").map_err(|e| MediaError::internal("chunk file", e))?;
    let mut add = |index: usize| -> Result<(), MediaError> {
        let s = input
            .stream(index)
            .ok_or_else(|| MediaError::Internal("chunk stream".into()))?;
        let mut o = output
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|e| MediaError::internal("chunk stream", e))?;
        let mut params = s.parameters();
        // The source container's codec tag may mean nothing in NUT.
        vodfarm_native::av::clear_codec_tag(&mut params);
        o.set_parameters(params);
        o.set_time_base(s.time_base());
        Ok(())
    };
    add(streams.video)?;
    if let Some(a) = streams.audio {
        add(a)?;
    }
    output
        .write_header()
        .map_err(|e| MediaError::internal("chunk file header", e))?;
    let video_tb = output
        .stream(0)
        .map(|s| s.time_base())
        .unwrap_or(Rational::new(1, 90_000));
    let audio_tb = streams
        .audio
        .and_then(|_| output.stream(1).map(|s| s.time_base()));
    Ok(ChunkFile {
        output,
        video_tb,
        audio_tb,
    })
}

/// Writes each chunk's packets (stream copy) into `dir/chunk_{k}.nut`.
/// With `within`, every packet written must lie in those byte ranges of
/// `path` (a sparse copy holds nothing else).
pub(super) fn remux(
    path: &Path,
    dir: &Path,
    streams: Streams,
    ranges: &[Range],
    shift_seconds: f64,
    within: Option<&[[u64; 2]]>,
) -> Result<Vec<PathBuf>, MediaError> {
    std::fs::create_dir_all(dir)?;
    let mut input = open_source(path, within.is_some())?;
    let in_tb = |i: usize| input.stream(i).map(|s| s.time_base());
    let vtb = in_tb(streams.video).ok_or(MediaError::NoVideo)?;
    let atb = streams.audio.and_then(in_tb);
    let paths: Vec<PathBuf> = (0..ranges.len())
        .map(|k| dir.join(format!("chunk_{k}.nut")))
        .collect();
    let mut open: Vec<Option<ChunkFile>> = (0..ranges.len()).map(|_| None).collect();
    let mut done = vec![false; ranges.len()];
    let mut video_index = 0usize;
    let mut lowest = 0usize;
    let mut packet = Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) => continue,
            Err(e) => return Err(MediaError::Damaged(format!("reading stopped: {e}"))),
        }
        let stream = packet.stream();
        let (is_video, seconds) = if stream == streams.video {
            (true, 0.0)
        } else if Some(stream) == streams.audio {
            let ts = packet.pts().or(packet.dts()).unwrap_or(0);
            (false, ts as f64 * f64::from(atb.unwrap_or(vtb)))
        } else {
            continue;
        };
        for k in lowest..ranges.len() {
            let r = ranges[k];
            let (wanted, before) = r.wants(is_video, video_index, seconds);
            if before {
                // Later chunks start later still.
                break;
            }
            if !wanted || done[k] {
                continue;
            }
            if let Some(fetched) = within {
                let at = u64::try_from(packet.position()).ok();
                let size = packet.size() as u64;
                if !at.is_some_and(|p| fetched.iter().any(|[a, b]| p >= *a && p + size <= *b)) {
                    return Err(MediaError::Internal(format!(
                        "packet at byte {at:?} is outside the fetched ranges"
                    )));
                }
            }
            if open[k].is_none() {
                open[k] = Some(open_chunk(&paths[k], &input, streams)?);
            }
            if let Some(file) = open[k].as_mut() {
                let mut p = packet.clone();
                let (out_stream, from, to) = if is_video {
                    (0, vtb, file.video_tb)
                } else {
                    (1, atb.unwrap_or(vtb), file.audio_tb.unwrap_or(vtb))
                };
                let shift = (shift_seconds / f64::from(from)).round() as i64;
                p.set_pts(p.pts().map(|t| t + shift));
                p.set_dts(p.dts().map(|t| t + shift));
                p.rescale_ts(from, to);
                p.set_stream(out_stream);
                p.set_position(-1);
                p.write_interleaved(&mut file.output)
                    .map_err(|e| MediaError::internal("chunk file write", e))?;
            }
        }
        if is_video {
            video_index += 1;
        }
        // Close the chunks whose video and audio are both complete.
        while lowest < ranges.len() {
            let r = ranges[lowest];
            let video_done = video_index >= r.video.1;
            let audio_done = !is_video && seconds > r.audio.1 || r.audio.1 < r.audio.0;
            if !(video_done && audio_done) {
                break;
            }
            if let Some(mut f) = open[lowest].take() {
                f.output
                    .write_trailer()
                    .map_err(|e| MediaError::internal("chunk file trailer", e))?;
            }
            done[lowest] = true;
            lowest += 1;
        }
        if lowest == ranges.len() {
            // Every chunk is complete: the rest is not needed.
            break;
        }
    }
    for (k, f) in open.iter_mut().enumerate() {
        if let Some(mut f) = f.take() {
            f.output
                .write_trailer()
                .map_err(|e| MediaError::internal("chunk file trailer", e))?;
        }
        if !paths[k].exists() {
            return Err(MediaError::Internal(format!(
                "chunk {k} received no packets"
            )));
        }
    }
    Ok(paths)
}
