//! `dinomaly-train`: a feature store (or, with `--images`, the images
//! themselves, encoded at every iteration) → a trained checkpoint
//! (bottleneck + linear-attention decoder), unified (one model for all
//! classes) or separated (one model per class), trained exactly as the
//! official code trains it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tch::Kind;

use crate::backbone::extractor::Extractor;
use crate::backbone::open::EncoderRequest;
use crate::cli::args::{DeviceArgs, EncoderArgs, OnError, Precision, QuietArgs, SampleSource};
use crate::cli::progress;
use crate::cli::ranges;
use crate::io::features::StoreDtype;
use crate::model::{AttentionKind, DinomalyConfig, GroupPreset, HardMining, LossKind, StableAdamWConfig, TrainSettings, WarmCosine};
use crate::train::sampler::{BatchSampler, Sampling};
use crate::train::source::{unreadable, BatchSource, ImageSource};
use crate::train::trainer::{StoreInput, Trainer};
use crate::train::validate::{ValMetric, Validator};

const TOOL: &str = "dinomaly-train";

/// Train Dinomaly's bottleneck and decoder from a feature store or images.
///
/// Reads a store written by dinomaly-extract (the fast path: the encoder
/// ran once per image) and writes a checkpoint that dinomaly-score uses.
/// When the store would not fit, --images trains from the images instead,
/// read as dinomaly-extract reads them (JSON lines or paths on stdin or
/// --input FILE, or --dataset ROOT --layout ... --split ...) and encoded by
/// the frozen encoder (--backbone, --weights, ... as for dinomaly-extract)
/// at every iteration; the result equals training on a float32 store
/// (dinomaly-extract --dtype f32) of the same images. Defaults are the
/// paper's MVTec-AD multi-class setting; --preset switches to another
/// setting in one word and explicit flags override the preset.
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-train", version, allow_negative_numbers = true)]
#[command(group(
    clap::ArgGroup::new("image_flags")
        .multiple(true)
        .requires("images")
        .conflicts_with("features")
        .args(["input", "dataset", "backbone", "weights", "weights_sha256", "layers", "resize", "crop", "pos_interp", "preprocess", "on_error"])
))]
pub struct Args {
    /// Feature store from dinomaly-extract (the training split); - reads
    /// it from stdin (held in a temporary file in $TMPDIR while training).
    #[arg(value_name = "FEATURES", required_unless_present = "images", conflicts_with = "images")]
    pub features: Option<PathBuf>,

    /// Train from images instead of a feature store: samples from stdin,
    /// --input or --dataset, encoded every iteration by the encoder that
    /// the encoder flags name.
    #[arg(long)]
    pub images: bool,

    #[command(flatten)]
    pub samples: SampleSource,

    #[command(flatten)]
    pub encoder: EncoderArgs,

    /// With --images: what to do with an image that cannot be read (all
    /// are decoded once before training): stop (exit 2, no checkpoint
    /// written) or skip (name it on stderr and train without it, as
    /// dinomaly-extract --on-error skip leaves it out of a store).
    #[arg(long, value_enum, default_value = "stop")]
    pub on_error: OnError,

    /// Checkpoint to write; with --mode separated, a folder that receives
    /// CLASS.safetensors per class.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: PathBuf,

    /// unified: one model for all classes (labels unused); separated: one
    /// model per class.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// The paper's per-setting defaults: mvtec and visa (unified, 10,000
    /// iterations, dropout 0.2, eps 1e-10), realiad (unified, 50,000,
    /// dropout 0.4), separated (per class, 5,000, eps 1e-8), large (as
    /// mvtec; extract with --backbone dinov2_vitl14_reg4).
    #[arg(long, value_enum, default_value = "mvtec")]
    pub preset: Preset,

    /// Training iterations (per class when separated).
    #[arg(long, value_name = "N", value_parser = ranges::at_least::<u64>(1), allow_hyphen_values = true)]
    pub iterations: Option<u64>,

