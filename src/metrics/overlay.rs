//! Heatmap overlays for people: an anomaly map coloured with a jet-like
//! colormap and alpha-blended over the image the model saw, written as PNG.
//!
//! These images are for looking at, not for measuring: the exact values go
//! to `.npy` maps. The map is normalised to [0, 1] either per image
//! (min-max, like the official `visualize`, so every image shows its own
//! hottest region in red even when it is normal) or over a fixed range
//! (values clamped, so colours mean the same score in every image), then
//! resized to the image with a triangle (bilinear) filter, coloured, and
//! blended: `out = (1 - alpha) * image + alpha * colour`. The official code
//! instead adds OpenCV's JET image to the picture and divides by the max; the
//! colormap here is the piecewise-linear MATLAB jet (dark blue, blue, cyan,
//! yellow, red, dark red), close to but not OpenCV's table.
//!
//! `dinomaly-score --overlay` uses one scale for every image:
//! [`threshold_scale`], 0 (normal) dark blue and the pixel threshold at the
//! colormap's midpoint (`jet(0.5)`, light green), so red always means "well
//! above the threshold" and a normal image stays blue. On the photo
//! ([`render_on_photo`]) the border the centre crop cut off is hatched grey:
//! the model never saw it, so it is neither normal nor defective.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::{ExtendedColorType, ImageBuffer, ImageEncoder, Luma, Rgb, RgbImage};

use crate::io::atomic::AtomicFile;
use crate::{Error, Result};

/// How map values become colour positions in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// Each map's minimum is blue and its maximum red (a constant map is
    /// all blue).
    MinMax,
    /// `low` is blue and `high` red in every map; values outside are
    /// clamped.
    Fixed { low: f32, high: f32 },
}

/// Overlay settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overlay {
    /// Normalisation of the map.
    pub scale: Scale,
    /// Weight of the heatmap in the blend, in [0, 1].
    pub alpha: f32,
}

impl Default for Overlay {
    /// Per-image min-max, half heatmap, half image.
    fn default() -> Self {
        Overlay { scale: Scale::MinMax, alpha: 0.5 }
    }
}

/// A map in row-major order on the host, (height, width).
#[derive(Clone, Copy, Debug)]
pub struct MapView<'a> {
    pub values: &'a [f32],
    pub height: usize,
    pub width: usize,
}

/// The colour of map values at the pixel threshold on every overlay.
pub const THRESHOLD_COLOUR: Rgb<u8> = Rgb([128, 255, 128]);

/// The one scale of all overlays: 0 (normal) to twice the pixel threshold
/// `t`, so `t` sits at the colormap's midpoint ([`THRESHOLD_COLOUR`]).
pub fn threshold_scale(t: f32) -> Result<Scale> {
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::config(format!("the pixel threshold for overlays must be a positive number, got {t}")));
    }
    Ok(Scale::Fixed { low: 0.0, high: 2.0 * t })
}

/// The overlay of a photo-space map (the photo's size, NaN where not
/// inspected) on the photo: `scale` must be fixed (one scale for all
/// images); not-inspected pixels are hatched grey, diagonal dark lines over
/// the photo greyed by half.
pub fn render_on_photo(photo: &RgbImage, map: MapView<'_>, scale: Scale, alpha: f32) -> Result<RgbImage> {
    let Scale::Fixed { low, high } = scale else {
        return Err(Error::config("overlays on the photo use a fixed scale, not a per-image one"));
    };
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::config(format!("overlay alpha must be between 0 and 1, got {alpha}")));
    }
    let (width, height) = photo.dimensions();
    if map.width != width as usize || map.height != height as usize || map.values.len() != map.width * map.height {
        return Err(Error::config(format!(
            "photo-space map is {}x{}, the photo {}x{}",
            map.height, map.width, height, width
        )));
    }
    if !(low.is_finite() && high.is_finite() && low < high) {
        return Err(Error::config(format!("overlay range must be two finite numbers, low < high; got {low}..{high}")));
    }
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let base = photo.get_pixel(x, y);
        let value = map.values[y as usize * map.width + x as usize];
        if value.is_nan() {
            // Hatching: one dark line every 8 pixels along the diagonal.
            if (x + y) % 8 < 2 {
                return Rgb([64, 64, 64]);
            }
            return Rgb(std::array::from_fn(|c| ((base[c] as f32 + 128.0) / 2.0).round() as u8));
        }
        let heat = jet((value - low) / (high - low));
        Rgb(std::array::from_fn(|c| ((1.0 - alpha) * base[c] as f32 + alpha * heat[c] as f32).round() as u8))
    }))
}

