//! Probing a source: what it is, and whether the worker will take it.

use super::error::MediaError;
use ffmpeg::{codec, format, media, Rational};
use ffmpeg_next as ffmpeg;
use std::path::Path;

/// Limits that keep one bad upload from taking the worker down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest width or height accepted, pixels.
    pub max_dimension: u32,
    /// Longest duration accepted, seconds.
    pub max_duration: f64,
    /// Longest stretch without a new picture, seconds.
    pub max_gap: f64,
    /// Largest input file, bytes.
    pub max_input_bytes: u64,
}

impl Default for Limits {
    /// 8192 px, 4 hours, 60 s gaps, 50 GiB.
    fn default() -> Self {
        Limits {
            max_dimension: 8192,
            max_duration: 4.0 * 3600.0,
            max_gap: 60.0,
            max_input_bytes: 50 << 30,
        }
    }
}

/// How the picture must be turned to display upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// As stored.
    #[default]
    None,
    /// A quarter turn clockwise.
    Clockwise90,
    /// Upside down.
    Half,
    /// A quarter turn counter-clockwise.
    Counterclockwise90,
}

impl Rotation {
    /// Whether width and height swap.
    pub fn swaps_axes(self) -> bool {
        matches!(self, Rotation::Clockwise90 | Rotation::Counterclockwise90)
    }

    /// From the display matrix (`AV_PKT_DATA_DISPLAYMATRIX`), as the
    /// ffmpeg CLI's autorotate reads it.
    pub fn from_display_matrix(bytes: &[u8]) -> Rotation {
        if bytes.len() < 36 {
            return Rotation::None;
        }
        let m: Vec<f64> = bytes
            .chunks_exact(4)
            .take(9)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as f64 / 65536.0)
            .collect();
        let s0 = m[0].hypot(m[3]);
        let s1 = m[1].hypot(m[4]);
        if s0 == 0.0 || s1 == 0.0 {
            return Rotation::None;
        }
        // av_display_rotation_get: counter-clockwise degrees.
        let ccw = -(m[1] / s1).atan2(m[0] / s0).to_degrees();
        Rotation::from_clockwise_degrees(-ccw.round())
    }

    /// From clockwise degrees (the old `rotate` tag).
    pub fn from_clockwise_degrees(deg: f64) -> Rotation {
        let d = deg.rem_euclid(360.0);
        if (d - 90.0).abs() < 1.0 {
            Rotation::Clockwise90
        } else if (d - 180.0).abs() < 1.0 {
            Rotation::Half
        } else if (d - 270.0).abs() < 1.0 {
            Rotation::Counterclockwise90
        } else {
            Rotation::None
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Duration, seconds (0 when the container does not say).
    pub duration: f64,
    /// Stored frame width.
    pub coded_width: u32,
    /// Stored frame height.
    pub coded_height: u32,
    /// Upright display width (sample aspect and rotation applied).
    pub display_width: u32,
    /// Upright display height.
    pub display_height: u32,
    /// Rotation to apply.
    pub rotation: Rotation,
    /// Constant frame rate the renditions get.
    pub output_fps: Rational,
    /// The source's average frame rate, frames per second.
    pub source_fps: f64,
    /// Video codec name, e.g. `h264`.
    pub codec: String,
    /// Index of the video stream.
    pub video_stream: usize,
    /// Index of the audio stream, if any.
    pub audio_stream: Option<usize>,
}

impl SourceInfo {
    /// The short side of the upright picture (what rungs are named by).
    pub fn short_side(&self) -> u32 {
        self.display_width.min(self.display_height)
    }
}

const STANDARD_RATES: [(i32, i32); 9] = [
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (48, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
];

fn valid(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r))
}

/// The constant frame rate for a source whose streams say `avg` and
/// `r_frame_rate`: a standard rate within 1 % when there is one, else the
/// rounded rate, never above 60.
pub fn choose_output_fps(avg: Rational, real: Rational) -> Rational {
    let candidates = [valid(real), valid(avg)];
    for fps in candidates.into_iter().flatten() {
        let off = |&(n, d): &(i32, i32)| ((n as f64 / d as f64) - fps).abs() / fps;
        if let Some(&(n, d)) = STANDARD_RATES
            .iter()
            .filter(|r| off(r) < 0.01)
            .min_by(|a, b| off(a).total_cmp(&off(b)))
        {
            return Rational::new(n, d);
        }
    }
    let fps = valid(avg).or(valid(real)).unwrap_or(30.0);
    if fps > 60.0 {
        return Rational::new(60, 1);
    }
    Rational::new((fps.round() as i32).clamp(1, 60), 1)
}

/// Opens `path` and checks it against `limits`.
pub fn probe(path: &Path, limits: &Limits) -> Result<SourceInfo, MediaError> {
    let size = std::fs::metadata(path)?.len();
    if size == 0 {
        return Err(MediaError::Empty);
    }
    if size > limits.max_input_bytes {
        return Err(MediaError::FileTooLarge {
            size,
            max: limits.max_input_bytes,
        });
    }
    let input = format::input(&path).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    probe_input(&input, limits)
}

