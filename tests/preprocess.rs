//! Decoding, resizing, normalisation and GT masks against Pillow 13,
//! torchvision 0.26 and anomalib 2.7 (fixtures made by
//! tests/fixtures/gen/preprocess.py).
//!
//! Tolerances: decoded pixels (JPEG included), PIL resizes and masks
//! exact; official normalised tensors <= 1e-6 absolute, anomalib's tensor
//! backend <= 1e-4 (both measured 0). Resize and normalisation checks start
//! from Pillow's decoded pixels (`rgb/<file>`) where the fixtures hold
//! them, so that each test checks one stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dinomaly::data::decode::{self, load_rgb, PilImage};
use dinomaly::data::mask::{load_mask, load_mask_binarized, load_sample_mask};
use dinomaly::data::preprocess::{load_batch, load_image, Preprocess, ResizeBackend};
use dinomaly::data::record::Sample;
use dinomaly::data::resample::{resize_bilinear, Image8};
use dinomaly::Error;
use image::RgbImage;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn fixture_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(dir().join("preprocess.safetensors")).expect("fixture file"))
}

fn fixtures() -> SafeTensors<'static> {
    SafeTensors::deserialize(fixture_bytes()).expect("fixture file parses")
}

fn digests() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("sha256.json")).expect("sha256.json");
    serde_json::from_str(&text).expect("sha256.json parses")
}

/// Keys under `prefix`, sorted.
fn keys(st: &SafeTensors<'_>, prefix: &str) -> Vec<String> {
    let mut k: Vec<String> = st.names().into_iter().filter(|n| n.starts_with(prefix)).cloned().collect();
    k.sort();
    assert!(!k.is_empty(), "no fixtures under {prefix}");
    k
}

fn u8s(st: &SafeTensors<'_>, key: &str) -> (Vec<usize>, Vec<u8>) {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::U8, "{key}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn f32s(st: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{key}");
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn i32s(st: &SafeTensors<'_>, key: &str) -> Vec<usize> {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::I32, "{key}");
    t.data().chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).collect()
}

/// "a/b/c" -> ["a", "b", "c"].
fn parts(key: &str) -> Vec<&str> {
    key.split('/').collect()
}

