//! `crops`: the model inputs of a list of images, exactly as
//! `dinomaly-score` makes them (the PIL path: Pillow's bilinear resize,
//! centre crop, /255, ImageNet mean/std; [`Preprocess::image_chw`]), as one
//! raw little-endian float32 (N, 3, crop, crop) file. scripts/gpu-check.sh
//! feeds it to TensorRT's `trtexec --loadInputs=image:FILE`, so the engine
//! sees the same numbers as dinomaly-score's model without Python there.
//! `--uint8` writes the raw RGB crops instead (N, 3, crop, crop) bytes, for
//! a model exported with `--input uint8`.

use std::path::PathBuf;

use anyhow::Context;
use dinomaly::data::decode::load_rgb;
use dinomaly::data::preprocess::{Preprocess, ResizeBackend};

/// `demo-data crops`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image paths, one per line.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Resize side (the checkpoint's).
    #[arg(long)]
    pub resize: usize,
    /// Crop side (the checkpoint's).
    #[arg(long)]
    pub crop: usize,
    /// Raw uint8 RGB crops instead of normalised float32.
    #[arg(long)]
    pub uint8: bool,
    /// The raw file to write.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let prep = Preprocess::new((args.resize, args.resize), (args.crop, args.crop), ResizeBackend::Pil)?;
    let list = std::fs::read_to_string(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut bytes = Vec::new();
    let mut n = 0;
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let path = PathBuf::from(line.trim());
        let img = load_rgb(&path)?;
        if args.uint8 {
            bytes.extend(prep.crop_chw_u8(&img));
        } else {
            for v in prep.image_chw(&img)? {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        n += 1;
    }
    anyhow::ensure!(n > 0, "{} lists no image", args.input.display());
    dinomaly::io::atomic::write_bytes(&args.output, &bytes)?;
    eprintln!(
        "demo-data: {} crops ({n}x3x{}x{}) written to {}",
        if args.uint8 { "uint8" } else { "float32" },
        args.crop,
        args.crop,
        args.output.display()
    );
    Ok(())
}
