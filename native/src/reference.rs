//! The CPU reference of the CUDA scalers (`kernels/scale.cu`): the same
//! float operations in the same order, so the GPU output must match it
//! within one LSB (bit for bit with `--fmad=false`). It is also the
//! specification the tests hold the kernels to, and it is checked against
//! libswscale's area scaler in the worker's tests.

/// Where chroma samples sit relative to luma (H.264 `chroma_sample_location`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChromaSiting {
    /// Co-sited with even luma columns, between rows (MPEG-2, H.264's
    /// default "left", type 0).
    Left,
    /// Between luma columns and rows (MPEG-1/JPEG, type 1; libswscale's
    /// default).
    Center,
    /// Co-sited with even luma columns and rows (type 2, BT.2020 UHD).
    TopLeft,
}

impl ChromaSiting {
    /// The footprint shift per axis, in chroma samples per unit of
    /// `1 - scale`: a left-sited sample k sits at k + 0.25 of a centred grid.
    pub fn units(self) -> (f32, f32) {
        match self {
            ChromaSiting::Left => (0.25, 0.0),
            ChromaSiting::Center => (0.0, 0.0),
            ChromaSiting::TopLeft => (0.25, 0.25),
        }
    }
}

/// A decoded picture in system memory, laid out as NVDEC writes it: NV12
/// (8-bit) or P010 (16-bit little-endian words, 10 bits in the high bits),
/// luma rows then interleaved U/V rows, both with `pitch` bytes per row.
#[derive(Debug, Clone, Copy)]
pub struct SourcePicture<'a> {
    /// Luma rows.
    pub y: &'a [u8],
    /// Interleaved chroma rows (height / 2 of them).
    pub uv: &'a [u8],
    /// Bytes per row of both planes.
    pub pitch: usize,
    /// Luma width.
    pub width: u32,
    /// Luma height.
    pub height: u32,
    /// P010 rather than NV12.
    pub ten_bit: bool,
}

/// A planar 8-bit 4:2:0 picture, rows packed (pitch = width).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yuv420 {
    /// Luma width.
    pub width: u32,
    /// Luma height.
    pub height: u32,
    /// `width * height` luma bytes.
    pub y: Vec<u8>,
    /// `cw * ch` Cb bytes.
    pub u: Vec<u8>,
    /// `cw * ch` Cr bytes.
    pub v: Vec<u8>,
}

struct Plane<'a> {
    data: &'a [u8],
    pitch: usize,
    width: i32,
    height: i32,
    /// Samples between neighbours (1 luma, 2 interleaved chroma).
    stride: usize,
    /// Byte offset of the first sample (0 U, 1 or 2 for V).
    first: usize,
    ten_bit: bool,
}

impl Plane<'_> {
    fn sample(&self, x: i32, y: i32) -> f32 {
        let row = y as usize * self.pitch + self.first;
        if self.ten_bit {
            let at = row + x as usize * self.stride * 2;
            let word = u16::from_le_bytes([self.data[at], self.data[at + 1]]);
            f32::from(word >> 6)
        } else {
            f32::from(self.data[row + x as usize * self.stride])
        }
    }

    /// `area()` of the kernel.
    #[allow(clippy::too_many_arguments)]
    fn area(&self, sx: f32, sy: f32, offx: f32, offy: f32, ox: u32, oy: u32) -> f32 {
        let x0 = ox as f32 * sx + offx;
        let x1 = x0 + sx;
        let y0 = oy as f32 * sy + offy;
        let y1 = y0 + sy;
        let (kx0, kx1) = (x0.floor() as i32, x1.ceil() as i32);
        let (ky0, ky1) = (y0.floor() as i32, y1.ceil() as i32);
        let mut total = 0.0f32;
        for ky in ky0..ky1 {
            let wy = (y1.min((ky + 1) as f32) - y0.max(ky as f32)) / sy;
            let cy = ky.clamp(0, self.height - 1);
            let mut row = 0.0f32;
            for kx in kx0..kx1 {
                let wx = (x1.min((kx + 1) as f32) - x0.max(kx as f32)) / sx;
                let cx = kx.clamp(0, self.width - 1);
                row += wx * self.sample(cx, cy);
            }
            total += wy * row;
        }
        total
    }
}

fn to8(v: f32, ten_bit: bool) -> u8 {
    let x = if ten_bit { v * 0.25 } else { v };
    (x + 0.5).floor().clamp(0.0, 255.0) as u8
}