/// The jet colour of `t` in [0, 1] (clamped).
pub fn jet(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let channel = |centre: f32| {
        let v = (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
        (v * 255.0).round() as u8
    };
    Rgb([channel(3.0), channel(2.0), channel(1.0)])
}

/// The map's values mapped to [0, 1] by `scale`.
pub fn normalise(map: MapView<'_>, scale: Scale) -> Result<Vec<f32>> {
    check_map(map)?;
    let (low, high) = match scale {
        Scale::MinMax => {
            map.values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
        }
        Scale::Fixed { low, high } => {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(Error::config(format!(
                    "overlay range must be two finite numbers, low < high; got {low}..{high}"
                )));
            }
            (low, high)
        }
    };
    let span = high - low;
    Ok(map.values.iter().map(|&v| if span > 0.0 { ((v - low) / span).clamp(0.0, 1.0) } else { 0.0 }).collect())
}

/// The overlay of `map` on `image` (the crop the model saw), at the image's
/// size.
pub fn render(image: &RgbImage, map: MapView<'_>, overlay: &Overlay) -> Result<RgbImage> {
    if !(0.0..=1.0).contains(&overlay.alpha) {
        return Err(Error::config(format!("overlay alpha must be between 0 and 1, got {}", overlay.alpha)));
    }
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::config("overlay image is empty"));
    }
    let unit = normalise(map, overlay.scale)?;
    let grey: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(map.width as u32, map.height as u32, unit)
        .ok_or_else(|| Error::config("overlay map buffer does not match its size"))?;
    // Resize the normalised values, not the colours, so interpolation stays
    // on the colormap's path. Triangle = bilinear.
    let grey = imageops::resize(&grey, width, height, FilterType::Triangle);
    let alpha = overlay.alpha;
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let heat = jet(grey.get_pixel(x, y)[0]);
        let base = image.get_pixel(x, y);
        Rgb(std::array::from_fn(|c| ((1.0 - alpha) * base[c] as f32 + alpha * heat[c] as f32).round() as u8))
    }))
}

/// Writes `image` as PNG to `dest` atomically (temporary name, then rename).
pub fn write_png(dest: &Path, image: &RgbImage) -> Result<()> {
    let mut file = AtomicFile::create(dest)?;
    PngEncoder::new(&mut file)
        .write_image(image.as_raw(), image.width(), image.height(), ExtendedColorType::Rgb8)
        .map_err(|e| Error::format(dest, format!("cannot encode png: {e}")))?;
    file.commit()
}

/// Renders the overlay and writes it to `dest` as PNG.
pub fn write_overlay(dest: &Path, image: &RgbImage, map: MapView<'_>, overlay: &Overlay) -> Result<()> {
    write_png(dest, &render(image, map, overlay)?)
}

