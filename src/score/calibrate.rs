//! Decision thresholds from scored lines (`dinomaly-calibrate`): nothing is
//! recomputed, the scores and maps `dinomaly-score` wrote are used.
//!
//! Rules, with "anomalous when score > threshold" (as `dinomaly-metrics`):
//! - `target-fpr` (from good images only, or the good ones of labelled
//!   lines): the lowest threshold whose false-positive rate on the good
//!   calibration images is at most the target F, exactly
//!   `dinomaly-metrics --target-fpr`'s ([`thresholds::at_target_fpr`]):
//!   with the n good scores sorted in decreasing order g_1 >= g_2 >= ...,
//!   the threshold is g_{m+1}, m the largest count with m / n <= F. It
//!   equals numpy's `np.quantile(good, 1 - F, method="inverted_cdf")`
//!   (tests/fixtures/gen/calibration.py checks it on many cases). With
//!   fewer than 1/F good images m is 0: the threshold is the highest good
//!   score and the target cannot be told from 0, hence the warning
//!   ([`needed_good_images`]).
//! - `f1` (labelled lines): the F1-optimal threshold, as `dinomaly-metrics`
//!   reports it ([`thresholds::f1_threshold`]).
//!
//! Per class when lines carry `class`, plus a global threshold from all
//! lines pooled (for classes that were not calibrated and lines without a
//! class). Pixel thresholds apply the same rules to the maps' pixels: the
//! target FPR over the pixels of good images, F1 over all pixels with the
//! masks as ground truth (`dinomaly-metrics`' P-F1max point).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::data::map_geometry::MapGeometry;
use crate::data::mask::load_mask;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::io::calibration::{CalibrationCounts, ScoreRange, ScoreRanges, Thresholds};
use crate::io::npy;
use crate::metrics::{binary, keys, thresholds};
use crate::{Error, Result};

/// How thresholds are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rule {
    /// The lowest threshold with FPR <= --target-fpr on the good images.
    TargetFpr,
    /// The F1-optimal threshold (needs defective lines).
    F1,
}

impl Rule {
    /// The name stored in the calibration.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TargetFpr => "target-fpr",
            Rule::F1 => "f1",
        }
    }
}

/// One usable scored line.
#[derive(Debug, Clone)]
pub struct CalLine {
    /// 1-based line number, for messages.
    pub line: usize,
    /// The record's class; `None` for lines without one.
    pub class: Option<String>,
    /// Label 1; lines labelled 0 or unlabelled are good images.
    pub defective: bool,
    pub score: f64,
    /// The map `dinomaly-score --maps-dir` wrote.
    pub map: Option<PathBuf>,
    /// Ground-truth mask.
    pub mask: Option<PathBuf>,
    /// The map's geometry (to bring masks to it).
    pub geometry: Option<MapGeometry>,
}

impl CalLine {
    /// The key of the line's class in counts ("" for none).
    fn key(&self) -> &str {
        self.class.as_deref().unwrap_or("")
    }
}

/// The image-level result.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCalibration {
    pub thresholds: Thresholds,
    pub ranges: ScoreRanges,
    /// Per class key ("" for lines without a class).
    pub counts: BTreeMap<String, CalibrationCounts>,
    /// Warnings for stderr (too few good images for the target).
    pub warnings: Vec<String>,
}

/// The fewest good images a target FPR `f` can be met with a threshold that
/// flags some of them: n >= 1/f (with fewer, one false positive is already
/// a rate above f, so the threshold is the highest good score). `None` for
/// f = 0 (no image may be flagged: any number).
pub fn needed_good_images(f: f64) -> Option<u64> {
    (f > 0.0).then(|| {
        // The smallest n with 1/n <= f, by the same correctly rounded
        // division the rule uses.
        let mut n = (1.0 / f).floor().max(1.0) as u64;
        while 1.0 / (n as f64) > f {
            n += 1;
        }
        while n > 1 && 1.0 / ((n - 1) as f64) <= f {
            n -= 1;
        }
        n
    })
}

/// The largest m with m / n <= f (m < n for f < 1): how many of n good
/// images the target allows to be flagged.
fn allowed_false_positives(n: usize, f: f64) -> usize {
    let mut m = ((f * n as f64).floor() as usize).min(n.saturating_sub(1));
    while m > 0 && m as f64 / n as f64 > f {
        m -= 1;
    }
    while m + 1 < n && (m + 1) as f64 / n as f64 <= f {
        m += 1;
    }
    m
}

/// The target-FPR threshold of float32 values of good pixels (reordered):
/// the (m+1)-th largest, m = [`allowed_false_positives`]. `None` when empty.
pub fn target_fpr_threshold_f32(values: &mut [f32], f: f64) -> Option<f32> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let m = allowed_false_positives(n, f);
    let (_, nth, _) = values.select_nth_unstable_by(n - 1 - m, f32::total_cmp);
    Some(*nth)
}

