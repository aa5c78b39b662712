//! The decision `dinomaly-score` adds to a line: whether the image is
//! anomalous, the threshold used, and the normalised score.
//!
//! With a calibrated checkpoint (`dinomaly-calibrate`) the threshold is the
//! one calibrated for the line's class (the global one for other classes),
//! unless `--threshold` overrides it. The normalised score is anomalib's
//! min-max normalisation (`anomalib.metrics.min_max_normalization`,
//! `normalize`):
//!
//! ```text
//! normalized = clamp(((score - threshold) / (max - min)) + 0.5, 0, 1)
//! ```
//!
//! with `min`/`max` the lowest and highest calibration score of the class
//! (stored with the calibration), so the threshold maps to exactly 0.5 and
//! the calibration images to within [0, 1]: scores of different classes
//! and models read the same way. The rule is "anomalous when score >
//! threshold", as `dinomaly-metrics`' thresholds and `--fail-above`.
//!
//! Source: anomalib 2.7, `anomalib/post_processing/post_processor.py`,
//! `PostProcessor._normalize` (same formula and clamp; its fallback for a
//! zero range is never needed here: `dinomaly-calibrate` refuses a class
//! whose calibration scores are all equal).

use crate::io::calibration::{Calibration, ScoreRange};

/// What a line gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// score > threshold.
    pub anomalous: bool,
    /// The threshold used.
    pub threshold: f64,
    /// The normalised score, when the calibration has the class's range.
    pub normalized: Option<f64>,
}

/// anomalib's min-max normalisation: 0.5 at the threshold, clamped to [0, 1].
pub fn normalized_score(score: f64, threshold: f64, range: ScoreRange) -> f64 {
    (((score - threshold) / (range.max - range.min)) + 0.5).clamp(0.0, 1.0)
}

/// Decides lines with a calibration (and an optional fixed threshold that
/// overrides the calibrated ones).
#[derive(Debug, Clone)]
pub struct Decider {
    calibration: Calibration,
    fixed: Option<f64>,
}

impl Decider {
    /// Decides with `calibration`, or with `fixed` in place of its thresholds.
    pub fn new(calibration: Calibration, fixed: Option<f64>) -> Self {
        Decider { calibration, fixed }
    }

    /// The decision for a `score` of an image of `class`.
    pub fn decide(&self, score: f64, class: Option<&str>) -> Decision {
        let (calibrated, range) = self.calibration.image_for_class(class);
        let threshold = self.fixed.unwrap_or(calibrated);
        Decision {
            anomalous: score > threshold,
            threshold,
            normalized: range.map(|r| normalized_score(score, threshold, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::io::calibration::{ScoreRanges, Thresholds};

    fn calibration() -> Calibration {
        Calibration {
            image: Thresholds { global: 0.3, per_class: BTreeMap::from([("a".to_string(), 0.123456789)]) },
            pixel: None,
            image_range: Some(ScoreRanges {
                global: ScoreRange { min: 0.1, max: 0.9 },
                per_class: BTreeMap::from([("a".to_string(), ScoreRange { min: 0.05, max: 0.25 })]),
            }),
            rule: "target-fpr".into(),
            target_fpr: Some(0.01),
            counts: BTreeMap::new(),
            created: "2026-12-05T08:00:00Z".into(),
            model: "0123456789abcdef".into(),
            details: Default::default(),
        }
    }

    #[test]
    fn the_threshold_normalises_to_exactly_one_half() {
        let d = Decider::new(calibration(), None);
        for (score, class) in [(0.123456789, Some("a")), (0.3, Some("b")), (0.3, None)] {
            let decision = d.decide(score, class);
            assert_eq!(decision.normalized, Some(0.5), "{class:?}");
            assert!(!decision.anomalous, "at the threshold is not above it");
        }
        // A random-looking float threshold too (score - t is exactly 0).
        for t in [1e-7, 0.123_456_789_012_345_67, 3.0e5] {
            assert_eq!(normalized_score(t, t, ScoreRange { min: 0.0, max: 0.37 }), 0.5);
        }
    }

    #[test]
    fn classes_use_their_own_threshold_and_range_else_the_global_ones() {
        let d = Decider::new(calibration(), None);
        let a = d.decide(0.2, Some("a"));
        assert!(a.anomalous);
        assert_eq!(a.threshold, 0.123456789);
        // (0.2 - 0.123456789) / 0.2 + 0.5
        assert!((a.normalized.unwrap() - (0.076543211 / 0.2 + 0.5)).abs() < 1e-12);
        let b = d.decide(0.2, Some("b"));
        assert!(!b.anomalous);
        assert_eq!(b.threshold, 0.3);
        assert!((b.normalized.unwrap() - (-0.1 / 0.8 + 0.5)).abs() < 1e-12);
        // Clamped to [0, 1].
        assert_eq!(d.decide(5.0, Some("a")).normalized, Some(1.0));
        assert_eq!(d.decide(-5.0, None).normalized, Some(0.0));
    }

    #[test]
    fn a_fixed_threshold_overrides_the_calibrated_ones() {
        let d = Decider::new(calibration(), Some(0.15));
        let a = d.decide(0.15, Some("a"));
        assert_eq!((a.anomalous, a.threshold, a.normalized), (false, 0.15, Some(0.5)));
        assert!(d.decide(0.16, None).anomalous);
        // Without ranges: a decision, no normalised score.
        let mut c = calibration();
        c.image_range = None;
        assert_eq!(Decider::new(c, None).decide(0.4, None).normalized, None);
    }
}
