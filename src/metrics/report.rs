//! Per-class results, the mean over classes (the dataset number of the
//! paper), and their renderings: JSON (the default), CSV and the paper's
//! markdown table.
//!
//! A metric that is undefined for a class is null in every format and
//! gives one warning; the mean of a metric undefined for any class is null
//! too (a mean over fewer classes would not compare with the paper).

use serde_json::{json, Map, Value};

use super::binary::{self, Curves};
use super::pixels::{self, PixelOptions, PixelSet};
use super::thresholds::{self, FprThreshold};
use super::MetricValue;

/// The metrics of the paper's tables, and the exact AUPRO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    IAuroc,
    IAp,
    IF1max,
    PAuroc,
    PAp,
    PF1max,
    Aupro,
    AuproExact,
}

impl Metric {
    /// Every metric, in the paper's column order (exact AUPRO last).
    pub const ALL: [Metric; 8] = [
        Metric::IAuroc,
        Metric::IAp,
        Metric::IF1max,
        Metric::PAuroc,
        Metric::PAp,
        Metric::PF1max,
        Metric::Aupro,
        Metric::AuproExact,
    ];

    /// The JSON / CSV key.
    pub fn key(self) -> &'static str {
        match self {
            Metric::IAuroc => "i_auroc",
            Metric::IAp => "i_ap",
            Metric::IF1max => "i_f1max",
            Metric::PAuroc => "p_auroc",
            Metric::PAp => "p_ap",
            Metric::PF1max => "p_f1max",
            Metric::Aupro => "aupro",
            Metric::AuproExact => "aupro_exact",
        }
    }

    /// The paper's column title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::IAuroc => "I-AUROC",
            Metric::IAp => "I-AP",
            Metric::IF1max => "I-F1max",
            Metric::PAuroc => "P-AUROC",
            Metric::PAp => "P-AP",
            Metric::PF1max => "P-F1max",
            Metric::Aupro => "AUPRO",
            Metric::AuproExact => "AUPRO (exact)",
        }
    }

    /// Whether the metric needs maps and masks.
    pub fn is_pixel(self) -> bool {
        !matches!(self, Metric::IAuroc | Metric::IAp | Metric::IF1max)
    }
}

/// What one class contributes: its image scores and, unless image-only,
/// its pixels.
#[derive(Debug, Clone)]
pub struct ClassInput {
    /// Class name.
    pub name: String,
    /// (image score, anomalous) per image.
    pub images: Vec<(f64, bool)>,
    /// The class's pixels; `None` for image-only evaluation.
    pub pixels: Option<PixelSet>,
}

/// Settings of an evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Pixel metric settings.
    pub pixel: PixelOptions,
    /// Also find the threshold reaching this FPR on normal images.
    pub target_fpr: Option<f64>,
    /// Keep curves for plots.
    pub plots: bool,
}

/// Pixel and region counts of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelCounts {
    pub pixels: usize,
    pub anomalous: usize,
    pub regions: usize,
}

/// The results of one class.
#[derive(Debug, Clone)]
pub struct ClassResult {
    pub name: String,
    pub images: usize,
    pub anomalous: usize,
    /// The metrics computed (image ones, plus pixel ones unless image-only).
    pub values: Vec<(Metric, Option<f64>)>,
    /// Strict-rule F1-optimal image threshold.
    pub image_f1_threshold: Option<f64>,
    /// Strict-rule F1-optimal pixel threshold.
    pub pixel_f1_threshold: Option<f64>,
    /// Threshold at the target FPR on this class's normal images.
    pub target: Option<FprThreshold>,
    pub pixel_counts: Option<PixelCounts>,
    pub image_curves: Option<Curves>,
    pub pixel_curves: Option<Curves>,
    /// The official AUPRO's (FPR, PRO) points below the FPR limit, with
    /// plots and a defined AUPRO.
    pub pro_curve: Option<Vec<(f64, f64)>>,
    /// Records of this class that failed to score (lines with "error"):
    /// not in the figures ([`Report::count_failed`]).
    pub failed: usize,
}

