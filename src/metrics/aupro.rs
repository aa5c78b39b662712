//! AUPRO: the area under the per-region-overlap curve up to a false
//! positive rate limit, in two definitions.
//!
//! **Official** (`compute_pro` of the Dinomaly code, docs/sources.md):
//! 1. thresholds `numpy.arange(min, max, delta)` with `delta = (max - min) /
//!    200` over the class's maps, reproduced to the bit: `min`, `max` and
//!    `delta` are float32 (the maps are float32 tensors), the length is
//!    `ceil(float32((max - min) / delta))`, so it can be 201; the values are
//!    float64: `t0 = min`, `t1 = float32(min + delta)` and
//!    `t_i = t0 + i * (t1 - t0)` (numpy's fill);
//! 2. a pixel is predicted anomalous when its score `> t` (float64 compare);
//! 3. PRO(t) = mean over all 8-connected GT regions of all images of the
//!    fraction of the region predicted; FPR(t) = predicted GT-negative pixels
//!    / GT-negative pixels;
//! 4. points with FPR `<` the limit (0.3) are kept, their FPR divided by the
//!    largest kept FPR, and the trapezoidal area taken (sklearn `auc`), no
//!    (0, 0) point added.
//!
//! **Exact** (anomalib's `AUPRO`, computed in float64 rather than its float32
//! cumulative sums): one curve point per distinct score (pixels `>=` it
//! predicted), starting at (0, 0); the curve is cut at FPR = limit with a
//! linearly interpolated end point, and the area divided by the last FPR
//! (the limit, unless the curve ends before it).
//!
//! Both work on the class's pixels sorted once (see [`super::pixels`]):
//! negatives as sorted float keys, positives as sorted (key, region) pairs.
//! No pass over all pixels per threshold: FP counts are binary searches,
//! region overlaps one sweep of the positives.

use super::keys;
use super::MetricValue;

/// The official number of thresholds.
pub const OFFICIAL_THRESHOLDS: u32 = 200;

/// A class's pixels, sorted ascending by score.
#[derive(Debug, Clone, Copy)]
pub struct SortedPixels<'a> {
    /// Keys ([`keys::key`]) of GT-negative pixels, ascending.
    pub neg: &'a [u32],
    /// `key << 32 | region` of GT-positive pixels, ascending by key; the
    /// region indexes `areas`.
    pub pos: &'a [u64],
    /// Pixel count of each GT region.
    pub areas: &'a [u32],
}

impl SortedPixels<'_> {
    /// Lowest and highest score over all pixels, if there are any.
    pub fn range(&self) -> Option<(f32, f32)> {
        let lo = [self.neg.first().copied(), self.pos.first().map(|&p| (p >> 32) as u32)];
        let hi = [self.neg.last().copied(), self.pos.last().map(|&p| (p >> 32) as u32)];
        let lo = lo.into_iter().flatten().min()?;
        let hi = hi.into_iter().flatten().max()?;
        Some((keys::value(lo), keys::value(hi)))
    }

    fn check(&self) -> Result<(), String> {
        if self.areas.is_empty() {
            return Err("no anomalous (GT-positive) pixels".to_string());
        }
        if self.neg.is_empty() {
            return Err("no normal (GT-negative) pixels".to_string());
        }
        Ok(())
    }
}

/// `numpy.arange(min, max, (max - min) / num)` for float32 `min`, `max`, as
/// numpy computes it (float64 result). `None` where numpy raises (an empty
/// or zero-step range: all scores equal).
// `!(x > 0.0)` is meant: it is true for NaN too, which must be refused.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn arange_thresholds(min: f32, max: f32, num: u32) -> Option<Vec<f64>> {
    let span = max - min; // float32, as numpy's scalar arithmetic
    let delta = span / num as f32;
    if !(delta > 0.0) || !delta.is_finite() {
        return None;
    }
    // numpy: length = ceil((stop - start) / step) with the Python-level
    // operations on the float32 scalars, i.e. a float32 quotient.
    let len = (span / delta).ceil() as f64;
    if !(len >= 1.0) {
        return None;
    }
    let len = len as usize;
    let t0 = min as f64;
    let t1 = (min + delta) as f64; // float32 sum, stored as float64
    let step = t1 - t0;
    Some(
        (0..len)
            .map(|i| match i {
                0 => t0,
                1 => t1,
                _ => t0 + i as f64 * step,
            })
            .collect(),
    )
}

/// The official AUPRO with `num_th` thresholds (200) and the FPR limit
/// (0.3, strict `<`).
pub fn official(px: &SortedPixels, num_th: u32, fpr_limit: f64) -> MetricValue {
    official_with_curve(px, num_th, fpr_limit).map(|(value, _)| value)
}