fn wxh(s: &str) -> (usize, usize) {
    let (w, h) = s.split_once('x').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

/// Pillow's `convert('RGB')` of `file`: the fixture's copy when it has
/// one, else our decode (exact for PNG).
fn reference_rgb(file: &str) -> RgbImage {
    let st = fixtures();
    match st.tensor(&format!("rgb/{file}")) {
        Ok(t) => {
            let (h, w) = (t.shape()[0] as u32, t.shape()[1] as u32);
            RgbImage::from_raw(w, h, t.data().to_vec()).unwrap()
        }
        Err(_) => load_rgb(&dir().join(file)).unwrap(),
    }
}

/// The image the reference resizes: L images stay L, others go to RGB.
fn reference_input(file: &str) -> Image8 {
    match decode::open(&dir().join(file)).unwrap() {
        PilImage::L(i) => i,
        _ => {
            let rgb = reference_rgb(file);
            Image8::new(rgb.width() as usize, rgb.height() as usize, 3, rgb.into_raw()).unwrap()
        }
    }
}

/// The fixture configs by name: (resize (h, w), crop (h, w)).
fn config(name: &str) -> ((usize, usize), (usize, usize)) {
    match name {
        "r160c140" => ((160, 160), (140, 140)),
        "r96x128c84x112" => ((96, 128), (84, 112)),
        "r151c140" => ((151, 151), (140, 140)),
        "default" => ((448, 448), (392, 392)),
        other => panic!("unknown fixture config {other}"),
    }
}

fn prep(name: &str, backend: ResizeBackend) -> Preprocess {
    let (r, c) = config(name);
    Preprocess::new(r, c, backend).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// (differing samples, max difference) between our decode and Pillow's.
fn decode_diff(st: &SafeTensors<'_>, file: &str) -> (usize, u8) {
    let (shape, want) = u8s(st, &format!("rgb/{file}"));
    let got = load_rgb(&dir().join(file)).unwrap();
    assert_eq!(vec![got.height() as usize, got.width() as usize, 3], shape, "{file}");
    let diffs = got.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
    let max = got.as_raw().iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    (diffs, max)
}

#[test]
fn decoding_matches_pillow_convert_rgb() {
    let st = fixtures();
    let mut report = Vec::new();
    let mut n = 0;
    for key in keys(&st, "rgb/") {
        let file = &key["rgb/".len()..];
        let (diffs, max) = decode_diff(&st, file);
        if diffs > 0 {
            report.push(format!("{file}: {diffs} samples differ, max {max}"));
        }
        n += 1;
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    // 4:2:0, 4:4:4, progressive 4:2:2, grey and CMYK JPEGs among them.
    assert_eq!(n, 16);
}

#[test]
fn resize_matches_pillow_bilinear_exactly() {
    let st = fixtures();
    for key in keys(&st, "resize/") {
        let p = parts(&key);
        let (w, h) = wxh(p[2]);
        let (shape, want) = u8s(&st, &key);
        let got = resize_bilinear(&reference_input(p[1]), w, h);
        assert_eq!(shape[..2], [h, w], "{key}");
        let diffs = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{key}: {diffs} samples differ from Pillow");
    }
}

#[test]
fn resize_matches_pillow_digests() {
    let d = digests();
    let resize = d["resize"].as_object().unwrap();
    assert!(resize.len() >= 70);
    let mut inputs: BTreeMap<String, Image8> = BTreeMap::new();
    let mut bad = Vec::new();
    for (key, want) in resize {
        let (file, size) = key.rsplit_once('/').unwrap();
        let (w, h) = wxh(size);
        let src = inputs.entry(file.to_string()).or_insert_with(|| reference_input(file));
        let got = resize_bilinear(src, w, h);
        let digest = format!("{:x}", Sha256::digest(&got.data));
        if digest != want.as_str().unwrap() {
            bad.push(key.clone());
        }
    }
    assert!(bad.is_empty(), "resizes differing from Pillow: {bad:?}");
}

/// The normalised crop of `file` under `cfg` for both backends, with the
/// maximum absolute difference to the reference tensors (full or sampled).
fn normalised_errors(st: &SafeTensors<'_>, file: &str, cfg: &str, positions: Option<&[usize]>) -> (f32, f32) {
    let img = reference_rgb(file);
    let mut errs = [0f32; 2];
    for (i, (backend, name)) in [(ResizeBackend::Pil, "pil"), (ResizeBackend::Tensor, "tensor")].into_iter().enumerate()
    {
        let got = prep(cfg, backend).image_chw(&img).unwrap();
        let (want, got): (Vec<f32>, Vec<f32>) = match positions {
            None => (f32s(st, &format!("{name}/{file}/{cfg}")), got),
            Some(pos) => (f32s(st, &format!("sample/{file}/{cfg}/{name}")), pos.iter().map(|&k| got[k]).collect()),
        };
        errs[i] = max_abs(&got, &want);
    }
    (errs[0], errs[1])
}

#[test]
fn normalised_crops_match_both_references() {
    let st = fixtures();
    let mut cases = 0;
    for key in keys(&st, "pil/") {
        let p = parts(&key);
        let (pil, tensor) = normalised_errors(&st, p[1], p[2], None);
        eprintln!("{key}: max abs diff official {pil:e}, anomalib {tensor:e}");
        assert!(pil <= 1e-6, "{key}: official pipeline max abs diff {pil}");
        assert!(tensor <= 1e-4, "{key}: anomalib pipeline max abs diff {tensor}");
        cases += 1;
    }
    for key in keys(&st, "sample/") {
        let Some(stem) = key.strip_suffix("/positions") else {
            continue;
        };
        let p = parts(stem);
        let pos = i32s(&st, &key);
        let (pil, tensor) = normalised_errors(&st, p[1], p[2], Some(&pos));
        eprintln!("{stem}: max abs diff official {pil:e}, anomalib {tensor:e}");
        assert!(pil <= 1e-6, "{stem}: official pipeline max abs diff {pil}");
        assert!(tensor <= 1e-4, "{stem}: anomalib pipeline max abs diff {tensor}");
        cases += 1;
    }
    assert_eq!(cases, 6);
}

#[test]
fn tensor_shapes_and_batch_results_keep_order() {
    let prep = prep("r96x128c84x112", ResizeBackend::Pil);
    let t = load_image(&dir().join("textures.png"), &prep).unwrap();
    assert_eq!(t.size(), vec![3, 84, 112]);
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let paths = vec![dir().join("chelsea.png"), tmp.path().join("missing.png"), empty, dir().join("mode_p8.png")];
    for backend in [ResizeBackend::Pil, ResizeBackend::Tensor] {
        let prep = Preprocess::new((96, 128), (84, 112), backend).unwrap();
        let out = load_batch(&paths, &prep);
        assert_eq!(out.len(), 4);
        assert!(out[0].is_ok() && out[3].is_ok());
        assert!(matches!(out[1], Err(Error::Io { .. })));
        assert!(matches!(out[2], Err(Error::Image { .. })));
        let direct = prep.image_tensor(&load_rgb(&paths[0]).unwrap()).unwrap();
        assert!(out[0].as_ref().unwrap().equal(&direct));
    }
}

#[test]
fn masks_match_the_official_evaluation_exactly() {
    let st = fixtures();
    let mut n = 0;
    for key in keys(&st, "mask/") {
        let p = parts(&key);
        let (mh, mw) = {
            let (h, w) = p[3].split_once('x').unwrap();
            (h.parse().unwrap(), w.parse().unwrap())
        };
        let (shape, want) = u8s(&st, &key);
        assert_eq!(shape, vec![mh, mw]);
        let got = load_mask(&dir().join(p[1]), &prep(p[2], ResizeBackend::Pil), (mh, mw)).unwrap();
        let want: Vec<f32> = want.iter().map(|&b| f32::from(b) / 255.0).collect();
        let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{key}: {diffs} of {} values differ", want.len());
        n += 1;
    }
    assert!(n >= 23, "{n}");
    // The backend does not change masks (they always follow the official path).
    let a = load_mask(&dir().join("mask_l.png"), &prep("r160c140", ResizeBackend::Tensor), (64, 64)).unwrap();
    let b = load_mask(&dir().join("mask_l.png"), &prep("r160c140", ResizeBackend::Pil), (64, 64)).unwrap();
    assert_eq!(a, b);

    let (_, want) = u8s(&st, "binarized/mask_p.png/r160c140/64x64");
    let p160 = prep("r160c140", ResizeBackend::Pil);
    let got = load_mask_binarized(&dir().join("mask_p.png"), &p160, (64, 64)).unwrap();
    assert!(got.iter().zip(&want).all(|(a, &b)| *a == f32::from(b) / 255.0));
    // Records choose the rule: raw VisA records carry "binarize_mask".
    let mut s = Sample::from_path(dir().join("chelsea.png"));
    assert_eq!(load_sample_mask(&s, &p160, (64, 64)).unwrap(), None);
    s.mask = Some(dir().join("mask_p.png"));
    let raw = load_sample_mask(&s, &p160, (64, 64)).unwrap().unwrap();
    assert_eq!(raw, load_mask(&dir().join("mask_p.png"), &p160, (64, 64)).unwrap());
    assert_ne!(raw, got);
    s.extra.insert("binarize_mask".into(), serde_json::Value::Bool(true));
    assert_eq!(load_sample_mask(&s, &p160, (64, 64)).unwrap().unwrap(), got);
}

#[test]
fn masks_the_reference_fails_on_are_errors() {
    let d = digests();
    let errors = d["mask_errors"].as_object().unwrap();
    assert!(!errors.is_empty());
    for key in errors.keys() {
        let p = parts(key);
        let (h, w) = p[3].split_once('x').unwrap();
        let err =
            load_mask(&dir().join(p[1]), &prep(p[2], ResizeBackend::Pil), (h.parse().unwrap(), w.parse().unwrap()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("mask_i16.png") && err.contains("16-bit"), "{err}");
    }
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(dir().join("chelsea.png")).unwrap();
    let jpeg = std::fs::read(dir().join("coffee_420.jpg")).unwrap();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing.png", None, "no such file"),
        ("empty.png", Some(Vec::new()), "the file is empty"),
        ("truncated.png", Some(good[..good.len() / 2].to_vec()), "not a readable image"),
        ("notes.png", Some(b"this is a text file\n".to_vec()), "unknown image format"),
        ("header_only.png", Some(good[..40].to_vec()), "not a readable image"),
        ("truncated.jpg", Some(jpeg[..jpeg.len() * 2 / 3].to_vec()), "premature end"),
        ("header_only.jpg", Some(jpeg[..300].to_vec()), "not a readable image"),
    ];
    let prep = Preprocess::default();
    for (name, bytes, expect) in cases {
        let path = tmp.path().join(name);
        if let Some(b) = &bytes {
            std::fs::write(&path, b).unwrap();
        }
        for err in [
            load_rgb(&path).unwrap_err(),
            load_image(&path, &prep).unwrap_err(),
            load_mask(&path, &prep, (256, 256)).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.contains(name), "{name}: {msg}");
            assert!(msg.to_lowercase().contains(expect), "{name}: {msg}");
            assert!(!msg.contains('\n'), "{name}: {msg}");
            match bytes {
                None => assert!(matches!(err, Error::Io { .. }), "{name}: {err:?}"),
                Some(_) => assert!(matches!(err, Error::Image { .. }), "{name}: {err:?}"),
            }
        }
    }
}

#[test]
fn jpeg_warnings_that_pillow_ignores_still_decode() {
    // Junk before the end-of-image marker: libjpeg warns ("extraneous bytes
    // before marker"), Pillow decodes normally; so do we, to the same pixels.
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(dir().join("coffee_444.jpg")).unwrap();
    assert_eq!(bytes[bytes.len() - 2..], [0xFF, 0xD9]);
    bytes.splice(bytes.len() - 2..bytes.len() - 2, [1u8, 2, 3, 4, 5]);
    let path = tmp.path().join("junk.jpg");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(load_rgb(&path).unwrap(), reference_rgb("coffee_444.jpg"));
}