impl ClassResult {
    /// The value of `m`, if computed and defined.
    pub fn get(&self, m: Metric) -> Option<f64> {
        self.values.iter().find(|v| v.0 == m).and_then(|v| v.1)
    }
}

/// The whole evaluation.
#[derive(Debug, Clone)]
pub struct Report {
    pub classes: Vec<ClassResult>,
    /// Mean over classes of each computed metric.
    pub mean: Vec<(Metric, Option<f64>)>,
    /// F1-optimal image threshold over all images pooled.
    pub overall_f1_threshold: Option<f64>,
    /// Target-FPR threshold over all normal images pooled.
    pub overall_target: Option<FprThreshold>,
    /// The target FPR asked for (every format then carries its thresholds).
    pub target_fpr: Option<f64>,
    /// Why some values are null (also printed on stderr by the command).
    pub warnings: Vec<String>,
    /// Settings echoed in the JSON output.
    pub settings: Map<String, Value>,
}

/// Evaluates every class (pixel work in parallel across classes).
pub fn evaluate(classes: Vec<ClassInput>, opts: &Options) -> Report {
    let pixel_opts = PixelOptions { plots: opts.plots, ..opts.pixel };
    let mut warnings = Vec::new();
    let mut names = Vec::new();
    let mut image_sets = Vec::new();
    let mut pixel_sets = Vec::new();
    let mut has_pixels = Vec::new();
    for c in classes {
        names.push(c.name);
        image_sets.push(c.images);
        has_pixels.push(c.pixels.is_some());
        pixel_sets.push(c.pixels.unwrap_or_default());
    }
    let pixel_results = pixels::evaluate_all(pixel_sets, &pixel_opts);
    let mut results = Vec::new();
    for (((name, images), with_pixels), px) in names.into_iter().zip(&image_sets).zip(has_pixels).zip(pixel_results) {
        let anomalous = images.iter().filter(|p| p.1).count();
        let mut values = Vec::new();
        let image = binary::from_pairs(images, opts.plots);
        if image.is_none() {
            warnings.push(format!(
                "class '{name}': I-AUROC, I-AP and I-F1max are null: {}",
                one_label_reason(images.len(), anomalous)
            ));
        }
        values.push((Metric::IAuroc, image.as_ref().map(|m| m.auroc)));
        values.push((Metric::IAp, image.as_ref().map(|m| m.ap)));
        values.push((Metric::IF1max, image.as_ref().map(|m| m.f1max)));
        let target = opts.target_fpr.and_then(|t| {
            let r = thresholds::at_target_fpr(images, t);
            if r.is_none() {
                warnings.push(format!("class '{name}': no target-FPR threshold: the class has no normal images"));
            }
            r
        });
        let mut result = ClassResult {
            name: name.clone(),
            images: images.len(),
            anomalous,
            values,
            image_f1_threshold: image.as_ref().map(thresholds::f1_threshold),
            pixel_f1_threshold: None,
            target,
            pixel_counts: None,
            image_curves: image.and_then(|m| m.curves),
            pixel_curves: None,
            pro_curve: None,
            failed: 0,
        };
        if with_pixels {
            // One warning per distinct reason, naming the metrics it nulls.
            let reasons = [
                (&["P-AUROC", "P-AP", "P-F1max"][..], px.binary.as_ref().err()),
                (&["AUPRO"][..], px.aupro.as_ref().err()),
                (&["AUPRO (exact)"][..], px.aupro_exact.as_ref().err()),
            ];
            for (names, why) in group_by_reason(&reasons) {
                warnings.push(format!("class '{name}': {} null: {why}", list(&names)));
            }
            let b = px.binary.as_ref().ok();
            result.values.extend([
                (Metric::PAuroc, b.map(|m| m.auroc)),
                (Metric::PAp, b.map(|m| m.ap)),
                (Metric::PF1max, b.map(|m| m.f1max)),
                (Metric::Aupro, ok(&px.aupro)),
                (Metric::AuproExact, ok(&px.aupro_exact)),
            ]);
            result.pixel_f1_threshold = b.map(thresholds::f1_threshold_f32);
            result.pixel_counts =
                Some(PixelCounts { pixels: px.pixels, anomalous: px.positive_pixels, regions: px.regions });
            result.pixel_curves = px.binary.ok().and_then(|m| m.curves);
            result.pro_curve = px.pro_curve;
        }
        results.push(result);
    }
    let mean = mean_over(&results, &mut warnings);
    let all: Vec<(f64, bool)> = image_sets.concat();
    let overall_f1_threshold = binary::from_pairs(&all, false).as_ref().map(thresholds::f1_threshold);
    let overall_target = opts.target_fpr.and_then(|t| thresholds::at_target_fpr(&all, t));
    Report {
        classes: results,
        mean,
        overall_f1_threshold,
        overall_target,
        target_fpr: opts.target_fpr,
        warnings,
        settings: Map::new(),
    }
}

