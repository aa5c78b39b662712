//! Encoder weight layouts (Meta, timm, Hugging Face) converted to the
//! canonical names, and the errors for files that do not fit.

use dinomaly::backbone::arch::{ArchInfo, Ffn};
use dinomaly::backbone::encoder::Encoder;
use dinomaly::backbone::layout::{to_canonical, LayoutKind};
use dinomaly::backbone::pos_embed::PosInterp;
use dinomaly::backbone::weights::{load_encoder_weights, load_encoder_weights_with, EncoderWeights, LoadOptions};
use tch::Device;

use dinomaly::io::pth::read_state_dict;
use dinomaly::io::safetensors_load::{read_safetensors, FloatKind};
use tch::{Kind, Tensor};

use super::{assert_same, err_of, fixture, tiny, tiny_reg};

fn canonical(name: &str) -> Vec<(String, Tensor)> {
    read_safetensors(&fixture(name), FloatKind::F32).unwrap()
}

/// Same names in the same order, bit-identical values, except the cls token
/// and pos_embed row 0 when the source folded the cls position.
fn assert_canonical(what: &str, w: &EncoderWeights, want: &[(String, Tensor)]) {
    let got: Vec<&str> = w.tensors.iter().map(|(k, _)| k.as_str()).collect();
    let mut want_names: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let zero_bias: Vec<String> = (0..w.arch.depth).map(|i| format!("blocks.{i}.attn.qkv.bias")).collect();
    if w.source_layout.qkv_bias_zeroed {
        want_names.extend(zero_bias.iter().map(|k| k.as_str()));
    }
    // The canonical order is fixed by the architecture, not by the file.
    let order: Vec<String> = w.arch.canonical_shapes().into_iter().map(|(k, _)| k).collect();
    want_names.sort_by_key(|k| order.iter().position(|o| o == k));
    assert_eq!(got, want_names, "{what}: names");
    let want_of = |k: &str| &want.iter().find(|(n, _)| n == k).unwrap().1;
    for (k, t) in &w.tensors {
        assert_eq!(t.kind(), Kind::Float, "{what}: {k}");
        if w.source_layout.qkv_bias_zeroed && zero_bias.contains(k) {
            assert_eq!(t.abs().max().double_value(&[]), 0.0, "{what}: {k} must be zero");
            continue;
        }
        let want_t = want_of(k);
        if w.source_layout.cls_pos_folded && (k == "cls_token" || k == "pos_embed") {
            let pos = want_of("pos_embed");
            if k == "cls_token" {
                // timm stores cls + pos[0], computed in float32 as here.
                assert!(t.equal(&(want_t + pos.narrow(1, 0, 1))), "{what}: folded cls_token");
            } else {
                assert_eq!(t.narrow(1, 0, 1).abs().max().double_value(&[]), 0.0, "{what}: pos row 0");
                assert!(t.narrow(1, 1, 9).equal(&pos.narrow(1, 1, 9)), "{what}: patch positions");
            }
        } else {
            assert_same(&format!("{what}: {k}"), t, want_t);
        }
    }
}

