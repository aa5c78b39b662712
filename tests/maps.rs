//! Anomaly maps and scores against golden fixtures
//! (tests/fixtures/maps/maps.safetensors, made by tests/fixtures/gen/maps.py):
//! the official post-processing (spec section 6, cross-checked against the
//! official utils.py functions with max difference 0) and anomalib 2.7.0's own
//! DinomalyModel forward.
//!
//! Tolerances (float32): maps 1e-6 relative to the map's largest value,
//! scores 1e-6 relative (the brief asks 1e-4 and 1e-5 absolute; both are met
//! with room). The Gaussian runs in float64 here and in float32 in the
//! references, hence not bitwise.

use std::collections::HashMap;

use dinomaly::score::{Padding, PostProcess, PostProcessor};
use tch::{Device, Kind, Tensor};

const MAP_REL_TOL: f64 = 1e-6;
const SCORE_REL_TOL: f64 = 1e-6;

fn fixtures() -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/maps/maps.safetensors");
    Tensor::read_safetensors(path).expect("read maps fixture").into_iter().collect()
}

fn groups(t: &HashMap<String, Tensor>, case: &str) -> (Vec<Tensor>, Vec<Tensor>) {
    let get = |side: &str, g: usize| t[&format!("{case}.{side}.{g}")].to_kind(Kind::Float);
    ((0..2).map(|g| get("enc", g)).collect(), (0..2).map(|g| get("dec", g)).collect())
}

/// The stored map or, when it was stored at a subset of rows and columns,
/// ours at the same indices.
fn compare_map(t: &HashMap<String, Tensor>, key: &str, ours: &Tensor) -> f64 {
    let expected = &t[key];
    let ours = match (t.get(&format!("{key}.rows")), t.get(&format!("{key}.cols"))) {
        (Some(r), Some(c)) => ours.index_select(1, r).index_select(2, c),
        _ => ours.shallow_clone(),
    };
    assert_eq!(ours.size(), expected.size(), "{key}: shape");
    let scale = expected.abs().max().double_value(&[]);
    let diff = (ours - expected).abs().max().double_value(&[]);
    let rel = diff / scale;
    eprintln!("{key}: max diff {diff:e} ({rel:e} relative)");
    assert!(rel <= MAP_REL_TOL, "{key}: max diff {diff:e} ({rel:e} relative)");
    rel
}

fn compare_scores(t: &HashMap<String, Tensor>, key: &str, ours: &Tensor) -> f64 {
    let expected = &t[key];
    assert_eq!(ours.size(), expected.size(), "{key}: shape");
    let rel = ((ours - expected).abs() / expected.abs()).max().double_value(&[]);
    eprintln!("{key}: max relative diff {rel:e}");
    assert!(rel <= SCORE_REL_TOL, "{key}: max relative diff {rel:e}");
    rel
}

fn run(config: PostProcess, enc: &[Tensor], dec: &[Tensor]) -> dinomaly::score::ScoredBatch {
    PostProcessor::new(config, Device::Cpu).unwrap().apply(enc, dec).unwrap()
}

#[test]
fn kernel_is_bitwise_the_reference() {
    let t = fixtures();
    let ours = dinomaly::score::smoothing::gaussian_kernel(5, 4.0).unwrap();
    assert!(ours.equal(&t["kernel"]));
}

#[test]
fn official_square_crop_map_256_and_64() {
    let t = fixtures();
    let (enc, dec) = groups(&t, "sq");
    let base = PostProcess::official().with_crop((224, 224));
    let out = run(base, &enc, &dec);
    compare_map(&t, "official.sq224.m256.map", &out.maps);
    compare_scores(&t, "official.sq224.m256.score", &out.scores);
    let out = run(base.with_map_size((64, 64)), &enc, &dec);
    compare_map(&t, "official.sq224.m64.map", &out.maps);
    compare_scores(&t, "official.sq224.m64.score", &out.scores);
}

#[test]
fn official_max_ratio_zero_is_the_max() {
    let t = fixtures();
    let (enc, dec) = groups(&t, "sq");
    let config = PostProcess { max_ratio: 0.0, ..PostProcess::official().with_crop((224, 224)) };
    let out = run(config, &enc, &dec);
    compare_scores(&t, "official.sq224.m256.max", &out.scores);
    let max = out.maps.flatten(1, -1).amax([1], false);
    assert!(max.equal(&out.scores));
}

#[test]
fn official_non_square_crop_and_map() {
    let t = fixtures();
    let (enc, dec) = groups(&t, "ns");
    let base = PostProcess::official().with_crop((168, 280));
    let out = run(base, &enc, &dec);
    compare_map(&t, "official.ns168x280.m256.map", &out.maps);
    compare_scores(&t, "official.ns168x280.m256.score", &out.scores);
    let out = run(base.with_map_size((48, 80)), &enc, &dec);
    assert_eq!(out.maps.size(), vec![3, 48, 80]);
    compare_map(&t, "official.ns168x280.m48x80.map", &out.maps);
    compare_scores(&t, "official.ns168x280.m48x80.score", &out.scores);
}

#[test]
fn anomalib_raw_map_reflect_blur_and_pred_score() {
    let t = fixtures();
    for (case, name, crop) in [("sq", "sq224", (224, 224)), ("ns", "ns168x280", (168, 280))] {
        let (enc, dec) = groups(&t, case);
        let config = PostProcess::anomalib().with_crop(crop);
        let out = run(config, &enc, &dec);
        assert_eq!(out.maps.size(), vec![3, crop.0, crop.1]);
        compare_map(&t, &format!("anomalib.{name}.raw"), &out.maps);
        compare_scores(&t, &format!("anomalib.{name}.score"), &out.scores);
        // The blurred map anomalib scores from (its GaussianBlur2d output).
        let smoothed = run(PostProcess { raw_map: false, ..config }, &enc, &dec);
        compare_map(&t, &format!("anomalib.{name}.blurred"), &smoothed.maps);
        assert!(smoothed.scores.equal(&out.scores));
    }
}

#[test]
fn padding_is_what_separates_official_and_anomalib_scores() {
    // In the non-square case image 0's hottest pixels touch the border, so
    // zero and reflect padding give different scores; the fixtures agree.
    let t = fixtures();
    let (enc, dec) = groups(&t, "ns");
    let official = run(PostProcess::official().with_crop((168, 280)), &enc, &dec);
    let anomalib = run(PostProcess::anomalib().with_crop((168, 280)), &enc, &dec);
    let gap = (official.scores.get(0) - anomalib.scores.get(0)).abs().double_value(&[]);
    assert!(gap > 1e-3, "gap {gap}");
    assert_eq!(PostProcess::anomalib().padding, Padding::Reflect);
}

#[test]
fn half_precision_groups_give_the_float32_result() {
    // The fixture groups are float16 values; passing them as float16 must
    // give the same maps as passing their float32 copies.
    let t = fixtures();
    let enc: Vec<Tensor> = (0..2).map(|g| t[&format!("sq.enc.{g}")].shallow_clone()).collect();
    let dec: Vec<Tensor> = (0..2).map(|g| t[&format!("sq.dec.{g}")].shallow_clone()).collect();
    assert_eq!(enc[0].kind(), Kind::Half);
    let config = PostProcess::official().with_crop((224, 224));
    let half = run(config, &enc, &dec);
    let (e32, d32) = groups(&t, "sq");
    let full = run(config, &e32, &d32);
    assert!(half.maps.equal(&full.maps) && half.scores.equal(&full.scores));
}
