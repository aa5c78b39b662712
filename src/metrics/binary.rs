//! ROC AUC, average precision and F1max of a binary labelling, with
//! scikit-learn's semantics, from scores sorted once.
//!
//! scikit-learn (`_binary_clf_curve`) puts one curve point at each distinct
//! score, counting as predicted positive every sample with a score greater
//! than or equal to it, so tied scores move together (a tie between a
//! positive and a negative is a diagonal step: half credit in the ROC area).
//! From those points:
//! - `roc_auc_score`: trapezoidal area under (FPR, TPR) starting at (0, 0).
//!   Here it is summed in exact integer arithmetic, 2·P·N·AUC =
//!   Σ (fp_i − fp_{i−1})(tp_i + tp_{i−1}), and divided once at the end
//!   (`drop_intermediate` only removes collinear points, so the area is the
//!   same).
//! - `average_precision_score`: Σ (R_i − R_{i−1})·P_i over the points in
//!   decreasing threshold order with R_0 = 0 (step-wise, no interpolation).
//! - F1max as the official `f1_score_max`: max over the points of
//!   2·P·R / (P + R + 1e-7), the appended (P = 1, R = 0) end point
//!   excluded.
//!
//! A labelling without positives or without negatives has no such metrics:
//! the functions return `None` (the caller warns), never a number.

/// The official F1max denominator guard, `2PR / (P + R + 1e-7)`.
pub const F1_EPS: f64 = 1e-7;

/// Calls `f(threshold, tp, fp)` for every distinct score from the highest to
/// the lowest, where tp (fp) counts positives (negatives) with a score
/// greater than or equal to the threshold. `pos(i)` and `neg(j)` give the
/// i-th and j-th smallest positive and negative scores (ascending order).
pub fn walk_desc<T: Copy + PartialOrd>(
    n_pos: usize,
    pos: impl Fn(usize) -> T,
    n_neg: usize,
    neg: impl Fn(usize) -> T,
    mut f: impl FnMut(T, u64, u64),
) {
    let (mut i, mut j) = (n_pos, n_neg);
    let (mut tp, mut fp) = (0u64, 0u64);
    while i > 0 || j > 0 {
        let t = match (i > 0, j > 0) {
            (true, true) => {
                let (a, b) = (pos(i - 1), neg(j - 1));
                if a > b {
                    a
                } else {
                    b
                }
            }
            (true, false) => pos(i - 1),
            _ => neg(j - 1),
        };
        while i > 0 && pos(i - 1) == t {
            i -= 1;
            tp += 1;
        }
        while j > 0 && neg(j - 1) == t {
            j -= 1;
            fp += 1;
        }
        f(t, tp, fp);
    }
}

/// The three threshold-free metrics of one labelling, and the F1-optimal
/// operating point.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryMetrics<T> {
    /// Area under the ROC curve.
    pub auroc: f64,
    /// Average precision.
    pub ap: f64,
    /// Maximum F1 over the curve points (official formula with 1e-7).
    pub f1max: f64,
    /// The score at which F1 is maximal (sklearn's threshold: samples with
    /// a score >= it are positive); the lowest one when several tie.
    pub f1_score_at: T,
    /// The next lower distinct score below `f1_score_at`, if any: with the
    /// rule "positive when score > threshold" this threshold gives the same
    /// F1-optimal decisions.
    pub f1_below: Option<T>,
    /// Curve points for plots (thinned), when asked for.
    pub curves: Option<Curves>,
}

/// Thinned ROC and PR curves for plotting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curves {
    /// (FPR, TPR) from (0, 0) to (1, 1).
    pub roc: Vec<(f64, f64)>,
    /// (recall, precision) in decreasing threshold order.
    pub pr: Vec<(f64, f64)>,
}

/// Points closer than this (in both axes) to the last kept one are dropped
/// from plotted curves: invisible at any plot size, and it keeps SVG files
/// of 10^7-pixel curves small.
const PLOT_STEP: f64 = 1e-3;

