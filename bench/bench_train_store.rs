//! Writes a feature store of random rows, for measuring `dinomaly-train`'s
//! speed and memory at a given width without an encoder (bench/notes.md).
//!
//!     bench_train_store DEST IMAGES EMBED_DIM HEADS GRID
//!
//! The store looks like one of dinomaly-extract's loose-group f16 stores
//! (8 target layers in two groups, 4 registers, a GRID×GRID patch grid:
//! GRID 28 gives ViT-B's 789 tokens at EMBED_DIM 768, HEADS 12); rows are
//! standard normal, seeded, so two runs write the same store.

use std::path::PathBuf;

use anyhow::{bail, Context};
use dinomaly::data::record::Sample;
use dinomaly::io::features::{FeatureMeta, FeatureWriter, StoreDtype};
use dinomaly::model::GroupPreset;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: bench_train_store DEST IMAGES EMBED_DIM HEADS GRID");
    }
    let num = |i: usize| -> anyhow::Result<i64> {
        args[i].parse().with_context(|| format!("argument {i}: not an integer: {}", args[i]))
    };
    let (dest, images, dim, heads, grid) = (PathBuf::from(&args[1]), num(2)?, num(3)?, num(4)?, num(5)?);
    let layers: Vec<usize> = (2..10).collect();
    let meta = FeatureMeta {
        backbone: "random".into(),
        weights_sha256: "0".repeat(64),
        embed_dim: dim,
        num_heads: heads,
        num_registers: 4,
        patch_size: 14,
        groups: GroupPreset::Loose.groups(layers.len())?,
        layers,
        all_layers: false,
        resize: (448, 448),
        crop: ((grid * 14) as u32, (grid * 14) as u32),
        preprocess: "random".into(),
        pos_interp: "random".into(),
        grid: (grid, grid),
        dtype: StoreDtype::F16,
    };
    let tokens = meta.tokens();
    let mut writer = FeatureWriter::create(&dest, meta)?;
    tch::manual_seed(0);
    for i in 0..images {
        let row = Tensor::randn([1, 2, tokens, dim], (Kind::Float, Device::Cpu));
        writer.push(&[Sample::from_path(format!("random/{i}.png"))], &row)?;
    }
    writer.finish()?;
    Ok(())
}
