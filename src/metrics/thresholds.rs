//! Decision thresholds for deployment, with the rule "anomalous when
//! score > threshold" (the rule of `dinomaly-score --fail-above`).
//!
//! - F1-optimal: the operating point of F1max. scikit-learn's curve point
//!   is a score s* with "score >= s*" positive; the same decisions under
//!   the strict rule come from the next lower distinct score (or, when s*
//!   is the lowest score, the float just below it).
//! - Target FPR on normal images: the lowest threshold whose false positive
//!   rate on the normal images is at most the target. With the normal
//!   scores sorted in decreasing order n_1 >= n_2 >= ..., it is n_{m+1}
//!   where m is the largest count with m / N <= target.

use serde::Serialize;

use super::binary::BinaryMetrics;

/// A threshold reaching a target false positive rate, and what it achieves
/// on the data it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FprThreshold {
    /// The target FPR asked for.
    pub target_fpr: f64,
    /// Anomalous when score > threshold.
    pub threshold: f64,
    /// FPR on the normal images at this threshold (<= target).
    pub fpr: f64,
    /// TPR on the anomalous images at this threshold; null without any.
    pub tpr: Option<f64>,
}

/// The strict-rule threshold of the F1-optimal point.
pub fn f1_threshold(m: &BinaryMetrics<f64>) -> f64 {
    m.f1_below.unwrap_or_else(|| next_down(m.f1_score_at))
}

/// The strict-rule threshold of a pixel F1-optimal point (float32 scores).
pub fn f1_threshold_f32(m: &BinaryMetrics<f32>) -> f64 {
    m.f1_below.map(f64::from).unwrap_or_else(|| f64::from(next_down_f32(m.f1_score_at)))
}

/// The threshold with FPR <= `target` on the normal images of `pairs`
/// (score, anomalous). `None` without normal images or with a target
/// outside [0, 1).
pub fn at_target_fpr(pairs: &[(f64, bool)], target: f64) -> Option<FprThreshold> {
    if !(0.0..1.0).contains(&target) {
        return None;
    }
    let mut normal: Vec<f64> = pairs.iter().filter(|p| !p.1).map(|p| p.0).collect();
    if normal.is_empty() {
        return None;
    }
    normal.sort_by(|a, b| b.total_cmp(a));
    let n = normal.len();
    // Largest m with m / N <= target (the divisions are correctly rounded,
    // so a target written as a decimal such as 0.29 is met exactly).
    let m = (0..n).rev().find(|&m| m as f64 / n as f64 <= target).unwrap_or(0);
    let threshold = normal[m];
    let fp = normal.iter().filter(|&&s| s > threshold).count();
    let anomalous: Vec<f64> = pairs.iter().filter(|p| p.1).map(|p| p.0).collect();
    let tpr = (!anomalous.is_empty())
        .then(|| anomalous.iter().filter(|&&s| s > threshold).count() as f64 / anomalous.len() as f64);
    Some(FprThreshold { target_fpr: target, threshold, fpr: fp as f64 / n as f64, tpr })
}

/// The largest f64 below `x` (finite `x`).
fn next_down(x: f64) -> f64 {
    if x == 0.0 {
        return -f64::from_bits(1);
    }
    let bits = x.to_bits();
    f64::from_bits(if x > 0.0 { bits - 1 } else { bits + 1 })
}

/// The largest f32 below `x` (finite `x`).
fn next_down_f32(x: f32) -> f32 {
    if x == 0.0 {
        return -f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits - 1 } else { bits + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::binary;

    #[test]
    fn target_fpr_picks_the_lowest_allowed_threshold() {
        let pairs: Vec<(f64, bool)> = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
            .iter()
            .map(|&s| (s, false))
            .chain([(0.95, true), (0.65, true)])
            .collect();
        // 10% of 10 normals: one may exceed; threshold = 2nd highest = 0.9.
        let t = at_target_fpr(&pairs, 0.1).unwrap();
        assert_eq!(t.threshold, 0.9);
        assert_eq!(t.fpr, 0.1);
        assert_eq!(t.tpr, Some(0.5));
        // 0.29 -> two allowed (0.2 <= 0.29 < 0.3): threshold = 3rd highest.
        assert_eq!(at_target_fpr(&pairs, 0.29).unwrap().threshold, 0.8);
        assert_eq!(at_target_fpr(&pairs, 0.0).unwrap().threshold, 1.0);
        assert!(at_target_fpr(&pairs, 1.0).is_none());
    }

    #[test]
    fn f1_threshold_reproduces_the_f1_decisions() {
        let pairs = vec![(0.1, false), (0.4, false), (0.35, true), (0.8, true)];
        let m = binary::from_pairs(&pairs, false).unwrap();
        let t = f1_threshold(&m);
        assert_eq!(t, 0.1);
        assert!(pairs.iter().filter(|p| p.0 > t).all(|p| p.0 >= m.f1_score_at));
        // Best point at the lowest score: the float just below it.
        let pairs = vec![(0.5, true), (0.5, false), (0.7, true)];
        let m = binary::from_pairs(&pairs, false).unwrap();
        assert!(f1_threshold(&m) < 0.5 && f1_threshold(&m) > 0.4999999);
    }
}
