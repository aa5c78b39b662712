//! dinomaly-metrics against the golden fixtures of
//! tests/fixtures/gen/metrics.py (scikit-learn 1.9.1, scikit-image 0.26.0,
//! the official AUPRO procedure, anomalib 2.7.0). Tolerance: 1e-6 absolute
//! on every metric (the maths is float64; the expected values come from
//! float64 numpy, so differences are summation-order rounding, ~1e-15).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dinomaly::io::npy::{self, NpyData};
use dinomaly::metrics::binary;
use dinomaly::metrics::pixels::{reduce, PixelOptions, PixelSet};
use dinomaly::metrics::report::{self, ClassInput, Metric, Options};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn records() -> Vec<Value> {
    std::fs::read_to_string(dir().join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: got {g}, expected {w}"),
        (g, _) => panic!("{what}: got {g:?}, expected {want}"),
    }
}

/// The classes of the fixture with the processed GT of `rule` (read from
/// the .npy files, so the mask resampling is not involved).
fn class_inputs(rule: &str) -> Vec<ClassInput> {
    let mut classes: BTreeMap<String, ClassInput> = BTreeMap::new();
    let mut order = Vec::new();
    for r in records() {
        let name = r["class"].as_str().unwrap().to_string();
        let entry = classes.entry(name.clone()).or_insert_with(|| {
            order.push(name.clone());
            ClassInput {
                name: name.clone(),
                images: Vec::new(),
                pixels: Some(PixelSet::new()),
            }
        });
        entry
            .images
            .push((r["score"].as_f64().unwrap(), r["label"].as_u64().unwrap() == 1));
        let map = npy::read_f32_2d(dir().join(r["map"].as_str().unwrap())).unwrap();
        let gt = npy::read(dir().join(r["gt"][rule].as_str().unwrap())).unwrap();
        let NpyData::U8(gt) = gt.data else { panic!("gt not uint8") };
        let mask: Vec<bool> = gt.iter().map(|&v| v != 0).collect();
        let img = reduce(&map.data, &mask, map.rows, map.cols).unwrap();
        entry.pixels.as_mut().unwrap().push(img).unwrap();
    }
    order.into_iter().map(|n| classes.remove(&n).unwrap()).collect()
}

fn check_rule(rule: &str, fpr_limit: f64) {
    let exp = expected();
    let opts = Options {
        pixel: PixelOptions {
            fpr_limit,
            ..PixelOptions::default()
        },
        ..Options::default()
    };
    let report = report::evaluate(class_inputs(rule), &opts);
    let (aupro_key, exact_key) = if fpr_limit == 0.3 {
        ("aupro".to_string(), "aupro_exact".to_string())
    } else {
        (format!("aupro_fpr_limit_{fpr_limit}"), format!("aupro_exact_fpr_limit_{fpr_limit}"))
    };
    for c in &report.classes {
        let e = &exp["classes"][&c.name];
        let what = |m: &str| format!("{} {rule} {m}", c.name);
        assert_eq!(c.images as u64, e["images"].as_u64().unwrap());
        let img = &e["image"];
        close(c.get(Metric::IAuroc), &img["auroc"], &what("I-AUROC"));
        close(c.get(Metric::IAp), &img["ap"], &what("I-AP"));
        close(c.get(Metric::IF1max), &img["f1max"], &what("I-F1max"));
        let px = &e["pixel"][rule];
        let pm = &px["metrics"];
        close(c.get(Metric::PAuroc), &pm["auroc"], &what("P-AUROC"));
        close(c.get(Metric::PAp), &pm["ap"], &what("P-AP"));
        close(c.get(Metric::PF1max), &pm["f1max"], &what("P-F1max"));
        close(c.get(Metric::Aupro), &px[&aupro_key], &what("AUPRO"));
        close(c.get(Metric::AuproExact), &px[&exact_key], &what("exact AUPRO"));
        let counts = c.pixel_counts.unwrap();
        assert_eq!(counts.regions as u64, px["regions"].as_u64().unwrap(), "{}", what("regions"));
        assert_eq!(counts.anomalous as u64, px["positive_pixels"].as_u64().unwrap());
        // anomalib's float32 AUPRO is the reference of the exact variant,
        // within its own float32 rounding (measured <= 1.2e-7 here).
        if fpr_limit == 0.3 {
            if let Some(a) = px["aupro_anomalib"].as_f64() {
                let ours = c.get(Metric::AuproExact).unwrap();
                assert!((ours - a).abs() < 1e-6, "{}: {ours} vs anomalib {a}", what("exact AUPRO"));
            }
        }
    }
    // One-label classes are null, and so is every mean they touch.
    let normal = report.classes.iter().find(|c| c.name == "normal_only").unwrap();
    assert!(normal.values.iter().all(|v| v.1.is_none()));
    assert!(report.mean.iter().all(|v| v.1.is_none()));
    assert!(report.warnings.iter().any(|w| w.contains("'normal_only'")));
    assert!(report.warnings.iter().any(|w| w.contains("'flat'") && w.contains("AUPRO")));
}

#[test]
fn fixture_metrics_official_mask_rule() {
    check_rule("gt0", 0.3);
}

#[test]
fn fixture_metrics_half_mask_rule() {
    check_rule("gt05", 0.3);
}

#[test]
fn fixture_metrics_fpr_limit() {
    check_rule("gt0", 0.1);
}

#[test]
fn fixture_binary_cases_with_ties() {
    let exp = expected();
    for case in exp["binary_cases"].as_array().unwrap() {
        let labels = case["labels"].as_array().unwrap();
        let scores = case["scores"].as_array().unwrap();
        let pairs: Vec<(f64, bool)> = scores
            .iter()
            .zip(labels)
            .map(|(s, l)| (s.as_f64().unwrap(), l.as_u64().unwrap() == 1))
            .collect();
        let m = binary::from_pairs(&pairs, false).unwrap();
        let name = case["name"].as_str().unwrap();
        let e = &case["expected"];
        close(Some(m.auroc), &e["auroc"], &format!("{name} AUROC"));
        close(Some(m.ap), &e["ap"], &format!("{name} AP"));
        close(Some(m.f1max), &e["f1max"], &format!("{name} F1max"));
    }
}

#[test]
fn fixture_mean_over_classes() {
    let exp = expected();
    let keep = ["ties", "tiny", "nonbinary", "random"];
    let inputs: Vec<ClassInput> =
        class_inputs("gt0").into_iter().filter(|c| keep.contains(&c.name.as_str())).collect();
    let report = report::evaluate(inputs, &Options::default());
    let mean = |f: &dyn Fn(&Value) -> f64| keep.iter().map(|c| f(&exp["classes"][c])).sum::<f64>() / 4.0;
    let want_i = mean(&|c| c["image"]["auroc"].as_f64().unwrap());
    let want_p = mean(&|c| c["pixel"]["gt0"]["aupro"].as_f64().unwrap());
    let got = |m: Metric| report.mean.iter().find(|v| v.0 == m).unwrap().1.unwrap();
    assert!((got(Metric::IAuroc) - want_i).abs() < TOL);
    assert!((got(Metric::Aupro) - want_p).abs() < TOL);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}