/// Running sums over the walk; see the module docs for the formulas.
struct Accumulator<T> {
    p: u64,
    n: u64,
    area2: u128,
    prev_tp: u64,
    prev_fp: u64,
    ap: f64,
    prev_recall: f64,
    best_f1: f64,
    best_at: Option<T>,
    best_below: Option<T>,
    awaiting_below: bool,
    curves: Option<Curves>,
}

impl<T: Copy> Accumulator<T> {
    fn new(p: u64, n: u64, plots: bool) -> Self {
        Accumulator {
            p,
            n,
            area2: 0,
            prev_tp: 0,
            prev_fp: 0,
            ap: 0.0,
            prev_recall: 0.0,
            best_f1: f64::NEG_INFINITY,
            best_at: None,
            best_below: None,
            awaiting_below: false,
            curves: plots.then(|| Curves { roc: vec![(0.0, 0.0)], pr: Vec::new() }),
        }
    }

    #[inline]
    fn point(&mut self, t: T, tp: u64, fp: u64) {
        self.area2 += (fp - self.prev_fp) as u128 * (tp + self.prev_tp) as u128;
        if self.awaiting_below {
            self.best_below = Some(t);
            self.awaiting_below = false;
        }
        // A point that adds only negatives leaves recall unchanged and lowers
        // precision: its AP term is exactly 0 (0 * P) and its F1 is below the
        // previous point's, so the divisions are skipped (most pixel
        // thresholds are such points).
        if tp == self.prev_tp && self.curves.is_none() {
            self.prev_fp = fp;
            return;
        }
        // As sklearn: precision = tp / (tp + fp), recall = tp / P, both f64.
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / self.p as f64;
        self.ap += (recall - self.prev_recall) * precision;
        let f1 = 2.0 * precision * recall / (precision + recall + F1_EPS);
        // `>=`: on ties keep the lowest threshold, like numpy's argmax over
        // sklearn's increasing-threshold order.
        if f1 >= self.best_f1 {
            self.best_f1 = f1;
            self.best_at = Some(t);
            self.best_below = None;
            self.awaiting_below = true;
        }
        if let Some(c) = self.curves.as_mut() {
            let fpr = fp as f64 / self.n as f64;
            push_thinned(&mut c.roc, (fpr, recall));
            push_thinned(&mut c.pr, (recall, precision));
        }
        self.prev_tp = tp;
        self.prev_fp = fp;
        self.prev_recall = recall;
    }

    fn finish(mut self) -> Option<BinaryMetrics<T>> {
        if self.p == 0 || self.n == 0 {
            return None;
        }
        if let Some(c) = self.curves.as_mut() {
            // Thinning may have dropped the last points; the curves must end
            // where they end.
            let last_pr = (1.0, self.p as f64 / (self.p + self.n) as f64);
            force_last(&mut c.roc, (1.0, 1.0));
            force_last(&mut c.pr, last_pr);
        }
        Some(BinaryMetrics {
            auroc: self.area2 as f64 / (2.0 * self.p as f64 * self.n as f64),
            ap: self.ap.max(0.0),
            f1max: self.best_f1,
            f1_score_at: self.best_at?,
            f1_below: self.best_below,
            curves: self.curves,
        })
    }
}

fn push_thinned(curve: &mut Vec<(f64, f64)>, p: (f64, f64)) {
    match curve.last() {
        Some(&(x, y)) if (p.0 - x).abs() < PLOT_STEP && (p.1 - y).abs() < PLOT_STEP => {}
        _ => curve.push(p),
    }
}

fn force_last(curve: &mut Vec<(f64, f64)>, p: (f64, f64)) {
    if curve.last() != Some(&p) {
        curve.push(p);
    }
}

/// The metrics from sorted positive and negative scores (ascending, as
/// accessors `pos(i)`, `neg(j)`). `None` when either side is empty.
pub fn from_sorted<T: Copy + PartialOrd>(
    n_pos: usize,
    pos: impl Fn(usize) -> T,
    n_neg: usize,
    neg: impl Fn(usize) -> T,
    plots: bool,
) -> Option<BinaryMetrics<T>> {
    let mut acc = Accumulator::new(n_pos as u64, n_neg as u64, plots);
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    walk_desc(n_pos, pos, n_neg, neg, |t, tp, fp| acc.point(t, tp, fp));
    acc.finish()
}