fn planes<'a>(src: &SourcePicture<'a>) -> (Plane<'a>, Plane<'a>, Plane<'a>) {
    let (scw, sch) = (src.width.div_ceil(2) as i32, src.height.div_ceil(2) as i32);
    let luma = Plane {
        data: src.y,
        pitch: src.pitch,
        width: src.width as i32,
        height: src.height as i32,
        stride: 1,
        first: 0,
        ten_bit: src.ten_bit,
    };
    let chroma = |first| Plane {
        data: src.uv,
        pitch: src.pitch,
        width: scw,
        height: sch,
        stride: 2,
        first,
        ten_bit: src.ten_bit,
    };
    (luma, chroma(0), chroma(if src.ten_bit { 2 } else { 1 }))
}

/// Every rung of the ladder from one source picture (`vodfarm_ladder`).
/// Rung sizes are even and at most 8 of them.
pub fn scale_ladder(
    src: &SourcePicture<'_>,
    siting: ChromaSiting,
    rungs: &[(u32, u32)],
) -> Vec<Yuv420> {
    let (luma, cb, cr) = planes(src);
    let (ux, uy) = siting.units();
    rungs
        .iter()
        .map(|&(w, h)| {
            let sx = src.width as f32 / w as f32;
            let sy = src.height as f32 / h as f32;
            let mut y = vec![0u8; (w * h) as usize];
            for oy in 0..h {
                for ox in 0..w {
                    y[(oy * w + ox) as usize] =
                        to8(luma.area(sx, sy, 0.0, 0.0, ox, oy), src.ten_bit);
                }
            }
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let csx = cb.width as f32 / cw as f32;
            let csy = cb.height as f32 / ch as f32;
            let (offx, offy) = (ux * (1.0 - csx), uy * (1.0 - csy));
            let mut u = vec![0u8; (cw * ch) as usize];
            let mut v = vec![0u8; (cw * ch) as usize];
            for oy in 0..ch {
                for ox in 0..cw {
                    let i = (oy * cw + ox) as usize;
                    u[i] = to8(cb.area(csx, csy, offx, offy, ox, oy), src.ten_bit);
                    v[i] = to8(cr.area(csx, csy, offx, offy, ox, oy), src.ten_bit);
                }
            }
            Yuv420 {
                width: w,
                height: h,
                y,
                u,
                v,
            }
        })
        .collect()
}

