//! Thumbnails: `thumb_{n}.jpg` every interval, `default.jpg` (the first
//! frame that is not black), `sprite.jpg` (a grid of small frames) and
//! `storyboard.vtt` (WebVTT cues pointing into the sprite with `#xywh=`).

use super::error::MediaError;
use super::probe::{self, round_even, rung_size, Limits, SourceInfo};
use super::stages::{Decoder, LibavDecoder, Scaler, SwsScaler};
use super::JobControl;
use ffmpeg::{codec, format, format::Pixel, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Short side of `thumb_{n}.jpg` and `default.jpg`, at most.
pub const THUMB_SHORT_SIDE: u32 = 360;

/// Most tiles in one sprite; longer videos sample every k-th thumbnail.
pub const MAX_SPRITE_TILES: usize = 1000;

/// What the thumbnail job asks for.
#[derive(Debug, Clone)]
pub struct ThumbnailRequest {
    /// The original in scratch space.
    pub source: PathBuf,
    /// Where the images go.
    pub work_dir: PathBuf,
    /// Seconds between thumbnails.
    pub interval_seconds: u32,
    /// Sprite columns.
    pub sprite_columns: u32,
    /// Sprite tile width, pixels.
    pub sprite_tile_width: u32,
    /// Input limits.
    pub limits: Limits,
}

/// One image written.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    /// Scratch path.
    pub path: PathBuf,
    /// Second of the source it shows.
    pub timestamp: f64,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
}

/// Everything a thumbnail job made.
#[derive(Debug, Clone)]
pub struct ThumbnailSet {
    /// The probe.
    pub source: SourceInfo,
    /// `thumb_{n}.jpg`, n from 0.
    pub frames: Vec<ImageFile>,
    /// `default.jpg`.
    pub poster: ImageFile,
    /// `sprite.jpg`.
    pub sprite: ImageFile,
    /// `storyboard.vtt`.
    pub storyboard: PathBuf,
}

/// Whether a picture (full-range 8-bit luma) is essentially black: dark
/// on average and almost flat.
pub fn is_black(luma: &[u8], width: usize, height: usize, stride: usize) -> bool {
    if width == 0 || height == 0 {
        return true;
    }
    let mut sum = 0u64;
    let mut bright = 0u64;
    for y in 0..height {
        for &v in &luma[y * stride..y * stride + width] {
            sum += u64::from(v);
            if v > 48 {
                bright += 1;
            }
        }
    }
    let n = (width * height) as u64;
    sum / n < 24 && bright * 100 < n * 2
}

fn encode_jpeg(picture: &frame::Video, path: &Path) -> Result<u64, MediaError> {
    let codec = ffmpeg::encoder::find_by_name("mjpeg")
        .ok_or_else(|| MediaError::Internal("no mjpeg encoder".into()))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| MediaError::internal("mjpeg", e))?;
    enc.set_width(picture.width());
    enc.set_height(picture.height());
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base(Rational::new(1, 25));
    let mut opts = Dictionary::new();
    opts.set("flags", "+qscale");
    opts.set("qmin", "3");
    opts.set("qmax", "3");
    let mut enc = enc
        .open_with(opts)
        .map_err(|e| MediaError::internal("mjpeg", e))?;
    let mut p = picture.clone();
    p.set_pts(Some(0));
    enc.send_frame(&p)
        .map_err(|e| MediaError::internal("mjpeg", e))?;
    enc.send_eof()
        .map_err(|e| MediaError::internal("mjpeg", e))?;
    let mut data = Vec::new();
    let mut packet = Packet::empty();
    while enc.receive_packet(&mut packet).is_ok() {
        if let Some(d) = packet.data() {
            data.extend_from_slice(d);
        }
    }
    if data.is_empty() {
        return Err(MediaError::Internal("mjpeg produced nothing".into()));
    }
    std::fs::write(path, &data)?;
    Ok(data.len() as u64)
}

