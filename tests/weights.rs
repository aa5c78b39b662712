//! The weight-file layer: the safe `torch.save` reader, the safetensors
//! reader, layout conversion and weight resolution/download. Fixtures come
//! from tests/fixtures/gen/weights.py.

use std::path::PathBuf;

use dinomaly::io::pth::read_state_dict;
use dinomaly::io::safetensors_load::{read_safetensors, FloatKind};
use tch::{Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    crate::util::fixtures().join("weights").join(name)
}

fn expected(prefix: &str) -> Vec<(String, Tensor)> {
    read_safetensors(&fixture("expected.safetensors"), FloatKind::AsStored)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t)))
        .collect()
}

fn assert_same(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{name}: dtype");
    assert_eq!(got.size(), want.size(), "{name}: shape");
    assert!(got.equal(want), "{name}: values differ");
}

fn err_of<T>(r: dinomaly::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn pth_state_dict_round_trips_every_dtype_and_view() {
    let sd = read_state_dict(&fixture("state_dict.pth"), None).unwrap();
    let want = expected("state_dict/");
    let names: Vec<&str> = sd.tensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["f32", "f32_t", "f32_slice", "f16", "bf16", "f64", "i64", "i32", "u8", "bool", "scalar", "empty", "param"]
    );
    for (name, got) in &sd.tensors {
        let (_, w) = want.iter().find(|(k, _)| k == name).unwrap();
        assert_same(name, got, w);
        assert!(got.is_contiguous(), "{name}: not contiguous");
    }
    assert!(sd.ignored.is_empty());
}

#[test]
fn pth_views_do_not_alias_each_other() {
    let sd = read_state_dict(&fixture("state_dict.pth"), None).unwrap();
    let get = |n: &str| sd.tensors.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
    let (mut a, t) = (get("f32"), get("f32_t"));
    let before = t.copy();
    let _ = a.fill_(0.0);
    assert!(t.equal(&before), "writing one tensor changed another that shared its storage");
}

#[test]
fn pth_nested_dict_found_automatically_or_by_key() {
    let want = expected("nested/");
    for key in [None, Some("model")] {
        let sd = read_state_dict(&fixture("nested.pth"), key).unwrap();
        assert_eq!(sd.tensors.len(), 2);
        for (name, got) in &sd.tensors {
            let (_, w) = want.iter().find(|(k, _)| k == name).unwrap();
            assert_same(name, got, w);
        }
    }
    let e = err_of(read_state_dict(&fixture("nested.pth"), Some("epoch")));
    assert!(e.contains("entry 'epoch' is a int, not a state dict"), "{e}");
    let e = err_of(read_state_dict(&fixture("nested.pth"), Some("weights")));
    assert!(e.contains("no entry 'weights' in the top level") && e.contains("'model'"), "{e}");
}

#[test]
fn pth_lightning_checkpoint_ignores_foreign_objects_outside_the_state_dict() {
    // hyper_parameters holds an argparse.Namespace; the state dict is
    // still read, because the namespace is never needed.
    let sd = read_state_dict(&fixture("anomalib.ckpt"), None).unwrap();
    assert!(sd
        .tensors
        .iter()
        .all(|(k, _)| k.starts_with("encoder.feature_extractor.") || k.starts_with("bottleneck.")));
    assert!(sd.tensors.iter().any(|(k, _)| k == "encoder.feature_extractor.reg_token"));
    // Asking for the dict that holds it names the class.
    let e = err_of(read_state_dict(&fixture("anomalib.ckpt"), Some("hyper_parameters")));
    assert!(e.contains("refuses to load global 'argparse.Namespace'"), "{e}");
}

#[test]
fn pth_refuses_code_references() {
    for f in ["evil.pth", "function_ref.pth"] {
        let e = err_of(read_state_dict(&fixture(f), None));
        assert!(e.contains("refuses to load global 'posix.system'"), "{f}: {e}");
        assert!(e.starts_with(fixture(f).to_str().unwrap()), "{f}: message must name the file: {e}");
    }
}

#[test]
fn pth_bad_files_have_clear_errors() {
    let cases = [
        ("legacy.pth", "legacy (pre-1.6) torch.save format"),
        ("truncated.pth", "truncated or damaged"),
        ("not_a_checkpoint.pth", "not a pytorch checkpoint"),
        ("plain_pickle.pth", "plain pickle"),
        ("timm_reg.safetensors", "is a safetensors file"),
        ("missing.pth", "No such file"),
    ];
    for (f, want) in cases {
        let e = err_of(read_state_dict(&fixture(f), None));
        assert!(e.contains(want), "{f}: {e}");
    }
}