/// A class name for messages.
fn describe(key: &str) -> String {
    if key.is_empty() {
        "the lines without a class".to_string()
    } else {
        format!("class '{key}'")
    }
}

/// The threshold and score range of one group of (score, defective) pairs.
fn group_threshold(
    what: &str,
    pairs: &[(f64, bool)],
    rule: Rule,
    target_fpr: f64,
    warnings: &mut Vec<String>,
) -> Result<(f64, ScoreRange)> {
    let good = pairs.iter().filter(|p| !p.1).count();
    let defective = pairs.len() - good;
    let min = pairs.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let max = pairs.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if pairs.len() < 2 || min == max {
        return Err(Error::config(format!(
            "{what}: {} calibration image(s), all scored {min}: a threshold and the normalised score need \
             at least two different scores (give more images)",
            pairs.len()
        )));
    }
    let threshold = match rule {
        Rule::TargetFpr => {
            if good == 0 {
                return Err(Error::config(format!(
                    "{what}: no good images ({defective} defective): the target-FPR rule needs good images \
                     (lines labelled 0 or unlabelled)"
                )));
            }
            if let Some(needed) = needed_good_images(target_fpr).filter(|&n| (good as u64) < n) {
                warnings.push(format!(
                    "{what}: {good} good images; a target FPR of {target_fpr} needs at least {needed} \
                     (with fewer, the threshold is the highest good score and the rate on new images is not known)"
                ));
            }
            thresholds::at_target_fpr(pairs, target_fpr)
                .ok_or_else(|| Error::config(format!("{what}: no target-FPR threshold")))?
                .threshold
        }
        Rule::F1 => {
            if good == 0 || defective == 0 {
                return Err(Error::config(format!(
                    "{what}: {good} good and {defective} defective images: --rule f1 needs both \
                     (labelled lines); --rule target-fpr needs good images only"
                )));
            }
            let m =
                binary::from_pairs(pairs, false).ok_or_else(|| Error::config(format!("{what}: F1 is undefined")))?;
            thresholds::f1_threshold(&m)
        }
    };
    Ok((threshold, ScoreRange { min, max }))
}

/// Image thresholds per class (for lines with a class) and global (all lines).
pub fn image_calibration(lines: &[CalLine], rule: Rule, target_fpr: f64) -> Result<ImageCalibration> {
    if lines.is_empty() {
        return Err(Error::config("no scored lines to calibrate from"));
    }
    let mut groups: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    for l in lines {
        groups.entry(l.key().to_string()).or_default().push((l.score, l.defective));
    }
    let mut warnings = Vec::new();
    let mut per_class = BTreeMap::new();
    let mut per_class_range = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (key, pairs) in &groups {
        let good = pairs.iter().filter(|p| !p.1).count() as u64;
        counts.insert(key.clone(), CalibrationCounts { good, defective: pairs.len() as u64 - good });
        if key.is_empty() {
            continue;
        }
        let (t, range) = group_threshold(&describe(key), pairs, rule, target_fpr, &mut warnings)?;
        per_class.insert(key.clone(), t);
        per_class_range.insert(key.clone(), range);
    }
    let all: Vec<(f64, bool)> = lines.iter().map(|l| (l.score, l.defective)).collect();
    // The global threshold of a single-class set is that class's: its
    // warning was given already.
    let mut global_warnings = Vec::new();
    let (global, global_range) = group_threshold("all lines", &all, rule, target_fpr, &mut global_warnings)?;
    if groups.len() > 1 || groups.contains_key("") {
        warnings.extend(global_warnings);
    }
    Ok(ImageCalibration {
        thresholds: Thresholds { global, per_class },
        ranges: ScoreRanges { global: global_range, per_class: per_class_range },
        counts,
        warnings,
    })
}

/// What the pixel calibration used.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelCalibration {
    pub thresholds: Thresholds,
    /// "target-fpr" or "f1".
    pub rule: &'static str,
    /// Maps read.
    pub images: usize,
    /// Notes for stderr.
    pub notes: Vec<String>,
}

/// One image's map pixels (and ground truth with the F1 rule).
struct PixelImage {
    key: String,
    defective: bool,
    values: Vec<f32>,
    truth: Option<Vec<bool>>,
}