/// A thumbnail or sprite tile in RGB24, BT.709 limited range in, full
/// range out (`vodfarm_thumb`).
pub fn thumbnail_rgb(src: &SourcePicture<'_>, siting: ChromaSiting, w: u32, h: u32) -> Vec<u8> {
    let (luma, cb, cr) = planes(src);
    let (offx, offy) = siting.units();
    let sx = src.width as f32 / w as f32;
    let sy = src.height as f32 / h as f32;
    let scale = if src.ten_bit { 0.25f32 } else { 1.0 };
    let (csx, csy) = (sx * 0.5, sy * 0.5);
    let mut out = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            let yv = luma.area(sx, sy, 0.0, 0.0, x, y) * scale;
            let u = cb.area(csx, csy, offx, offy, x, y) * scale;
            let v = cr.area(csx, csy, offx, offy, x, y) * scale;
            let l = (yv - 16.0) * (255.0f32 / 219.0);
            let b = (u - 128.0) * (255.0f32 / 224.0);
            let r = (v - 128.0) * (255.0f32 / 224.0);
            let rgb = [
                l + 1.5748 * r,
                l - 0.187324 * b - 0.468124 * r,
                l + 1.8556 * b,
            ];
            let at = ((y * w + x) * 3) as usize;
            for (c, value) in rgb.iter().enumerate() {
                out[at + c] = (value + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: u32, h: u32, y: u8, u: u8, v: u8) -> (Vec<u8>, Vec<u8>) {
        let luma = vec![y; (w * h) as usize];
        let uv = (0..w * h / 2)
            .map(|i| if i % 2 == 0 { u } else { v })
            .collect();
        (luma, uv)
    }

    #[test]
    fn flat_picture_stays_flat_on_every_rung() {
        let (y, uv) = flat(64, 36, 100, 90, 160);
        let src = SourcePicture {
            y: &y,
            uv: &uv,
            pitch: 64,
            width: 64,
            height: 36,
            ten_bit: false,
        };
        for out in scale_ladder(&src, ChromaSiting::Left, &[(64, 36), (32, 18), (14, 8)]) {
            assert!(out.y.iter().all(|&p| p == 100));
            assert!(out.u.iter().all(|&p| p == 90));
            assert!(out.v.iter().all(|&p| p == 160));
        }
    }

    #[test]
    fn same_size_is_identity() {
        let y: Vec<u8> = (0..64 * 32).map(|i| (i * 7 % 251) as u8).collect();
        let uv: Vec<u8> = (0..64 * 16).map(|i| (i * 13 % 241) as u8).collect();
        let src = SourcePicture {
            y: &y,
            uv: &uv,
            pitch: 64,
            width: 64,
            height: 32,
            ten_bit: false,
        };
        let out = &scale_ladder(&src, ChromaSiting::Left, &[(64, 32)])[0];
        assert_eq!(out.y, y);
        let u: Vec<u8> = uv.iter().step_by(2).copied().collect();
        assert_eq!(out.u, u);
    }

    #[test]
    fn ten_bit_rounds_to_nearest_8_bit() {
        // 10-bit 513 → 128.25 → 128; 514 → 128.5 → 129; 940 → 235.
        for (v10, v8) in [(513u16, 128u8), (514, 129), (940, 235), (64, 16)] {
            let word = (v10 << 6).to_le_bytes();
            let y: Vec<u8> = word.iter().copied().cycle().take(8 * 4 * 2).collect();
            let uv: Vec<u8> = word.iter().copied().cycle().take(8 * 2 * 2).collect();
            let src = SourcePicture {
                y: &y,
                uv: &uv,
                pitch: 16,
                width: 8,
                height: 4,
                ten_bit: true,
            };
            let out = &scale_ladder(&src, ChromaSiting::Left, &[(4, 2)])[0];
            assert!(out.y.iter().all(|&p| p == v8), "{v10}: {:?}", out.y);
            assert!(out.u.iter().chain(&out.v).all(|&p| p == v8));
        }
    }

    #[test]
    fn area_filter_averages_the_footprint() {
        // 4 → 1 horizontally averages 10, 20, 30, 40 to 25.
        let y = [10u8, 20, 30, 40, 10, 20, 30, 40];
        let uv = [128u8; 4];
        let src = SourcePicture {
            y: &y,
            uv: &uv,
            pitch: 4,
            width: 4,
            height: 2,
            ten_bit: false,
        };
        let out = &scale_ladder(&src, ChromaSiting::Center, &[(2, 2)])[0];
        assert_eq!(out.y, vec![15, 35, 15, 35]);
    }

    #[test]
    fn left_siting_shifts_chroma_footprints() {
        // A chroma step at column 4 of 8 (16 luma columns), halved to 4
        // chroma columns. Centred: sample 2 covers [4, 6): all 200.
        // Left-sited (off = 0.25 * (1 - 2) = -0.25): sample 2 covers
        // [3.75, 5.75), an eighth of it dark: 200 * 0.875 = 175.
        let y = vec![0u8; 16 * 2];
        let mut uv = vec![0u8; 16];
        for c in 4..8 {
            uv[c * 2] = 200;
            uv[c * 2 + 1] = 200;
        }
        let src = SourcePicture {
            y: &y,
            uv: &uv,
            pitch: 16,
            width: 16,
            height: 2,
            ten_bit: false,
        };
        let centred = &scale_ladder(&src, ChromaSiting::Center, &[(8, 2)])[0];
        assert_eq!(centred.u, vec![0, 0, 200, 200]);
        let left = &scale_ladder(&src, ChromaSiting::Left, &[(8, 2)])[0];
        assert_eq!(left.u, vec![0, 0, 175, 200]);
    }

    #[test]
    fn thumbnail_is_bt709() {
        // BT.709 limited: Y 235, neutral chroma → white; Y 16 → black;
        // pure red in BT.709 limited is (63, 102, 240).
        for ((yv, u, v), rgb) in [
            ((235, 128, 128), [255, 255, 255]),
            ((16, 128, 128), [0, 0, 0]),
            ((63, 102, 240), [255, 0, 0]),
        ] {
            let (y, uv) = flat(8, 8, yv, u, v);
            let src = SourcePicture {
                y: &y,
                uv: &uv,
                pitch: 8,
                width: 8,
                height: 8,
                ten_bit: false,
            };
            let out = thumbnail_rgb(&src, ChromaSiting::Left, 2, 2);
            for px in out.chunks(3) {
                for c in 0..3 {
                    assert!(
                        (i32::from(px[c]) - rgb[c]).abs() <= 1,
                        "{yv},{u},{v}: {px:?}"
                    );
                }
            }
        }
    }
}
