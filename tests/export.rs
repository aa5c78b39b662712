//! `dinomaly-export`: the exported ONNX model, run in a runtime not written
//! here (tract, a pure-Rust ONNX runtime from crates.io), gives the maps
//! and scores `dinomaly-score` gives on the same images, for every
//! checkpoint kind, with a dynamic batch run at batches 1 and 3, for the
//! tiny test encoder and a ViT-S/14-reg4 (random weights) at 224.
//!
//! Measures: maps `max|onnx - score| / max|score|` over each image's map
//! (the map as dinomaly-score writes it with --maps-dir), scores
//! `|onnx - score| / |score|`; both at most 1e-4 (issue #15).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tract_onnx::prelude::*;

use crate::util::fixture as fx;
use crate::util::{self, assert_code, Dir};

/// Relative tolerance on maps and scores (issue #15).
const TOL: f64 = 1e-4;

/// Images of several formats and colour modes (the CLI tests' set).
fn images(n: usize) -> Vec<PathBuf> {
    fx::images().into_iter().take(n).collect()
}

/// `dinomaly-export -q` with `args`; returns its JSON line.
fn export(args: &[&str]) -> Value {
    let out = util::run(util::tool("dinomaly-export").arg("-q").args(args), "");
    assert_code(&out, 0);
    let text = util::stdout(&out);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(text.trim()).expect("a JSON line")
}

/// The metadata of an ONNX file, read by tract's own protobuf decoder.
fn metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let proto = tract_onnx::onnx().proto_model_for_path(path).expect("tract reads the model");
    proto.metadata_props.into_iter().map(|e| (e.key, e.value)).collect()
}

/// The pre-processing the model's metadata asks for.
fn preprocess(meta: &std::collections::HashMap<String, String>) -> dinomaly::data::preprocess::Preprocess {
    let pair = |k: &str| -> (usize, usize) {
        let v: Vec<usize> = serde_json::from_str(&meta[k]).unwrap_or_else(|e| panic!("{k}: {e}"));
        (v[0], v[1])
    };
    let backend = dinomaly::io::names::parse_name(&meta["resize_backend"]).expect("a resize backend");
    dinomaly::data::preprocess::Preprocess::new(pair("resize"), pair("crop"), backend).expect("valid pre-processing")
}

/// Normalised crops of `paths` as float32 (N, 3, h, w), flat.
fn crops(paths: &[PathBuf], prep: &dinomaly::data::preprocess::Preprocess) -> Vec<f32> {
    paths
        .iter()
        .flat_map(|p| {
            let t = dinomaly::data::preprocess::load_image(p, prep).expect("load image");
            Vec::<f32>::try_from(t.flatten(0, -1)).expect("values")
        })
        .collect()
}

/// A loaded model: symbolic batch kept, optimised once, run many times.
struct Runtime {
    plan: TypedSimplePlan<TypedModel>,
}

impl Runtime {
    fn load(path: &Path) -> Self {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .expect("tract parses the model")
            .into_optimized()
            .expect("tract optimises the model")
            .into_runnable()
            .expect("tract plans the model");
        Runtime { plan }
    }

    /// Runs `input` (N, 3, h, w); returns the maps (N * mh * mw), their
    /// shape and the scores (N).
    fn run(&self, input: tract_onnx::prelude::Tensor) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let out = self.plan.run(tvec!(input.into())).expect("tract runs the model");
        let maps = out[0].to_array_view::<f32>().expect("float maps");
        let shape = maps.shape().to_vec();
        let scores = out[1].to_array_view::<f32>().expect("float scores").iter().copied().collect();
        (maps.iter().copied().collect(), shape, scores)
    }

    fn run_f32(&self, data: &[f32], n: usize, side: (usize, usize)) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let t =
            tract_ndarray::Array4::from_shape_vec((n, 3, side.0, side.1), data.to_vec()).expect("shape").into_tensor();
        self.run(t)
    }
}

