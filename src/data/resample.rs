//! Pillow's image resizing, reproduced bit for bit for 8-bit images.
//!
//! The official pipeline resizes with torchvision `Resize` on PIL images,
//! which calls `PIL.Image.resize(size, BILINEAR)`: Pillow's two-pass
//! separable resampler (`libImaging/Resample.c`), whose triangle filter is
//! widened by the scale factor when shrinking (antialiasing), with weights
//! computed in `double`, normalised per output pixel, then converted to
//! 22-bit fixed point and accumulated in 32-bit integers. Any other
//! implementation (float accumulation, another rounding) differs by one
//! grey level on a few percent of the pixels; this one is exact (tested on
//! real images against Pillow 13, `tests/fixtures/preprocess`).
//!
//! Masks in palette or bilevel mode are resized by Pillow with NEAREST
//! regardless of the requested filter; [`resize_nearest`] reproduces
//! Pillow's affine nearest sampling for that case.
//!
//! Images are interleaved `u8` buffers, row-major, `channels` bytes per
//! pixel; every channel is resampled independently, as Pillow does.

/// Fractional bits of Pillow's fixed-point weights (`PRECISION_BITS`,
/// 32 - 8 - 2: room for 8-bit values and a sum of weights slightly above 1).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// An interleaved 8-bit image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major, channels interleaved.
    pub data: Vec<u8>,
}

impl Image8 {
    /// Wraps a buffer; `None` when its length does not match the shape.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * channels).then_some(Image8 { width, height, channels, data })
    }

    /// The rectangle `[left, left + width) x [top, top + height)`, which
    /// must lie inside the image (the caller validates crop sizes).
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Image8 {
        assert!(
            left + width <= self.width && top + height <= self.height,
            "crop outside the image (a caller bug: crop sizes are validated)"
        );
        let c = self.channels;
        let mut data = Vec::with_capacity(width * height * c);
        for y in top..top + height {
            let row = (y * self.width + left) * c;
            data.extend_from_slice(&self.data[row..row + width * c]);
        }
        Image8 { width, height, channels: c, data }
    }
}

/// Per-output-pixel filter windows along one axis: the first input index,
/// the number of inputs, and `ksize` fixed-point weights per output pixel.
struct Coeffs {
    ksize: usize,
    /// (first input index, number of inputs) per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` weights in 22-bit fixed point.
    weights: Vec<i32>,
}

/// Pillow's bilinear (triangle) filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the
/// bilinear filter over the whole input range `[0, in_size)`.
fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 1.0;
    // Pillow computes the box bounds in float and the scale in double.
    let scale = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; the result is clamped at 0
        // right after, so truncation and floor agree where it matters.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, out) in row.iter_mut().enumerate().take(n) {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            // Round half away from zero, as Pillow's normalize_coeffs_8bpc.
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            *out = if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, weights }
}

/// Pillow's `clip8`: the accumulator back to 0..=255.
#[inline]
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Which separable pass runs first. The order changes the result by a grey
/// level here and there, because the intermediate image is rounded to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow 13: vertical first when the height shrinks by more than twice
    /// as many pixels as the width (`in_h - out_h > 2 * (in_w - out_w)`,
    /// which includes every "wider and shorter" resize), else horizontal
    /// first. Fitted on 890 random size pairs against Pillow 13.0.0 with no
    /// exception (Pillow PR #9549).
    #[default]
    Pillow13,
    /// Pillow up to 12: always horizontal first.
    HorizontalFirst,
}

/// `PIL.Image.resize((out_w, out_h), Image.BILINEAR)` on an 8-bit image
/// (modes L, LA-premultiplied, RGB, RGBa: every channel alike), as
/// Pillow 13 does it.
pub fn resize_bilinear(src: &Image8, out_w: usize, out_h: usize) -> Image8 {
    resize_bilinear_ordered(src, out_w, out_h, PassOrder::Pillow13)
}

