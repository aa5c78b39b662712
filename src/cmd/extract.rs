//! `dinomaly-extract`: images → a feature store of the frozen encoder's
//! fused target-layer outputs, computed once so training needs no encoder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::backbone::open::{open_encoder, EncoderRequest};
use crate::cli::args::{DeviceArgs, EncoderArgs, OnError, QuietArgs, SampleArgs};
use crate::cli::progress;
use crate::data::batches::decode_in_background;
use crate::data::preprocess::{load_image, Preprocess, ResizeBackend};
use crate::io::features::{FeatureMeta, FeatureWriter, StoreDtype};
use crate::model::GroupPreset;

const TOOL: &str = "dinomaly-extract";

/// Encode images with a frozen DINOv2 encoder into a feature store.
///
/// Samples come as JSON lines on stdin (or --input FILE): {"image": PATH,
/// "class": ..., "label": 0|1, "mask": PATH|null, ...}, other fields kept;
/// or one image path per line; or --dataset ROOT --layout ... --split ....
/// The store (safetensors) holds, per image, the fused groups of the target
/// layers with every token, plus the records and everything needed to check
/// that a checkpoint or a scoring run uses the same encoder and input size.
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-extract", version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    pub samples: SampleArgs,

    /// Feature store to write.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: PathBuf,

    #[command(flatten)]
    pub encoder: EncoderArgs,

    /// Image pre-processing: pil (the official code, Pillow-exact) or
    /// tensor (anomalib 2.7's float-tensor resize).
    #[arg(long, value_enum, default_value = "pil")]
    pub preprocess: ResizeBackend,

    /// Layer groups stored per image: loose (the paper's two groups of
    /// four), single (one group of all layers).
    #[arg(long, value_enum, default_value = "loose", conflicts_with = "all_layers")]
    pub groups: StoredGroups,

    /// Store every target layer unfused (8 maps per image instead of 2), for
    /// training with --groups strict or single.
    #[arg(long)]
    pub all_layers: bool,

    /// Storage precision.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: StoreDtype,

    /// Images per encoder batch.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch: usize,

    /// What to do with an image that cannot be read.
    #[arg(long, value_enum, default_value = "stop")]
    pub on_error: OnError,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// Which fused groups a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoredGroups {
    /// Two groups of four layers.
    Loose,
    /// One group of all layers.
    Single,
}

/// Runs the tool.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet.quiet;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    // Everything that can fail fast fails before the encoder is loaded.
    crate::io::atomic::check_writable(&args.output)?;
    let samples = crate::cli::samples::read(&args.samples)?;
    if samples.is_empty() {
        bail!("no samples to encode (empty input)");
    }
    let prep = Preprocess::new(
        (args.encoder.resize.height as usize, args.encoder.resize.width as usize),
        (args.encoder.crop.height as usize, args.encoder.crop.width as usize),
        args.preprocess,
    )?;
    let device = args.device.device.resolve()?;
    let opened = open_encoder(&EncoderRequest::from_args(&args.encoder, quiet, TOOL), device)?;
    let encoder = &opened.encoder;
    let (crop_h, crop_w) = prep.crop();
    let grid = encoder.grid(crop_h as i64, crop_w as i64)?;
    let layers = encoder.layers().to_vec();
    let groups: Vec<Vec<usize>> = if args.all_layers {
        (0..layers.len()).map(|i| vec![i]).collect()
    } else {
        match args.groups {
            StoredGroups::Loose => GroupPreset::Loose.groups(layers.len())?,
            StoredGroups::Single => GroupPreset::Single.groups(layers.len())?,
        }
    };
    let cfg = encoder.config();
    let meta = FeatureMeta {
        backbone: opened.name.clone(),
        weights_sha256: opened.sha256.clone(),
        embed_dim: cfg.embed_dim,
        num_heads: cfg.num_heads,
        num_registers: cfg.num_registers,
        patch_size: cfg.patch_size,
        layers,
        groups: groups.clone(),
        all_layers: args.all_layers,
        resize: (prep.resize().0 as u32, prep.resize().1 as u32),
        crop: (crop_h as u32, crop_w as u32),
        preprocess: format!("{:?}", prep.backend()).to_lowercase(),
        pos_interp: encoder.pos_interp().as_str().to_string(),
        grid,
        dtype: args.dtype,
    };
    let mut writer = FeatureWriter::create(&args.output, meta)?;
    progress::note(
        quiet,
        TOOL,
        &format!(
            "encoding {} images with {} on {} ({}x{} crop, {} maps per image)",
            samples.len(),
            opened.name,
            crate::device::describe(device),
            crop_h,
            crop_w,
            groups.len()
        ),
    );
    let bar = progress::bar(samples.len() as u64, "extract", quiet);
    let total = samples.len();
    let batches = decode_in_background(samples, args.batch, 2, move |s| load_image(&s.image, &prep));
    let mut skipped = 0usize;
    for batch in batches {
        let n = batch.samples.len();
        let (good, images, bad) = batch.split();
        for (sample, err) in bad {
            match args.on_error {
                OnError::Skip => {
                    skipped += 1;
                    bar.suspend(|| eprintln!("{TOOL}: skipped {}: {err}", sample.image.display()));
                }
                OnError::Stop => {
                    return Err(anyhow::Error::new(err)
                        .context("stopped; pass --on-error skip to leave out unreadable images")
                        .context(format!("no feature store written to {}", args.output.display())));
                }
            }
        }
        if let Some(images) = images {
            let fused = if args.all_layers {
                let outputs = encoder.layer_outputs(&images)?;
                tch::Tensor::stack(&outputs, 1)
            } else {
                encoder.fused(&images, &groups)?
            };
            writer.push(&good, &fused)?;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let written = writer
        .finish()
        .with_context(|| format!("{total} samples, {skipped} skipped"))?;
    progress::note(
        quiet,
        TOOL,
        &format!("wrote {} images to {}{}", written, args.output.display(), if skipped > 0 { format!(" ({skipped} skipped)") } else { String::new() }),
    );
    Ok(ExitCode::SUCCESS)
}