#[test]
fn encoder_layouts_with_registers_agree() {
    let want = canonical("canonical_reg.safetensors");
    let arch = tiny_reg();
    let cases: [(&str, LayoutKind, &str, bool); 5] = [
        ("meta_reg.pth", LayoutKind::Meta, "", false),
        ("official_dinomaly.pth", LayoutKind::Meta, "encoder.", false),
        ("timm_reg.safetensors", LayoutKind::Timm, "", true),
        ("anomalib.ckpt", LayoutKind::Timm, "encoder.feature_extractor.", true),
        ("hf_reg", LayoutKind::HuggingFace, "", false),
    ];
    for (file, kind, prefix, folded) in cases {
        let w = load_encoder_weights(&fixture(file), Some(&arch)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(w.arch, arch, "{file}");
        assert_eq!((w.source_layout.kind, w.source_layout.prefix.as_str()), (kind, prefix), "{file}");
        assert_eq!(w.source_layout.cls_pos_folded, folded, "{file}");
        assert!(!w.source_layout.reg_pos_folded, "{file}");
        assert_canonical(file, &w, &want);
    }
    // A Hugging Face folder gives its head count in config.json.
    let w = load_encoder_weights(&fixture("hf_reg"), None).unwrap();
    assert_eq!(w.arch.num_heads, 1);
    assert!(w.path.ends_with("hf_reg/model.safetensors"));
    assert_eq!(w.sha256, dinomaly::io::hash::sha256_file(&w.path).unwrap());
}

#[test]
fn encoder_layouts_swiglu_agree() {
    let want = canonical("canonical_swiglu.safetensors");
    let arch = tiny(0, Ffn::SwiGlu, 24, true);
    for (file, kind) in [
        ("meta_swiglu.pth", LayoutKind::Meta),
        ("timm_swiglu.safetensors", LayoutKind::Timm),
        ("hf_swiglu", LayoutKind::HuggingFace),
    ] {
        let w = load_encoder_weights(&fixture(file), Some(&arch)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((w.arch, w.source_layout.kind), (arch, kind), "{file}");
        assert_canonical(file, &w, &want);
    }
}

#[test]
fn plain_timm_vits_convert() {
    // No LayerScale, no qkv bias, a classifier head (dropped), cls position
    // inside pos_embed.
    let arch = tiny(0, Ffn::Mlp, 24, false);
    let w = load_encoder_weights(&fixture("timm_plain.safetensors"), Some(&arch)).unwrap();
    assert_eq!(w.arch, arch);
    assert!(!w.source_layout.cls_pos_folded && w.source_layout.qkv_bias_zeroed);
    assert_canonical("timm_plain", &w, &canonical("canonical_plain.safetensors"));
    // Registers with positions of their own: folded into register_tokens.
    let arch = tiny(2, Ffn::Mlp, 24, false);
    let w = load_encoder_weights(&fixture("timm_plain_reg.safetensors"), Some(&arch)).unwrap();
    assert!(w.source_layout.reg_pos_folded && !w.source_layout.cls_pos_folded);
    let want = canonical("canonical_plain_reg.safetensors");
    let (got, exp) = (w.get("register_tokens").unwrap(), &want.iter().find(|(k, _)| k == "register_tokens").unwrap().1);
    assert!(got.allclose(exp, 1e-6, 1e-7, false));
    for (k, t) in &w.tensors {
        match want.iter().find(|(n, _)| n == k) {
            Some(_) if k == "register_tokens" => {}
            Some((_, x)) => assert_same(k, t, x),
            None => assert!(k.ends_with("attn.qkv.bias") && t.abs().max().double_value(&[]) == 0.0, "{k}"),
        }
    }
}

#[test]
fn encoder_architecture_mismatches_are_named() {
    let wide = ArchInfo { embed_dim: 16, mlp_hidden: 64, ..tiny_reg() };
    let e = err_of(load_encoder_weights(&fixture("meta_reg.pth"), Some(&wide)));
    assert!(e.ends_with("meta_reg.pth: this is a ViT/2 (embed 8), expected ViT/2 (embed 16)"), "{e}");
    let deeper = ArchInfo { depth: 3, ..tiny_reg() };
    let e = err_of(load_encoder_weights(&fixture("meta_reg.pth"), Some(&deeper)));
    assert!(e.ends_with("this ViT/2 has depth 2, expected 3"), "{e}");
    let e = err_of(load_encoder_weights(&fixture("meta_swiglu.pth"), Some(&tiny_reg())));
    assert!(e.contains("register tokens: 0, expected 2"), "{e}");
    // Without an expected architecture, a width that is not a multiple of
    // 64 leaves the head count unknown.
    let e = err_of(load_encoder_weights(&fixture("meta_reg.pth"), None));
    assert!(e.contains("number of heads must be given"), "{e}");
}

fn meta_tensors() -> Vec<(String, Tensor)> {
    read_state_dict(&fixture("meta_reg.pth"), None).unwrap().tensors
}

fn convert(ts: Vec<(String, Tensor)>) -> String {
    match to_canonical(&fixture("x.pth"), ts, None, None, Some(1)) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn encoder_tensor_errors_name_the_key_and_shapes() {
    let ts: Vec<_> = meta_tensors()
        .into_iter()
        .map(|(k, t)| {
            if k == "blocks.1.attn.qkv.weight" {
                (k, Tensor::zeros([24, 4], (Kind::Float, tch::Device::Cpu)))
            } else {
                (k, t)
            }
        })
        .collect();
    let e = convert(ts);
    assert!(e.ends_with("x.pth: tensor 'blocks.1.attn.qkv.weight' has shape [24, 4], expected [24, 8]"), "{e}");

    let ts: Vec<_> = meta_tensors().into_iter().filter(|(k, _)| k != "blocks.1.norm2.bias").collect();
    let e = convert(ts);
    assert!(e.contains("missing tensor 'blocks.1.norm2.bias'"), "{e}");

    let mut ts = meta_tensors();
    ts.push(("blocks.0.attn.extra.weight".into(), Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))));
    let e = convert(ts);
    assert!(e.contains("unexpected tensor 'blocks.0.attn.extra.weight' [2]"), "{e}");

    let mut ts = meta_tensors();
    ts.extend(meta_tensors().into_iter().map(|(k, t)| (format!("teacher.{k}"), t)));
    let e = convert(ts);
    assert!(e.contains("several ViT encoders (prefixes '', 'teacher.')"), "{e}");

    let ts: Vec<_> = meta_tensors()
        .into_iter()
        .map(|(k, t)| if k == "pos_embed" { (k, t.narrow(1, 0, 8)) } else { (k, t) })
        .collect();
    let e = convert(ts);
    assert!(e.contains("pos_embed has 8 rows"), "{e}");

    // A HF file missing one of query/key/value.
    let hf = read_safetensors(&fixture("hf_reg/model.safetensors"), FloatKind::F32).unwrap();
    let ts: Vec<_> = hf.into_iter().filter(|(k, _)| k != "encoder.layer.1.attention.attention.key.bias").collect();
    let e = convert(ts);
    assert!(e.contains("missing tensor 'encoder.layer.1.attention.attention.key.bias'"), "{e}");
}

#[test]
fn encoder_files_that_hold_no_vit() {
    for (f, want) in [
        ("nested.pth", "holds no ViT encoder: no tensor named '*patch_embed.proj.weight'"),
        ("not_a_checkpoint.pth", "is neither a torch.save checkpoint nor a safetensors file"),
        ("legacy.pth", "legacy (pre-1.6)"),
        ("evil.pth", "refuses to load global 'posix.system'"),
    ] {
        let e = err_of(load_encoder_weights(&fixture(f), Some(&tiny_reg())));
        assert!(e.contains(want), "{f}: {e}");
    }
    let opts = LoadOptions { prefix: Some("decoder".into()), ..Default::default() };
    let e = err_of(load_encoder_weights_with(&fixture("official_dinomaly.pth"), Some(&tiny_reg()), &opts));
    assert!(e.contains("holds no ViT encoder") || e.contains("missing tensor"), "{e}");
}

/// Block outputs of the encoder built from `w` for `x`.
fn run_encoder(w: &EncoderWeights, x: &Tensor) -> Vec<Tensor> {
    let layers: Vec<usize> = (0..w.arch.depth as usize).collect();
    let enc = Encoder::from_tensors(&w.vit_config(), &w.tensors, &w.path, &layers, PosInterp::Official, Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", w.path.display()));
    enc.layer_outputs(x).unwrap()
}

#[test]
fn every_layout_runs_the_same_encoder() {
    // 6x6 input: the stored 3x3 grid, so positions are used as stored.
    let x = Tensor::from_slice(&(0..216).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect::<Vec<_>>())
        .reshape([2, 3, 6, 6]);
    let groups: [(ArchInfo, &[&str]); 3] = [
        (tiny_reg(), &["meta_reg.pth", "official_dinomaly.pth", "timm_reg.safetensors", "anomalib.ckpt", "hf_reg"]),
        (tiny(0, Ffn::SwiGlu, 24, true), &["meta_swiglu.pth", "timm_swiglu.safetensors", "hf_swiglu"]),
        (tiny(0, Ffn::Mlp, 24, false), &["timm_plain.safetensors"]),
    ];
    for (arch, files) in groups {
        let reference = run_encoder(&load_encoder_weights(&fixture(files[0]), Some(&arch)).unwrap(), &x);
        assert_eq!(reference.len(), 2);
        for f in &files[1..] {
            let out = run_encoder(&load_encoder_weights(&fixture(f), Some(&arch)).unwrap(), &x);
            for (i, (a, b)) in reference.iter().zip(&out).enumerate() {
                let rel = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
                assert!(rel <= 1e-6, "{f}: block {i} differs from {} by {rel:e}", files[0]);
            }
        }
    }
}

#[test]
fn hugging_face_transformers5_names_convert_too() {
    // transformers 5 renames modules in memory (q/k/v/o_proj, gate/up/down
    // with weights_in split in two, gate first); a state dict saved with
    // torch.save from such a model carries those names.
    let old = read_safetensors(&fixture("hf_swiglu/model.safetensors"), FloatKind::F32).unwrap();
    let mut new = Vec::new();
    for (k, t) in old {
        let k = k
            .replace("attention.attention.query", "attention.q_proj")
            .replace("attention.attention.key", "attention.k_proj")
            .replace("attention.attention.value", "attention.v_proj")
            .replace("attention.output.dense", "attention.o_proj")
            .replace("mlp.weights_out", "mlp.down_proj");
        if k.contains("mlp.weights_in") {
            let halves = t.chunk(2, 0);
            new.push((k.replace("mlp.weights_in", "mlp.gate_proj"), halves[0].copy()));
            new.push((k.replace("mlp.weights_in", "mlp.up_proj"), halves[1].copy()));
        } else {
            new.push((k, t));
        }
    }
    let c = to_canonical(&fixture("x"), new, None, None, Some(1)).unwrap();
    let want = canonical("canonical_swiglu.safetensors");
    assert_eq!(c.tensors.len(), want.len());
    for (k, t) in &c.tensors {
        assert_same(k, t, &want.iter().find(|(n, _)| n == k).unwrap().1);
    }
}
