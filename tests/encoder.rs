//! The DINOv2 encoder against golden block outputs from timm (and the
//! official scale-factor interpolation), tests/fixtures/gen/encoder.py.
//! Tolerance: fp32, ≤1e-5 relative to the largest magnitude of each block.

use std::path::{Path, PathBuf};

use dinomaly::backbone::arch::{ArchInfo, Ffn};
use dinomaly::backbone::encoder::Encoder;
use dinomaly::backbone::pos_embed::PosInterp;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::util;

fn dir() -> PathBuf {
    util::fixtures().join("encoder")
}

fn summary() -> Value {
    let text = std::fs::read_to_string(dir().join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary json")
}

fn read(path: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn get(named: &[(String, Tensor)], key: &str) -> Tensor {
    named.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("fixture has no {key}")).1.shallow_clone()
}

/// The input of a case: x[b,c,i,j] = input[b0+b, c, (y0+i)%224, (x0+j)%280].
fn case_input(case: &Value) -> Tensor {
    let inputs = read(&dir().join("inputs.safetensors"));
    let all = get(&inputs, "input").to_kind(Kind::Float);
    let spec = &case["input"];
    let n = |k: &str| spec[k].as_i64().expect(k);
    let (b0, b1) = (spec["batch"][0].as_i64().unwrap(), spec["batch"][1].as_i64().unwrap());
    let (h_all, w_all) = (all.size()[2], all.size()[3]);
    let rows = Tensor::from_slice(&(0..n("h")).map(|i| (n("y0") + i) % h_all).collect::<Vec<_>>());
    let cols = Tensor::from_slice(&(0..n("w")).map(|j| (n("x0") + j) % w_all).collect::<Vec<_>>());
    all.narrow(0, b0, b1 - b0).index_select(2, &rows).index_select(3, &cols)
}

fn max_abs(t: &Tensor) -> f64 {
    f64::try_from(t.abs().max()).unwrap()
}

/// Relative difference scaled by the reference's largest magnitude.
fn rel(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.size(), reference.size());
    max_abs(&(ours - reference)) / max_abs(reference).max(1e-12)
}

fn mode(name: &str) -> PosInterp {
    match name {
        "native" => PosInterp::Official,
        other => PosInterp::parse(other).expect("mode"),
    }
}

/// The architecture of a fixture model as summary.json describes it.
fn expected_arch(m: &Value) -> ArchInfo {
    let n = |k: &str| m[k].as_i64().unwrap_or_else(|| panic!("summary: {k}"));
    ArchInfo {
        embed_dim: n("embed_dim"),
        depth: n("depth"),
        num_heads: n("num_heads"),
        patch_size: n("patch_size"),
        in_chans: 3,
        num_registers: n("reg_tokens"),
        mlp_hidden: n("embed_dim") * n("mlp_ratio"),
        ffn: Ffn::Mlp,
        layer_scale: m["layer_scale"].as_bool().unwrap(),
        pos_grid: m["grid"][0].as_i64().unwrap(),
    }
}

/// Runs every case of `model` with the weights at `weights` and compares.
fn check_model_cases(model: &str, weights: &Path) {
    let summary = summary();
    // The head count is not in weight files and these tiny models are not
    // 64 wide, so the architecture comes from the generator's summary.
    let arch = expected_arch(&summary["models"][model]);
    let loaded = dinomaly::backbone::weights::load_encoder_weights(weights, Some(&arch)).expect("load weights");
    let mut checked = 0;
    let mut worst = 0.0f64;
    for case in summary["cases"].as_array().unwrap() {
        if case["model"] != model {
            continue;
        }
        let expected = read(&dir().join(case["file"].as_str().unwrap()));
        let blocks: Vec<usize> =
            case["blocks"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as usize).collect();
        let encoder = Encoder::from_tensors(
            &loaded.vit_config(),
            &loaded.tensors,
            weights,
            &blocks,
            mode(case["mode"].as_str().unwrap()),
            Device::Cpu,
        )
        .expect("encoder");
        let input = case_input(case);
        let outputs = encoder.layer_outputs(&input).expect("forward");
        for (i, b) in blocks.iter().enumerate() {
            let reference = get(&expected, &format!("block.{b}"));
            let r = rel(&outputs[i], &reference);
            assert!(r <= 1e-5, "{} block {b}: relative difference {r:.3e} > 1e-5", case["file"]);
            worst = worst.max(r);
        }
        if let Some(groups) = case["groups"].as_array() {
            let groups: Vec<Vec<usize>> = groups
                .iter()
                .map(|g| {
                    g.as_array()
                        .unwrap()
                        .iter()
                        .map(|l| blocks.iter().position(|&b| b as u64 == l.as_u64().unwrap()).unwrap())
                        .collect()
                })
                .collect();
            let fused = dinomaly::backbone::encoder::fuse(&outputs, &groups).unwrap();
            for g in 0..groups.len() {
                let reference = get(&expected, &format!("group.{g}"));
                let r = rel(&fused.select(1, g as i64), &reference);
                assert!(r <= 1e-5, "{} group {g}: relative difference {r:.3e}", case["file"]);
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no case for {model}");
    // The figure the README's evidence table quotes.
    eprintln!("{model}: blocks max relative difference {worst:.2e} over {checked} cases");
}

#[test]
fn reg4_timm_layout_matches_every_case() {
    check_model_cases("reg4", &dir().join("reg4/timm.safetensors"));
}

#[test]
fn reg4_meta_and_hugging_face_layouts_match_every_case() {
    check_model_cases("reg4", &dir().join("reg4/meta.pth"));
    check_model_cases("reg4", &dir().join("reg4/hf"));
}

#[test]
fn dinov2_meta_and_timm_layouts_match_every_case() {
    check_model_cases("dinov2", &dir().join("dinov2/meta.pth"));
    check_model_cases("dinov2", &dir().join("dinov2/timm.safetensors"));
}

#[test]
fn vit16_timm_matches_its_case() {
    check_model_cases("vit16", &dir().join("vit16/timm.safetensors"));
}