/// dinomaly-score's maps and scores for `paths` with `args`.
fn score(dir: &Dir, args: &[&str], paths: &[PathBuf]) -> (Vec<Vec<f32>>, Vec<f64>) {
    let maps_dir = dir.join("score-maps");
    let _ = std::fs::remove_dir_all(&maps_dir);
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("-q").args(args).arg("--maps-dir").arg(&maps_dir);
    let input: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    let out = util::run(&mut cmd, &input);
    assert_code(&out, 0);
    let lines = fx::parse_lines(&util::stdout(&out));
    let maps = lines
        .iter()
        .map(|l| dinomaly::io::npy::read_f32_2d(l["map"].as_str().expect("a map")).expect("read map").data)
        .collect();
    (maps, lines.iter().map(|l| l["score"].as_f64().expect("a score")).collect())
}

/// Worst relative map and score differences of `onnx` against
/// dinomaly-score's `(maps, scores)` for images `first..first + n`.
fn compare(onnx: &(Vec<f32>, Vec<usize>, Vec<f32>), reference: &(Vec<Vec<f32>>, Vec<f64>), first: usize) -> (f64, f64) {
    let (maps, shape, scores) = onnx;
    let per = shape[1] * shape[2];
    let (mut map_rel, mut score_rel) = (0f64, 0f64);
    for i in 0..shape[0] {
        let want = &reference.0[first + i];
        assert_eq!(want.len(), per, "map size");
        let got = &maps[i * per..(i + 1) * per];
        let scale = want.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        let diff = got.iter().zip(want).fold(0f64, |m, (a, b)| m.max(f64::from(a - b).abs()));
        map_rel = map_rel.max(diff / scale);
        let want = reference.1[first + i];
        score_rel = score_rel.max((f64::from(scores[i]) - want).abs() / want.abs());
    }
    (map_rel, score_rel)
}

/// Exports `ckpt` (with `args`, dynamic batch), runs it in tract at
/// batches 1 and 3 and compares with dinomaly-score on the same images.
/// Returns the exported file and the worst (map, score) differences.
fn parity(dir: &Dir, what: &str, score_args: &[&str], export_args: &[&str]) -> (PathBuf, f64, f64) {
    let onnx = dir.join(&format!("{what}.onnx"));
    let line = export(&[export_args, &["-o", onnx.to_str().unwrap()]].concat());
    assert_eq!(line["inputs"][0]["shape"][0], -1, "{what}: dynamic batch");
    let meta = metadata(&onnx);
    let prep = preprocess(&meta);
    let paths = images(4);
    let reference = score(dir, score_args, &paths);
    let data = crops(&paths, &prep);
    let side = prep.crop();
    let per = 3 * side.0 * side.1;
    let runtime = Runtime::load(&onnx);
    let one = runtime.run_f32(&data[..per], 1, side);
    let three = runtime.run_f32(&data[per..], 3, side);
    let (m1, s1) = compare(&one, &reference, 0);
    let (m3, s3) = compare(&three, &reference, 1);
    eprintln!("{what}: batch 1 map {m1:.2e} score {s1:.2e}; batch 3 map {m3:.2e} score {s3:.2e} (relative)");
    assert!(m1 <= TOL && m3 <= TOL, "{what}: maps differ by {m1:e} / {m3:e} relative");
    assert!(s1 <= TOL && s3 <= TOL, "{what}: scores differ by {s1:e} / {s3:e} relative");
    (onnx, m1.max(m3), s1.max(s3))
}

fn score_fixture(name: &str) -> PathBuf {
    util::fixtures().join("score").join(name)
}

#[test]
fn export_tiny_models_of_every_kind_match_dinomaly_score() {
    let dir = Dir::new("export-tiny");
    let shared = fx::shared();
    let (ckpt, weights) = (shared.ckpt.to_str().unwrap(), shared.weights.to_str().unwrap());
    parity(&dir, "tiny-dinomaly", &["-c", ckpt, "--weights", weights], &["-c", ckpt, "--weights", weights]);
    for (name, kind) in [("official.pth", "official"), ("anomalib.ckpt", "anomalib")] {
        let c = score_fixture(name);
        let args = ["-c", c.to_str().unwrap(), "--layers", "0,1"];
        parity(&dir, &format!("tiny-{kind}"), &args, &args);
    }
}
