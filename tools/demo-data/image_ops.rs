//! Synthetic defects painted on a texture tile, each returning the changed
//! tile and its exact mask (255 where a pixel was painted, 0 elsewhere).
//!
//! Edges are hard (no blending), so the mask is exactly the set of pixels
//! whose value the defect decided.

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::Rng;

/// A tile with a defect and its mask.
pub struct Defect {
    pub image: RgbImage,
    pub mask: GrayImage,
}

/// The defect kinds, by their folder name.
pub const KINDS: [&str; 3] = ["scratch", "pasted_patch", "colour_spot"];

/// Paints defect `kind` (one of [`KINDS`]) on `tile`; `donor` is another
/// texture for pasted patches.
pub fn paint(kind: &str, tile: &RgbImage, donor: &GrayImage, rng: &mut impl Rng) -> Defect {
    match kind {
        "scratch" => scratch(tile, rng),
        "pasted_patch" => pasted_patch(tile, donor, rng),
        _ => colour_spot(tile, rng),
    }
}

/// One or two thin straight lines, 2 to 3 pixels wide, darker or lighter
/// than the surface.
fn scratch(tile: &RgbImage, rng: &mut impl Rng) -> Defect {
    let t = tile.width() as f64;
    let mut out = Defect { image: tile.clone(), mask: GrayImage::new(tile.width(), tile.height()) };
    for _ in 0..rng.random_range(1..=2) {
        let (cx, cy) = (rng.random_range(0.2 * t..0.8 * t), rng.random_range(0.2 * t..0.8 * t));
        let angle = rng.random_range(0.0..std::f64::consts::PI);
        let half_len = rng.random_range(0.15 * t..0.35 * t);
        let half_width = if rng.random_bool(0.5) { 1.0 } else { 1.5 };
        let (dx, dy) = (angle.cos() * half_len, angle.sin() * half_len);
        let (ax, ay, bx, by) = (cx - dx, cy - dy, cx + dx, cy + dy);
        let dark = rng.random_bool(0.5);
        paint_where(
            &mut out,
            |x, y| segment_distance(x, y, ax, ay, bx, by) <= half_width,
            |v, _| {
                if dark {
                    v * 0.25
                } else {
                    v + (255.0 - v) * 0.75
                }
            },
        );
    }
    out
}

/// A rectangle or ellipse copied from a random place of another texture.
fn pasted_patch(tile: &RgbImage, donor: &GrayImage, rng: &mut impl Rng) -> Defect {
    let t = tile.width();
    let w = rng.random_range(t * 3 / 20..=t * 3 / 10).max(4);
    let h = rng.random_range(t * 3 / 20..=t * 3 / 10).max(4);
    let (x0, y0) = (rng.random_range(0..=t - w), rng.random_range(0..=tile.height() - h));
    let (sx, sy) = (rng.random_range(0..=donor.width() - w), rng.random_range(0..=donor.height() - h));
    let ellipse = rng.random_bool(0.5);
    let mut out = Defect { image: tile.clone(), mask: GrayImage::new(t, tile.height()) };
    let inside = |x: f64, y: f64| {
        let (u, v) = (x - x0 as f64, y - y0 as f64);
        let in_box = u >= 0.0 && v >= 0.0 && u < w as f64 && v < h as f64;
        if !ellipse {
            return in_box;
        }
        let (nx, ny) = ((u / w as f64) * 2.0 - 1.0, (v / h as f64) * 2.0 - 1.0);
        in_box && nx * nx + ny * ny <= 1.0
    };
    paint_where(&mut out, inside, |_, (x, y)| donor.get_pixel(sx + x - x0, sy + y - y0)[0] as f64);
    out
}

/// An elliptic spot tinted rust, blue, dark or bright.
fn colour_spot(tile: &RgbImage, rng: &mut impl Rng) -> Defect {
    let t = tile.width() as f64;
    let (cx, cy) = (rng.random_range(0.15 * t..0.85 * t), rng.random_range(0.15 * t..0.85 * t));
    let (rx, ry) = (rng.random_range(0.05 * t..0.12 * t), rng.random_range(0.05 * t..0.12 * t));
    // Per channel: value * gain + offset.
    const TINTS: [([f64; 3], [f64; 3]); 4] = [
        ([1.2, 0.8, 0.6], [40.0, 10.0, 0.0]),
        ([0.6, 0.8, 1.2], [0.0, 10.0, 50.0]),
        ([0.4, 0.4, 0.4], [0.0, 0.0, 0.0]),
        ([0.6, 0.6, 0.6], [110.0, 110.0, 110.0]),
    ];
    let (gain, offset) = TINTS[rng.random_range(0..TINTS.len())];
    let mut out = Defect { image: tile.clone(), mask: GrayImage::new(tile.width(), tile.height()) };
    paint_channels_where(
        &mut out,
        |x, y| ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0,
        |v, c| v * gain[c] + offset[c],
    );
    out
}

/// Sets every pixel whose centre satisfies `inside` to `value(old grey,
/// (x, y))` in all channels and marks it in the mask.
fn paint_where(d: &mut Defect, inside: impl Fn(f64, f64) -> bool, value: impl Fn(f64, (u32, u32)) -> f64) {
    for y in 0..d.image.height() {
        for x in 0..d.image.width() {
            if !inside(x as f64 + 0.5, y as f64 + 0.5) {
                continue;
            }
            let old = d.image.get_pixel(x, y)[0] as f64;
            let v = to_u8(value(old, (x, y)));
            d.image.put_pixel(x, y, Rgb([v, v, v]));
            d.mask.put_pixel(x, y, Luma([255]));
        }
    }
}

/// As [`paint_where`], channel by channel: `value(old, channel)`.
fn paint_channels_where(d: &mut Defect, inside: impl Fn(f64, f64) -> bool, value: impl Fn(f64, usize) -> f64) {
    for y in 0..d.image.height() {
        for x in 0..d.image.width() {
            if !inside(x as f64 + 0.5, y as f64 + 0.5) {
                continue;
            }
            let old = *d.image.get_pixel(x, y);
            let new = Rgb([0, 1, 2].map(|c| to_u8(value(old[c] as f64, c))));
            d.image.put_pixel(x, y, new);
            d.mask.put_pixel(x, y, Luma([255]));
        }
    }
}

fn to_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Distance from (x, y) to the segment a-b.
fn segment_distance(x: f64, y: f64, ax: f64, ay: f64, bx: f64, by: f64) -> f64 {
    let (vx, vy) = (bx - ax, by - ay);
    let len2 = vx * vx + vy * vy;
    let s = if len2 > 0.0 { (((x - ax) * vx + (y - ay) * vy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (px, py) = (ax + s * vx, ay + s * vy);
    ((x - px).powi(2) + (y - py).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn only_masked_pixels_change() {
        let tile = RgbImage::from_fn(64, 64, |x, y| {
            let v = ((x * 7 + y * 3) % 200 + 20) as u8;
            Rgb([v, v, v])
        });
        let donor = GrayImage::from_fn(100, 100, |x, y| Luma([((x * 11 + y * 5) % 256) as u8]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for kind in KINDS {
            let d = paint(kind, &tile, &donor, &mut rng);
            let marked = d.mask.pixels().filter(|p| p[0] == 255).count();
            assert!(marked > 10, "{kind}: {marked} pixels marked");
            for (x, y, p) in d.image.enumerate_pixels() {
                if d.mask.get_pixel(x, y)[0] == 0 {
                    assert_eq!(p, tile.get_pixel(x, y), "{kind}: unmarked pixel changed");
                }
            }
        }
    }
}