/// [`resize_bilinear`] with an explicit pass order (Pillow before 13 always
/// ran the horizontal pass first).
pub fn resize_bilinear_ordered(src: &Image8, out_w: usize, out_h: usize, order: PassOrder) -> Image8 {
    let c = src.channels;
    if out_w == src.width && out_h == src.height {
        return src.clone();
    }
    if out_w == 0 || out_h == 0 || src.width == 0 || src.height == 0 {
        return Image8 { width: out_w, height: out_h, channels: c, data: vec![0; out_w * out_h * c] };
    }
    // Pillow skips a pass whose size does not change (no filtering at all
    // along that axis).
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let vertical_first = match order {
        PassOrder::Pillow13 => {
            out_h < src.height && (src.height - out_h) as i64 > 2 * (src.width as i64 - out_w as i64)
        }
        PassOrder::HorizontalFirst => false,
    };
    match (need_h, need_v) {
        (true, false) => horizontal(src, &precompute(src.width, out_w), 0, src.height),
        (false, true) => vertical(src, &precompute(src.height, out_h), 0),
        _ if vertical_first => {
            let tmp = vertical(src, &precompute(src.height, out_h), 0);
            horizontal(&tmp, &precompute(src.width, out_w), 0, out_h)
        }
        _ => {
            // Horizontal pass over only the rows the vertical pass reads.
            let vert = precompute(src.height, out_h);
            let first = vert.bounds[0].0;
            let (lmin, ln) = vert.bounds[out_h - 1];
            let tmp = horizontal(src, &precompute(src.width, out_w), first, lmin + ln - first);
            vertical(&tmp, &vert, first)
        }
    }
}

/// Pillow's horizontal pass on `rows` rows starting at `first_row`.
fn horizontal(src: &Image8, coeffs: &Coeffs, first_row: usize, rows: usize) -> Image8 {
    let c = src.channels;
    let out_w = coeffs.bounds.len();
    let mut data = vec![0u8; rows * out_w * c];
    for y in 0..rows {
        let in_row = &src.data[(y + first_row) * src.width * c..(y + first_row + 1) * src.width * c];
        let out_row = &mut data[y * out_w * c..(y + 1) * out_w * c];
        for (xx, &(xmin, n)) in coeffs.bounds.iter().enumerate() {
            let k = &coeffs.weights[xx * coeffs.ksize..xx * coeffs.ksize + n];
            for ch in 0..c {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate() {
                    acc += i32::from(in_row[(xmin + x) * c + ch]) * w;
                }
                out_row[xx * c + ch] = clip8(acc);
            }
        }
    }
    Image8 { width: out_w, height: rows, channels: c, data }
}

/// Pillow's vertical pass; `row_shift` is subtracted from the window
/// starts when `src` holds only the rows from `row_shift` on.
fn vertical(src: &Image8, coeffs: &Coeffs, row_shift: usize) -> Image8 {
    let stride = src.width * src.channels;
    let out_h = coeffs.bounds.len();
    let mut data = vec![0u8; out_h * stride];
    for (yy, &(ymin, n)) in coeffs.bounds.iter().enumerate() {
        let k = &coeffs.weights[yy * coeffs.ksize..yy * coeffs.ksize + n];
        let ymin = ymin - row_shift;
        let out_row = &mut data[yy * stride..(yy + 1) * stride];
        for (i, out) in out_row.iter_mut().enumerate() {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                acc += i32::from(src.data[(ymin + y) * stride + i]) * w;
            }
            *out = clip8(acc);
        }
    }
    Image8 { width: src.width, height: out_h, channels: src.channels, data }
}

/// Source indices of Pillow's nearest resize along one axis
/// (`ImagingScaleAffine`: start at half a step, accumulate the step in
/// double, truncate). Entries outside the input are `None` (left at 0).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<Option<usize>> {
    let step = f64::from(in_size as f32) / out_size as f64;
    let mut pos = step * 0.5;
    (0..out_size)
        .map(|_| {
            let i = if pos < 0.0 { -1 } else { pos as i64 };
            pos += step;
            (i >= 0 && (i as usize) < in_size).then_some(i as usize)
        })
        .collect()
}

