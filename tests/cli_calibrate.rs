//! `dinomaly-calibrate` and the decisions `dinomaly-score` then makes: the
//! target-FPR rule against numpy's quantile (fixture), per-class and global
//! thresholds, the normalised score (0.5 at the threshold), the model id,
//! and bad input (one line, exit 2, nothing written).

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::util::fixture::{self as fx, assert_error, parse_lines};
use crate::util::{self, assert_code, Dir};

/// `dinomaly-calibrate -c CKPT -o OUT` with `args`, lines on stdin.
fn calibrate(ckpt: &Path, out: &Path, args: &[&str], stdin: &str) -> Output {
    util::run(util::tool("dinomaly-calibrate").arg("-c").arg(ckpt).arg("-o").arg(out).args(args), stdin)
}

/// The shared model's lines for the shared records (maps when `maps`).
fn scored(maps: Option<&Path>) -> String {
    let shared = fx::shared();
    let mut cmd = fx::score(&shared.ckpt, &shared.weights);
    if let Some(dir) = maps {
        cmd.arg("--maps-dir").arg(dir);
    }
    let out = util::run(cmd.arg("-i").arg(&shared.input), "");
    assert_code(&out, 0);
    util::stdout(&out)
}

/// The calibration in a checkpoint's metadata.
fn calibration_of(ckpt: &Path) -> Value {
    let meta = dinomaly::io::checkpoint::read_meta(ckpt).expect("read meta");
    serde_json::to_value(meta.calibration.expect("a calibration")).unwrap()
}