fn ok(v: &MetricValue) -> Option<f64> {
    v.as_ref().ok().copied()
}

fn one_label_reason(images: usize, anomalous: usize) -> String {
    if images == 0 {
        "the class has no images".to_string()
    } else if anomalous == 0 {
        format!("all {images} images are normal")
    } else {
        format!("all {images} images are anomalous")
    }
}

fn mean_over(classes: &[ClassResult], warnings: &mut Vec<String>) -> Vec<(Metric, Option<f64>)> {
    let Some(first) = classes.first() else {
        return Vec::new();
    };
    let mut undefined: Vec<(Vec<&str>, String)> = Vec::new();
    let mean = first
        .values
        .iter()
        .map(|&(m, _)| {
            let missing: Vec<&str> = classes.iter().filter(|c| c.get(m).is_none()).map(|c| c.name.as_str()).collect();
            if !missing.is_empty() {
                let why = format!("undefined for {}", missing.join(", "));
                match undefined.iter_mut().find(|u| u.1 == why) {
                    Some(u) => u.0.push(m.title()),
                    None => undefined.push((vec![m.title()], why)),
                }
                return (m, None);
            }
            let sum: f64 = classes.iter().filter_map(|c| c.get(m)).sum();
            (m, Some(sum / classes.len() as f64))
        })
        .collect();
    for (names, why) in undefined {
        warnings.push(format!("the mean {} null: {why}", list(&names)));
    }
    mean
}

/// Groups metric names by the reason they are undefined, in order.
fn group_by_reason<'a>(items: &[(&[&'a str], Option<&'a String>)]) -> Vec<(Vec<&'a str>, &'a String)> {
    let mut out: Vec<(Vec<&str>, &String)> = Vec::new();
    for (names, why) in items {
        let Some(why) = why else { continue };
        match out.iter_mut().find(|o| o.1 == *why) {
            Some(o) => o.0.extend_from_slice(names),
            None => out.push((names.to_vec(), why)),
        }
    }
    out
}

/// "A is", "A and B are", "A, B and C are".
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("{one} is"),
        [init @ .., last] => format!("{} and {last} are", init.join(", ")),
    }
}

fn metrics_json(values: &[(Metric, Option<f64>)]) -> Value {
    let mut map = Map::new();
    for &(m, v) in values {
        map.insert(m.key().to_string(), num(v));
    }
    Value::Object(map)
}