    /// Images per batch; incomplete batches at the end of an epoch are
    /// dropped, as the official loader does.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = ranges::at_least::<usize>(1), allow_hyphen_values = true)]
    pub batch: usize,

    /// How batches are drawn.
    #[arg(long, value_enum, default_value = "shuffle")]
    pub sampling: Sampling,

    /// Peak learning rate (after warm-up).
    #[arg(long, default_value_t = 2e-3, value_name = "LR", value_parser = ranges::POSITIVE, allow_hyphen_values = true)]
    pub lr: f64,

    /// Learning rate at the end of the cosine decay.
    #[arg(long, default_value_t = 2e-4, value_name = "LR", value_parser = ranges::NON_NEGATIVE, allow_hyphen_values = true)]
    pub final_lr: f64,

    /// Linear warm-up iterations, starting from 0 (at most --iterations
    /// are used).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = ranges::at_least::<u64>(0), allow_hyphen_values = true)]
    pub warmup: u64,

    /// Decoupled weight decay (all tensors).
    #[arg(long, default_value_t = 1e-4, value_name = "WD", value_parser = ranges::NON_NEGATIVE, allow_hyphen_values = true)]
    pub weight_decay: f64,

    /// StableAdamW epsilon (default from the preset: 1e-10 unified, 1e-8 separated).
    #[arg(long, value_name = "EPS", value_parser = ranges::POSITIVE, allow_hyphen_values = true)]
    pub eps: Option<f64>,

    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 0.1, value_name = "NORM", value_parser = ranges::POSITIVE, allow_hyphen_values = true)]
    pub clip: f64,

    /// Bottleneck dropout, in [0, 1) (default from the preset).
    #[arg(long, value_name = "P", value_parser = ranges::FRACTION_BELOW_ONE, allow_hyphen_values = true)]
    pub dropout: Option<f64>,

    /// Decoder attention: linear (ELU+1, the paper's) or softmax (ablation).
    #[arg(long, value_enum, default_value = "linear")]
    pub attention: Attention,

    /// Add this epsilon to the linear-attention normaliser (the official
    /// README's fix when a dataset gives NaN losses); default none.
    /// Linear attention only.
    #[arg(long, value_name = "EPS", value_parser = ranges::NON_NEGATIVE, allow_hyphen_values = true)]
    pub attention_eps: Option<f64>,

    /// Layer groups: loose (two groups of four, the paper's), strict (layer
    /// to layer) or single (all eight together).
    #[arg(long, value_enum, default_value = "loose")]
    pub groups: Groups,

    /// Loss: hard-mining (the loose loss) or plain global cosine.
    #[arg(long, value_enum, default_value = "hard-mining")]
    pub loss: Loss,

    /// Compute precision: fp32 (the references') or bf16 mixed precision
    /// (matrix products in bfloat16; weights, optimizer state, norms,
    /// softmax and the loss in float32). Faster where bfloat16 matrix
    /// products are (CUDA, CPUs with AVX512-BF16/AMX). --val still scores
    /// in fp32, as dinomaly-score does by default.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,

    /// Recompute the decoder blocks during backward instead of keeping
    /// their activations: less memory for large backbones (ViT-B, batch 8:
    /// peak 3.7 instead of 6.8 GB), one more decoder forward per step, the
    /// same gradients up to float summation order.
    #[arg(long)]
    pub grad_checkpointing: bool,

    /// Model variant: official (MLP biases) or anomalib (no MLP biases, so
    /// its checkpoints fit).
    #[arg(long, value_enum, default_value = "official")]
    pub variant: Variant,

    /// Seed for initialisation, batches and dropout.
    #[arg(long, default_value_t = 1, value_parser = ranges::at_least::<u64>(0), allow_hyphen_values = true)]
    pub seed: u64,

    /// Skip a step whose loss exceeds this multiple of the median of the
    /// last 100 losses (0 turns it off; otherwise above 1). Non-finite
    /// losses and gradients are always skipped.
    #[arg(long, default_value_t = 5.0, value_name = "X", value_parser = ranges::FACTOR_OR_OFF, allow_hyphen_values = true)]
    pub spike_factor: f64,

    /// Write the checkpoint (and its optimizer state, PATH.state) every N
    /// iterations, so a killed run can --resume.
    #[arg(long, value_name = "N", value_parser = ranges::at_least::<u64>(1), allow_hyphen_values = true)]
    pub save_every: Option<u64>,

    /// Continue from a checkpoint written with --save-every (same flags).
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,

    /// Validate against this labelled feature store (a test or held-out
    /// split extracted with the same settings): image AUROC per class and
    /// mean, pixel AUROC when masks are there. Logged on stderr.
    #[arg(long, value_name = "STORE")]
    pub val: Option<PathBuf>,

    /// Validate every N iterations (default: once, at the end).
    #[arg(long, value_name = "N", requires = "val", value_parser = ranges::at_least::<u64>(1), allow_hyphen_values = true)]
    pub val_every: Option<u64>,

    /// Keep the checkpoint with the best validation value of this metric
    /// instead of the last one (needs --val-every below --iterations: more
    /// than one validation).
    #[arg(long, value_enum, value_name = "METRIC", requires = "val")]
    pub keep_best: Option<ValMetric>,

    /// Stop when this many validations in a row did not improve the
    /// --keep-best metric.
    #[arg(long, value_name = "N", requires = "keep_best", value_parser = ranges::at_least::<u32>(1), allow_hyphen_values = true)]
    pub patience: Option<u32>,

    /// Only these classes (comma-separated; of the store, the samples or
    /// the --dataset tree).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,

    /// Write one JSON line per iteration (it, loss, lr, p, grad_norm,
    /// skipped) to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// Training protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One model for all classes.
    Unified,
    /// One model per class.
    Separated,
}

