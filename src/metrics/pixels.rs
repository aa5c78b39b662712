//! A class's pixels, reduced as the maps arrive, and the pixel metrics
//! computed from them after one sort.
//!
//! Each pixel costs 4 bytes (normal pixels: the order-preserving key of its
//! float32 score) or 8 (anomalous pixels: key and the index of its
//! 8-connected GT region); the label is implied by which list the pixel is
//! in. An MVTec-sized run (1.1·10^8 pixels) holds ~0.5 GB, never float64
//! copies of everything.

use rayon::prelude::*;

use super::aupro::{self, SortedPixels};
use super::binary::{self, BinaryMetrics};
use super::components;
use super::keys;
use super::MetricValue;

/// One image's pixels, ready to be appended to its class (made on a worker
/// thread, appended in input order).
#[derive(Debug, Clone, Default)]
pub struct ReducedImage {
    neg: Vec<u32>,
    /// `key << 32 | region` with the region numbered from 0 in this image.
    pos: Vec<u64>,
    areas: Vec<u32>,
}

/// Splits a map by its binary GT mask and labels the mask's regions.
/// The error (a reason) is for a non-finite score.
pub fn reduce(map: &[f32], mask: &[bool], rows: usize, cols: usize) -> Result<ReducedImage, String> {
    if map.len() != rows * cols || mask.len() != map.len() {
        return Err(format!(
            "map of {} values and mask of {} values for a {rows} x {cols} image",
            map.len(),
            mask.len()
        ));
    }
    if let Some(i) = map.iter().position(|v| !v.is_finite()) {
        return Err(format!("the map has a non-finite value ({}) at row {}, column {}", map[i], i / cols, i % cols));
    }
    let n_pos = mask.iter().filter(|&&m| m).count();
    let mut out =
        ReducedImage { neg: Vec::with_capacity(map.len() - n_pos), pos: Vec::with_capacity(n_pos), areas: Vec::new() };
    if n_pos == 0 {
        out.neg.extend(map.iter().map(|&v| keys::key(v)));
        return Ok(out);
    }
    let regions = components::label8(mask, rows, cols);
    for ((&v, &m), &r) in map.iter().zip(mask).zip(&regions.labels) {
        if m {
            out.pos.push((keys::key(v) as u64) << 32 | (r - 1) as u64);
        } else {
            out.neg.push(keys::key(v));
        }
    }
    out.areas = regions.areas;
    Ok(out)
}

/// All pixels of one class so far.
#[derive(Debug, Clone, Default)]
pub struct PixelSet {
    neg: Vec<u32>,
    pos: Vec<u64>,
    areas: Vec<u32>,
    images: usize,
}

/// Settings of the pixel metrics.
#[derive(Debug, Clone, Copy)]
pub struct PixelOptions {
    /// FPR limit of both AUPRO variants (official: 0.3).
    pub fpr_limit: f64,
    /// Thresholds of the official AUPRO (200).
    pub num_thresholds: u32,
    /// Keep thinned ROC/PR curves and the official PRO curve for plots.
    pub plots: bool,
}

impl Default for PixelOptions {
    fn default() -> Self {
        PixelOptions { fpr_limit: 0.3, num_thresholds: aupro::OFFICIAL_THRESHOLDS, plots: false }
    }
}

/// The pixel metrics of one class.
#[derive(Debug, Clone)]
pub struct PixelMetrics {
    /// P-AUROC, P-AP, P-F1max and the F1-optimal pixel threshold, or why
    /// they are undefined.
    pub binary: Result<BinaryMetrics<f32>, String>,
    /// The official AUPRO (200 thresholds).
    pub aupro: MetricValue,
    /// The official AUPRO's (FPR, PRO) points below the FPR limit, by
    /// increasing FPR, when curves are kept for plots and AUPRO is defined.
    pub pro_curve: Option<Vec<(f64, f64)>>,
    /// AUPRO over all thresholds (anomalib's definition, float64).
    pub aupro_exact: MetricValue,
    /// Pixels in the class.
    pub pixels: usize,
    /// GT-positive pixels.
    pub positive_pixels: usize,
    /// 8-connected GT regions.
    pub regions: usize,
}

