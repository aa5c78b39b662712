//! The weight-file layer, one submodule per subject: the safe `torch.save`
//! and safetensors readers, encoder layout conversion, weight resolution and
//! download, and the encoder fixtures of every layout. Fixtures come from
//! tests/fixtures/gen/weights.py and tests/fixtures/gen/encoder.py.

mod download;
mod encoder_fixtures;
mod layouts;
mod readers;

use std::path::PathBuf;

use dinomaly::backbone::arch::{ArchInfo, Ffn};
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    crate::util::fixtures().join("weights").join(name)
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