/// Per-setting defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// MVTec-AD multi-class.
    Mvtec,
    /// VisA multi-class.
    Visa,
    /// Real-IAD multi-class.
    Realiad,
    /// Class-separated training.
    Separated,
    /// ViT-L (as mvtec).
    Large,
}

/// Decoder attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attention {
    /// ELU+1 linear attention.
    Linear,
    /// Softmax attention.
    Softmax,
}

/// Layer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Groups {
    /// [[0,1,2,3],[4,5,6,7]].
    Loose,
    /// Eight singleton groups.
    Strict,
    /// One group of all eight.
    Single,
}

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loss {
    /// Global cosine with hard-mining gradient weighting.
    HardMining,
    /// Global cosine.
    Plain,
}

/// Model variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// MLP biases on.
    Official,
    /// MLP biases off.
    Anomalib,
}

/// Validated settings (flags resolved against the preset).
struct Plan {
    mode: Mode,
    iterations: u64,
    dropout: f64,
    eps: f64,
}

impl Args {
    fn plan(&self) -> anyhow::Result<Plan> {
        let (mode, iterations, dropout, eps) = match self.preset {
            Preset::Mvtec | Preset::Visa | Preset::Large => (Mode::Unified, 10_000, 0.2, 1e-10),
            Preset::Realiad => (Mode::Unified, 50_000, 0.4, 1e-10),
            Preset::Separated => (Mode::Separated, 5_000, 0.2, 1e-8),
        };
        let mode = self.mode.unwrap_or(mode);
        let eps = self
            .eps
            .unwrap_or(if mode == Mode::Separated { 1e-8 } else { eps });
        let plan = Plan {
            mode,
            iterations: self.iterations.unwrap_or(iterations),
            dropout: self.dropout.unwrap_or(dropout),
            eps,
        };
        // Range checks are clap's (cli::ranges); these combine flags.
        if self.attention == Attention::Softmax && self.attention_eps.is_some() {
            bail!("--attention-eps applies to linear attention; --attention softmax has no normaliser to add it to");
        }
        if self.keep_best.is_some() && self.val_every.unwrap_or(plan.iterations) >= plan.iterations {
            bail!(
                "--keep-best needs more than one validation: pass --val-every N with N below the {} iterations",
                plan.iterations
            );
        }
        if self.resume.is_some() && plan.mode == Mode::Separated {
            bail!("--resume works with one checkpoint: resume separated training class by class with --classes");
        }
        Ok(plan)
    }
}

