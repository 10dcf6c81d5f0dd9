//! Moving pictures between libav frames and the GPU path's layouts:
//! an NV12/P010 libav frame as the [`SourcePicture`] the CUDA scaler's
//! reference reads (NVDEC's surface layout), and a downloaded rung
//! ([`Yuv420`]) as the yuv420p frame libx264 takes.

use crate::media::error::MediaError;
use ffmpeg::{format::Pixel, frame};
use ffmpeg_next as ffmpeg;
use vodfarm_native::reference::{SourcePicture, Yuv420};

/// An NV12 or P010 picture copied out of a libav frame into NVDEC's
/// layout: luma rows then interleaved chroma rows, one pitch.
#[derive(Debug, Clone)]
pub struct OwnedSource {
    /// Luma rows.
    pub y: Vec<u8>,
    /// Chroma rows.
    pub uv: Vec<u8>,
    /// Bytes per row.
    pub pitch: usize,
    /// Luma width.
    pub width: u32,
    /// Luma height.
    pub height: u32,
    /// P010.
    pub ten_bit: bool,
}

impl OwnedSource {
    /// Copies `frame` (NV12 or P010LE).
    pub fn from_frame(frame: &frame::Video) -> Result<Self, MediaError> {
        let ten_bit = match frame.format() {
            Pixel::NV12 => false,
            Pixel::P010LE => true,
            other => {
                return Err(MediaError::internal(
                    "gpu frames",
                    format!("{other:?} is not an NVDEC surface format (NV12, P010)"),
                ))
            }
        };
        let (w, h) = (frame.width(), frame.height());
        let pitch = w as usize * if ten_bit { 2 } else { 1 };
        let copy = |plane: usize, rows: usize| {
            let stride = frame.stride(plane);
            let data = frame.data(plane);
            let mut out = Vec::with_capacity(pitch * rows);
            for r in 0..rows {
                out.extend_from_slice(&data[r * stride..r * stride + pitch]);
            }
            out
        };
        Ok(OwnedSource {
            y: copy(0, h as usize),
            uv: copy(1, h.div_ceil(2) as usize),
            pitch,
            width: w,
            height: h,
            ten_bit,
        })
    }

    /// The borrowed view the reference scaler reads.
    pub fn picture(&self) -> SourcePicture<'_> {
        SourcePicture {
            y: &self.y,
            uv: &self.uv,
            pitch: self.pitch,
            width: self.width,
            height: self.height,
            ten_bit: self.ten_bit,
        }
    }
}

/// A downloaded rung as a yuv420p frame for libx264.
pub fn yuv420_frame(rung: &Yuv420) -> frame::Video {
    let mut out = frame::Video::new(Pixel::YUV420P, rung.width, rung.height);
    let planes = [
        (&rung.y, rung.width as usize, rung.height as usize),
        (
            &rung.u,
            rung.width.div_ceil(2) as usize,
            rung.height.div_ceil(2) as usize,
        ),
        (
            &rung.v,
            rung.width.div_ceil(2) as usize,
            rung.height.div_ceil(2) as usize,
        ),
    ];
    for (i, (src, w, h)) in planes.into_iter().enumerate() {
        let stride = out.stride(i);
        let dst = out.data_mut(i);
        for r in 0..h {
            dst[r * stride..r * stride + w].copy_from_slice(&src[r * w..r * w + w]);
        }
    }
    out
}

/// The planes of a yuv420p frame, rows packed (for comparisons).
pub fn planes_of(frame: &frame::Video) -> [Vec<u8>; 3] {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let sizes = [
        (w, h),
        (w.div_ceil(2), h.div_ceil(2)),
        (w.div_ceil(2), h.div_ceil(2)),
    ];
    let mut out: [Vec<u8>; 3] = Default::default();
    for (i, (pw, ph)) in sizes.into_iter().enumerate() {
        let stride = frame.stride(i);
        let data = frame.data(i);
        for r in 0..ph {
            out[i].extend_from_slice(&data[r * stride..r * stride + pw]);
        }
    }
    out
}

