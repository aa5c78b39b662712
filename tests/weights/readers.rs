//! The safe `torch.save` reader and the safetensors reader against
//! tests/fixtures/gen/weights.py.

use dinomaly::io::pth::read_state_dict;
use dinomaly::io::safetensors_load::{read_safetensors, FloatKind};
use tch::{Kind, Tensor};

use super::{assert_same, err_of, fixture};

fn expected(prefix: &str) -> Vec<(String, Tensor)> {
    read_safetensors(&fixture("expected.safetensors"), FloatKind::AsStored)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t)))
        .collect()
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
