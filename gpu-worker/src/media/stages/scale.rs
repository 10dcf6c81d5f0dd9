//! [`SwsScaler`]: the [`Scaler`] over swscale, with upright rotation.

use super::Scaler;
use crate::media::error::MediaError;
use crate::media::probe::Rotation;
use ffmpeg::{format::Pixel, frame, software::scaling};
use ffmpeg_next as ffmpeg;

/// swscale to the rung's size in 8-bit 4:2:0 (bit depth and chroma
/// reduced on the way), then the rotation applied on the small picture.
pub struct SwsScaler {
    context: Option<scaling::Context>,
    format: Pixel,
    /// Upright output size.
    width: u32,
    height: u32,
    rotation: Rotation,
}

// By hand: some fields (codec contexts, streams, secrets) have no useful
// or safe Debug.
impl std::fmt::Debug for SwsScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwsScaler")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl SwsScaler {
    /// A scaler to `width` x `height` upright in `format` (`YUV420P` for
    /// encoders, `YUVJ420P` for JPEG).
    pub fn new(width: u32, height: u32, rotation: Rotation, format: Pixel) -> Self {
        SwsScaler {
            context: None,
            format,
            width,
            height,
            rotation,
        }
    }

    fn stored_size(&self) -> (u32, u32) {
        if self.rotation.swaps_axes() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

impl Scaler for SwsScaler {
    fn scale(&mut self, input: &frame::Video) -> Result<frame::Video, MediaError> {
        let fits = self.context.as_ref().is_some_and(|c| {
            let d = c.input();
            d.format == input.format() && d.width == input.width() && d.height == input.height()
        });
        if !fits {
            let (w, h) = self.stored_size();
            let ctx = scaling::Context::get(
                input.format(),
                input.width(),
                input.height(),
                self.format,
                w,
                h,
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| MediaError::Damaged(format!("picture format not convertible: {e}")))?;
            self.context = Some(ctx);
        }
        let (w, h) = self.stored_size();
        let mut scaled = frame::Video::new(self.format, w, h);
        if let Some(ctx) = self.context.as_mut() {
            ctx.run(input, &mut scaled)
                .map_err(|e| MediaError::internal("scale", e))?;
        }
        if self.rotation == Rotation::None {
            return Ok(scaled);
        }
        let mut upright = frame::Video::new(self.format, self.width, self.height);
        for plane in 0..3 {
            rotate_plane(&scaled, &mut upright, plane, self.rotation);
        }
        Ok(upright)
    }
}

/// Rotates one 8-bit plane of `src` into `dst` (whose size is `src`'s,
/// swapped for quarter turns).
fn rotate_plane(src: &frame::Video, dst: &mut frame::Video, plane: usize, rotation: Rotation) {
    let (sw, sh) = (
        src.plane_width(plane) as usize,
        src.plane_height(plane) as usize,
    );
    let (dw, dh) = (
        dst.plane_width(plane) as usize,
        dst.plane_height(plane) as usize,
    );
    let (ss, ds) = (src.stride(plane), dst.stride(plane));
    let s = src.data(plane);
    let d = dst.data_mut(plane);
    for dy in 0..dh {
        let row = &mut d[dy * ds..dy * ds + dw];
        for (dx, px) in row.iter_mut().enumerate() {
            let (sx, sy) = match rotation {
                Rotation::Clockwise90 => (dy, sh - 1 - dx),
                Rotation::Counterclockwise90 => (sw - 1 - dy, dx),
                Rotation::Half => (sw - 1 - dx, sh - 1 - dy),
                Rotation::None => (dx, dy),
            };
            *px = s[sy * ss + sx];
        }
    }
}