#[test]
fn cli_calibrate_target_fpr_is_numpys_inverted_cdf_quantile() {
    let path = util::fixtures().join("calibration").join("quantile.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 100);
    for case in cases {
        let scores: Vec<f64> = case["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let f = case["target_fpr"].as_f64().unwrap();
        let pairs: Vec<(f64, bool)> = scores.iter().map(|&s| (s, false)).collect();
        let t = dinomaly::metrics::thresholds::at_target_fpr(&pairs, f).unwrap();
        assert_eq!(t.threshold, case["threshold"].as_f64().unwrap(), "n {} target {f}", scores.len());
        // numpy's mean and a count over n round alike up to the last bit.
        assert!((t.fpr - case["fpr"].as_f64().unwrap()).abs() < 1e-15, "n {} target {f}", scores.len());
        assert!(t.fpr <= f);
    }
}

#[test]
fn cli_calibrate_per_class_thresholds_decide_and_normalise() {
    let shared = fx::shared();
    let dir = Dir::new("cli_calibrate_decide");
    let maps = dir.join("maps");
    let lines = scored(Some(&maps));
    let records = parse_lines(&lines);
    let model = records[0]["model"].as_str().unwrap().to_string();
    assert_eq!(model.len(), 16);
    assert!(records.iter().all(|r| r["model"] == model.as_str()), "one model id for all lines");
    // Uncalibrated: no decision fields.
    assert!(records.iter().all(|r| r.get("threshold").is_none() && r.get("anomalous").is_none()));

    let before = fx::sha256(&shared.ckpt);
    let out_ckpt = dir.join("model.cal.safetensors");
    let out = calibrate(&shared.ckpt, &out_ckpt, &["--target-fpr", "0.5"], &lines);
    assert_code(&out, 0);
    assert_eq!(fx::sha256(&shared.ckpt), before, "the input checkpoint is never changed");
    let stored = calibration_of(&out_ckpt);
    let printed: Value = serde_json::from_str(util::stdout(&out).trim()).unwrap();
    assert_eq!(printed, stored, "stdout is the stored calibration");
    let err = util::stderr(&out);
    assert!(err.contains("class c0: threshold") && err.contains("global (other classes)"), "{err}");
    assert_eq!(stored["model"], model.as_str());
    assert_eq!(stored["rule"], "target-fpr");
    assert_eq!(stored["target_fpr"], 0.5);
    assert_eq!(stored["counts"]["c0"], serde_json::json!({"good": 2, "defective": 2}));

    // Per class: the 50 % rule on the 2 good images of a class is the lower
    // of the two (one of the two may exceed it); global: pooled.
    let good = |class: Option<&str>| -> Vec<f64> {
        let mut g: Vec<f64> = records
            .iter()
            .filter(|r| r["label"] == 0 && class.is_none_or(|c| r["class"] == c))
            .map(|r| r["score"].as_f64().unwrap())
            .collect();
        g.sort_by(f64::total_cmp);
        g
    };
    for class in ["c0", "c1"] {
        assert_eq!(stored["image"]["per_class"][class].as_f64().unwrap(), good(Some(class))[0], "{class}");
    }
    let all = good(None);
    assert_eq!(stored["image"]["global"].as_f64().unwrap(), all[all.len() - 1 - 2]);
    // Pixel thresholds from the good images' maps: the same rule over pixels.
    let mut pixels: Vec<(f64, bool)> = Vec::new();
    for r in records.iter().filter(|r| r["label"] == 0) {
        let map = dinomaly::io::npy::read_f32_2d(r["map"].as_str().unwrap()).unwrap();
        pixels.extend(map.data.iter().map(|&v| (f64::from(v), false)));
    }
    let expected = dinomaly::metrics::thresholds::at_target_fpr(&pixels, 0.5).unwrap().threshold;
    assert_eq!(stored["pixel"]["global"].as_f64().unwrap(), expected);

    // Scoring with the calibrated checkpoint: the same model id and scores,
    // decisions with each class's threshold, 0.5 exactly at it.
    let out = util::run(fx::score(&out_ckpt, &shared.weights).arg("-i").arg(&shared.input), "");
    assert_code(&out, 0);
    let decided = parse_lines(&util::stdout(&out));
    for (a, b) in records.iter().zip(&decided) {
        assert_eq!(a["score"], b["score"]);
        assert_eq!(b["model"], model.as_str(), "calibration metadata does not change the id");
        let class = b["class"].as_str().unwrap();
        let t = stored["image"]["per_class"][class].as_f64().unwrap();
        let range = &stored["image_range"]["per_class"][class];
        let (min, max) = (range["min"].as_f64().unwrap(), range["max"].as_f64().unwrap());
        let s = b["score"].as_f64().unwrap();
        assert_eq!(b["threshold"].as_f64().unwrap(), t);
        assert_eq!(b["anomalous"].as_bool().unwrap(), s > t);
        let n = b["normalized_score"].as_f64().unwrap();
        assert_eq!(n, ((s - t) / (max - min) + 0.5).clamp(0.0, 1.0));
        if s == t {
            assert_eq!(n, 0.5, "the threshold is 0.5");
        }
    }
    assert!(decided.iter().any(|r| r["normalized_score"] == 0.5), "a class's threshold is one of its scores");
    // --threshold overrides; bare --fail-above decides with the calibration.
    let out =
        util::run(fx::score(&out_ckpt, &shared.weights).args(["--threshold", "1e9"]).arg("-i").arg(&shared.input), "");
    assert!(parse_lines(&util::stdout(&out)).iter().all(|r| r["anomalous"] == false && r["threshold"] == 1e9));
    let out = util::run(fx::score(&out_ckpt, &shared.weights).arg("--fail-above").arg("-i").arg(&shared.input), "");
    assert_code(&out, 1);
    assert!(util::stderr(&out).contains("scores above the calibrated thresholds"), "{}", util::stderr(&out));
    // Bare --fail-above is refused without a calibration.
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).arg("--fail-above").arg("-i").arg(&shared.input), "");
    assert_error(&out, &["--fail-above without a value", "not calibrated"]);
}