/// Pixel thresholds from the lines' maps, per class and global. `None`
/// (with the reason) when the lines have no maps. `source` names the input
/// in errors.
pub fn pixel_calibration(
    lines: &[CalLine],
    rule: Rule,
    target_fpr: f64,
    source: &str,
) -> Result<std::result::Result<PixelCalibration, String>> {
    let with_map = lines.iter().filter(|l| l.map.is_some()).count();
    if with_map == 0 {
        return Ok(Err("the lines have no \"map\" (score with --maps-dir): no pixel threshold".to_string()));
    }
    if with_map < lines.len() {
        let first = lines.iter().find(|l| l.map.is_none()).map_or(0, |l| l.line);
        return Ok(Err(format!(
            "{} of {} lines have no \"map\" (first: line {first}): no pixel threshold",
            lines.len() - with_map,
            lines.len()
        )));
    }
    let mut notes = Vec::new();
    let use_f1 = rule == Rule::F1 && {
        let missing = lines.iter().filter(|l| l.defective && l.mask.is_none()).count();
        if missing > 0 {
            notes.push(format!(
                "{missing} defective lines have no \"mask\": the pixel threshold uses the target-FPR rule \
                 ({target_fpr}) on the good images' pixels"
            ));
        }
        missing == 0
    };
    let at_line =
        |line: usize, e: Error| Error::Record { source_name: source.to_string(), line, reason: e.to_string() };
    let geometry = lines.iter().find_map(|l| l.geometry).unwrap_or(MapGeometry::OFFICIAL);
    let prep = Preprocess::new(geometry.resize, geometry.crop, ResizeBackend::Pil)?;
    // Maps of good images (and, for F1, all images with their masks).
    let wanted: Vec<&CalLine> = lines.iter().filter(|l| use_f1 || !l.defective).collect();
    let loaded: Vec<Result<PixelImage>> = wanted
        .par_iter()
        .map(|l| {
            let path = l.map.as_deref().unwrap_or(std::path::Path::new(""));
            let map = npy::read_f32_2d(path).map_err(|e| at_line(l.line, e))?;
            if let Some(i) = map.data.iter().position(|v| !v.is_finite()) {
                return Err(at_line(
                    l.line,
                    Error::NonFinite(format!("{}: non-finite map value {} at index {i}", path.display(), map.data[i])),
                ));
            }
            let truth = if use_f1 {
                Some(match &l.mask {
                    Some(m) => load_mask(m, &prep, (map.rows, map.cols))
                        .map_err(|e| at_line(l.line, e))?
                        .into_iter()
                        .map(|v| v > 0.0)
                        .collect(),
                    None => vec![false; map.data.len()],
                })
            } else {
                None
            };
            Ok(PixelImage { key: l.key().to_string(), defective: l.defective, values: map.data, truth })
        })
        .collect();
    let images: Vec<PixelImage> = loaded.into_iter().collect::<Result<_>>()?;
    let mut groups: BTreeMap<String, Vec<&PixelImage>> = BTreeMap::new();
    for img in &images {
        groups.entry(img.key.clone()).or_default().push(img);
    }
    let threshold_of = |what: &str, imgs: &[&PixelImage]| -> Result<f64> {
        if use_f1 {
            let (mut pos, mut neg) = (Vec::new(), Vec::new());
            for img in imgs {
                let truth = img.truth.as_deref().unwrap_or(&[]);
                for (&v, &t) in img.values.iter().zip(truth) {
                    if t {
                        pos.push(keys::key(v));
                    } else {
                        neg.push(keys::key(v));
                    }
                }
            }
            keys::sort_u32(&mut pos);
            keys::sort_u32(&mut neg);
            let m = binary::from_sorted(pos.len(), |i| keys::value(pos[i]), neg.len(), |j| keys::value(neg[j]), false)
                .ok_or_else(|| {
                    Error::config(format!("{what}: the masks mark no anomalous pixel or every pixel: no pixel F1"))
                })?;
            Ok(thresholds::f1_threshold_f32(&m))
        } else {
            let mut good: Vec<f32> =
                imgs.iter().filter(|i| !i.defective).flat_map(|i| i.values.iter().copied()).collect();
            target_fpr_threshold_f32(&mut good, target_fpr)
                .map(f64::from)
                .ok_or_else(|| Error::config(format!("{what}: no good images' maps for the pixel threshold")))
        }
    };
    let mut per_class = BTreeMap::new();
    for (key, imgs) in &groups {
        if !key.is_empty() {
            per_class.insert(key.clone(), threshold_of(&describe(key), imgs)?);
        }
    }
    let all: Vec<&PixelImage> = images.iter().collect();
    let global = threshold_of("all lines", &all)?;
    Ok(Ok(PixelCalibration {
        thresholds: Thresholds { global, per_class },
        rule: if use_f1 { "f1" } else { "target-fpr" },
        images: images.len(),
        notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, class: Option<&str>, defective: bool, score: f64) -> CalLine {
        CalLine { line: i, class: class.map(str::to_string), defective, score, map: None, mask: None, geometry: None }
    }

    #[test]
    fn allowed_false_positives_is_the_largest_count_within_the_target() {
        for n in 1..300usize {
            for f in [0.0, 0.001, 0.01, 0.05, 0.07, 0.1, 0.29, 0.3, 0.5, 0.999] {
                let m = allowed_false_positives(n, f);
                let brute = (0..n).rev().find(|&m| m as f64 / n as f64 <= f).unwrap_or(0);
                assert_eq!(m, brute, "n {n} f {f}");
            }
        }
    }

    #[test]
    fn needed_images_is_one_over_the_target() {
        assert_eq!(needed_good_images(0.01), Some(100));
        assert_eq!(needed_good_images(0.05), Some(20));
        assert_eq!(needed_good_images(0.3), Some(4));
        assert_eq!(needed_good_images(0.5), Some(2));
        assert_eq!(needed_good_images(0.0), None);
        for f in [0.001, 0.01, 0.03, 0.07, 0.29] {
            let n = needed_good_images(f).unwrap();
            assert_eq!(allowed_false_positives(n as usize, f), 1, "{f}");
            assert_eq!(allowed_false_positives(n as usize - 1, f), 0, "{f}");
        }
    }

    #[test]
    fn pixel_quantile_matches_the_image_rule() {
        let values: Vec<f32> = (0..997).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        for f in [0.0, 0.001, 0.01, 0.1, 0.5] {
            let pairs: Vec<(f64, bool)> = values.iter().map(|&v| (f64::from(v), false)).collect();
            let expected = thresholds::at_target_fpr(&pairs, f).unwrap().threshold;
            let mut v = values.clone();
            assert_eq!(f64::from(target_fpr_threshold_f32(&mut v, f).unwrap()), expected, "{f}");
        }
    }

    #[test]
    fn classes_get_their_own_thresholds_and_the_global_one_pools_them() {
        let mut lines = Vec::new();
        for i in 0..10 {
            lines.push(line(i, Some("a"), false, 0.1 * i as f64));
            lines.push(line(100 + i, Some("b"), false, 10.0 + i as f64));
        }
        let c = image_calibration(&lines, Rule::TargetFpr, 0.1).unwrap();
        // 10 good each, 10 % -> one may exceed: the second highest.
        assert_eq!(c.thresholds.per_class["a"], 0.8);
        assert_eq!(c.thresholds.per_class["b"], 18.0);
        // 20 pooled, two may exceed: the third highest.
        assert_eq!(c.thresholds.global, 17.0);
        assert_eq!(c.ranges.per_class["b"], ScoreRange { min: 10.0, max: 19.0 });
        assert_eq!(c.ranges.global, ScoreRange { min: 0.0, max: 19.0 });
        assert_eq!(c.counts["a"], CalibrationCounts { good: 10, defective: 0 });
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Too few for 1 %: warned, per class and pooled.
        let c = image_calibration(&lines, Rule::TargetFpr, 0.01).unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("class 'a': 10 good images; a target FPR of 0.01 needs at least 100"));
    }

    #[test]
    fn bad_sets_are_refused_naming_the_class() {
        let only_defective = vec![line(1, Some("a"), false, 0.1), line(2, Some("a"), false, 0.2), {
            let mut l = line(3, Some("b"), true, 0.3);
            l.defective = true;
            l
        }];
        let mut two_b = only_defective.clone();
        two_b.push(line(4, Some("b"), true, 0.5));
        let err = image_calibration(&two_b, Rule::TargetFpr, 0.1).unwrap_err().to_string();
        assert!(err.contains("class 'b': no good images (2 defective)"), "{err}");
        let err = image_calibration(&only_defective, Rule::TargetFpr, 0.1).unwrap_err().to_string();
        assert!(err.contains("class 'b': 1 calibration image(s)"), "{err}");
        let single = vec![line(1, None, false, 0.4)];
        let err = image_calibration(&single, Rule::TargetFpr, 0.1).unwrap_err().to_string();
        assert!(err.contains("all lines: 1 calibration image(s), all scored 0.4"), "{err}");
        let err = image_calibration(&two_b[..2], Rule::F1, 0.1).unwrap_err().to_string();
        assert!(err.contains("class 'a': 2 good and 0 defective images: --rule f1"), "{err}");
        assert!(image_calibration(&[], Rule::TargetFpr, 0.1).is_err());
    }

    #[test]
    fn f1_is_the_metrics_threshold() {
        let scores = [(0.1, false), (0.4, false), (0.35, true), (0.8, true), (0.2, false)];
        let lines: Vec<CalLine> = scores.iter().enumerate().map(|(i, &(s, d))| line(i, None, d, s)).collect();
        let c = image_calibration(&lines, Rule::F1, 0.1).unwrap();
        let m = binary::from_pairs(&scores, false).unwrap();
        assert_eq!(c.thresholds.global, thresholds::f1_threshold(&m));
        assert!(c.thresholds.per_class.is_empty());
        assert_eq!(c.counts[""], CalibrationCounts { good: 3, defective: 2 });
    }
}
