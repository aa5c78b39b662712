//! `dinomaly-extract`: images → a feature store of the frozen encoder's
//! fused target-layer outputs, computed once so training needs no encoder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::backbone::extractor::Extractor;
use crate::cli::args::{DeviceArgs, EncoderArgs, OnError, QuietArgs, SampleArgs};
use crate::cli::on_error::{OnErrorPolicy, Skipped};
use crate::cli::{progress, ranges, stdio};
use crate::data::batches::decode_in_background;
use crate::data::preprocess::load_image;
use crate::io::features::{FeatureWriter, StoreDtype};
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
#[command(name = "dinomaly-extract", version, allow_negative_numbers = true)]
pub struct Args {
    #[command(flatten)]
    pub samples: SampleArgs,

    /// Feature store to write; - writes it to stdout once all images are
    /// encoded (for a pipe into dinomaly-train -).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: PathBuf,

    #[command(flatten)]
    pub encoder: EncoderArgs,

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

    /// Encode only shard I of N (1-based): a contiguous block of the inputs
    /// (all input is read first), so that N machines (a Slurm array, GNU
    /// parallel) each write a part and `dinomaly-train PART1 ... PARTN`
    /// trains on their rows in input order. Rows equal a single run's bit
    /// for bit with --batch 1 (each image encoded alone); with larger
    /// batches the encoder's kernels may round the last bit differently by
    /// batch (README).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::cli::args::Shard>,

    /// Images per encoder batch.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = ranges::at_least::<usize>(1), allow_hyphen_values = true)]
    pub batch: usize,

    /// What to do with an image that cannot be read: stop (exit 2 at the
    /// first one, no feature store written) or skip (name it on stderr,
    /// leave it out of the store and go on).
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
    // Everything that can fail fast fails before the encoder is loaded.
    let to_stdout = stdio::is_dash(&args.output);
    stdio::refuse_dash(&[(
        "--weights",
        args.encoder.weights.as_deref(),
        "encoder weights are read from a file or folder",
    )])?;
    if to_stdout {
        stdio::binary_stdout("-o", "the feature store")?;
    } else {
        crate::io::atomic::check_writable(&args.output)?;
    }
    let shown = if to_stdout { "stdout".to_string() } else { args.output.display().to_string() };
    let mut samples = crate::cli::samples::read(&args.samples)?;
    if samples.is_empty() {
        bail!("no samples to encode (empty input)");
    }
    if let Some(shard) = args.shard {
        let all = samples.len();
        samples = samples.drain(shard.range(all)).collect();
        if samples.is_empty() {
            bail!(
                "--shard {}/{}: no samples in this shard ({all} inputs in {} shards); use at most {all} shards",
                shard.index,
                shard.count,
                shard.count
            );
        }
    }
    let prep = args.encoder.preprocess()?;
    let device = args.device.device.resolve()?;
    let maps = match (args.all_layers, args.groups) {
        (true, _) => GroupPreset::Strict,
        (false, StoredGroups::Loose) => GroupPreset::Loose,
        (false, StoredGroups::Single) => GroupPreset::Single,
    };
    let extractor = Extractor::open(&args.encoder.request(quiet, TOOL), prep, maps, args.dtype, device)?;
    let (crop_h, crop_w) = prep.crop();
    let groups = extractor.meta().groups.len();
    let mut writer = if to_stdout {
        FeatureWriter::to_stdout(extractor.meta().clone())?
    } else {
        FeatureWriter::create(&args.output, extractor.meta().clone())?
    };
    progress::note(
        quiet,
        TOOL,
        &format!(
            "encoding {} images with {} on {} ({}x{} crop, {} maps per image)",
            samples.len(),
            extractor.meta().backbone,
            crate::device::describe(device),
            crop_h,
            crop_w,
            groups
        ),
    );
    let bar = progress::bar(samples.len() as u64, "extract", quiet);
    let total = samples.len();
    let batches = decode_in_background(samples, args.batch, 2, move |s| load_image(&s.image, &prep));
    let mut on_error = OnErrorPolicy::new(args.on_error, TOOL, Skipped::Noted)
        .unwritten(format!("no feature store written to {shown}"));
    for batch in batches {
        let n = batch.samples.len();
        let (good, images, bad) = batch.split();
        for (sample, err) in bad {
            on_error.failed(&sample.image, &err, Some(&bar))?;
        }
        if let Some(images) = images {
            writer.push(&good, &extractor.maps(&images)?)?;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let skipped = on_error.skipped();
    let written = writer.finish().with_context(|| format!("{total} samples, {skipped} skipped"))?;
    progress::note(
        quiet,
        TOOL,
        &format!(
            "wrote {} images to {}{}",
            written,
            shown,
            if skipped > 0 { format!(" ({skipped} skipped)") } else { String::new() }
        ),
    );
    Ok(ExitCode::SUCCESS)
}