#[test]
fn cli_calibrate_global_threshold_serves_other_classes() {
    let shared = fx::shared();
    let dir = Dir::new("cli_calibrate_global");
    let lines = scored(None);
    // Calibrate on class c0 only: c1 then uses the global threshold (c0's).
    let c0: String = lines.lines().filter(|l| l.contains("\"class\":\"c0\"")).map(|l| format!("{l}\n")).collect();
    let out_ckpt = dir.join("c0.safetensors");
    let out = calibrate(&shared.ckpt, &out_ckpt, &["--target-fpr", "0.5", "-q"], &c0);
    assert_code(&out, 0);
    assert_eq!(util::stderr(&out), "", "-q: nothing on stderr");
    let stored = calibration_of(&out_ckpt);
    assert!(stored.get("pixel").is_none(), "no maps, no pixel threshold");
    let global = stored["image"]["global"].as_f64().unwrap();
    let out = util::run(fx::score(&out_ckpt, &shared.weights).arg("-i").arg(&shared.input), "");
    for r in parse_lines(&util::stdout(&out)).iter().filter(|r| r["class"] == "c1") {
        assert_eq!(r["threshold"].as_f64().unwrap(), global);
    }
    // The F1 rule on labelled lines.
    let out = calibrate(&shared.ckpt, &dir.join("f1.safetensors"), &["--rule", "f1"], &lines);
    assert_code(&out, 0);
    assert_eq!(calibration_of(&dir.join("f1.safetensors"))["rule"], "f1");
}

#[test]
fn cli_calibrate_bad_input_is_one_line_exit_2_and_nothing_written() {
    let shared = fx::shared();
    let dir = Dir::new("cli_calibrate_bad");
    let lines = scored(None);
    let first: Vec<&str> = lines.lines().collect();
    let model = parse_lines(&lines)[0]["model"].as_str().unwrap().to_string();
    let out_ckpt: PathBuf = dir.join("out.safetensors");
    let check = |args: &[&str], stdin: &str, needles: &[&str]| {
        let out = calibrate(&shared.ckpt, &out_ckpt, args, stdin);
        assert_error(&out, needles);
        assert!(!out_ckpt.exists(), "nothing written for {needles:?}");
        assert_eq!(fx::entries(dir.path()), Vec::<String>::new(), "no temporary left");
    };
    // Lines of another model.
    let other = lines.replacen(&model, "ffffffffffffffff", 1);
    check(&[], &other, &["stdin:1: scored by model ffffffffffffffff", &model]);
    // A NaN score (JSON writes null), a malformed line, a plain path.
    let nan = format!("{}\n{}\n", first[0], first[1].replace("\"score\":", "\"score\":null,\"was\":"));
    check(&[], &nan, &["stdin:2: \"score\" is null, not a finite number"]);
    check(&[], &format!("{}\n{{\"image\": \n", first[0]), &["stdin:2: not valid JSON"]);
    // A class with no good images.
    let defective: String = lines.lines().filter(|l| l.contains("\"label\":1")).map(|l| format!("{l}\n")).collect();
    check(&[], &defective, &["class 'c0': no good images (2 defective)"]);
    // A single image.
    check(&[], &format!("{}\n", first[0]), &["1 calibration image(s), all scored"]);
    check(&[], "", &["no scored lines"]);
    // F1 without defective images.
    let good: String = lines.lines().filter(|l| l.contains("\"label\":0")).map(|l| format!("{l}\n")).collect();
    check(&["--rule", "f1"], &good, &["--rule f1 needs both"]);
    // An unwritable -o, and -o equal to -c.
    let out = calibrate(&shared.ckpt, &dir.join("absent").join("out.safetensors"), &[], &lines);
    assert_error(&out, &["-o is not writable", "does not exist"]);
    let before = fx::sha256(&shared.ckpt);
    let out = calibrate(&shared.ckpt, &shared.ckpt, &[], &lines);
    assert_error(&out, &["the input checkpoint is never changed"]);
    assert_eq!(fx::sha256(&shared.ckpt), before);
    // Out-of-range target.
    check(&["--target-fpr", "1"], &lines, &["--target-fpr", "[0, 1)"]);
}