/// PSNR of `b` against `a` (8-bit samples), in dB; infinite when equal.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>()
        / n as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffmpeg::software::scaling;
    use vodfarm_native::reference::{scale_ladder, ChromaSiting};

    /// A deterministic picture with what real video has: smooth
    /// gradients, fine texture (sinusoids up to near Nyquist), sharp
    /// edges and grain.
    fn synthetic(format: Pixel, w: u32, h: u32) -> frame::Video {
        let mut f = frame::Video::new(format, w, h);
        let ten = format == Pixel::P010LE;
        let mut seed = 0x2545_f491_u32;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            f64::from(seed % 17) - 8.0
        };
        let luma = |x: f64, y: f64, n: f64| {
            let base =
                60.0 + 120.0 * (x / f64::from(w)) + 30.0 * ((x * 0.05).sin() * (y * 0.03).cos());
            let fine = 12.0 * ((x * 0.9).sin() + (y * 1.3).cos());
            let edge = if ((x / 97.0) as i64 + (y / 61.0) as i64) % 2 == 0 {
                25.0
            } else {
                -25.0
            };
            (base + fine + edge + n).clamp(16.0, 235.0)
        };
        let chroma = |x: f64, y: f64, k: f64, n: f64| {
            (128.0
                + 70.0 * ((x * 0.02 * k).sin() * (y * 0.015).cos())
                + 10.0 * (x * 0.7).sin()
                + n * 0.5)
                .clamp(16.0, 240.0)
        };
        for plane in 0..2 {
            let stride = f.stride(plane);
            let rows = if plane == 0 { h } else { h.div_ceil(2) } as usize;
            let cols = if plane == 0 {
                w as usize
            } else {
                w.div_ceil(2) as usize * 2
            };
            let data = f.data_mut(plane);
            for r in 0..rows {
                for c in 0..cols {
                    let v = if plane == 0 {
                        luma(c as f64, r as f64, noise())
                    } else {
                        let k = if c % 2 == 0 { 1.0 } else { 1.7 };
                        chroma((c / 2) as f64 * 2.0, r as f64 * 2.0, k, noise())
                    };
                    if ten {
                        let word = (((v * 4.0).round() as u16).min(1023)) << 6;
                        data[r * stride + c * 2..r * stride + c * 2 + 2]
                            .copy_from_slice(&word.to_le_bytes());
                    } else {
                        data[r * stride + c] = v.round() as u8;
                    }
                }
            }
        }
        f
    }

    fn check_ladder(format: Pixel, w: u32, h: u32, rungs: &[(u32, u32)]) {
        crate::media::init();
        let src = synthetic(format, w, h);
        let owned = OwnedSource::from_frame(&src).expect("nv12/p010");
        // libswscale's default chroma siting is centred; the reference
        // takes the siting as a parameter (NVDEC sources use the stream's).
        let ours = scale_ladder(&owned.picture(), ChromaSiting::Center, rungs);
        for (rung, &(rw, rh)) in ours.iter().zip(rungs) {
            let mut ctx =
                scaling::Context::get(format, w, h, Pixel::YUV420P, rw, rh, scaling::Flags::AREA)
                    .expect("swscale context");
            let mut out = frame::Video::empty();
            ctx.run(&src, &mut out).expect("swscale runs");
            let [y, u, v] = planes_of(&out);
            let p = [psnr(&y, &rung.y), psnr(&u, &rung.u), psnr(&v, &rung.v)];
            println!(
                "{format:?} {w}x{h} -> {rw}x{rh}: PSNR Y {:.2} U {:.2} V {:.2} dB",
                p[0], p[1], p[2]
            );
            for (plane, db) in ["Y", "U", "V"].iter().zip(p) {
                assert!(
                    db >= 45.0,
                    "{format:?} {w}x{h} -> {rw}x{rh} plane {plane}: {db:.2} dB < 45"
                );
            }
        }
    }

    #[test]
    fn reference_agrees_with_swscale_area_from_1080p() {
        check_ladder(
            Pixel::NV12,
            1920,
            1080,
            &[(1920, 1080), (1280, 720), (426, 240)],
        );
    }

    #[test]
    fn reference_agrees_with_swscale_area_from_4k_10_bit() {
        check_ladder(
            Pixel::P010LE,
            3840,
            2160,
            &[(1920, 1080), (1280, 720), (426, 240)],
        );
    }

    #[test]
    fn downloaded_rung_round_trips_through_a_frame() {
        let rung = Yuv420 {
            width: 6,
            height: 4,
            y: (0..24).collect(),
            u: (100..106).collect(),
            v: (200..206).collect(),
        };
        let f = yuv420_frame(&rung);
        let [y, u, v] = planes_of(&f);
        assert_eq!((y, u, v), (rung.y, rung.u, rung.v));
    }

    #[test]
    fn psnr_of_equal_planes_is_infinite() {
        assert!(psnr(&[1, 2, 3], &[1, 2, 3]).is_infinite());
        let db = psnr(&[10; 100], &[11; 100]);
        assert!((db - 48.13).abs() < 0.01, "{db}");
    }
}