/// `HH:MM:SS.mmm`.
pub fn vtt_time(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The storyboard: one cue per tile, `sprite.jpg#xywh=x,y,w,h`.
pub fn storyboard_vtt(
    tile_times: &[f64],
    end: f64,
    columns: u32,
    tile_width: u32,
    tile_height: u32,
) -> String {
    let mut v = String::from("WEBVTT\n");
    for (i, &start) in tile_times.iter().enumerate() {
        let stop = tile_times
            .get(i + 1)
            .copied()
            .unwrap_or(end)
            .max(start + 0.001);
        let (col, row) = (i as u32 % columns.max(1), i as u32 / columns.max(1));
        let _ = write!(
            v,
            "\n{} --> {}\nsprite.jpg#xywh={},{},{},{}\n",
            vtt_time(start),
            vtt_time(stop),
            col * tile_width,
            row * tile_height,
            tile_width,
            tile_height
        );
    }
    v
}

/// Makes the thumbnail set. Seeks between far-apart thumbnails, so a long
/// video is not decoded whole.
pub fn thumbnails(
    request: &ThumbnailRequest,
    control: &JobControl,
) -> Result<ThumbnailSet, MediaError> {
    super::init();
    std::fs::create_dir_all(&request.work_dir)?;
    let info = probe::probe(&request.source, &request.limits)?;
    let mut input =
        format::input(&request.source).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let (params, tb, start) = {
        let s = input.stream(info.video_stream).ok_or(MediaError::NoVideo)?;
        let start = if s.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            s.start_time()
        };
        (s.parameters(), s.time_base(), start)
    };
    let mut decoder = LibavDecoder::open(params, false)?;
    let interval = f64::from(request.interval_seconds.max(1));
    let duration = info.duration;
    let count = if duration > 0.0 {
        ((duration / interval).ceil() as usize).max(1)
    } else {
        1
    };
    let targets: Vec<f64> = (0..count).map(|n| n as f64 * interval).collect();
    let short = info.short_side().min(THUMB_SHORT_SIDE);
    let (tw, th) = rung_size(info.display_width, info.display_height, short);
    let tile_w = round_even(f64::from(request.sprite_tile_width.clamp(16, 1920)));
    let tile_h = round_even(
        f64::from(tile_w) * f64::from(info.display_height) / f64::from(info.display_width),
    );
    let mut thumb_scaler = SwsScaler::new(tw, th, info.rotation, Pixel::YUVJ420P);
    let mut tile_scaler = SwsScaler::new(tile_w, tile_h, info.rotation, Pixel::YUVJ420P);

    let mut frames = Vec::new();
    let mut tiles: Vec<(frame::Video, f64)> = Vec::new();
    let mut poster: Option<ImageFile> = None;
    let mut last_picture: Option<(frame::Video, f64)> = None;
    let mut position = f64::NEG_INFINITY;
    let tile_step = targets.len().div_ceil(MAX_SPRITE_TILES).max(1);
    let mut next = 0usize;
    let mut eof = false;
    while next < targets.len() && !eof {
        if control.is_cancelled() {
            return Err(MediaError::Cancelled);
        }
        let target = targets[next];
        // Far ahead: seek to the keyframe before it instead of decoding on.
        if target - position > 5.0 && next > 0 {
            let ts = (target * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
            if input.seek(ts, ..ts).is_ok() {
                decoder.reset();
                last_picture = None;
            }
        }
        // Decode until a picture at or past the target.
        let mut found: Option<(frame::Video, f64)> = None;
        while found.is_none() {
            let mut packet = Packet::empty();
            let mut got = Vec::new();
            match packet.read(&mut input) {
                Ok(()) => {
                    if packet.stream() != info.video_stream {
                        continue;
                    }
                    decoder.decode(Some(&packet), &mut |p| {
                        got.push(p);
                        Ok(())
                    })?;
                }
                Err(ffmpeg::Error::InvalidData) => continue,
                Err(ffmpeg::Error::Eof) => {
                    decoder.decode(None, &mut |p| {
                        got.push(p);
                        Ok(())
                    })?;
                    eof = true;
                }
                Err(e) => return Err(MediaError::Damaged(format!("reading stopped: {e}"))),
            }
            for p in got {
                let t = (p.timestamp().or(p.pts()).unwrap_or(start) - start) as f64 * f64::from(tb);
                position = t;
                if t + 0.001 >= target && found.is_none() {
                    found = Some((p, t));
                } else {
                    last_picture = Some((p, t));
                }
            }
            if eof {
                break;
            }
        }
        let Some((picture, t)) = found.or(last_picture.take()) else {
            break;
        };
        let n = frames.len();
        let thumb = thumb_scaler.scale(&picture)?;
        let path = request.work_dir.join(format!("thumb_{n}.jpg"));
        encode_jpeg(&thumb, &path)?;
        let image = ImageFile {
            path,
            timestamp: t,
            width: tw,
            height: th,
        };
        let black = is_black(thumb.data(0), tw as usize, th as usize, thumb.stride(0));
        if poster.is_none() && !black {
            poster = Some(image.clone());
        }
        frames.push(image);
        if n % tile_step == 0 {
            tiles.push((tile_scaler.scale(&picture)?, targets[next]));
        }
        if duration > 0.0 {
            control.set_progress(t / duration);
        }
        next += 1;
    }
    let Some(first) = frames.first().cloned() else {
        return Err(MediaError::NoFrames);
    };
    let poster_src = poster.unwrap_or(first);
    let poster_path = request.work_dir.join("default.jpg");
    std::fs::copy(&poster_src.path, &poster_path)?;
    let poster = ImageFile {
        path: poster_path,
        ..poster_src
    };

    // The sprite: tiles in a grid, black where the grid has no tile.
    let columns = request.sprite_columns.clamp(1, 100);
    let used_columns = columns.min(tiles.len() as u32).max(1);
    let rows = (tiles.len() as u32).div_ceil(columns).max(1);
    let (sw, sh) = (used_columns * tile_w, rows * tile_h);
    let mut sprite = frame::Video::new(Pixel::YUVJ420P, sw, sh);
    for plane in 0..3 {
        let fill = if plane == 0 { 0 } else { 128 };
        sprite.data_mut(plane).fill(fill);
    }
    for (i, (tile, _)) in tiles.iter().enumerate() {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        for plane in 0..3 {
            let div = if plane == 0 { 1 } else { 2 };
            let (pw, ph) = ((tile_w / div) as usize, (tile_h / div) as usize);
            let (x0, y0) = ((col * tile_w / div) as usize, (row * tile_h / div) as usize);
            let (ts, ds) = (tile.stride(plane), sprite.stride(plane));
            let src = tile.data(plane);
            let dst = sprite.data_mut(plane);
            for y in 0..ph {
                dst[(y0 + y) * ds + x0..(y0 + y) * ds + x0 + pw]
                    .copy_from_slice(&src[y * ts..y * ts + pw]);
            }
        }
    }
    let sprite_path = request.work_dir.join("sprite.jpg");
    encode_jpeg(&sprite, &sprite_path)?;
    let end = if duration > 0.0 {
        duration
    } else {
        position.max(0.0) + 1.0
    };
    let times: Vec<f64> = tiles.iter().map(|(_, t)| *t).collect();
    let storyboard = request.work_dir.join("storyboard.vtt");
    std::fs::write(
        &storyboard,
        storyboard_vtt(&times, end, columns, tile_w, tile_h),
    )?;
    control.set_progress(1.0);
    Ok(ThumbnailSet {
        source: info,
        frames,
        poster,
        sprite: ImageFile {
            path: sprite_path,
            timestamp: 0.0,
            width: sw,
            height: sh,
        },
        storyboard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storyboard_cues_point_into_the_grid() {
        let v = storyboard_vtt(&[0.0, 10.0, 20.0], 25.5, 2, 160, 90);
        assert!(v.starts_with("WEBVTT\n"));
        assert!(v.contains("00:00:00.000 --> 00:00:10.000\nsprite.jpg#xywh=0,0,160,90\n"));
        assert!(v.contains("00:00:10.000 --> 00:00:20.000\nsprite.jpg#xywh=160,0,160,90\n"));
        assert!(v.contains("00:00:20.000 --> 00:00:25.500\nsprite.jpg#xywh=0,90,160,90\n"));
        assert_eq!(vtt_time(3723.25), "01:02:03.250");
    }

    #[test]
    fn black_detection() {
        let black = vec![2u8; 64 * 64];
        assert!(is_black(&black, 64, 64, 64));
        let mut picture = vec![2u8; 64 * 64];
        picture[..2048].fill(200);
        assert!(!is_black(&picture, 64, 64, 64));
    }
}
