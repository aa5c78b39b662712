//! Anomaly maps brought back onto the original photo (`dinomaly-score
//! --map-space photo`), so that a map lines up pixel for pixel with the
//! image the camera took rather than with the model's centre crop.
//!
//! The pre-processing is resize (photo W x H to the resize size) then a
//! centre crop; the map covers the crop at the map size. In continuous
//! pixel coordinates (pixel `i` spans `[i, i + 1)`) both steps are affine,
//! so a photo pixel centre `(x + 0.5, y + 0.5)` lands on the map at
//!
//! ```text
//! u = ((x + 0.5) * resize_w / W - left) * map_w / crop_w
//! v = ((y + 0.5) * resize_h / H - top)  * map_h / crop_h
//! ```
//!
//! and the map is sampled there once, bilinearly, exactly as Pillow's
//! `Image.transform(size, Image.AFFINE, data, Image.BILINEAR)` does on a
//! mode "F" image (`libImaging/Geometry.c`: `affine_transform`,
//! `BILINEAR_HEAD`/`BILINEAR_BODY`): a sample outside `[0, map_w) x [0,
//! map_h)` is outside, inside ones use the four neighbours around `u - 0.5,
//! v - 0.5` with edge pixels repeated. One interpolation instead of three
//! (map to crop, crop into the resized frame, frame to photo) avoids
//! blurring the map three times; the test fixture is that Pillow call.
//!
//! Photo pixels whose centre falls outside the crop were never seen by the
//! model: they are NaN ("not inspected"), never 0 ("normal").

use std::path::Path;

use crate::data::map_geometry::MapGeometry;
use crate::metrics::overlay::MapView;
use crate::{Error, Result};

/// Where a map's pixels lie: `dinomaly-score --map-space`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MapSpace {
    /// The model's centre crop at the map size (the paper's evaluation and
    /// `dinomaly-metrics` use these).
    #[default]
    Crop,
    /// The original photo, pixel for pixel; the border the crop cut off is
    /// NaN (not inspected).
    Photo,
}

impl MapSpace {
    /// The name written in each line's `"map_space"`.
    pub fn name(self) -> &'static str {
        match self {
            MapSpace::Crop => "crop",
            MapSpace::Photo => "photo",
        }
    }
}

/// The (height, width) of the image at `path` from its header, as it is
/// decoded for scoring (no EXIF rotation: Pillow's `Image.open` applies
/// none either).
pub fn photo_size(path: &Path) -> Result<(usize, usize)> {
    let reader =
        image::ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(|e| Error::io(path, e))?;
    let (w, h) =
        reader.into_dimensions().map_err(|e| Error::Image { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok((h as usize, w as usize))
}

/// The map resampled onto a `photo` = (height, width) image made under
/// `geometry` (see the module header); NaN where the model did not look.
pub fn map_to_photo(map: MapView<'_>, geometry: MapGeometry, photo: (usize, usize)) -> Result<Vec<f32>> {
    if map.height == 0 || map.width == 0 || map.values.len() != map.height * map.width {
        return Err(Error::config(format!("map has {} values for {}x{}", map.values.len(), map.height, map.width)));
    }
    if photo.0 == 0 || photo.1 == 0 {
        return Err(Error::config("photo is empty"));
    }
    let (top, left) = (
        crate::data::preprocess::centre_offset(geometry.resize.0, geometry.crop.0),
        crate::data::preprocess::centre_offset(geometry.resize.1, geometry.crop.1),
    );
    // Pillow's affine coefficients: map coordinate = a * photo + c.
    let axis = |photo_side: usize, resize: usize, crop: usize, offset: usize, map_side: usize| {
        let per_crop = map_side as f64 / crop as f64;
        (resize as f64 / photo_side as f64 * per_crop, -(offset as f64) * per_crop)
    };
    let (ax, cx) = axis(photo.1, geometry.resize.1, geometry.crop.1, left, map.width);
    let (ay, cy) = axis(photo.0, geometry.resize.0, geometry.crop.0, top, map.height);
    let (mw, mh) = (map.width as i64, map.height as i64);
    let at = |x: i64, y: i64| f64::from(map.values[(y.clamp(0, mh - 1) * mw + x.clamp(0, mw - 1)) as usize]);
    let mut out = Vec::with_capacity(photo.0 * photo.1);
    for y in 0..photo.0 {
        let v = ay * (y as f64 + 0.5) + cy;
        for x in 0..photo.1 {
            let u = ax * (x as f64 + 0.5) + cx;
            if !(0.0..map.width as f64).contains(&u) || !(0.0..map.height as f64).contains(&v) {
                out.push(f32::NAN);
                continue;
            }
            let (us, vs) = (u - 0.5, v - 0.5);
            let (x0, y0) = (us.floor() as i64, vs.floor() as i64);
            let (dx, dy) = (us - x0 as f64, vs - y0 as f64);
            let row = |yy: i64| at(x0, yy) + (at(x0 + 1, yy) - at(x0, yy)) * dx;
            let top_row = row(y0);
            // Pillow repeats the first row when the lower one is off the map.
            let bottom_row = if y0 + 1 >= 0 && y0 + 1 < mh { row(y0 + 1) } else { top_row };
            out.push((top_row + (bottom_row - top_row) * dy) as f32);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_geometry_keeps_the_map_and_the_cut_border_is_nan() {
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let map = MapView { values: &values, height: 4, width: 4 };
        let same = MapGeometry { resize: (4, 4), crop: (4, 4) };
        assert_eq!(map_to_photo(map, same, (4, 4)).unwrap(), values);
        // Resize 6, crop 4: one resized pixel cut on each side, a photo of
        // 6 keeps exactly that border as NaN.
        let cut = MapGeometry { resize: (6, 6), crop: (4, 4) };
        let photo = map_to_photo(map, cut, (6, 6)).unwrap();
        assert!(photo[..6].iter().all(|v| v.is_nan()));
        assert!(photo[6].is_nan() && photo[11].is_nan());
        assert_eq!(&photo[7..11], &values[..4]);
        assert!(map_to_photo(map, cut, (0, 6)).is_err());
    }
}
