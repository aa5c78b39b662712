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
    let line = fx::export_line(&[export_args, &["-o", onnx.to_str().unwrap()]].concat());
    assert_eq!(line["inputs"][0]["shape"][0], -1, "{what}: dynamic batch");
    let meta = metadata(&onnx);
    let prep = preprocess(&meta);
    let paths = images(4);
    let reference = score(dir, score_args, &paths);
    // Images that score apart: a graph giving every image one output could
    // not match them.
    let (lo, hi) = reference.1.iter().fold((f64::MAX, f64::MIN), |(l, h), &s| (l.min(s), h.max(s)));
    assert!(hi - lo > 1e-3 * hi.abs(), "{what}: dinomaly-score gives the images one score ({lo} .. {hi})");
    let (map_rel, score_rel) =
        batches_1_and_3(what, &Runtime::load(&onnx), &Crops::F32(crops(&paths, &prep)), prep.crop(), &reference);
    assert!(map_rel <= TOL, "{what}: maps differ by {map_rel:e} relative");
    assert!(score_rel <= TOL, "{what}: scores differ by {score_rel:e} relative");
    (onnx, map_rel, score_rel)
}

/// Model inputs for N images, (N, 3, h, w) flat: normalised float crops or
/// raw uint8 crops.
enum Crops {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Runs image 0 at batch 1 and images 1..4 at batch 3 of the dynamic axis;
/// returns the worst relative (map, score) differences from `reference`.
fn batches_1_and_3(
    what: &str,
    runtime: &Runtime,
    crops: &Crops,
    side: (usize, usize),
    reference: &(Vec<Vec<f32>>, Vec<f64>),
) -> (f64, f64) {
    let per = 3 * side.0 * side.1;
    let run = |first: usize, n: usize| match crops {
        Crops::F32(d) => runtime.run_f32(&d[first * per..(first + n) * per], n, side),
        Crops::U8(d) => runtime.run_u8(&d[first * per..(first + n) * per], n, side),
    };
    let (m1, s1) = compare(&run(0, 1), reference, 0);
    let (m3, s3) = compare(&run(1, 3), reference, 1);
    eprintln!("{what}: batch 1 map {m1:.2e} score {s1:.2e}; batch 3 map {m3:.2e} score {s3:.2e} (relative)");
    (m1.max(m3), s1.max(s3))
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

impl Runtime {
    fn run_u8(&self, data: &[u8], n: usize, side: (usize, usize)) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let t =
            tract_ndarray::Array4::from_shape_vec((n, 3, side.0, side.1), data.to_vec()).expect("shape").into_tensor();
        self.run(t)
    }
}

/// The raw RGB crops (uint8 CHW, flat) a `--input uint8` model takes: the
/// checkpoint's resize and centre crop, before /255 and mean/std.
fn raw_crops(paths: &[PathBuf], prep: &dinomaly::data::preprocess::Preprocess) -> Vec<u8> {
    paths.iter().flat_map(|p| prep.crop_chw_u8(&dinomaly::data::decode::load_rgb(p).expect("load image"))).collect()
}

/// The shared tiny checkpoint's `-c CKPT --weights W` arguments.
fn shared_args() -> Vec<String> {
    let shared = fx::shared();
    vec!["-c".into(), shared.ckpt.display().to_string(), "--weights".into(), shared.weights.display().to_string()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn export_uint8_input_normalises_inside_the_graph() {
    let dir = Dir::new("export-uint8");
    let args = shared_args();
    let onnx = dir.join("u8.onnx");
    let line = fx::export_line(&[strs(&args), vec!["--input", "uint8", "-o", onnx.to_str().unwrap()]].concat());
    assert_eq!(line["input_kind"], "uint8");
    assert_eq!(line["inputs"][0]["dtype"], "uint8");
    let meta = metadata(&onnx);
    assert_eq!(meta["input_kind"], "uint8");
    let prep = preprocess(&meta);
    let paths = images(4);
    let reference = score(&dir, &strs(&args), &paths);
    let crops = Crops::U8(raw_crops(&paths, &prep));
    let (m, s) = batches_1_and_3("uint8 input", &Runtime::load(&onnx), &crops, prep.crop(), &reference);
    assert!(m <= TOL && s <= TOL, "uint8 input: maps {m:e}, scores {s:e} relative");
    // The official kind (the same Pillow resize) takes raw crops as well.
    let c = score_fixture("official.pth");
    let official = ["-c", c.to_str().unwrap(), "--layers", "0,1"];
    let onnx = dir.join("official-u8.onnx");
    fx::export_line(&[&official[..], &["--input", "uint8", "-o", onnx.to_str().unwrap()]].concat());
    let prep = preprocess(&metadata(&onnx));
    let reference = score(&dir, &official, &paths[..2]);
    let got = Runtime::load(&onnx).run_u8(&raw_crops(&paths[..2], &prep), 2, prep.crop());
    let (m, s) = compare(&got, &reference, 0);
    eprintln!("uint8 input, official: batch 2 map {m:.2e} score {s:.2e} (relative)");
    assert!(m <= TOL && s <= TOL, "uint8 input, official: {m:e} {s:e}");
}

/// float16 carries 11 significant bits: one rounding is at most 2^-11
/// (4.9e-4) relative. Weights and activations are each rounded once per
/// layer and the rounding errors add up over the encoder and decoder
/// layers (random-walk, not worst case), and the map is 1 - cos of two
/// such features, so it inherits their error. Measured here: about 1e-3 on
/// the tiny models. The bound is 1e-2: an order above what rounding gives,
/// and far below a wrong graph (a missing layer, wrong scale or wrong
/// order moves maps by tens of percent).
const FP16_TOL: f64 = 1e-2;

#[test]
fn export_fp16_stays_within_float16_rounding_of_dinomaly_score() {
    let dir = Dir::new("export-fp16");
    let args = shared_args();
    let onnx = dir.join("fp16.onnx");
    let line = fx::export_line(&[strs(&args), vec!["--precision", "fp16", "-o", onnx.to_str().unwrap()]].concat());
    assert_eq!(line["precision"], "fp16");
    // Graph I/O stays float32.
    assert_eq!(line["inputs"][0]["dtype"], "float32");
    assert_eq!(line["outputs"][0]["dtype"], "float32");
    let fp32 = dir.join("fp32.onnx");
    let line32 = fx::export_line(&[strs(&args), vec!["-o", fp32.to_str().unwrap()]].concat());
    // Weights in float16: the file is about half the float32 one.
    let (b16, b32) = (line["bytes"].as_f64().unwrap(), line32["bytes"].as_f64().unwrap());
    assert!(b16 < 0.6 * b32, "fp16 file {b16} bytes, fp32 {b32}");
    let meta = metadata(&onnx);
    assert_eq!(meta["precision"], "fp16");
    let prep = preprocess(&meta);
    let paths = images(4);
    let reference = score(&dir, &strs(&args), &paths);
    let crops = Crops::F32(crops(&paths, &prep));
    let (m, s) = batches_1_and_3("fp16", &Runtime::load(&onnx), &crops, prep.crop(), &reference);
    assert!(m <= FP16_TOL && s <= FP16_TOL, "fp16: maps {m:e}, scores {s:e} relative");
    // Not float32 in disguise: the rounding shows.
    assert!(m > 1e-6, "fp16 maps equal float32's to {m:e}");
}

#[test]
fn export_static_batch_fixes_the_batch_axis() {
    let dir = Dir::new("export-static");
    let args = shared_args();
    let onnx = dir.join("b3.onnx");
    let line = fx::export_line(&[strs(&args), vec!["--batch", "3", "-o", onnx.to_str().unwrap()]].concat());
    assert_eq!(line["inputs"][0]["shape"][0], 3);
    assert_eq!(line["outputs"][0]["shape"][0], 3);
    assert_eq!(line["outputs"][1]["shape"], serde_json::json!([3]));
    // The file itself declares the fixed dimension.
    let proto = tract_onnx::onnx().proto_model_for_path(&onnx).expect("tract reads the model");
    let graph = proto.graph.expect("a graph");
    let dims = |v: &tract_onnx::pb::ValueInfoProto| -> Vec<String> {
        let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("{}: not a tensor", v.name)
        };
        t.shape.as_ref().expect("a shape").dim.iter().map(|d| format!("{:?}", d.value)).collect()
    };
    for v in graph.input.iter().chain(&graph.output) {
        let d = dims(v);
        assert!(d[0].contains("DimValue(3)"), "{}: {d:?}", v.name);
    }
    let meta = metadata(&onnx);
    let prep = preprocess(&meta);
    let paths = images(3);
    let reference = score(&dir, &strs(&args), &paths);
    let (m, s) = compare(&Runtime::load(&onnx).run_f32(&crops(&paths, &prep), 3, prep.crop()), &reference, 0);
    assert!(m <= TOL && s <= TOL, "static batch: {m:e} {s:e}");
}

#[test]
fn export_metadata_says_how_to_feed_the_model() {
    let shared = fx::shared();
    let dir = Dir::new("export-metadata");
    let args = shared_args();
    // A calibrated checkpoint: its calibration travels with the model.
    let lines = {
        let mut cmd = fx::score(&shared.ckpt, &shared.weights);
        let out = util::run(cmd.arg("-i").arg(&shared.input), "");
        assert_code(&out, 0);
        util::stdout(&out)
    };
    let model_id = fx::parse_lines(&lines)[0]["model"].as_str().unwrap().to_string();
    let calibrated = dir.join("cal.safetensors");
    let out = util::run(
        util::tool("dinomaly-calibrate")
            .arg("-q")
            .arg("-c")
            .arg(&shared.ckpt)
            .arg("-o")
            .arg(&calibrated)
            .args(["--target-fpr", "0.5"]),
        &lines,
    );
    assert_code(&out, 0);
    let onnx = dir.join("cal.onnx");
    let line = fx::export_line(&[
        "-c",
        calibrated.to_str().unwrap(),
        "--weights",
        shared.weights.to_str().unwrap(),
        "--map-size",
        "64x48",
        "--max-ratio",
        "0.05",
        "-o",
        onnx.to_str().unwrap(),
    ]);
    let meta = metadata(&onnx);
    // The JSON line's metadata is the file's.
    let printed: std::collections::HashMap<String, String> = line["metadata"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_string()))
        .collect();
    assert_eq!(printed, meta);
    assert_eq!(line["sha256"], fx::sha256(&onnx).as_str());
    assert_eq!(line["bytes"], std::fs::metadata(&onnx).unwrap().len());
    assert_eq!(line["opset"], 17);
    let ckpt_meta = dinomaly::io::checkpoint::read_meta(&calibrated).unwrap();
    let json = |k: &str| -> Value { serde_json::from_str(&meta[k]).unwrap_or_else(|e| panic!("{k}: {e}")) };
    assert_eq!(meta["dinomaly.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["encoder_sha256"], fx::sha256(&shared.weights));
    assert_eq!(meta["checkpoint_kind"], "dinomaly");
    assert_eq!(meta["backbone"], ckpt_meta.encoder.backbone);
    assert_eq!(json("crop"), serde_json::json!([112, 112]));
    assert_eq!(json("resize"), serde_json::json!([112, 112]));
    assert_eq!(meta["resize_backend"], "pil");
    assert_eq!(json("mean"), serde_json::json!([0.485, 0.456, 0.406]));
    assert_eq!(json("std"), serde_json::json!([0.229, 0.224, 0.225]));
    assert_eq!(json("map_size"), serde_json::json!([64, 48]));
    assert_eq!(line["outputs"][0]["shape"], serde_json::json!([-1, 64, 48]));
    assert_eq!(json("top_ratio"), serde_json::json!(0.05));
    assert_eq!(json("layers"), serde_json::json!([0, 1, 2, 3]));
    assert_eq!((meta["input_kind"].as_str(), meta["precision"].as_str()), ("float", "fp32"));
    assert_eq!(json("calibration"), serde_json::to_value(ckpt_meta.calibration.unwrap()).unwrap());
    // The model id is the one dinomaly-score writes for these flags.
    let out = util::run(
        fx::score(&calibrated, &shared.weights).args(["--map-size", "64x48", "--max-ratio", "0.05"]),
        &format!("{}\n", images(1)[0].display()),
    );
    assert_code(&out, 0);
    assert_eq!(meta["dinomaly.model_id"], fx::parse_lines(&util::stdout(&out))[0]["model"].as_str().unwrap());
    // Uncalibrated: no calibration key.
    let plain = dir.join("plain.onnx");
    fx::export_line(&[strs(&args), vec!["-o", plain.to_str().unwrap()]].concat());
    let plain_meta = metadata(&plain);
    assert!(!plain_meta.contains_key("calibration"));
    assert_eq!(plain_meta["dinomaly.model_id"], model_id);
}

/// A ViT-S/14-reg4 Dinomaly with seeded random weights in the three
/// checkpoint kinds: the encoder from `demo-data weights --random` (Meta's
/// layout), a dinomaly checkpoint trained on it for two iterations at a
/// 224 crop, and the same encoder and decoder re-keyed as the official
/// `ViTill` state dict (`encoder.*`, MLP biases) and as anomalib's
/// (`encoder.feature_extractor.*`, no MLP biases), both as safetensors.
struct VitS {
    weights: PathBuf,
    dinomaly: PathBuf,
    official: PathBuf,
    anomalib: PathBuf,
}

fn vit_s(dir: &Dir) -> VitS {
    let release = Path::new(env!("CARGO_BIN_EXE_dinomaly-export")).parent().unwrap().to_path_buf();
    let demo_data = release.join("examples").join("demo-data");
    assert!(demo_data.is_file(), "{} is missing: `cargo test --release` builds it", demo_data.display());
    let out = util::run(
        std::process::Command::new(&demo_data)
            .args(["weights", "--backbone", "dinov2_vits14_reg4", "--random", "--seed", "0", "--random-dir"])
            .arg(dir.join("weights")),
        "",
    );
    assert_code(&out, 0);
    let weights = PathBuf::from(util::stdout(&out).trim().strip_prefix("random ").expect("random weights").to_string());
    let store = dir.join("vits.store");
    let list: String = images(4).iter().map(|p| format!("{}\n", p.display())).collect();
    let out = util::run(
        util::tool("dinomaly-extract")
            .args(["-q", "--backbone", "dinov2_vits14_reg4", "--resize", "224", "--crop", "224", "--weights"])
            .arg(&weights)
            .arg("-o")
            .arg(&store),
        &list,
    );
    assert_code(&out, 0);
    let dinomaly = dir.join("vits-dinomaly.safetensors");
    assert_code(&util::run(&mut fx::train(&store, &dinomaly, 2, 4), ""), 0);
    let read = |p: &Path| {
        dinomaly::io::safetensors_load::read_safetensors(p, dinomaly::io::safetensors_load::FloatKind::F32)
            .expect("read safetensors")
    };
    let encoder = read(&weights);
    let trainable = read(&dinomaly);
    assert!(trainable.iter().any(|(k, _)| k == "bottleneck.0.fc1.bias"), "trained with MLP biases");
    let write = |path: &Path, prefix: &str, biases: bool| {
        let named: Vec<(String, tch::Tensor)> = encoder
            .iter()
            .map(|(k, t)| (format!("{prefix}{k}"), t.shallow_clone()))
            .chain(
                trainable
                    .iter()
                    .filter(|(k, _)| biases || !(k.contains(".fc1.bias") || k.contains(".fc2.bias")))
                    .map(|(k, t)| (k.clone(), t.shallow_clone())),
            )
            .collect();
        tch::Tensor::write_safetensors(&named, path).expect("write checkpoint");
    };
    let official = dir.join("vits-official.safetensors");
    write(&official, "encoder.", true);
    let anomalib = dir.join("vits-anomalib.safetensors");
    write(&anomalib, "encoder.feature_extractor.", false);
    VitS { weights, dinomaly, official, anomalib }
}

/// ViT-S/14-reg4 in every checkpoint kind. A dinomaly checkpoint runs at
/// its own crop (224 here); official and anomalib checkpoints carry no
/// pre-processing and are scored, like their own code does, at 448 → 392.
#[test]
fn export_vit_s_of_every_kind_matches_dinomaly_score() {
    let dir = Dir::new("export-vits");
    let m = vit_s(&dir);
    let (ckpt, weights) = (m.dinomaly.to_str().unwrap(), m.weights.to_str().unwrap());
    let args = ["-c", ckpt, "--weights", weights];
    let (onnx, _, _) = parity(&dir, "vits-dinomaly-224", &args, &args);
    let meta = metadata(&onnx);
    assert_eq!(meta["crop"], "[224,224]");
    assert_eq!(meta["layers"], "[2,3,4,5,6,7,8,9]");
    for (what, c, crop) in [("official", &m.official, "[392,392]"), ("anomalib", &m.anomalib, "[392,392]")] {
        let args = ["-c", c.to_str().unwrap()];
        let (onnx, _, _) = parity(&dir, &format!("vits-{what}-392"), &args, &args);
        let meta = metadata(&onnx);
        assert_eq!((meta["checkpoint_kind"].as_str(), meta["crop"].as_str()), (what, crop));
    }
}

/// `dinomaly-export -q` with `args` is refused: exit 2, one stderr line
/// holding `needles`, and `dir`'s `out/` folder is left as it was (an
/// earlier model there kept byte for byte, no temporary file).
/// Errors found by the flag parser are clap's: a first line naming the
/// flag, then a usage hint (as for the other tools).
fn refused(dir: &Dir, args: &[&str], needles: &[&str]) {
    let out_dir = dir.join("out");
    let before: Vec<(String, Vec<u8>)> =
        fx::entries(&out_dir).into_iter().map(|n| (n.clone(), std::fs::read(out_dir.join(&n)).unwrap())).collect();
    let out = util::run(util::tool("dinomaly-export").arg("-q").args(args), "");
    let err = util::stderr(&out);
    if err.contains("For more information, try '--help'") {
        assert_code(&out, 2);
        let first = err.lines().next().unwrap_or_default();
        assert!(needles.iter().all(|n| first.contains(n)), "{args:?}: {err}");
    } else {
        fx::assert_error(&out, needles);
    }
    assert!(util::stdout(&out).is_empty(), "no JSON line on a failure");
    let after: Vec<(String, Vec<u8>)> =
        fx::entries(&out_dir).into_iter().map(|n| (n.clone(), std::fs::read(out_dir.join(&n)).unwrap())).collect();
    assert!(before == after, "{args:?}: out/ changed: {:?}", fx::entries(&out_dir));
}

#[test]
fn export_bad_input_is_refused_and_writes_nothing() {
    let shared = fx::shared();
    let dir = Dir::new("export-bad");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    // An earlier model at the output path survives every failure below.
    let model = out_dir.join("model.onnx");
    std::fs::write(&model, b"an earlier model").unwrap();
    let o = model.to_str().unwrap();
    let w = shared.weights.to_str().unwrap();
    let bytes = std::fs::read(&shared.ckpt).unwrap();
    let cut = dir.write("cut.safetensors", &bytes[..bytes.len() / 2]);
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 3;
    flipped[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    flipped[mid] ^= 0xff;
    let corrupt = dir.write("corrupt.safetensors", &flipped);
    let text = dir.write("notes.pth", b"just some text, not a checkpoint\n");
    let empty = dir.write("empty.ckpt", b"");
    for (ckpt, needle) in [
        (cut.to_str().unwrap(), "cut.safetensors"),
        (corrupt.to_str().unwrap(), "corrupt.safetensors"),
        (text.to_str().unwrap(), "notes.pth"),
        (empty.to_str().unwrap(), "empty.ckpt"),
        // Encoder weights are not a model: no decoder in them.
        (w, "tiny.safetensors"),
        ("/nonexistent/model.safetensors", "/nonexistent/model.safetensors"),
    ] {
        refused(&dir, &["-c", ckpt, "--weights", w, "-o", o], &[needle]);
    }
    let ckpt = shared.ckpt.to_str().unwrap();
    // Encoder weights: missing, cut, of another model, or not found offline.
    refused(
        &dir,
        &["-c", ckpt, "--weights", "/nonexistent/enc.safetensors", "-o", o],
        &["/nonexistent/enc.safetensors"],
    );
    let enc_bytes = std::fs::read(&shared.weights).unwrap();
    let enc_cut = dir.write("enc-cut.safetensors", &enc_bytes[..enc_bytes.len() / 2]);
    refused(&dir, &["-c", ckpt, "--weights", enc_cut.to_str().unwrap(), "-o", o], &["enc-cut.safetensors"]);
    let other = dir.join("other.safetensors");
    fx::tiny_weights(&other, 7);
    refused(&dir, &["-c", ckpt, "--weights", other.to_str().unwrap(), "-o", o], &["other.safetensors", "sha256"]);
    let cache = dir.join("empty-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let out = util::run(
        util::tool("dinomaly-export")
            .args(["-q", "-c", ckpt, "-o", o])
            .env("DINOMALY_CACHE", &cache)
            .env("DINOMALY_OFFLINE", "1"),
        "",
    );
    fx::assert_error(&out, &["tiny"]);
    // Outputs that cannot be written: refused before the model is read.
    let file = dir.write("plain-file", b"x");
    for (path, needle) in [
        ("-".to_string(), "-o"),
        (dir.join("no/such/folder/m.onnx").display().to_string(), "no/such/folder"),
        (file.join("m.onnx").display().to_string(), "plain-file"),
        (out_dir.display().to_string(), "out"),
    ] {
        refused(&dir, &["-c", ckpt, "--weights", w, "-o", &path], &[needle]);
    }
    // Flags out of range or that do not apply.
    let official = score_fixture("official.pth");
    let anomalib = score_fixture("anomalib.ckpt");
    for (args, needle) in [
        (vec!["-c", ckpt, "--weights", w, "--batch", "-1"], "--batch"),
        (vec!["-c", ckpt, "--weights", w, "--max-ratio", "1.5"], "--max-ratio"),
        (vec!["-c", ckpt, "--weights", w, "--max-ratio", "NaN"], "--max-ratio"),
        (vec!["-c", ckpt, "--weights", w, "--map-size", "0"], "--map-size"),
        (vec!["-c", ckpt, "--weights", w, "--precision", "bf16"], "--precision"),
        (vec!["-c", ckpt, "--weights", w, "--input", "rgb"], "--input"),
        (vec!["-c", official.to_str().unwrap(), "--weights", w], "--weights"),
        (vec!["-c", anomalib.to_str().unwrap(), "--map-size", "64"], "--map-size"),
        (vec!["-c", official.to_str().unwrap(), "--kind", "anomalib"], "--kind official"),
    ] {
        refused(&dir, &[&args[..], &["-o", o]].concat(), &[needle]);
    }
    assert_eq!(std::fs::read(&model).unwrap(), b"an earlier model");
    assert_eq!(fx::entries(&out_dir), vec!["model.onnx"]);
}