/// `PIL.Image.resize(size, NEAREST)`, which Pillow uses for palette and
/// bilevel images whatever filter is asked for.
pub fn resize_nearest(src: &Image8, out_w: usize, out_h: usize) -> Image8 {
    let c = src.channels;
    if out_w == src.width && out_h == src.height {
        return src.clone();
    }
    let xs = nearest_indices(src.width, out_w);
    let ys = nearest_indices(src.height, out_h);
    let mut data = vec![0u8; out_w * out_h * c];
    for (y, yi) in ys.iter().enumerate() {
        let Some(yi) = *yi else { continue };
        for (x, xi) in xs.iter().enumerate() {
            let Some(xi) = *xi else { continue };
            let s = (yi * src.width + xi) * c;
            let d = (y * out_w + x) * c;
            data[d..d + c].copy_from_slice(&src.data[s..s + c]);
        }
    }
    Image8 { width: out_w, height: out_h, channels: c, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Image8 {
        let data = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect();
        Image8::new(w, h, 1, data).unwrap()
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10, 3), (3, 10), (448, 392), (1024, 448), (7, 7), (1, 5)] {
            let c = precompute(i, o);
            for xx in 0..o {
                let (_, n) = c.bounds[xx];
                let s: i32 = c.weights[xx * c.ksize..xx * c.ksize + n].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{i}->{o} pixel {xx}: {s}");
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        for v in [0u8, 1, 127, 254, 255] {
            let img = gray(37, 23, |_, _| v);
            for (w, h) in [(160, 160), (5, 3), (37, 50), (1, 1)] {
                let out = resize_bilinear(&img, w, h);
                assert!(out.data.iter().all(|&p| p == v), "value {v} to {w}x{h}");
            }
        }
    }

    #[test]
    fn same_size_is_a_copy_and_halving_averages_pairs() {
        let img = gray(8, 2, |x, y| (x * 20 + y) as u8);
        assert_eq!(resize_bilinear(&img, 8, 2), img);
        // Halving widens the triangle to support 2: output 0 (centre 1.0)
        // reads inputs 0..3 with weights (0.75, 0.75, 0.25) / 1.75 -> 28.57,
        // output 1 (centre 3.0) inputs 1..4 with (0.25, 0.75, 0.75) / 1.75
        // -> 91.43 (values checked against Pillow 13).
        let row = gray(4, 1, |x, _| [0, 40, 80, 120][x]);
        assert_eq!(resize_bilinear(&row, 2, 1).data, vec![29, 91]);
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // 4x6 -> 5x2: wider and shorter, so Pillow 13 filters vertically
        // first. Pillow 13.0.0 gives exactly `want`; horizontal first rounds
        // one pixel differently (122 instead of 121).
        let img = gray(4, 6, |x, y| ((y * 4 + x) * 51 + 26).rem_euclid(256) as u8);
        let want = vec![153, 121, 102, 101, 114, 87, 123, 148, 153, 144];
        assert_eq!(resize_bilinear(&img, 5, 2).data, want);
        let hv = resize_bilinear_ordered(&img, 5, 2, PassOrder::HorizontalFirst).data;
        assert_eq!(hv[1], 122);
        assert_eq!(hv.iter().zip(&want).filter(|(a, b)| a != b).count(), 1);
        // Square shrink: horizontal first in every Pillow version.
        let sq = gray(9, 9, |x, y| (x * 29 + y * 7) as u8);
        assert_eq!(resize_bilinear(&sq, 4, 4), resize_bilinear_ordered(&sq, 4, 4, PassOrder::HorizontalFirst));
    }

    #[test]
    fn nearest_picks_pixel_centres() {
        // Checked against Pillow 13: [0, 40, 80, 120] -> [40, 120] and
        // each input twice when doubling.
        let row = gray(4, 1, |x, _| (x * 40) as u8);
        assert_eq!(resize_nearest(&row, 2, 1).data, vec![40, 120]);
        assert_eq!(resize_nearest(&row, 8, 1).data, vec![0, 0, 40, 40, 80, 80, 120, 120]);
    }

    #[test]
    fn crop_takes_the_rectangle() {
        let img = gray(4, 3, |x, y| (y * 4 + x) as u8);
        assert_eq!(img.crop(1, 1, 2, 2).data, vec![5, 6, 9, 10]);
    }
}