/// Checks an opened input against `limits`.
pub fn probe_input(
    input: &format::context::Input,
    limits: &Limits,
) -> Result<SourceInfo, MediaError> {
    let stream = input
        .streams()
        .best(media::Type::Video)
        .ok_or(MediaError::NoVideo)?;
    let params = stream.parameters();
    let id = params.id();
    if id == codec::Id::None {
        return Err(MediaError::UnsupportedCodec("unknown".into()));
    }
    if ffmpeg::decoder::find(id).is_none() {
        return Err(MediaError::UnsupportedCodec(id.name().to_owned()));
    }
    let ctx =
        codec::Context::from_parameters(params).map_err(|e| MediaError::NotMedia(e.to_string()))?;
    let decoder = ctx
        .decoder()
        .video()
        .map_err(|e| MediaError::UnsupportedCodec(format!("{} ({e})", id.name())))?;
    let (w, h) = (decoder.width(), decoder.height());
    if w == 0 || h == 0 || w > limits.max_dimension || h > limits.max_dimension {
        return Err(MediaError::BadDimensions {
            width: w,
            height: h,
            max: limits.max_dimension,
        });
    }
    let mut rotation = stream
        .side_data()
        .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
        .map(|sd| Rotation::from_display_matrix(sd.data()))
        .unwrap_or_default();
    if rotation == Rotation::None {
        if let Some(deg) = stream
            .metadata()
            .get("rotate")
            .and_then(|v| v.parse::<f64>().ok())
        {
            rotation = Rotation::from_clockwise_degrees(deg);
        }
    }
    let sar = decoder.aspect_ratio();
    let stored_display_w = match valid(sar) {
        Some(s) if (0.1..=10.0).contains(&s) => ((w as f64 * s).round() as u32).max(2),
        _ => w,
    };
    let (display_width, display_height) = if rotation.swaps_axes() {
        (h, stored_display_w)
    } else {
        (stored_display_w, h)
    };
    let tb = stream.time_base();
    let container = input.duration();
    let duration = if container > 0 {
        container as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)
    } else if stream.duration() > 0 && valid(tb).is_some() {
        stream.duration() as f64 * f64::from(tb)
    } else {
        0.0
    };
    if duration > limits.max_duration {
        return Err(MediaError::TooLong {
            seconds: duration,
            max: limits.max_duration,
        });
    }
    let audio_stream = input
        .streams()
        .best(media::Type::Audio)
        .filter(|a| ffmpeg::decoder::find(a.parameters().id()).is_some())
        .map(|a| a.index());
    Ok(SourceInfo {
        duration,
        coded_width: w,
        coded_height: h,
        display_width,
        display_height,
        rotation,
        output_fps: choose_output_fps(stream.avg_frame_rate(), stream.rate()),
        source_fps: valid(stream.avg_frame_rate())
            .or(valid(stream.rate()))
            .unwrap_or(0.0),
        codec: id.name().to_owned(),
        video_stream: stream.index(),
        audio_stream,
    })
}

/// Rounds to the nearest even number, at least 2.
pub fn round_even(x: f64) -> u32 {
    (((x / 2.0).round() as u32) * 2).max(2)
}

/// The upright output size of a rung of `rung_height` (the short side)
/// for an upright source of `display_width` x `display_height`.
pub fn rung_size(display_width: u32, display_height: u32, rung_height: u32) -> (u32, u32) {
    let (w, h) = (display_width as f64, display_height as f64);
    if display_width >= display_height {
        let out_h = round_even(rung_height as f64);
        (round_even(w * out_h as f64 / h), out_h)
    } else {
        let out_w = round_even(rung_height as f64);
        (out_w, round_even(h * out_w as f64 / w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_aspect_scale_the_short_side_and_stay_even() {
        assert_eq!(rung_size(1920, 1080, 720), (1280, 720));
        assert_eq!(rung_size(1920, 1080, 240), (426, 240));
        assert_eq!(rung_size(1080, 1920, 720), (720, 1280));
        assert_eq!(rung_size(853, 479, 240), (428, 240));
        assert_eq!(rung_size(853, 479, 479), (854, 480));
    }

    #[test]
    fn frame_rates_snap_to_standard_and_cap_at_60() {
        let r = |n, d| Rational::new(n, d);
        assert_eq!(choose_output_fps(r(30, 1), r(30, 1)), r(30, 1));
        assert_eq!(
            choose_output_fps(r(2997, 100), r(30000, 1001)),
            r(30000, 1001)
        );
        assert_eq!(choose_output_fps(r(45, 2), r(30, 1)), r(30, 1));
        assert_eq!(choose_output_fps(r(120, 1), r(120, 1)), r(60, 1));
        assert_eq!(choose_output_fps(r(0, 0), r(0, 0)), r(30, 1));
    }

    #[test]
    fn display_matrix_rotation() {
        // av_display_rotation_get() = -90 (what a phone's portrait clip
        // says): a quarter turn clockwise.
        let m: [i32; 9] = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30];
        let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(Rotation::from_display_matrix(&bytes), Rotation::Clockwise90);
        let id: [i32; 9] = [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30];
        let bytes: Vec<u8> = id.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(Rotation::from_display_matrix(&bytes), Rotation::None);
        assert_eq!(
            Rotation::from_clockwise_degrees(270.0),
            Rotation::Counterclockwise90
        );
    }
}