impl PixelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one image's pixels.
    pub fn push(&mut self, img: ReducedImage) -> Result<(), String> {
        let offset = self.areas.len();
        if offset + img.areas.len() > u32::MAX as usize {
            return Err("more than 2^32 GT regions in one class".to_string());
        }
        self.neg.extend_from_slice(&img.neg);
        self.pos.extend(img.pos.iter().map(|&p| p + offset as u64));
        self.areas.extend_from_slice(&img.areas);
        self.images += 1;
        Ok(())
    }

    /// Images appended.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Sorts the pixels and computes the metrics (sorts and the three
    /// computations run on rayon threads).
    pub fn evaluate(mut self, opts: &PixelOptions) -> PixelMetrics {
        let (neg, pos) = (&mut self.neg, &mut self.pos);
        rayon::join(|| keys::sort_u32(neg), || keys::sort_u64_by_high(pos));
        let px = SortedPixels { neg: &self.neg, pos: &self.pos, areas: &self.areas };
        let ((bin, official), exact) = rayon::join(
            || {
                rayon::join(
                    || binary_of(&px, opts.plots),
                    || aupro::official_with_curve(&px, opts.num_thresholds, opts.fpr_limit),
                )
            },
            || aupro::exact(&px, opts.fpr_limit),
        );
        let (official, pro_curve) = match official {
            Ok((value, curve)) => (Ok(value), opts.plots.then_some(curve)),
            Err(why) => (Err(why), None),
        };
        PixelMetrics {
            binary: bin,
            aupro: official,
            pro_curve,
            aupro_exact: exact,
            pixels: self.neg.len() + self.pos.len(),
            positive_pixels: self.pos.len(),
            regions: self.areas.len(),
        }
    }
}

fn binary_of(px: &SortedPixels, plots: bool) -> Result<BinaryMetrics<f32>, String> {
    if px.pos.is_empty() {
        return Err("no anomalous (GT-positive) pixels".to_string());
    }
    if px.neg.is_empty() {
        return Err("no normal (GT-negative) pixels".to_string());
    }
    let m = binary::from_sorted(px.pos.len(), |i| (px.pos[i] >> 32) as u32, px.neg.len(), |j| px.neg[j], plots)
        .ok_or("one pixel label only")?;
    Ok(BinaryMetrics {
        auroc: m.auroc,
        ap: m.ap,
        f1max: m.f1max,
        f1_score_at: keys::value(m.f1_score_at),
        f1_below: m.f1_below.map(keys::value),
        curves: m.curves,
    })
}

/// Evaluates several classes in parallel (one rayon task per class).
pub fn evaluate_all(sets: Vec<PixelSet>, opts: &PixelOptions) -> Vec<PixelMetrics> {
    sets.into_par_iter().map(|s| s.evaluate(opts)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_metrics_match_pair_metrics() {
        // Two 3x3 images; the binary metrics must equal those of the
        // flattened (score, label) pairs.
        let maps = [[0.1f32, 0.2, 0.9, 0.3, 0.8, 0.8, 0.0, 0.1, 0.5], [0.4f32, 0.4, 0.4, 0.2, 0.7, 0.1, 0.3, 0.3, 0.6]];
        let masks = [
            [false, false, true, false, true, true, false, false, false],
            [true, false, false, false, false, false, false, false, true],
        ];
        let mut set = PixelSet::new();
        let mut pairs = Vec::new();
        for (m, k) in maps.iter().zip(&masks) {
            set.push(reduce(m, k, 3, 3).unwrap()).unwrap();
            pairs.extend(m.iter().zip(k).map(|(&s, &l)| (s as f64, l)));
        }
        let got = set.evaluate(&PixelOptions::default());
        let want = binary::from_pairs(&pairs, false).unwrap();
        let b = got.binary.unwrap();
        assert_eq!(b.auroc, want.auroc);
        assert_eq!(b.ap, want.ap);
        assert_eq!(b.f1max, want.f1max);
        assert_eq!(b.f1_score_at as f64, want.f1_score_at);
        // Regions: image 1 has one 8-connected region of 3 pixels (the
        // diagonal joins them); image 2 has two separate corner pixels.
        assert_eq!(got.regions, 3);
        assert_eq!(got.positive_pixels, 5);
    }

    #[test]
    fn non_finite_maps_are_refused() {
        let e = reduce(&[0.0, f32::NAN], &[false, false], 1, 2).unwrap_err();
        assert!(e.contains("non-finite") && e.contains("column 1"), "{e}");
    }

    #[test]
    fn normal_only_class_is_undefined() {
        let mut set = PixelSet::new();
        set.push(reduce(&[0.1, 0.2], &[false, false], 1, 2).unwrap()).unwrap();
        let m = set.evaluate(&PixelOptions::default());
        assert!(m.binary.is_err() && m.aupro.is_err() && m.aupro_exact.is_err());
    }
}
