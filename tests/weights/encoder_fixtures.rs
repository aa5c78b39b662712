//! The encoder fixtures (tests/fixtures/gen/encoder.py) load identically in
//! every layout, damaged files never panic, and any file name opens.

use std::path::PathBuf;

use dinomaly::backbone::arch::{ArchInfo, Ffn};
use dinomaly::backbone::layout::LayoutKind;
use dinomaly::backbone::pos_embed::PosInterp;
use dinomaly::backbone::weights::{load_encoder_weights, EncoderWeights};
use dinomaly::io::pth::read_state_dict;
use tch::Device;

use super::{assert_same, err_of, fixture};

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