fn num(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

fn target_json(t: &Option<FprThreshold>) -> Option<Value> {
    t.as_ref().and_then(|t| serde_json::to_value(t).ok())
}

impl Report {
    /// Records that failed to score, per class in the order of
    /// `self.classes`: kept in every format, and one warning saying the
    /// figures leave them out.
    pub fn count_failed(&mut self, per_class: &[usize]) {
        for (c, &n) in self.classes.iter_mut().zip(per_class) {
            c.failed = n;
        }
        if let Some(note) = self.failed_note() {
            self.warnings.push(note);
        }
    }

    /// Records that failed to score, over all classes.
    pub fn failed(&self) -> usize {
        self.classes.iter().map(|c| c.failed).sum()
    }

    /// "2 of 10 records failed to score ... : a 1, b 1", or `None`.
    fn failed_note(&self) -> Option<String> {
        let failed = self.failed();
        if failed == 0 {
            return None;
        }
        let images: usize = self.classes.iter().map(|c| c.images).sum();
        let per_class: Vec<String> =
            self.classes.iter().filter(|c| c.failed > 0).map(|c| format!("{} {}", c.name, c.failed)).collect();
        Some(format!(
            "{failed} of {} records failed to score (lines with \"error\") and are not in these figures: {}",
            images + failed,
            per_class.join(", ")
        ))
    }

    /// The JSON document (one object).
    pub fn to_json(&self) -> Value {
        let classes: Vec<Value> = self
            .classes
            .iter()
            .map(|c| {
                let mut obj = Map::new();
                obj.insert("class".into(), json!(c.name));
                obj.insert("images".into(), json!(c.images));
                obj.insert("anomalous".into(), json!(c.anomalous));
                obj.insert("failed".into(), json!(c.failed));
                obj.insert("metrics".into(), metrics_json(&c.values));
                if let Some(p) = c.pixel_counts {
                    obj.insert(
                        "pixels".into(),
                        json!({"pixels": p.pixels, "anomalous": p.anomalous, "regions": p.regions}),
                    );
                }
                let mut th = Map::new();
                th.insert("image_f1".into(), num(c.image_f1_threshold));
                if c.pixel_counts.is_some() {
                    th.insert("pixel_f1".into(), num(c.pixel_f1_threshold));
                }
                if let Some(t) = target_json(&c.target) {
                    th.insert("image_target_fpr".into(), t);
                }
                obj.insert("thresholds".into(), Value::Object(th));
                Value::Object(obj)
            })
            .collect();
        let mut overall = Map::new();
        overall.insert("image_f1".into(), num(self.overall_f1_threshold));
        if let Some(t) = target_json(&self.overall_target) {
            overall.insert("image_target_fpr".into(), t);
        }
        json!({
            "settings": Value::Object(self.settings.clone()),
            "failed": self.failed(),
            "classes": classes,
            "mean": metrics_json(&self.mean),
            "thresholds": {
                "rule": "anomalous when score > threshold",
                "overall": Value::Object(overall),
            },
            "warnings": self.warnings,
        })
    }

    /// CSV: one row per class then `mean`, metrics as fractions at full
    /// precision, empty cells for null; `failed` counts the records that
    /// failed to score. With a target FPR, three more columns: the threshold
    /// and the FPR and TPR it reaches (the `mean` row: over all images).
    pub fn to_csv(&self) -> String {
        let metrics: Vec<Metric> = self.mean.iter().map(|v| v.0).collect();
        let mut out = String::from("class,images,anomalous,failed");
        for m in &metrics {
            out.push(',');
            out.push_str(m.key());
        }
        if self.target_fpr.is_some() {
            out.push_str(",image_target_fpr_threshold,image_target_fpr_fpr,image_target_fpr_tpr");
        }
        out.push('\n');
        let cell = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let target_cells = |t: &Option<FprThreshold>| {
            let t = t.as_ref();
            format!(",{},{},{}", cell(t.map(|t| t.threshold)), cell(t.map(|t| t.fpr)), cell(t.and_then(|t| t.tpr)))
        };
        for c in &self.classes {
            out.push_str(&csv_field(&c.name));
            out.push_str(&format!(",{},{},{}", c.images, c.anomalous, c.failed));
            for m in &metrics {
                out.push(',');
                out.push_str(&cell(c.get(*m)));
            }
            if self.target_fpr.is_some() {
                out.push_str(&target_cells(&c.target));
            }
            out.push('\n');
        }
        let images: usize = self.classes.iter().map(|c| c.images).sum();
        let anomalous: usize = self.classes.iter().map(|c| c.anomalous).sum();
        out.push_str(&format!("mean,{images},{anomalous},{}", self.failed()));
        for (_, v) in &self.mean {
            out.push(',');
            out.push_str(&cell(*v));
        }
        if self.target_fpr.is_some() {
            out.push_str(&target_cells(&self.overall_target));
        }
        out.push('\n');
        out
    }

    /// The paper's table: classes as rows, the mean last, percent with one
    /// decimal; the seven metrics (image ones only when image-only).
    pub fn to_markdown(&self) -> String {
        let metrics: Vec<Metric> = self.mean.iter().map(|v| v.0).filter(|&m| m != Metric::AuproExact).collect();
        let mut out = String::from("| Class |");
        for m in &metrics {
            out.push_str(&format!(" {} |", m.title()));
        }
        out.push_str("\n|:--|");
        out.push_str(&"--:|".repeat(metrics.len()));
        out.push('\n');
        let pct = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |x| format!("{:.1}", x * 100.0));
        for c in &self.classes {
            out.push_str(&format!("| {} |", c.name.replace('|', "\\|")));
            for m in &metrics {
                out.push_str(&format!(" {} |", pct(c.get(*m))));
            }
            out.push('\n');
        }
        out.push_str("| Mean |");
        for m in &metrics {
            let v = self.mean.iter().find(|x| x.0 == *m).and_then(|x| x.1);
            out.push_str(&format!(" {} |", pct(v)));
        }
        out.push('\n');
        if let Some(note) = self.failed_note() {
            out.push_str(&format!("\n{note}.\n"));
        }
        if let Some(target) = self.target_fpr {
            out.push_str(&format!(
                "\nThresholds at a false positive rate of at most {target} on the normal images (anomalous when score > threshold):\n\n"
            ));
            out.push_str("| Class | Threshold | FPR (%) | TPR (%) |\n|:--|--:|--:|--:|\n");
            let row = |name: &str, t: &Option<FprThreshold>| {
                let t = t.as_ref();
                format!(
                    "| {} | {} | {} | {} |\n",
                    name.replace('|', "\\|"),
                    t.map_or_else(|| "–".to_string(), |t| t.threshold.to_string()),
                    pct(t.map(|t| t.fpr)),
                    pct(t.and_then(|t| t.tpr))
                )
            };
            for c in &self.classes {
                out.push_str(&row(&c.name, &c.target));
            }
            out.push_str(&row("All images", &self.overall_target));
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::pixels::reduce;

    fn class(name: &str, images: &[(f64, bool)], with_pixels: bool) -> ClassInput {
        let pixels = with_pixels.then(|| {
            let mut set = PixelSet::new();
            let map = [0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.05, 0.15, 0.25, 0.35];
            let mut mask = [false; 10];
            mask[1] = true;
            set.push(reduce(&map, &mask, 2, 5).unwrap()).unwrap();
            set
        });
        ClassInput { name: name.to_string(), images: images.to_vec(), pixels }
    }

    #[test]
    fn one_label_class_gives_null_and_warnings() {
        let report = evaluate(
            vec![class("a", &[(0.1, false), (0.9, true)], false), class("b", &[(0.3, true), (0.4, true)], false)],
            &Options::default(),
        );
        assert_eq!(report.classes[0].get(Metric::IAuroc), Some(1.0));
        assert_eq!(report.classes[1].get(Metric::IAuroc), None);
        assert_eq!(report.mean[0], (Metric::IAuroc, None));
        assert!(report.warnings.iter().any(|w| w.contains("class 'b'") && w.contains("anomalous")));
        assert!(report.warnings.iter().any(|w| w.contains("mean I-AUROC, I-AP and I-F1max are null")));
        let j = report.to_json();
        assert!(j["classes"][1]["metrics"]["i_auroc"].is_null());
        assert!(j["classes"][0]["metrics"].get("p_auroc").is_none());
        let md = report.to_markdown();
        assert!(md.contains("| a | 100.0 | 100.0 | 100.0 |"), "{md}");
        assert!(md.contains("| Mean | – |"), "{md}");
        let csv = report.to_csv();
        assert!(csv.starts_with("class,images,anomalous,failed,i_auroc,i_ap,i_f1max\n"), "{csv}");
        assert!(csv.contains("\nb,2,2,0,,,\n"), "{csv}");
    }

    #[test]
    fn failed_records_are_counted_in_every_format() {
        let mut report = evaluate(
            vec![class("a", &[(0.1, false), (0.9, true)], false), class("b", &[(0.2, false), (0.8, true)], false)],
            &Options::default(),
        );
        report.count_failed(&[0, 3]);
        let note = "3 of 7 records failed to score (lines with \"error\") and are not in these figures: b 3";
        assert_eq!(report.warnings, vec![note.to_string()]);
        let j = report.to_json();
        assert_eq!((j["failed"].as_u64(), j["classes"][1]["failed"].as_u64()), (Some(3), Some(3)));
        assert_eq!(j["classes"][0]["failed"].as_u64(), Some(0));
        let csv = report.to_csv();
        assert!(csv.contains("\nb,2,1,3,1,1,") && csv.contains("\nmean,4,2,3,1,1,"), "{csv}");
        assert!(report.to_markdown().contains(&format!("\n{note}.\n")), "{}", report.to_markdown());
        // Nothing failed: no note in the table.
        let clean = evaluate(vec![class("a", &[(0.1, false), (0.9, true)], false)], &Options::default());
        assert!(!clean.to_markdown().contains("failed"));
    }

    #[test]
    fn target_fpr_thresholds_are_in_every_format() {
        let opts = Options { target_fpr: Some(0.5), ..Options::default() };
        let report = evaluate(
            vec![
                class("a", &[(0.1, false), (0.3, false), (0.9, true)], false),
                class("b", &[(0.7, true), (0.8, true)], false),
            ],
            &opts,
        );
        // a: two normals, one may exceed: threshold 0.1, FPR 0.5, TPR 1.
        let t = report.classes[0].target.clone().unwrap();
        assert_eq!((t.threshold, t.fpr, t.tpr), (0.1, 0.5, Some(1.0)));
        assert!(report.classes[1].target.is_none());
        let j = report.to_json();
        assert_eq!(j["classes"][0]["thresholds"]["image_target_fpr"]["threshold"], 0.1);
        let csv = report.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(
            lines[0].ends_with(",i_f1max,image_target_fpr_threshold,image_target_fpr_fpr,image_target_fpr_tpr"),
            "{csv}"
        );
        assert!(lines[1].ends_with(",0.1,0.5,1"), "{csv}");
        assert!(lines[2].ends_with(",,,"), "{csv}");
        // The mean row: the threshold over all images pooled.
        let all = report.overall_target.clone().unwrap();
        assert!(lines[3].ends_with(&format!(",{},{},{}", all.threshold, all.fpr, all.tpr.unwrap())), "{csv}");
        let md = report.to_markdown();
        assert!(md.contains("at most 0.5 on the normal images"), "{md}");
        assert!(md.contains("| a | 0.1 | 50.0 | 100.0 |\n| b | – | – | – |\n| All images |"), "{md}");
        // Without --target-fpr: no threshold columns or table.
        let plain = evaluate(vec![class("a", &[(0.1, false), (0.9, true)], false)], &Options::default());
        assert!(!plain.to_csv().contains("target") && !plain.to_markdown().contains("Threshold"));
    }

    #[test]
    fn pixel_metrics_and_mean() {
        let report = evaluate(
            vec![class("a", &[(0.1, false), (0.9, true)], true), class("b", &[(0.2, false), (0.8, true)], true)],
            &Options::default(),
        );
        assert_eq!(report.mean.len(), 8);
        assert_eq!(report.classes[0].get(Metric::PAuroc), Some(1.0));
        assert_eq!(report.classes[0].pixel_f1_threshold, Some(0.5f32 as f64));
        let md = report.to_markdown();
        assert!(md.starts_with("| Class | I-AUROC | I-AP | I-F1max | P-AUROC | P-AP | P-F1max | AUPRO |"));
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }
}
