//! Defect regions of one anomaly map (`"regions"` in `dinomaly-score`'s
//! lines): the 8-connected components of the pixels above the pixel
//! threshold (`value > threshold`; NaN, i.e. not inspected, is never
//! above), labelled by [`crate::metrics::components::label8`] as
//! `skimage.measure.label` does. Each region has its bounding box
//! `[x0, y0, x1, y1]` in the map's pixels (x0, y0 inclusive, x1, y1
//! exclusive: `regionprops(...).bbox` reordered to x first), its area in
//! pixels and its peak value (`intensity_max`), strongest peak first.

use serde_json::{json, Value};

use crate::metrics::components::label8;

/// One connected region above the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// `[x0, y0, x1, y1]`: first column and row inside, last + 1.
    pub bbox: [usize; 4],
    /// Pixels in the region.
    pub area: usize,
    /// The highest map value in the region.
    pub peak: f32,
}

impl Region {
    /// The JSON object written in a line's `"regions"`.
    pub fn to_json(&self) -> Value {
        json!({"bbox": self.bbox, "area": self.area, "peak": self.peak})
    }
}

/// The regions of a row-major `height` x `width` map above `threshold`:
/// all of them, strongest peak first (ties: larger area, then raster order
/// of the region's first pixel).
pub fn find_regions(values: &[f32], height: usize, width: usize, threshold: f32) -> Vec<Region> {
    debug_assert_eq!(values.len(), height * width);
    let mask: Vec<bool> = values.iter().map(|&v| v > threshold).collect();
    let labelled = label8(&mask, height, width);
    let mut regions: Vec<Region> = labelled
        .areas
        .iter()
        .map(|&area| Region { bbox: [usize::MAX, usize::MAX, 0, 0], area: area as usize, peak: f32::NEG_INFINITY })
        .collect();
    for (i, &label) in labelled.labels.iter().enumerate() {
        if label == 0 {
            continue;
        }
        let (y, x) = (i / width, i % width);
        let region = &mut regions[label as usize - 1];
        region.bbox[0] = region.bbox[0].min(x);
        region.bbox[1] = region.bbox[1].min(y);
        region.bbox[2] = region.bbox[2].max(x + 1);
        region.bbox[3] = region.bbox[3].max(y + 1);
        region.peak = region.peak.max(values[i]);
    }
    // A stable sort keeps raster order among equal peaks and areas.
    regions.sort_by(|a, b| b.peak.total_cmp(&a.peak).then(b.area.cmp(&a.area)));
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_eight_connected_boxed_and_strongest_first() {
        #[rustfmt::skip]
        let map = [
            0.9, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.6, 0.0, 0.0, 0.7,
            0.0, 0.0, 0.0, 0.0, 0.8,
            f32::NAN, 0.0, 0.0, 0.0, 0.0,
        ];
        let regions = find_regions(&map, 4, 5, 0.5);
        assert_eq!(
            regions,
            vec![
                // Diagonal neighbours join (8-connectivity).
                Region { bbox: [0, 0, 2, 2], area: 2, peak: 0.9 },
                Region { bbox: [4, 1, 5, 3], area: 2, peak: 0.8 },
            ]
        );
        assert!(find_regions(&map, 4, 5, 0.95).is_empty());
        assert_eq!(regions[0].to_json(), json!({"bbox": [0, 0, 2, 2], "area": 2, "peak": 0.9f32}));
    }
}