/// The metrics of `(score, is_positive)` pairs; scores must not be NaN.
/// `None` when one class is missing.
pub fn from_pairs(pairs: &[(f64, bool)], plots: bool) -> Option<BinaryMetrics<f64>> {
    let mut pos: Vec<f64> = pairs.iter().filter(|p| p.1).map(|p| p.0).collect();
    let mut neg: Vec<f64> = pairs.iter().filter(|p| !p.1).map(|p| p.0).collect();
    pos.sort_by(f64::total_cmp);
    neg.sort_by(f64::total_cmp);
    // -0.0 and 0.0 are one threshold: total_cmp orders them, `==` ties them.
    from_sorted(pos.len(), |i| pos[i], neg.len(), |j| neg[j], plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(labels: &[u8], scores: &[f64]) -> Vec<(f64, bool)> {
        scores.iter().zip(labels).map(|(&s, &l)| (s, l == 1)).collect()
    }

    #[test]
    fn textbook_values() {
        // sklearn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75,
        // average_precision_score(...) = 0.8333333333333333.
        let m = from_pairs(&pairs(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]), false).unwrap();
        assert_eq!(m.auroc, 0.75);
        assert!((m.ap - 0.8333333333333333).abs() < 1e-15);
        // Best F1 at threshold 0.35: P = 2/3, R = 1.
        let f1 = 2.0 * (2.0 / 3.0) * 1.0 / (2.0 / 3.0 + 1.0 + 1e-7);
        assert_eq!(m.f1max, f1);
        assert_eq!(m.f1_score_at, 0.35);
        assert_eq!(m.f1_below, Some(0.1));
    }

    #[test]
    fn ties_count_half() {
        let m = from_pairs(&pairs(&[0, 1, 0, 1], &[0.5, 0.5, 0.5, 0.5]), false).unwrap();
        assert_eq!(m.auroc, 0.5);
        assert_eq!(m.ap, 0.5);
        assert_eq!(m.f1_below, None);
        let m = from_pairs(&pairs(&[0, 1, 1], &[0.2, 0.2, 0.9]), false).unwrap();
        // Pairs (pos, neg): (0.9, 0.2) win, (0.2, 0.2) tie -> 1.5 / 2.
        assert_eq!(m.auroc, 0.75);
    }

    #[test]
    fn one_class_only_is_none() {
        assert!(from_pairs(&pairs(&[1, 1], &[0.1, 0.2]), false).is_none());
        assert!(from_pairs(&pairs(&[0, 0], &[0.1, 0.2]), false).is_none());
        assert!(from_pairs(&[], false).is_none());
    }

    #[test]
    fn skipping_negative_only_points_changes_nothing() {
        // With plots every point is evaluated; without, points that add only
        // negatives are skipped. Both must agree exactly, ties included.
        let mut state = 99u64;
        let pairs: Vec<(f64, bool)> = (0..2000)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let label = (state >> 40) % 7 == 0;
                let score = ((state >> 20) % 50) as f64 / 10.0 + if label { 0.7 } else { 0.0 };
                (score, label)
            })
            .collect();
        let a = from_pairs(&pairs, false).unwrap();
        let b = from_pairs(&pairs, true).unwrap();
        assert_eq!((a.auroc, a.ap, a.f1max), (b.auroc, b.ap, b.f1max));
        assert_eq!((a.f1_score_at, a.f1_below), (b.f1_score_at, b.f1_below));
    }

    #[test]
    fn curves_start_and_end_right() {
        let m = from_pairs(&pairs(&[0, 1, 0, 1, 1], &[0.1, 0.2, 0.3, 0.4, 0.5]), true).unwrap();
        let c = m.curves.unwrap();
        assert_eq!(c.roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(c.roc.last(), Some(&(1.0, 1.0)));
        assert_eq!(c.pr.last(), Some(&(1.0, 0.6)));
    }
}