#[test]
fn pth_damaged_storage_is_detected() {
    // Flip one byte inside the first storage: the CRC must catch it.
    let mut bytes = std::fs::read(fixture("state_dict.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = b"state_dict/data/0";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    // Local header: 30 bytes, then the name, then the extra field.
    let extra = u16::from_le_bytes([bytes[at - 2], bytes[at - 1]]) as usize;
    bytes[at + name.len() + extra] ^= 0xff;
    let p = dir.path().join("damaged.pth");
    std::fs::write(&p, &bytes).unwrap();
    let e = err_of(read_state_dict(&p, None));
    assert!(e.contains("data/0' is damaged (CRC mismatch)"), "{e}");
}

#[test]
fn safetensors_reader_converts_on_request_and_names_the_file() {
    let kept = read_safetensors(&fixture("expected.safetensors"), FloatKind::AsStored).unwrap();
    let f32 = read_safetensors(&fixture("expected.safetensors"), FloatKind::F32).unwrap();
    let get = |v: &[(String, Tensor)], n: &str| v.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
    assert_eq!(get(&kept, "state_dict/bf16").kind(), Kind::BFloat16);
    let conv = get(&f32, "state_dict/bf16");
    assert_eq!(conv.kind(), Kind::Float);
    assert!(conv.equal(&get(&kept, "state_dict/bf16").to_kind(Kind::Float)));
    assert_eq!(get(&f32, "state_dict/i64").kind(), Kind::Int64);
    let e = err_of(read_safetensors(&fixture("state_dict.pth"), FloatKind::F32));
    assert!(e.contains("state_dict.pth: is not a valid safetensors file"), "{e}");
}

// ------------------------------------------------------------ encoder layouts

use dinomaly::backbone::arch::{ArchInfo, Ffn};
use dinomaly::backbone::encoder::Encoder;
use dinomaly::backbone::layout::{to_canonical, LayoutKind};
use dinomaly::backbone::pos_embed::PosInterp;
use dinomaly::backbone::weights::{load_encoder_weights, load_encoder_weights_with, EncoderWeights, LoadOptions};
use tch::Device;

/// The tiny ViT of the fixtures (embed 8, 2 blocks, 1 head, patch 2, grid 3).
fn tiny(regs: i64, ffn: Ffn, hidden: i64, layer_scale: bool) -> ArchInfo {
    ArchInfo {
        embed_dim: 8,
        depth: 2,
        num_heads: 1,
        patch_size: 2,
        in_chans: 3,
        num_registers: regs,
        mlp_hidden: hidden,
        ffn,
        layer_scale,
        pos_grid: 3,
    }
}

fn tiny_reg() -> ArchInfo {
    tiny(2, Ffn::Mlp, 32, true)
}

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

// ------------------------------------------------------- resolving, download

use dinomaly::backbone::download::{record_path, Resolver, Source, Verification};
use dinomaly::backbone::registry::{find_backbone, Backbone};
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Serves `body` at `/tiny/tiny_pretrain.pth` on 127.0.0.1 (404 elsewhere)
/// from a thread; with `short`, announces more bytes than it sends.
fn serve(body: Vec<u8>, short: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            if path == "/tiny/tiny_pretrain.pth" {
                let announced = if short { body.len() + 100 } else { body.len() };
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(&body);
            } else {
                let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    base
}

fn tiny_backbone(sha256: Option<&str>) -> Backbone {
    Backbone {
        name: "tiny",
        aliases: &[],
        file_name: "tiny_pretrain.pth",
        url_path: "tiny/tiny_pretrain.pth",
        arch: tiny_reg(),
        target_layers: &[0, 1],
        sha256: sha256.map(|s| &*Box::leak(s.to_string().into_boxed_str())),
        size: None,
    }
}

fn resolver(cache: &std::path::Path, base: &str) -> Resolver {
    Resolver {
        cache_dir: cache.to_path_buf(),
        base_url: base.to_string(),
        allow_download: true,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
    }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn meta_bytes_and_sha() -> (Vec<u8>, String) {
    let p = fixture("meta_reg.pth");
    (std::fs::read(&p).unwrap(), dinomaly::io::hash::sha256_file(&p).unwrap())
}

#[test]
fn download_trust_on_first_use_then_cache() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body.clone(), false);
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(None);
    let mut seen = (0, None);
    let r = resolver(dir.path(), &base).resolve(&bb, None, None, &mut |d, t| seen = (d, t)).unwrap();
    assert_eq!(
        (r.source, r.verification, r.sha256.as_str()),
        (Source::Downloaded, Verification::FirstUse, sha.as_str())
    );
    assert_eq!(seen, (body.len() as u64, Some(body.len() as u64)));
    assert_eq!(std::fs::read(&r.path).unwrap(), body);
    assert_eq!(std::fs::read_to_string(record_path(&r.path)).unwrap(), format!("{sha}  tiny_pretrain.pth\n"));
    assert_eq!(files_in(dir.path()), ["tiny_pretrain.pth", "tiny_pretrain.pth.sha256"]);
    // The cached files get the mode File::create gives under this
    // process's umask (0644 under 022), not a temporary file's 0600.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        assert_eq!(mode(&r.path), mode(&plain), "downloaded weights");
        assert_eq!(mode(&record_path(&r.path)), mode(&plain), "their sha256 record");
        std::fs::remove_file(plain).unwrap();
    }
    // Later uses need no network and check the record.
    let offline = resolver(dir.path(), "http://127.0.0.1:9");
    let r2 = offline.resolve(&bb, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((r2.source, r2.verification), (Source::Cache, Verification::Recorded));
    // The loaded weights are the tiny ViT.
    let w = dinomaly::backbone::weights::load_encoder_weights_with(
        &r2.path,
        Some(&bb.arch),
        &LoadOptions { known_sha256: Some(r2.sha256.clone()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(w.sha256, sha);
    // A changed file is caught.
    let mut changed = body.clone();
    changed.push(0);
    std::fs::write(&r.path, &changed).unwrap();
    let e = err_of(offline.resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.contains("recorded") && e.contains("the file changed"), "{e}");
    // A user-given hash is checked too.
    std::fs::write(&r.path, &body).unwrap();
    let e = err_of(offline.resolve(&bb, None, Some(&"0".repeat(64)), &mut |_, _| {}));
    assert!(e.contains(&format!("sha256 is {sha}, but {} was asked for", "0".repeat(64))), "{e}");
}

#[test]
fn download_with_published_hash() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body, false);
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(Some(&sha));
    let r = resolver(dir.path(), &base).resolve(&bb, None, Some(&sha.to_uppercase()), &mut |_, _| {}).unwrap();
    assert_eq!(r.verification, Verification::Published);
    let r = resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((r.source, r.verification), (Source::Cache, Verification::Published));
}

#[test]
fn download_with_wrong_hash_keeps_nothing() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body, false);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let bb = tiny_backbone(Some(&wrong));
    let e = err_of(resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(
        e.contains(&format!("the download has sha256 {sha}, but the published hash is {wrong}; nothing was kept")),
        "{e}"
    );
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[test]
fn download_failures_say_where_to_put_the_file() {
    let (body, _) = meta_bytes_and_sha();
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(None);
    // 404.
    let base = serve(body.clone(), false);
    let missing = Backbone { url_path: "nope/tiny_pretrain.pth", ..bb };
    let e = err_of(resolver(dir.path(), &base).resolve(&missing, None, None, &mut |_, _| {}));
    let want = format!(
        "no weights for tiny: put tiny_pretrain.pth (from {base}/nope/tiny_pretrain.pth) in {} or pass --weights PATH (download failed: HTTP 404)",
        dir.path().display()
    );
    assert_eq!(e, want);
    // A server that announces more than it sends.
    let base = serve(body, true);
    let e = err_of(resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.contains("nothing was kept") || e.contains("download interrupted"), "{e}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
    // Connection refused, quickly.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let e = err_of(resolver(dir.path(), &format!("http://127.0.0.1:{port}")).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(e.starts_with("no weights for tiny: put tiny_pretrain.pth") && e.contains("download failed"), "{e}");
    // Downloads switched off.
    let off = Resolver { allow_download: false, ..resolver(dir.path(), "http://127.0.0.1:9") };
    let e = err_of(off.resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.ends_with("(downloads are off (DINOMALY_OFFLINE))"), "{e}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn explicit_paths_and_cached_files_of_published_backbones() {
    let (_, sha) = meta_bytes_and_sha();
    let dir = tempfile::tempdir().unwrap();
    let r = resolver(dir.path(), "http://127.0.0.1:9");
    let bb = tiny_backbone(None);
    let given = r.resolve(&bb, Some(&fixture("meta_reg.pth")), None, &mut |_, _| {}).unwrap();
    assert_eq!(
        (given.source, given.verification, given.sha256.as_str()),
        (Source::Explicit, Verification::Unchecked, sha.as_str())
    );
    let given = r.resolve(&bb, Some(&fixture("meta_reg.pth")), Some(&sha), &mut |_, _| {}).unwrap();
    assert_eq!(given.verification, Verification::UserGiven);
    assert!(
        err_of(r.resolve(&bb, Some(&fixture("meta_reg.pth")), Some("xyz"), &mut |_, _| {})).contains("not a sha256")
    );
    // A file put in the cache by hand for a backbone with a published hash
    // must be that file.
    let b = find_backbone("dinov2_vits14").unwrap();
    std::fs::write(dir.path().join(b.file_name), b"not the weights").unwrap();
    let e = err_of(r.resolve(b, None, None, &mut |_, _| {}));
    assert!(e.contains("but the published dinov2_vits14_pretrain.pth has b938bf1b"), "{e}");
    // One without a published hash is recorded on first use.
    let b = find_backbone("dinov2_vits14_reg4").unwrap();
    std::fs::copy(fixture("meta_reg.pth"), dir.path().join(b.file_name)).unwrap();
    let first = r.resolve(b, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((first.source, first.verification), (Source::Cache, Verification::FirstUse));
    assert!(first.describe().contains("recorded now"));
    assert_eq!(r.resolve(b, None, None, &mut |_, _| {}).unwrap().verification, Verification::Recorded);
}

// ------------------------- the encoder fixtures (tests/fixtures/gen/encoder.py)

fn encoder_fixture(name: &str) -> PathBuf {
    crate::util::fixtures().join("encoder").join(name)
}

fn small(depth: i64, heads: i64, regs: i64, patch: i64, layer_scale: bool, grid: i64) -> ArchInfo {
    ArchInfo {
        embed_dim: 16,
        depth,
        num_heads: heads,
        patch_size: patch,
        in_chans: 3,
        num_registers: regs,
        mlp_hidden: 64,
        ffn: Ffn::Mlp,
        layer_scale,
        pos_grid: grid,
    }
}

/// `b` equals `a` tensor for tensor, allowing for timm's folded cls
/// position when `b` folded it.
fn assert_same_weights(what: &str, a: &EncoderWeights, b: &EncoderWeights) {
    assert!(!a.source_layout.cls_pos_folded);
    let names = |w: &EncoderWeights| w.tensors.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what}: names");
    let pos = a.get("pos_embed").unwrap();
    for ((k, x), (_, y)) in a.tensors.iter().zip(&b.tensors) {
        match (b.source_layout.cls_pos_folded, k.as_str()) {
            (true, "cls_token") => assert!(y.allclose(&(x + pos.narrow(1, 0, 1)), 0.0, 0.0, false), "{what}: {k}"),
            (true, "pos_embed") => {
                let rows = x.size()[1];
                assert_eq!(y.narrow(1, 0, 1).abs().max().double_value(&[]), 0.0, "{what}: pos row 0");
                assert_same(&format!("{what}: {k}"), &y.narrow(1, 1, rows - 1), &x.narrow(1, 1, rows - 1));
            }
            _ => assert_same(&format!("{what}: {k}"), y, x),
        }
    }
}

#[test]
fn encoder_fixtures_load_identically_in_all_layouts() {
    let arch = small(10, 4, 4, 14, true, 37);
    let meta = load_encoder_weights(&encoder_fixture("reg4/meta.pth"), Some(&arch)).unwrap();
    let timm = load_encoder_weights(&encoder_fixture("reg4/timm.safetensors"), Some(&arch)).unwrap();
    // The HF folder's config.json gives the head count.
    let hf = load_encoder_weights(&encoder_fixture("reg4/hf"), None).unwrap();
    assert_eq!((meta.arch, timm.arch, hf.arch), (arch, arch, arch));
    assert_eq!(meta.source_layout.kind, LayoutKind::Meta);
    assert!(timm.source_layout.kind == LayoutKind::Timm && timm.source_layout.cls_pos_folded);
    assert_eq!(hf.source_layout.kind, LayoutKind::HuggingFace);
    assert_same_weights("reg4 hf", &meta, &hf);
    assert_same_weights("reg4 timm", &meta, &timm);

    let arch = small(4, 2, 0, 14, true, 37);
    let meta = load_encoder_weights(&encoder_fixture("dinov2/meta.pth"), Some(&arch)).unwrap();
    let timm = load_encoder_weights(&encoder_fixture("dinov2/timm.safetensors"), Some(&arch)).unwrap();
    assert!(!timm.source_layout.cls_pos_folded);
    assert_same_weights("dinov2 timm", &meta, &timm);

    let arch = small(3, 4, 0, 16, false, 14);
    let vit16 = load_encoder_weights(&encoder_fixture("vit16/timm.safetensors"), Some(&arch)).unwrap();
    assert_eq!(vit16.arch, arch);
    assert!(vit16.get("blocks.0.ls1.gamma").is_none() && vit16.get("blocks.2.attn.qkv.bias").is_some());
}

#[test]
fn damaged_checkpoints_never_panic() {
    let good = std::fs::read(fixture("state_dict.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.pth");
    // Truncated anywhere: always an error.
    for len in (0..good.len()).step_by(7) {
        std::fs::write(&p, &good[..len]).unwrap();
        assert!(read_state_dict(&p, None).is_err(), "truncated to {len} bytes was accepted");
    }
    // One byte changed anywhere: an error, or (in bytes nothing reads, such
    // as zip comments and timestamps) the same tensors.
    let want = read_state_dict(&fixture("state_dict.pth"), None).unwrap();
    for at in (0..good.len()).step_by(3) {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&p, &bad).unwrap();
        if let Ok(sd) = read_state_dict(&p, None) {
            assert_eq!(sd.tensors.len(), want.tensors.len(), "byte {at}");
            for ((k, a), (_, b)) in sd.tensors.iter().zip(&want.tensors) {
                assert!(a.equal(b), "byte {at} changed tensor {k} silently");
            }
        }
    }
    // The pickle alone, cut or changed anywhere, with storages resolved.
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(good)).unwrap();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("state_dict/data.pkl").unwrap(), &mut pkl).unwrap();
    let storage = std::rc::Rc::new(dinomaly::io::pickle::StorageRef {
        key: "0".into(),
        dtype: dinomaly::io::pickle::StorageDtype::F32,
        numel: 20,
    });
    let mut load = |_| Ok(dinomaly::io::pickle::Value::Storage(storage.clone()));
    for len in 0..pkl.len() {
        let _ = dinomaly::io::pickle::unpickle(&pkl[..len], &mut load);
    }
    for at in 0..pkl.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = pkl.clone();
            bad[at] ^= flip;
            let _ = dinomaly::io::pickle::unpickle(&bad, &mut load);
        }
    }
}

#[test]
fn open_encoder_with_weights_of_any_name() {
    use dinomaly::backbone::open::{open_encoder, EncoderRequest};
    let mut req = EncoderRequest {
        backbone: "tiny-hf".into(),
        weights: Some(crate::util::fixtures().join("encoder/reg4/hf")),
        weights_sha256: None,
        layers: vec![2, 5, 9],
        pos_interp: PosInterp::Official,
        quiet: true,
        tool: "test".into(),
    };
    let opened = open_encoder(&req, Device::Cpu).unwrap();
    assert_eq!(opened.name, "tiny-hf");
    assert_eq!(opened.encoder.layers(), &[2, 5, 9]);
    assert_eq!(opened.sha256, dinomaly::io::hash::sha256_file(&opened.weights).unwrap());
    assert_eq!(opened.layout.kind, LayoutKind::HuggingFace);
    // No default layers for a size the registry does not know.
    req.layers.clear();
    let e = err_of(open_encoder(&req, Device::Cpu));
    assert!(e.contains("pass --layers"), "{e}");
    // A hash that does not match.
    req.layers = vec![1];
    req.weights_sha256 = Some("0".repeat(64));
    let e = err_of(open_encoder(&req, Device::Cpu));
    assert!(e.contains("was asked for"), "{e}");
    // Unknown names need weights.
    req.weights = None;
    let e = err_of(open_encoder(&req, Device::Cpu));
    assert!(e.starts_with("unknown backbone 'tiny-hf'") && e.ends_with("other weights need --weights PATH"), "{e}");
    // A registry backbone checks the architecture of the weights given.
    let req = EncoderRequest {
        backbone: "dinov2_vits14_reg4".into(),
        weights: Some(crate::util::fixtures().join("encoder/reg4/timm.safetensors")),
        weights_sha256: None,
        ..req
    };
    let e = err_of(open_encoder(&req, Device::Cpu));
    assert!(e.ends_with("this is a ViT/14 (embed 16), expected ViT-S/14 (embed 384)"), "{e}");
}
