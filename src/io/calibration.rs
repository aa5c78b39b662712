//! Decision thresholds stored with a trained model (`dinomaly-calibrate`
//! writes them, `dinomaly-score` decides with them, `dinomaly-metrics` and
//! its report show them). They live in the checkpoint's `meta` JSON under
//! `"calibration"`, so one line of Python reads them:
//! `json.loads(safe_open(path, "pt").metadata()["meta"])["calibration"]`.
//!
//! A model calibrated per class (a unified model's records carry `class`)
//! has one threshold per class and a global one for the classes that were
//! not calibrated; a model of one class has only the global one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Thresholds on one quantity (image scores, or map pixel values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// For classes not in `per_class` (and records without a class).
    pub global: f64,
    /// Per class, by the `class` the scored records carried.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<String, f64>,
}

impl Thresholds {
    /// The threshold for a record of `class` (its own, else the global one).
    pub fn for_class(&self, class: Option<&str>) -> f64 {
        class.and_then(|c| self.per_class.get(c)).copied().unwrap_or(self.global)
    }
}

impl Calibration {
    /// The image threshold for a record of `class` and the score range of
    /// the same images: the class's own when it was calibrated, else the
    /// global ones (never a class's threshold with the global range).
    pub fn image_for_class(&self, class: Option<&str>) -> (f64, Option<ScoreRange>) {
        let range = self.image_range.as_ref();
        match class.and_then(|c| self.image.per_class.get(c).map(|t| (c, *t))) {
            Some((c, t)) => (t, range.and_then(|r| r.per_class.get(c).copied())),
            None => (self.image.global, range.map(|r| r.global)),
        }
    }
}

/// The lowest and highest calibration score of a class: the span of the
/// normalised score (`dinomaly-score`'s `"normalized_score"`, see
/// `crate::score::decision`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreRange {
    pub min: f64,
    pub max: f64,
}

/// Score ranges, global and per class, keyed as [`Thresholds`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRanges {
    /// Of all calibration images (for classes not in `per_class`).
    pub global: ScoreRange,
    /// Per class, for the classes with their own threshold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<String, ScoreRange>,
}

/// How many calibration images of a class were used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationCounts {
    pub good: u64,
    pub defective: u64,
}

/// A model's calibration: the thresholds and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Image-score thresholds: a score above is anomalous.
    pub image: Thresholds,
    /// Pixel thresholds on the anomaly maps, for locating defects; absent
    /// when the calibration lines had no maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel: Option<Thresholds>,
    /// The lowest and highest calibration image score, global and per
    /// class, for the normalised score; absent in calibrations that do not
    /// normalise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_range: Option<ScoreRanges>,
    /// The rule (`"target-fpr"`, `"f1"`, ...), as `dinomaly-calibrate` names it.
    pub rule: String,
    /// The false-positive rate aimed at, for rules that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_fpr: Option<f64>,
    /// Images used, per class (the key `""` for records without a class).
    pub counts: BTreeMap<String, CalibrationCounts>,
    /// When it was made (UTC, RFC 3339).
    pub created: String,
    /// The id of the model whose scores were used (as scored lines carry it).
    pub model: String,
    /// Anything else the calibrating tool records (its version, inputs).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_fall_back_to_the_global_one() {
        let t = Thresholds { global: 0.5, per_class: BTreeMap::from([("a".to_string(), 0.25)]) };
        assert_eq!(t.for_class(Some("a")), 0.25);
        assert_eq!(t.for_class(Some("b")), 0.5);
        assert_eq!(t.for_class(None), 0.5);
    }

    #[test]
    fn the_json_names_are_the_documented_ones() {
        let c = Calibration {
            image: Thresholds { global: 0.5, per_class: BTreeMap::new() },
            pixel: None,
            image_range: None,
            rule: "target-fpr".into(),
            target_fpr: Some(0.01),
            counts: BTreeMap::from([(String::new(), CalibrationCounts { good: 300, defective: 0 })]),
            created: "2026-12-05T08:00:00Z".into(),
            model: "0123456789abcdef".into(),
            details: Default::default(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"image": {"global": 0.5}, "rule": "target-fpr", "target_fpr": 0.01,
                "counts": {"": {"good": 300, "defective": 0}}, "created": "2026-12-05T08:00:00Z",
                "model": "0123456789abcdef"})
        );
        assert_eq!(serde_json::from_value::<Calibration>(v).unwrap(), c);
    }
}