fn check_map(map: MapView<'_>) -> Result<()> {
    if map.height == 0 || map.width == 0 || map.values.len() != map.height * map.width {
        return Err(Error::config(format!(
            "overlay map has {} values for {}x{}",
            map.values.len(),
            map.height,
            map.width
        )));
    }
    if map.values.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("overlay map has non-finite values".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(values: &[f32], height: usize, width: usize) -> MapView<'_> {
        MapView { values, height, width }
    }

    #[test]
    fn jet_runs_from_dark_blue_to_dark_red() {
        assert_eq!(jet(0.0), Rgb([0, 0, 128]));
        assert_eq!(jet(0.5), Rgb([128, 255, 128]));
        assert_eq!(jet(1.0), Rgb([128, 0, 0]));
        assert_eq!(jet(-3.0), jet(0.0));
        assert_eq!(jet(7.0), jet(1.0));
    }

    #[test]
    fn normalisation_min_max_fixed_and_constant() {
        let m = [1.0, 2.0, 3.0, 5.0];
        assert_eq!(normalise(view(&m, 2, 2), Scale::MinMax).unwrap(), vec![0.0, 0.25, 0.5, 1.0]);
        let fixed = Scale::Fixed { low: 2.0, high: 4.0 };
        assert_eq!(normalise(view(&m, 2, 2), fixed).unwrap(), vec![0.0, 0.0, 0.5, 1.0]);
        assert_eq!(normalise(view(&[7.0; 4], 2, 2), Scale::MinMax).unwrap(), vec![0.0; 4]);
        let bad = Scale::Fixed { low: 1.0, high: 1.0 };
        assert!(normalise(view(&m, 2, 2), bad).is_err());
        assert!(normalise(view(&m, 3, 2), Scale::MinMax).is_err());
        assert!(normalise(view(&[0.0, f32::NAN], 1, 2), Scale::MinMax).is_err());
    }

    #[test]
    fn render_blends_at_the_image_size() {
        let image = RgbImage::from_pixel(6, 4, Rgb([200, 100, 0]));
        let map = [0.0, 1.0];
        let out = render(&image, view(&map, 1, 2), &Overlay::default()).unwrap();
        assert_eq!(out.dimensions(), (6, 4));
        // Left edge is the map's minimum (dark blue), right edge its maximum.
        assert_eq!(*out.get_pixel(0, 0), Rgb([100, 50, 64]));
        assert_eq!(*out.get_pixel(5, 3), Rgb([164, 50, 0]));
        let only_image = Overlay { alpha: 0.0, ..Overlay::default() };
        assert_eq!(render(&image, view(&map, 1, 2), &only_image).unwrap(), image);
        let bad = Overlay { alpha: 1.5, ..Overlay::default() };
        assert!(render(&image, view(&map, 1, 2), &bad).is_err());
    }

    #[test]
    fn the_threshold_has_one_colour_and_the_border_is_hatched() {
        let scale = threshold_scale(0.2).unwrap();
        assert_eq!(scale, Scale::Fixed { low: 0.0, high: 0.4 });
        assert!(threshold_scale(0.0).is_err() && threshold_scale(f32::NAN).is_err());
        let photo = RgbImage::from_pixel(4, 1, Rgb([10, 20, 30]));
        let map = [0.2, 0.0, 1.0, f32::NAN];
        let out = render_on_photo(&photo, view(&map, 1, 4), scale, 1.0).unwrap();
        assert_eq!(*out.get_pixel(0, 0), THRESHOLD_COLOUR);
        assert_eq!(THRESHOLD_COLOUR, jet(0.5));
        assert_eq!(*out.get_pixel(1, 0), jet(0.0));
        assert_eq!(*out.get_pixel(2, 0), jet(1.0));
        // x + y = 3: greyed photo between hatch lines.
        assert_eq!(*out.get_pixel(3, 0), Rgb([69, 74, 79]));
        assert!(render_on_photo(&photo, view(&map, 1, 4), Scale::MinMax, 1.0).is_err());
        assert!(render_on_photo(&photo, view(&map[..2], 1, 2), scale, 1.0).is_err());
    }

    #[test]
    fn png_is_written_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.png");
        let image = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 40, y as u8 * 80, 7]));
        let map: Vec<f32> = (0..15).map(|v| v as f32).collect();
        write_overlay(&dest, &image, view(&map, 3, 5), &Overlay::default()).unwrap();
        let back = image::open(&dest).unwrap().to_rgb8();
        assert_eq!(back, render(&image, view(&map, 3, 5), &Overlay::default()).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left behind");
        assert!(write_png(&dir.path().join("missing/x.png"), &image).is_err());
    }
}