/// The official AUPRO and the curve it is the area of: the (FPR, PRO)
/// points with FPR below the limit, by increasing FPR (for plots; the area
/// is theirs, trapezoidal, divided by the last FPR).
pub fn official_with_curve(px: &SortedPixels, num_th: u32, fpr_limit: f64) -> Result<(f64, Vec<(f64, f64)>), String> {
    px.check()?;
    let (min, max) = px.range().ok_or("no pixels")?;
    let th = arange_thresholds(min, max, num_th)
        .ok_or_else(|| format!("all pixel scores are equal ({min}): the official threshold range is empty"))?;
    let curve = official_curve(px, &th);
    let value = area_official(&curve, fpr_limit)?;
    // Thresholds increase, so FPR does not: reversed, it runs from low to high.
    let kept: Vec<(f64, f64)> = curve.into_iter().rev().filter(|p| p.0 < fpr_limit).collect();
    Ok((value, kept))
}

/// (FPR, PRO) at each official threshold, in increasing threshold order.
pub fn official_curve(px: &SortedPixels, th: &[f64]) -> Vec<(f64, f64)> {
    let n_neg = px.neg.len();
    // Per region, a histogram of "number of thresholds below the score":
    // a pixel with b thresholds strictly below it is predicted at t_0..t_{b-1}.
    let bins = th.len() + 1;
    let mut hist = vec![0u32; px.areas.len() * bins];
    let mut b = 0usize;
    for &p in px.pos {
        let v = keys::value((p >> 32) as u32) as f64;
        while b < th.len() && v > th[b] {
            b += 1;
        }
        hist[(p & 0xffff_ffff) as usize * bins + b] += 1;
    }
    // ratio_sum[k] = Σ_r tp_r(k) / area_r, each ratio rounded as numpy does.
    let mut ratio_sum = vec![Neumaier::default(); th.len()];
    for (r, &area) in px.areas.iter().enumerate() {
        let h = &hist[r * bins..(r + 1) * bins];
        let mut tp = 0u64;
        for k in (0..th.len()).rev() {
            tp += h[k + 1] as u64;
            ratio_sum[k].add(tp as f64 / area as f64);
        }
    }
    let regions = px.areas.len() as f64;
    th.iter()
        .zip(ratio_sum)
        .map(|(&t, s)| {
            let not_above = px.neg.partition_point(|&k| (keys::value(k) as f64) <= t);
            let fp = n_neg - not_above;
            (fp as f64 / n_neg as f64, s.sum() / regions)
        })
        .collect()
}

/// Steps 4–5 of the official procedure on the (FPR, PRO) points.
pub fn area_official(curve: &[(f64, f64)], fpr_limit: f64) -> MetricValue {
    let kept: Vec<(f64, f64)> = curve.iter().copied().filter(|p| p.0 < fpr_limit).collect();
    if kept.len() < 2 {
        return Err(format!("fewer than two official thresholds have FPR < {fpr_limit} (the official code fails)"));
    }
    let max_fpr = kept.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if max_fpr <= 0.0 {
        return Err(format!(
            "every official threshold with FPR < {fpr_limit} has FPR 0: normalising by it gives NaN in the official code"
        ));
    }
    // sklearn.metrics.auc: the x values decrease, so the area is the negated
    // trapezoid sum  -Σ (x_{k+1} - x_k)(y_{k+1} + y_k) / 2.
    let mut s = Neumaier::default();
    for w in kept.windows(2) {
        let (x0, x1) = (w[0].0 / max_fpr, w[1].0 / max_fpr);
        s.add((x1 - x0) * (w[1].1 + w[0].1) / 2.0);
    }
    Ok(-s.sum())
}

/// The exact AUPRO over every distinct score (anomalib's definition).
// `!(x > 0.0)` refuses NaN as well.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn exact(px: &SortedPixels, fpr_limit: f64) -> MetricValue {
    px.check()?;
    if !(fpr_limit > 0.0) {
        return Err(format!("the FPR limit {fpr_limit} must be positive"));
    }
    let n_neg = px.neg.len() as f64;
    let regions = px.areas.len() as f64;
    let inv_area: Vec<f64> = px.areas.iter().map(|&a| 1.0 / a as f64).collect();
    let (mut i, mut j) = (px.pos.len(), px.neg.len());
    let mut pro_sum = Neumaier::default();
    let (mut prev_f, mut prev_p) = (0.0f64, 0.0f64);
    let mut area = Neumaier::default();
    while i > 0 || j > 0 {
        let pk = (i > 0).then(|| (px.pos[i - 1] >> 32) as u32);
        let nk = (j > 0).then(|| px.neg[j - 1]);
        let t = pk.max(nk).unwrap_or(0);
        while i > 0 && (px.pos[i - 1] >> 32) as u32 == t {
            pro_sum.add(inv_area[(px.pos[i - 1] & 0xffff_ffff) as usize]);
            i -= 1;
        }
        while j > 0 && px.neg[j - 1] == t {
            j -= 1;
        }
        let f = ((px.neg.len() - j) as f64 / n_neg).min(1.0);
        let p = (pro_sum.sum() / regions).min(1.0);
        if f > fpr_limit {
            if prev_f < fpr_limit {
                let p_lim = prev_p + (p - prev_p) * (fpr_limit - prev_f) / (f - prev_f);
                area.add((fpr_limit - prev_f) * (p_lim + prev_p) / 2.0);
                return Ok(area.sum() / fpr_limit);
            }
            break;
        }
        area.add((f - prev_f) * (p + prev_p) / 2.0);
        prev_f = f;
        prev_p = p;
    }
    if prev_f <= 0.0 {
        return Err("the curve never leaves FPR 0".to_string());
    }
    Ok(area.sum() / prev_f)
}