/// Runs the tool.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let quiet = args.quiet.quiet;
    crate::cli::stdio::refuse_dash(&[
        ("-o", Some(&args.output), "a checkpoint is written to a file (a folder with --mode separated)"),
        ("--resume", args.resume.as_deref(), "resuming reads a checkpoint file and the .state file beside it"),
        ("--val", args.val.as_deref(), "the validation store is read from a file"),
        ("--log", args.log.as_deref(), "the log is written to a file"),
        ("--weights", args.encoder.weights.as_deref(), "encoder weights are read from a file or folder"),
    ])?;
    let store = match &args.features {
        Some(path) => {
            let store = crate::cli::stdio::open_store(path)?;
            if store.is_empty() {
                bail!("{}: the feature store has no images", store.path().display());
            }
            Some(store)
        }
        None => None,
    };
    // Samples first: a bad input fails before the encoder is loaded.
    let samples = match &store {
        Some(_) => None,
        None => Some(image_samples(&args)?),
    };
    match plan.mode {
        Mode::Unified => crate::io::atomic::check_writable(&args.output)?,
        Mode::Separated => crate::io::atomic::check_writable_dir(&args.output)?,
    }
    let mut log = match &args.log {
        Some(path) => Some(crate::io::atomic::AtomicFile::create(path)?),
        None => None,
    };
    let device = args.device.device.resolve()?;
    let mut source = match (&store, samples) {
        (Some(store), _) => BatchSource::Store {
            store,
            // Hold the store in device memory when on a GPU and it fits
            // (fp16: N x G x T x D x 2 bytes); when the allocation fails,
            // batches are read from the memory-mapped file instead.
            held: match device {
                tch::Device::Cuda(_) => match store.all(Kind::Half, device) {
                    Ok(all) => Some(all),
                    Err(e) => {
                        progress::note(quiet, TOOL, &format!("the feature store does not fit in GPU memory ({e}); reading batches from the file"));
                        None
                    }
                },
                _ => None,
            },
        },
        (None, samples) => BatchSource::Images(image_source(&args, samples.unwrap_or_default(), device)?),
    };
    let from = source_name(&args);
    progress::note(quiet, TOOL, &format!("training on {} from {from} ({} images)", crate::device::describe(device), source.records().len()));

    let records = source.records();
    let classes: Vec<String> = records.iter().map(|r| r.class_name().to_string()).collect();
    let selected: Vec<usize> = (0..records.len())
        .filter(|&i| args.classes.is_empty() || args.classes.contains(&classes[i]))
        .collect();
    for wanted in &args.classes {
        if !classes.contains(wanted) {
            bail!("class '{wanted}' is not in {from}");
        }
    }
    let jobs: Vec<(Option<String>, Vec<usize>)> = match plan.mode {
        Mode::Unified => vec![(None, selected)],
        Mode::Separated => {
            let mut names: Vec<String> = selected.iter().map(|&i| classes[i].clone()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|c| {
                    let rows = selected.iter().copied().filter(|&i| classes[i] == c).collect();
                    (Some(c), rows)
                })
                .collect()
        }
    };
    let validator = match &args.val {
        Some(path) => Some(Validator::open(path, source.meta(), device).with_context(|| format!("--val {}", path.display()))?),
        None => None,
    };
    for (class, rows) in jobs {
        let output = match (&class, plan.mode) {
            (Some(c), Mode::Separated) => args.output.join(format!("{}.safetensors", if c.is_empty() { "unnamed" } else { c })),
            _ => args.output.clone(),
        };
        train_one(&args, &plan, &mut source, class.as_deref(), rows, &classes, &output, device, log.as_mut(), validator.as_ref())?;
    }
    if let Some(log) = log {
        log.commit()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The store, or what the samples of --images were read from, for messages.
fn source_name(args: &Args) -> String {
    match (&args.features, &args.samples.dataset, &args.samples.input) {
        (Some(store), _, _) if crate::cli::stdio::is_dash(store) => "stdin".to_string(),
        (Some(store), _, _) => store.display().to_string(),
        (None, Some(root), _) => root.display().to_string(),
        (None, None, Some(file)) if file.as_os_str() != "-" => file.display().to_string(),
        _ => "stdin".to_string(),
    }
}

/// The samples of --images, those of --classes only.
fn image_samples(args: &Args) -> anyhow::Result<Vec<crate::data::record::Sample>> {
    let mut samples = crate::cli::samples::read_source(&args.samples, &args.classes)?;
    if samples.is_empty() {
        bail!("no samples to train on (empty input)");
    }
    if !args.classes.is_empty() {
        for wanted in &args.classes {
            if !samples.iter().any(|s| s.class_name() == wanted) {
                bail!("class '{wanted}' is not in {}", source_name(args));
            }
        }
        samples.retain(|s| args.classes.iter().any(|c| c == s.class_name()));
    }
    Ok(samples)
}

/// Opens the encoder for --images and checks every image once: an
/// unreadable one stops the run (naming it) or, with --on-error skip, is
/// left out as dinomaly-extract leaves it out.
fn image_source(args: &Args, mut samples: Vec<crate::data::record::Sample>, device: tch::Device) -> anyhow::Result<ImageSource> {
    let quiet = args.quiet.quiet;
    let prep = args.encoder.preprocess()?;
    let maps = match args.groups {
        Groups::Loose => GroupPreset::Loose,
        Groups::Strict => GroupPreset::Strict,
        Groups::Single => GroupPreset::Single,
    };
    let extractor = Extractor::open(&EncoderRequest::from_args(&args.encoder, quiet, TOOL), prep, maps, StoreDtype::F32, device)?;
    progress::note(quiet, TOOL, &format!("checking {} images", samples.len()));
    let mut bad = unreadable(&samples, &prep);
    if !bad.is_empty() {
        if args.on_error == OnError::Stop {
            let (_, err) = bad.swap_remove(0);
            return Err(anyhow::Error::new(err)
                .context("stopped; pass --on-error skip to leave out unreadable images")
                .context(format!("no checkpoint written to {}", args.output.display())));
        }
        for (i, err) in &bad {
            // Always shown (as dinomaly-extract shows it): the data changed.
            eprintln!("{TOOL}: skipped {}: {err}", samples[*i].image.display());
        }
        let bad: std::collections::HashSet<usize> = bad.iter().map(|(i, _)| *i).collect();
        samples = samples.into_iter().enumerate().filter(|(i, _)| !bad.contains(i)).map(|(_, s)| s).collect();
        if samples.is_empty() {
            bail!("no image could be read, no checkpoint written");
        }
    }
    Ok(ImageSource::new(extractor, samples))
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    args: &Args,
    plan: &Plan,
    source: &mut BatchSource<'_>,
    class: Option<&str>,
    rows: Vec<usize>,
    classes: &[String],
    output: &Path,
    device: tch::Device,
    mut log: Option<&mut crate::io::atomic::AtomicFile>,
    validator: Option<&Validator>,
) -> anyhow::Result<()> {
    let quiet = args.quiet.quiet;
    let meta = &source.meta().clone();
    let row_classes: Vec<String> = rows.iter().map(|&r| classes[r].clone()).collect();
    let sampler = BatchSampler::new(rows.clone(), &row_classes, args.batch, args.seed, args.sampling)
        .with_context(|| match class {
            Some(c) => format!("class '{c}'"),
            None => source_name(args),
        })?;
    let attention = match args.attention {
        Attention::Linear => AttentionKind::Linear { eps: args.attention_eps },
        Attention::Softmax => AttentionKind::Softmax,
    };
    let mut cfg = DinomalyConfig::official(meta.embed_dim, meta.num_heads, meta.num_registers, plan.dropout);
    cfg.num_layers = meta.layers.len();
    cfg.attention = attention;
    cfg.mlp_bias = args.variant == Variant::Official;
    let cfg = cfg.with_groups(match args.groups {
        Groups::Loose => GroupPreset::Loose,
        Groups::Strict => GroupPreset::Strict,
        Groups::Single => GroupPreset::Single,
    })?;
    let input = StoreInput::for_store(meta, &cfg.groups).with_context(|| source_name(args))?;
    let settings = TrainSettings {
        schedule: WarmCosine::new(args.lr, args.final_lr, plan.iterations, args.warmup.min(plan.iterations))?,
        loss: match args.loss {
            Loss::HardMining => LossKind::HardMining(HardMining::default()),
            Loss::Plain => LossKind::Global,
        },
        max_grad_norm: args.clip,
        loss_ceiling: None,
        precision: args.precision,
        grad_checkpointing: args.grad_checkpointing,
    };
    let opt_cfg = StableAdamWConfig {
        eps: plan.eps,
        weight_decay: args.weight_decay,
        ..StableAdamWConfig::unified()
    };
    let spike = (args.spike_factor > 0.0).then_some(args.spike_factor);
    let mut trainer = Trainer::new(cfg, opt_cfg, settings, input, args.seed, spike, device)?;
    if let Some(resume) = &args.resume {
        trainer.resume(resume, meta).with_context(|| format!("cannot resume from {}", resume.display()))?;
        progress::note(quiet, TOOL, &format!("resumed at iteration {}", trainer.progress.iterations_done));
        note_compute_change(args, resume, quiet)?;
    }
    let label = class.map_or("train".to_string(), |c| format!("train {c}"));
    let bar = progress::bar(plan.iterations, &label, quiet);
    bar.set_position(trainer.progress.iterations_done);
    let training_meta = |trainer: &Trainer| {
        serde_json::json!({
            "mode": match plan.mode { Mode::Unified => "unified", Mode::Separated => "separated" },
            "class": class,
            "iterations": plan.iterations,
            "iterations_done": trainer.progress.iterations_done,
            "batch": args.batch,
            "sampling": format!("{:?}", args.sampling).to_lowercase(),
            "seed": args.seed,
            "lr": args.lr, "final_lr": args.final_lr, "warmup": args.warmup,
            "weight_decay": args.weight_decay, "eps": plan.eps, "clip": args.clip,
            "loss": match args.loss { Loss::HardMining => "hard-mining", Loss::Plain => "plain" },
            "precision": precision_name(args.precision),
            "grad_checkpointing": args.grad_checkpointing,
            "train_images": rows.len(),
            "skipped_steps": trainer.progress.skipped_steps,
            "loss_history": trainer.progress.loss_history,
            "features": args.features.as_ref().map(|p| p.display().to_string()),
            "images": args.images,
        })
    };
    let val_every = args.val_every.unwrap_or(plan.iterations);
    let mut best: Option<(f64, u64)> = None;
    let mut since_best = 0u32;
    let mut smoothed: Option<f64> = None;
    let started = std::time::Instant::now();
    let start_it = trainer.progress.iterations_done;
    while trainer.progress.iterations_done < plan.iterations {
        let it = trainer.progress.iterations_done;
        let outcome = trainer.step(source, &sampler)?;
        if let Some(reason) = outcome.skipped {
            bar.suspend(|| eprintln!("{TOOL}: iteration {it}: step skipped ({reason:?}, loss {:.6})", outcome.loss));
        } else {
            smoothed = Some(smoothed.map_or(outcome.loss, |s| 0.98 * s + 0.02 * outcome.loss));
        }
        if let Some(log) = log.as_deref_mut() {
            let line = serde_json::json!({
                "class": class, "it": it, "loss": outcome.loss, "lr": outcome.lr, "p": outcome.p,
                "grad_norm": outcome.grad_norm, "skipped": outcome.skipped.map(|r| format!("{r:?}")),
            });
            writeln!(log, "{line}").context("cannot write the --log file")?;
        }
        let done = trainer.progress.iterations_done;
        let rate = (done - start_it) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} p {:.2} {:.2} it/s",
            smoothed.unwrap_or(f64::NAN),
            outcome.lr,
            outcome.p,
            rate
        ));
        bar.set_position(done);
        if args.save_every.is_some_and(|n| done % n == 0) && done < plan.iterations {
            trainer.save(output, meta, training_meta(&trainer), true)?;
        }
        if let Some(validator) = validator {
            if done % val_every == 0 || done == plan.iterations {
                let result = validator.run(trainer.model(), args.batch)?;
                bar.suspend(|| eprintln!("{TOOL}: validation at iteration {done}: {}", result.summary()));
                if let Some(metric) = args.keep_best {
                    let value = result.mean(metric);
                    if value.is_some_and(|v| best.is_none_or(|(b, _)| v > b)) {
                        best = value.map(|v| (v, done));
                        since_best = 0;
                        let mut training = training_meta(&trainer);
                        training["best"] = serde_json::json!({"metric": format!("{metric:?}").to_lowercase(), "value": value, "iteration": done});
                        trainer.save(output, meta, training, false)?;
                    } else {
                        since_best += 1;
                        if args.patience.is_some_and(|p| since_best >= p) {
                            bar.suspend(|| eprintln!("{TOOL}: no improvement in {since_best} validations: stopping at iteration {done}"));
                            break;
                        }
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    let last = trainer.progress.loss_history.last().map(|&(_, l)| l).or(smoothed);
    let last = last.map_or("n/a".into(), |l| format!("{l:.4}"));
    let done = trainer.progress.iterations_done;
    let skipped = trainer.progress.skipped_steps;
    match best {
        // The best checkpoint is already written.
        Some((value, it)) => progress::note(
            quiet,
            TOOL,
            &format!("wrote {}: the best of {done} iterations (iteration {it}, validation {value:.4}); {skipped} steps skipped", output.display()),
        ),
        None => {
            trainer.save(output, meta, training_meta(&trainer), args.save_every.is_some())?;
            progress::note(
                quiet,
                TOOL,
                &format!("wrote {} ({done} iterations, {skipped} skipped, final loss {last})", output.display()),
            );
        }
    }
    Ok(())
}

/// Says so when a resumed run computes differently from the run that wrote
/// its checkpoint (allowed: e.g. turning on --grad-checkpointing to save
/// memory, or bf16 to go faster; the numbers then follow the new setting).
fn note_compute_change(args: &Args, resume: &Path, quiet: bool) -> anyhow::Result<()> {
    let training = crate::io::checkpoint::read_meta(resume)?.training;
    // Checkpoints from before these settings existed were fp32, plain.
    let was_precision = training["precision"].as_str().unwrap_or("fp32").to_string();
    let was_checkpointing = training["grad_checkpointing"].as_bool().unwrap_or(false);
    let now_precision = precision_name(args.precision);
    if was_precision != now_precision {
        progress::note(quiet, TOOL, &format!("the checkpoint was trained with --precision {was_precision}; continuing with --precision {now_precision}"));
    }
    if was_checkpointing != args.grad_checkpointing {
        progress::note(quiet, TOOL, &format!("--grad-checkpointing is now {} (was {}): same gradients, different memory and speed", onoff(args.grad_checkpointing), onoff(was_checkpointing)));
    }
    Ok(())
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    }
}

fn onoff(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
