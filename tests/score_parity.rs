//! End-to-end scoring parity: the `dinomaly-score` binary on anomalib 2.7 and
//! official Dinomaly checkpoints reproduces each reference's own scores and
//! maps on real images (tests/fixtures/score/, made by
//! tests/fixtures/gen/score.py: a tiny DINOv2-reg4 Dinomaly, embed 64, target
//! layers 0 and 1, float16-exact weights).
//!
//! - anomalib: anomalib's `read_image` + its pre-processor's transforms +
//!   `DinomalyModel`'s eval forward; the map compared is its raw
//!   `anomaly_map` at the 392 crop (what our scorer writes for anomalib).
//! - official: PIL resize 448 + crop 392, DINOv2's scale-factor pos-embed
//!   interpolation, MLP biases, the official post-processing; the map is the
//!   smoothed 256x256 map. These references equal the official repository's
//!   own code run on the same files (checked when the fixtures were made:
//!   scores within 2.2e-7 relative, maps within 3.6e-7).
//!
//! Tolerances (float32): scores 1e-4 relative, maps 1e-4 absolute (map values
//! lie in [0, 2]). Maps are compared at the rows and columns the fixture
//! stores (every 7th / 5th pixel, first and last included).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::Tensor;

use crate::util;

const SCORE_REL_TOL: f64 = 1e-4;
const MAP_ABS_TOL: f64 = 1e-4;
/// The tiny encoder has no registry size, so its target layers are given.
const LAYERS: &str = "0,1";
const IMAGES: [&str; 2] = ["texture_rgb.jpg", "brick_gray.png"];

fn fixture(name: &str) -> PathBuf {
    util::fixtures().join("score").join(name)
}

fn references() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture("reference.safetensors"))
        .expect("read tests/fixtures/score/reference.safetensors")
        .into_iter()
        .collect()
}

fn values_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).expect("tensor values")
}

fn indices(t: &Tensor) -> Vec<usize> {
    Vec::<i64>::try_from(t.flatten(0, -1))
        .expect("index values")
        .into_iter()
        .map(|i| usize::try_from(i).expect("non-negative index"))
        .collect()
}

/// Image paths, one per line, in fixture order.
fn image_list() -> String {
    IMAGES.iter().map(|n| format!("{}\n", fixture(n).display())).collect()
}

/// Runs the scorer on the fixture images with `extra` flags; returns the
/// output lines.
fn score(checkpoint: &str, kind: Option<&str>, maps: &Path, extra: &[&str]) -> Vec<Value> {
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("--checkpoint")
        .arg(fixture(checkpoint))
        .args(["--layers", LAYERS, "--quiet"])
        .arg("--maps-dir")
        .arg(maps)
        .args(extra);
    if let Some(kind) = kind {
        cmd.args(["--kind", kind]);
    }
    let out = util::run(&mut cmd, &image_list());
    util::assert_code(&out, 0);
    util::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Scores `checkpoint` and compares with the `variant` references; the map
/// written must be `side` x `side`.
fn check(checkpoint: &str, kind: Option<&str>, variant: &str, side: usize, extra: &[&str]) {
    let refs = references();
    let scratch = util::Dir::new("score-parity");
    let maps = scratch.join("maps");
    std::fs::create_dir_all(&maps).expect("create maps folder");
    let lines = score(checkpoint, kind, &maps, extra);
    assert_eq!(lines.len(), IMAGES.len(), "one line per image: {lines:?}");

    let scores = values_f64(&refs[&format!("{variant}.score")]);
    let expected_maps = &refs[&format!("{variant}.map")];
    let rows = indices(&refs[&format!("{variant}.map.rows")]);
    let cols = indices(&refs[&format!("{variant}.map.cols")]);
    let what = format!("{checkpoint} (--kind {})", kind.unwrap_or("detected"));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line["image"].as_str(),
            Some(fixture(IMAGES[i]).to_str().expect("utf-8 path")),
            "{what}: lines in input order"
        );
        let score = line["score"].as_f64().unwrap_or_else(|| panic!("{what}: no score in {line}"));
        let rel = (score - scores[i]).abs() / scores[i].abs();
        eprintln!("{what} {}: score {score} vs {} ({rel:e} relative)", IMAGES[i], scores[i]);
        assert!(rel <= SCORE_REL_TOL, "{what} {}: score {score}, expected {} ({rel:e} relative)", IMAGES[i], scores[i]);

        let map_path = line["map"].as_str().unwrap_or_else(|| panic!("{what}: no map in {line}"));
        let map = dinomaly::io::npy::read_f32_2d(map_path).expect("read map");
        assert_eq!((map.rows, map.cols), (side, side), "{what}: map size");
        let expected = values_f64(&expected_maps.get(i as i64));
        let mut worst = 0f64;
        for (r, &y) in rows.iter().enumerate() {
            for (c, &x) in cols.iter().enumerate() {
                let ours = f64::from(map.data[y * map.cols + x]);
                worst = worst.max((ours - expected[r * cols.len() + c]).abs());
            }
        }
        eprintln!("{what} {}: map max abs diff {worst:e}", IMAGES[i]);
        assert!(worst <= MAP_ABS_TOL, "{what} {}: map max abs diff {worst:e}", IMAGES[i]);
    }
}

#[test]
fn anomalib_lightning_checkpoint_reproduces_anomalib() {
    // anomalib's map output is the raw mean map at the crop size.
    check("anomalib.ckpt", Some("anomalib"), "anomalib", 392, &[]);
}

#[test]
fn anomalib_checkpoints_are_detected_and_reproduce_anomalib() {
    check("anomalib.ckpt", None, "anomalib", 392, &["--batch", "1"]);
    check("anomalib.pt", None, "anomalib", 392, &[]);
}

#[test]
fn official_checkpoint_reproduces_the_official_code() {
    check("official.pth", Some("official"), "official", 256, &[]);
    check("official.pth", None, "official", 256, &["--batch", "1"]);
}

fn failure(checkpoint: &str, args: &[&str]) -> String {
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("--checkpoint").arg(fixture(checkpoint)).args(args);
    let out = util::run(&mut cmd, &image_list());
    util::assert_code(&out, 2);
    assert!(util::stdout(&out).is_empty(), "no output lines on a setup error");
    util::stderr(&out)
}

#[test]
fn a_kind_that_contradicts_the_keys_is_named() {
    let err = failure("official.pth", &["--kind", "anomalib", "--layers", LAYERS]);
    assert!(err.contains("keys are those of an official checkpoint") && err.contains("use --kind official"), "{err}");
    let err = failure("anomalib.pt", &["--kind", "official", "--layers", LAYERS]);
    assert!(err.contains("keys are those of an anomalib checkpoint") && err.contains("use --kind anomalib"), "{err}");
}

#[test]
fn layers_must_exist_and_be_given_for_unknown_sizes() {
    let err = failure("anomalib.ckpt", &[]);
    assert!(err.contains("no default target layers") && err.contains("pass --layers"), "{err}");
    let err = failure("official.pth", &["--layers", "0,5"]);
    assert!(err.contains("layer 5") && err.contains("2 blocks"), "{err}");
}