/// Compensated (Neumaier) summation: sums of ~10^7 terms stay exact to a
/// few ulps, so results do not depend on pixel order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Neumaier {
    sum: f64,
    comp: f64,
}

impl Neumaier {
    /// Adds one term.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The compensated total.
    pub fn sum(&self) -> f64 {
        self.sum + self.comp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(neg: &[f32], pos: &[(f32, u32)]) -> (Vec<u32>, Vec<u64>) {
        let mut n: Vec<u32> = neg.iter().map(|&x| keys::key(x)).collect();
        n.sort();
        let mut p: Vec<u64> = pos.iter().map(|&(x, r)| (keys::key(x) as u64) << 32 | r as u64).collect();
        p.sort_by_key(|x| x >> 32);
        (n, p)
    }

    #[test]
    fn arange_matches_numpy() {
        // numpy 1.23 / 2.4: len(np.arange(np.float32(0), np.float32(1),
        // np.float32(1) / 200)) == 200, values i * float32(0.005).
        let th = arange_thresholds(0.0, 1.0, 200).unwrap();
        assert_eq!(th.len(), 200);
        assert_eq!(th[1], 0.005f32 as f64);
        assert_eq!(th[7], 7.0 * (0.005f32 as f64));
        assert!(arange_thresholds(0.5, 0.5, 200).is_none());
    }

    #[test]
    fn perfect_separation_is_one() {
        let (n, p) = pixels(&[0.0, 0.1, 0.2, 0.3], &[(0.8, 0), (0.9, 0), (0.7, 1)]);
        let areas = [2, 1];
        let px = SortedPixels { neg: &n, pos: &p, areas: &areas };
        assert!((exact(&px, 0.3).unwrap() - 1.0).abs() < 1e-12);
        let off = official(&px, 200, 0.3).unwrap();
        assert!((off - 1.0).abs() < 1e-12, "{off}");
    }

    #[test]
    fn exact_interpolates_at_the_limit() {
        // Negatives 0.1..0.4, one region of one pixel at 0.25: points
        // (0,0) (.25,0) (.5,0) (.5,1) (.75,1) (1,1) in FPR/PRO; with limit 0.6:
        // area from .5 to .6 at PRO 1 = 0.1, divided by 0.6.
        let (n, p) = pixels(&[0.1, 0.2, 0.3, 0.4], &[(0.25, 0)]);
        let areas = [1];
        let px = SortedPixels { neg: &n, pos: &p, areas: &areas };
        let v = exact(&px, 0.6).unwrap();
        assert!((v - 0.1 / 0.6).abs() < 1e-12, "{v}");
    }

    #[test]
    fn official_curve_is_the_one_whose_area_is_reported() {
        let neg: Vec<f32> = (0..400).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        let pos: Vec<(f32, u32)> = (0..60).map(|i| (0.5 + 0.5 * (i as f32 * 0.91).cos().abs(), i % 3)).collect();
        let (n, p) = pixels(&neg, &pos);
        let areas = [20, 20, 20];
        let px = SortedPixels { neg: &n, pos: &p, areas: &areas };
        let (value, curve) = official_with_curve(&px, 200, 0.3).unwrap();
        assert_eq!(value, official(&px, 200, 0.3).unwrap());
        assert!(curve.len() > 2 && curve.iter().all(|q| q.0 < 0.3));
        assert!(curve.windows(2).all(|w| w[0].0 <= w[1].0), "FPR increases");
        let last = curve.last().unwrap().0;
        let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum();
        assert!((area / last - value).abs() < 1e-12, "{} vs {value}", area / last);
    }

    #[test]
    fn undefined_cases_say_why() {
        let (n, p) = pixels(&[0.5, 0.5], &[(0.5, 0)]);
        let areas = [1];
        let px = SortedPixels { neg: &n, pos: &p, areas: &areas };
        assert!(official(&px, 200, 0.3).unwrap_err().contains("equal"));
        let px = SortedPixels { neg: &n, pos: &[], areas: &[] };
        assert!(exact(&px, 0.3).unwrap_err().contains("no anomalous"));
    }
}
