//! `dinomaly-train`: a feature store (or, with `--images`, the images
//! themselves, encoded at every iteration) → a trained checkpoint
//! (bottleneck + linear-attention decoder), unified (one model for all
//! classes) or separated (one model per class), trained as the official
//! code trains it but for two defaults (a loss spike skips its step; the
//! store's features are float16), stated in `--help` and the README.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tch::Kind;

use crate::backbone::extractor::Extractor;
use crate::backbone::open::EncoderRequest;
use crate::cli::args::{DeviceArgs, EncoderArgs, OnError, Precision, QuietArgs, SampleSource};
use crate::cli::on_error::{OnErrorPolicy, Skipped};
use crate::cli::progress;
use crate::cli::ranges;
use crate::io::checkpoint::ModelMeta;
use crate::io::features::{FeatureMeta, FeatureStore, StoreDtype};
use crate::model::store_input::StoreInput;
use crate::model::{
    AttentionKind, DinomalyConfig, GroupPreset, HardMining, LossKind, StableAdamWConfig, TrainSettings, WarmCosine,
};
use crate::train::init::InitCheckpoint;
use crate::train::log::{Continued, TrainLog};
pub use crate::train::preset::{Mode, Preset};
use crate::train::run::{last_path, periodic_path, run_job, Event, Finished, Job, Report, RunPlan};
use crate::train::sampler::{BatchSampler, Sampling};
use crate::train::source::{unreadable, BatchSource, ImageSource};
use crate::train::trainer::{state_path, Trainer};
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
///
/// Two defaults differ from the official training: a step whose loss
/// exceeds 5 times the median of the last 100 is skipped (the official loop
/// never skips; --spike-factor 0 does as it does), and dinomaly-extract
/// stores float16 features by default (the official code trains on the
/// encoder's float32 output; a --dtype f32 store or --images trains on
/// that). The README gives the measured effect of the float16 store.
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-train", version, allow_negative_numbers = true)]
#[command(group(
    clap::ArgGroup::new("image_flags")
        .multiple(true)
        .requires("images")
        .conflicts_with("features")
        .args(["input", "dataset", "backbone", "weights_sha256", "layers", "resize", "crop", "pos_interp", "preprocess", "on_error"])
))]
pub struct Args {
    /// Feature store from dinomaly-extract (the training split); - reads
    /// it from stdin (held in a temporary file in $TMPDIR while training).
    /// Several stores (the parts of `dinomaly-extract --shard I/N`) train
    /// as one: rows concatenated in the given order, every store checked to
    /// have the first one's encoder, weights, layers, groups, resize, crop,
    /// pre-processing and dtype; - at most once.
    #[arg(value_name = "FEATURES", required_unless_present = "images", conflicts_with = "images")]
    pub features: Vec<PathBuf>,

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
    pub groups: GroupPreset,

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
    /// losses and gradients are always skipped. The official loop skips no
    /// step: 0 trains as it does.
    #[arg(long, default_value_t = 5.0, value_name = "X", value_parser = ranges::FACTOR_OR_OFF, allow_hyphen_values = true)]
    pub spike_factor: f64,

    /// Write the checkpoint (and its optimizer state, PATH.state) every N
    /// iterations, so a killed run can --resume. With --keep-best these
    /// saves go to NAME.last.EXT beside the output (model.last.safetensors
    /// for -o model.safetensors), which keeps the best weights.
    #[arg(long, value_name = "N", value_parser = ranges::at_least::<u64>(1), allow_hyphen_values = true)]
    pub save_every: Option<u64>,

    /// Continue from a checkpoint written with --save-every (with
    /// --keep-best: NAME.last.EXT). The flags that shape the training
    /// (--iterations, --batch, --lr, --warmup, --seed, --classes, ...) must
    /// be those of the run being resumed: a difference is refused, naming
    /// the flag. --precision and --grad-checkpointing may change; the
    /// checkpoint records from which iteration.
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,

    /// Start from the bottleneck and decoder of this trained checkpoint
    /// (dinomaly-train's, the official repository's or anomalib's) instead
    /// of the random initialisation, with a fresh optimizer and schedule:
    /// fine-tuning. Its encoder must be the store's: a dinomaly checkpoint's
    /// record is compared; an official or anomalib checkpoint's encoder
    /// tensors are compared with the weights the store was made with (found
    /// by the store's backbone name in the cache, or given with --weights),
    /// and the store must have been extracted with its reference's
    /// pre-processing. Its model (MLP biases, decoder depth, groups,
    /// attention) must be the one the flags build (--variant, --groups).
    #[arg(long, value_name = "CKPT", conflicts_with = "resume")]
    pub init: Option<PathBuf>,

    /// Validate against this labelled feature store (a test or held-out
    /// split extracted with the same settings): image AUROC per class and
    /// mean, pixel AUROC when masks are there, over the classes a model is
    /// trained on (with --mode separated, each model on its own class).
    /// Logged on stderr and in --log.
    #[arg(long, value_name = "STORE")]
    pub val: Option<PathBuf>,

    /// Validate every N iterations (default: once, at the end).
    #[arg(long, value_name = "N", requires = "val", value_parser = ranges::at_least::<u64>(1), allow_hyphen_values = true)]
    pub val_every: Option<u64>,

    /// Keep the checkpoint with the best validation value of this metric
    /// instead of the last one (needs --val-every below --iterations: more
    /// than one validation). Refused when a validated class cannot define
    /// it (I-AUROC of a class with only normal or only anomalous images,
    /// P-AUROC without masks), as the mean would be undefined.
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
    /// skipped, elapsed_s: seconds since this run's first iteration began,
    /// from a monotonic clock) and per validation (validation: iterations done, i_auroc,
    /// p_auroc, classes) to this file as training goes (a FIFO works). A
    /// resumed run continues the log of the run it resumes. When the log
    /// cannot be written (its reader went away, disk full), training goes
    /// on, the checkpoint is written, and the run ends with exit 2 naming
    /// the log.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// Decoder attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attention {
    /// ELU+1 linear attention.
    Linear,
    /// Softmax attention.
    Softmax,
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
    /// Warm-up iterations used: --warmup, at most --iterations.
    warmup: u64,
    dropout: f64,
    eps: f64,
}

impl Args {
    fn plan(&self) -> anyhow::Result<Plan> {
        let preset = self.preset.values();
        let mode = self.mode.unwrap_or(preset.mode);
        // Separated training uses the separated eps whatever the preset;
        // otherwise the preset's own.
        let eps = self.eps.unwrap_or(if mode == Mode::Separated { mode.eps() } else { preset.mode.eps() });
        let dropout = preset.dropout;
        let iterations = self.iterations.unwrap_or(preset.iterations);
        let plan = Plan {
            mode,
            iterations,
            warmup: self.warmup.min(iterations),
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
        if self.encoder.weights.is_some() && !self.images && self.init.is_none() {
            bail!(
                "--weights applies to --images (the encoder that runs) and to --init (the weights an official or \
                 anomalib checkpoint's encoder is checked against); a store already holds the encoder's outputs"
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
        ("--init", args.init.as_deref(), "the checkpoint to start from is read from a file"),
        ("--log", args.log.as_deref(), "the log is written to a file"),
        ("--weights", args.encoder.weights.as_deref(), "encoder weights are read from a file or folder"),
    ])?;
    let store = match args.features.as_slice() {
        [] => None,
        paths => {
            let store = open_stores(paths)?;
            if store.is_empty() {
                bail!("{}: the feature store has no images", store.path().display());
            }
            Some(store)
        }
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
    if let Some(path) = &args.log {
        TrainLog::check(path)?;
    }
    let device = args.device.device.resolve()?;
    if args.precision == Precision::Bf16 {
        // Emulated bf16 is several times slower than fp32 (src/cpu.rs).
        if let Some(note) = crate::cpu::bf16_note(device) {
            progress::note(quiet, TOOL, &note);
        }
    }
    let mut source = match (&store, samples) {
        (Some(store), _) => {
            BatchSource::Store {
                store,
                // Hold the store in device memory when on a GPU and it fits
                // (N x G x T x D x 2 or 4 bytes: in its own dtype, so that an
                // f32 store is not rounded to f16); when the allocation fails,
                // batches are read from the memory-mapped file instead.
                held: match device {
                    tch::Device::Cuda(_) => {
                        match held_copy(store, device) {
                            Ok(all) => Some(all),
                            Err(e) => {
                                progress::note(quiet, TOOL, &format!("the feature store does not fit in GPU memory ({e}); reading batches from the file"));
                                None
                            }
                        }
                    }
                    _ => None,
                },
            }
        }
        (None, samples) => BatchSource::Images(image_source(&args, samples.unwrap_or_default(), device)?),
    };
    let from = source_name(&args);
    progress::note(
        quiet,
        TOOL,
        &format!("training on {} from {from} ({} images)", crate::device::describe(device), source.records().len()),
    );

    let records = source.records();
    let classes: Vec<String> = records.iter().map(|r| r.class_name().to_string()).collect();
    let selected: Vec<usize> =
        (0..records.len()).filter(|&i| args.classes.is_empty() || args.classes.contains(&classes[i])).collect();
    for wanted in &args.classes {
        if !classes.contains(wanted) {
            bail!("class '{wanted}' is not in {from}");
        }
    }
    let classes_of = |rows: &[usize]| {
        let mut names: Vec<String> = rows.iter().map(|&i| classes[i].clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    let groups: Vec<(Option<String>, Vec<usize>)> = match plan.mode {
        Mode::Unified => vec![(None, selected.clone())],
        Mode::Separated => classes_of(&selected)
            .into_iter()
            .map(|c| {
                let rows = selected.iter().copied().filter(|&i| classes[i] == c).collect();
                (Some(c), rows)
            })
            .collect(),
    };
    // Every model's batches are checked before anything is written.
    let mut jobs = Vec::with_capacity(groups.len());
    for (class, rows) in groups {
        let row_classes: Vec<String> = rows.iter().map(|&r| classes[r].clone()).collect();
        let sampler = BatchSampler::new(rows.clone(), &row_classes, args.batch, args.seed, args.sampling)
            .with_context(|| match &class {
                Some(c) => format!("class '{c}'"),
                None => from.clone(),
            })?;
        let output = match (&class, plan.mode) {
            (Some(c), Mode::Separated) => {
                args.output.join(format!("{}.safetensors", if c.is_empty() { "unnamed" } else { c }))
            }
            _ => args.output.clone(),
        };
        let job_classes = classes_of(&rows);
        jobs.push(Job { class, rows, sampler, classes: job_classes, output });
    }
    let validator = match &args.val {
        Some(path) => {
            let trained = classes_of(&selected);
            let validator = Validator::open(path, source.meta(), &trained, device)
                .with_context(|| format!("--val {}", path.display()))?;
            check_validation(&args, &jobs, &validator)?;
            Some(validator)
        }
        None => None,
    };
    if plan.warmup < args.warmup {
        progress::note(
            quiet,
            TOOL,
            &format!(
                "--warmup {} is longer than the {} iterations: the warm-up takes all of them (lr reaches {:e} only at the last one, no cosine decay); the checkpoint records warmup {}",
                args.warmup, plan.iterations, args.lr, plan.warmup
            ),
        );
    }
    let init = match &args.init {
        Some(path) => Some(open_init(&args, &plan, path, source.meta())?),
        None => None,
    };
    // Opened when the first model starts training (after a resume's checks).
    let mut log: Option<TrainLog> = None;
    for job in &jobs {
        train_one(&args, &plan, &mut source, job, device, &mut log, validator.as_ref(), init.as_ref())?;
    }
    if let Some(log) = log.as_mut() {
        if let Some(warning) = log.finish() {
            eprintln!("{TOOL}: warning: {warning}");
        }
        if let Some(failure) = log.failure() {
            // As text: a broken pipe in the chain would read as a quiet exit.
            let written = match plan.mode {
                Mode::Unified => format!("the checkpoint {} is complete", args.output.display()),
                Mode::Separated => format!("the checkpoints in {} are complete", args.output.display()),
            };
            bail!(
                "--log {}: nothing logged from {} on ({}); {written}",
                log.path().display(),
                failure.at,
                failure.error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks the checkpoint of --init against the features and the
/// model this run trains, before any step.
fn open_init(args: &Args, plan: &Plan, path: &Path, meta: &FeatureMeta) -> anyhow::Result<InitCheckpoint> {
    let init = crate::train::init::read(path).with_context(|| format!("--init {}", path.display()))?;
    if args.encoder.weights.is_some() && !args.images && !init.needs_store_encoder() {
        bail!(
            "--weights is not used with --init {}: a dinomaly checkpoint records the encoder it was trained with",
            path.display()
        );
    }
    let cfg = model_config(args, plan, meta)?;
    let store_encoder = || {
        let req = EncoderRequest {
            backbone: meta.backbone.clone(),
            weights: args.encoder.weights.clone(),
            weights_sha256: None,
            layers: meta.layers.clone(),
            pos_interp: crate::backbone::pos_embed::PosInterp::parse(&meta.pos_interp)
                .unwrap_or(crate::backbone::pos_embed::PosInterp::Official),
            quiet: args.quiet.quiet,
            tool: TOOL.to_string(),
        };
        let by = format!("the feature store (--init {} checks its encoder against them)", path.display());
        crate::backbone::open::encoder_weights_expecting(
            &req,
            Some(crate::backbone::open::Expected { sha256: &meta.weights_sha256, by: &by }),
        )
        .map(|(weights, _)| weights)
    };
    init.check(meta, &cfg, store_encoder)?;
    progress::note(
        args.quiet.quiet,
        TOOL,
        &format!(
            "starting from {} ({} checkpoint), fresh optimizer and schedule",
            path.display(),
            crate::io::names::name_of(&init.kind)
        ),
    );
    Ok(init)
}

/// The model the flags build for features described by `meta`.
fn model_config(args: &Args, plan: &Plan, meta: &FeatureMeta) -> anyhow::Result<DinomalyConfig> {
    let attention = match args.attention {
        Attention::Linear => AttentionKind::Linear { eps: args.attention_eps },
        Attention::Softmax => AttentionKind::Softmax,
    };
    let mut cfg = DinomalyConfig::official(meta.embed_dim, meta.num_heads, meta.num_registers, plan.dropout);
    cfg.num_layers = meta.layers.len();
    cfg.attention = attention;
    cfg.mlp_bias = args.variant == Variant::Official;
    Ok(cfg.with_groups(args.groups)?)
}

/// Refuses --keep-best when its metric is undefined for a model's
/// validation classes (the mean over classes would be undefined at every
/// validation, so no checkpoint would ever be kept), and says which image
/// AUROCs will be n/a otherwise.
fn check_validation(args: &Args, jobs: &[Job], validator: &Validator) -> anyhow::Result<()> {
    let path = validator.path().display();
    for job in jobs {
        if let Some(metric) = args.keep_best {
            let reasons = validator.undefined(&job.classes, metric);
            if !reasons.is_empty() {
                bail!(
                    "--keep-best {}: the mean {} over the classes of {} is undefined on --val {path}: {}",
                    metric.name(),
                    metric.label(),
                    job.whose(),
                    reasons.join("; ")
                );
            }
        }
        if args.keep_best != Some(ValMetric::IAuroc) {
            for reason in validator.undefined(&job.classes, ValMetric::IAuroc) {
                progress::note(
                    args.quiet.quiet,
                    TOOL,
                    &format!("validation of {} on {path}: {reason}; its mean I-AUROC is n/a", job.whose()),
                );
            }
        }
    }
    Ok(())
}

/// All rows of `store` on `device`, in the store's own dtype.
fn held_copy(store: &FeatureStore, device: tch::Device) -> crate::Result<tch::Tensor> {
    let kind = match store.meta().dtype {
        StoreDtype::F16 => Kind::Half,
        StoreDtype::F32 => Kind::Float,
    };
    store.all(kind, device)
}

/// The stores of FEATURES as one (rows in the given order; see
/// [`FeatureStore::concat`]); `-` (stdin) may be one of them, once.
fn open_stores(paths: &[PathBuf]) -> anyhow::Result<FeatureStore> {
    let dashes = paths.iter().filter(|p| crate::cli::stdio::is_dash(p)).count();
    if dashes > 1 {
        bail!("- is given {dashes} times as a feature store: stdin holds one store");
    }
    let stores = paths.iter().map(|p| crate::cli::stdio::open_store(p)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(FeatureStore::concat(stores)?)
}

/// The name of one store path in messages.
fn store_name(path: &Path) -> String {
    if crate::cli::stdio::is_dash(path) {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}

/// The store(s), or what the samples of --images were read from, for messages.
fn source_name(args: &Args) -> String {
    if !args.features.is_empty() {
        return args.features.iter().map(|p| store_name(p)).collect::<Vec<_>>().join(", ");
    }
    match (&args.samples.dataset, &args.samples.input) {
        (Some(root), _) => root.display().to_string(),
        (None, Some(file)) if file.as_os_str() != "-" => file.display().to_string(),
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
fn image_source(
    args: &Args,
    mut samples: Vec<crate::data::record::Sample>,
    device: tch::Device,
) -> anyhow::Result<ImageSource> {
    let quiet = args.quiet.quiet;
    let prep = args.encoder.preprocess()?;
    let extractor = Extractor::open(&args.encoder.request(quiet, TOOL), prep, args.groups, StoreDtype::F32, device)?;
    progress::note(quiet, TOOL, &format!("checking {} images", samples.len()));
    let bad = unreadable(&samples, &prep);
    if !bad.is_empty() {
        let mut on_error = OnErrorPolicy::new(args.on_error, TOOL, Skipped::Noted)
            .unwritten(format!("no checkpoint written to {}", args.output.display()));
        for (i, err) in &bad {
            on_error.failed(&samples[*i].image, err, None)?;
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
    job: &Job,
    device: tch::Device,
    log: &mut Option<TrainLog>,
    validator: Option<&Validator>,
    init: Option<&InitCheckpoint>,
) -> anyhow::Result<()> {
    let quiet = args.quiet.quiet;
    let meta = &source.meta().clone();
    let class = job.class.as_deref();
    let cfg = model_config(args, plan, meta)?;
    let input = StoreInput::for_store(meta, &cfg.groups).with_context(|| source_name(args))?;
    let settings = TrainSettings {
        schedule: WarmCosine::new(args.lr, args.final_lr, plan.iterations, plan.warmup)?,
        loss: match args.loss {
            Loss::HardMining => LossKind::HardMining(HardMining::default()),
            Loss::Plain => LossKind::Global,
        },
        max_grad_norm: args.clip,
        loss_ceiling: None,
        precision: args.precision,
        grad_checkpointing: args.grad_checkpointing,
    };
    let opt_cfg = StableAdamWConfig { eps: plan.eps, weight_decay: args.weight_decay, ..StableAdamWConfig::unified() };
    let spike = (args.spike_factor > 0.0).then_some(args.spike_factor);
    let mut trainer = Trainer::new(cfg, opt_cfg, settings, input, args.seed, spike, device)?;
    if let Some(init) = init {
        trainer.start_from(&init.tensors, &init.path)?;
    }
    let shaping = shaping_settings(args, plan, job);
    let val_store =
        args.val.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string());
    let record = match &args.resume {
        Some(resume) => {
            let record = resume_from(args, resume, &mut trainer, meta, &shaping, val_store.as_deref(), &job.output)?;
            progress::note(quiet, TOOL, &format!("resumed at iteration {}", trainer.progress.iterations_done));
            record
        }
        None => RunRecord::fresh(args),
    };
    if let (None, Some(path)) = (log.as_ref(), &args.log) {
        let resume_at = args.resume.as_ref().map(|_| trainer.progress.iterations_done);
        let (opened, continued) = TrainLog::open(path, resume_at)?;
        let done = trainer.progress.iterations_done;
        match continued {
            Continued::Kept { kept, .. } if kept < done => progress::note(
                quiet,
                TOOL,
                &format!(
                    "{} holds {kept} of the {done} iterations before the resume point; the resumed run's lines follow",
                    path.display()
                ),
            ),
            Continued::Missing => progress::note(
                quiet,
                TOOL,
                &format!("{} was not there: it holds the iterations from {done} on", path.display()),
            ),
            _ => {}
        }
        *log = Some(opened);
    }
    let label = class.map_or("train".to_string(), |c| format!("train {c}"));
    let bar = progress::bar(plan.iterations, &label, quiet);
    bar.set_position(trainer.progress.iterations_done);
    let training_meta = |trainer: &Trainer| {
        let mut t = shaping.clone();
        let p = &trainer.progress;
        let more = serde_json::json!({
            "iterations_done": p.iterations_done,
            "precision": record.uniform("precision"),
            "grad_checkpointing": record.uniform("grad_checkpointing"),
            "compute": record.compute,
            "resumed_at": record.resumed_at,
            "skipped_steps": p.skipped_steps,
            "loss_history": p.loss_history,
            // One store: its path, as before; several: the list, in order.
            "features": match args.features.as_slice() {
                [] => serde_json::Value::Null,
                [one] => serde_json::json!(one.display().to_string()),
                many => serde_json::json!(many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
            },
            "images": args.images,
            "init": init.map(|i| serde_json::json!({"path": i.path.display().to_string(), "kind": crate::io::names::name_of(&i.kind)})),
            "val": val_store,
            "keep_best": args.keep_best.map(|m| m.name()),
            "best": p.best,
        });
        if let serde_json::Value::Object(more) = more {
            t.extend(more);
        }
        serde_json::Value::Object(t)
    };
    let run_plan = RunPlan {
        iterations: plan.iterations,
        batch: args.batch,
        val_every: args.val_every.unwrap_or(plan.iterations),
        keep_best: args.keep_best,
        patience: args.patience,
        save_every: args.save_every,
    };
    let mut printer = Printer { class, log, bar: &bar };
    let finished = run_job(&mut trainer, source, job, &run_plan, validator, meta, training_meta, &mut printer)?;
    bar.finish_and_clear();
    let last = finished.last_loss.map_or("n/a".into(), |l| format!("{l:.4}"));
    let Finished { done, skipped, .. } = finished;
    let output = &job.output;
    match (args.keep_best, finished.best) {
        // The best checkpoint is already written.
        (Some(metric), Some(best)) => {
            let last_weights = if args.save_every.is_some() {
                format!("; the last weights (iteration {done}) are in {}", periodic_path(&run_plan, job).display())
            } else {
                String::new()
            };
            progress::note(
                quiet,
                TOOL,
                &format!(
                    "wrote {}: the best validation, {} {:.4} at iteration {} of {done}; {skipped} steps skipped{last_weights}",
                    output.display(),
                    metric.name(),
                    best.value,
                    best.iteration
                ),
            );
        }
        (keep_best, _) => {
            let why = match keep_best {
                Some(metric) => {
                    format!("; no validation gave a defined {}, so these are the last weights", metric.label())
                }
                None => String::new(),
            };
            progress::note(
                quiet,
                TOOL,
                &format!("wrote {} ({done} iterations, {skipped} skipped, final loss {last}){why}", output.display()),
            );
        }
    }
    Ok(())
}

/// Prints a run's events: the JSON log lines, the progress bar, and the
/// notes on stderr (above the bar).
struct Printer<'a> {
    /// The class of a separated model, in every log line.
    class: Option<&'a str>,
    log: &'a mut Option<TrainLog>,
    bar: &'a indicatif::ProgressBar,
}

impl Report for Printer<'_> {
    fn event(&mut self, event: Event<'_>) {
        let (class, bar) = (self.class, self.bar);
        match event {
            Event::Iteration { it, outcome, elapsed_s, smoothed, rate, done } => {
                if let Some(reason) = outcome.skipped {
                    bar.suspend(|| {
                        eprintln!("{TOOL}: iteration {it}: step skipped ({reason:?}, loss {:.6})", outcome.loss)
                    });
                }
                let line = serde_json::json!({
                    "class": class, "it": it, "loss": outcome.loss, "lr": outcome.lr, "p": outcome.p,
                    "grad_norm": outcome.grad_norm, "skipped": outcome.skipped.map(|r| format!("{r:?}")),
                    // Timing from inside the process: a rate taken from it leaves
                    // out start-up, whatever the machine (scripts/gpu-check.sh).
                    "elapsed_s": elapsed_s,
                });
                log_line(self.log, &line, || format!("iteration {it}"), bar);
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e} p {:.2} {:.2} it/s",
                    smoothed.unwrap_or(f64::NAN),
                    outcome.lr,
                    outcome.p,
                    rate
                ));
                bar.set_position(done);
            }
            Event::Validation { done, result } => {
                bar.suspend(|| eprintln!("{TOOL}: validation at iteration {done}: {}", result.summary()));
                let mut line = serde_json::json!({"class": class, "validation": done});
                if let (Some(line), serde_json::Value::Object(values)) = (line.as_object_mut(), result.to_json()) {
                    line.extend(values);
                }
                log_line(self.log, &line, || format!("the validation at iteration {done}"), bar);
            }
            Event::EarlyStop { since, done } => {
                bar.suspend(|| {
                    eprintln!("{TOOL}: no improvement in {since} validations: stopping at iteration {done}")
                });
            }
        }
    }
}

/// Writes a line to the log, if there is one, showing its first failure.
fn log_line(
    log: &mut Option<TrainLog>,
    line: &serde_json::Value,
    at: impl FnOnce() -> String,
    bar: &indicatif::ProgressBar,
) {
    if let Some(warning) = log.as_mut().and_then(|l| l.write(line, at)) {
        // Always shown: the run will end with an error because of it.
        bar.suspend(|| eprintln!("{TOOL}: warning: {warning}"));
    }
}

/// The settings that shape what training computes, by checkpoint key, with
/// the flag that sets each: recorded in every checkpoint, and a resumed run
/// must repeat them.
const SHAPING: [(&str, &str); 15] = [
    ("mode", "--mode"),
    ("classes", "--classes"),
    ("train_images", "the training images"),
    ("iterations", "--iterations"),
    ("batch", "--batch"),
    ("sampling", "--sampling"),
    ("seed", "--seed"),
    ("lr", "--lr"),
    ("final_lr", "--final-lr"),
    ("warmup", "--warmup"),
    ("weight_decay", "--weight-decay"),
    ("eps", "--eps"),
    ("clip", "--clip"),
    ("loss", "--loss"),
    ("spike_factor", "--spike-factor"),
];

/// This run's values of [`SHAPING`] (and the class of a separated model).
fn shaping_settings(args: &Args, plan: &Plan, job: &Job) -> serde_json::Map<String, serde_json::Value> {
    let json = serde_json::json!({
        "mode": match plan.mode { Mode::Unified => "unified", Mode::Separated => "separated" },
        "class": job.class,
        "classes": job.classes,
        "train_images": job.rows.len(),
        "iterations": plan.iterations,
        "batch": args.batch,
        "sampling": crate::io::names::name_of(&args.sampling),
        "seed": args.seed,
        "lr": args.lr, "final_lr": args.final_lr, "warmup": plan.warmup,
        "weight_decay": args.weight_decay, "eps": plan.eps, "clip": args.clip,
        "loss": match args.loss { Loss::HardMining => "hard-mining", Loss::Plain => "plain" },
        "spike_factor": args.spike_factor,
    });
    match json {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// Equal as recorded: numbers within float rounding of a JSON round trip.
fn same_setting(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// A recorded value as a flag value.
fn show_setting(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "none".to_string(),
        serde_json::Value::Array(items) => items.iter().map(show_setting).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The settings of this run (`now`) that differ from those a checkpoint
/// recorded (`was`), as flags; keys a checkpoint lacks (older versions)
/// are not compared.
fn changed_settings(was: &serde_json::Value, now: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut changed = Vec::new();
    for (key, flag) in SHAPING {
        let (Some(was), Some(now)) = (was.get(key), now.get(key)) else {
            continue;
        };
        // Names read through their table (earlier versions wrote
        // "classbalanced" for class-balanced).
        let was = &match (key, was.as_str()) {
            ("sampling", Some(name)) => crate::io::names::parse_name::<Sampling>(name)
                .map_or_else(|| was.clone(), |s| serde_json::Value::String(crate::io::names::name_of(&s))),
            _ => was.clone(),
        };
        if !same_setting(was, now) {
            changed.push(match key {
                "train_images" => format!("the training set has {now} images (the checkpoint's had {was})"),
                _ => format!("{flag} {} (the checkpoint's: {})", show_setting(now), show_setting(was)),
            });
        }
    }
    changed
}

/// The model settings of this run that differ from a checkpoint's, as flags.
fn changed_model(was: &ModelMeta, now: &ModelMeta) -> Vec<String> {
    let variant = |bias: bool| if bias { "official" } else { "anomalib" };
    let groups = |g: &[Vec<usize>]| format!("{g:?}").replace(' ', "");
    let eps = |e: Option<f64>| e.map_or("none".to_string(), |e| e.to_string());
    let mut changed = Vec::new();
    let mut differ = |differs: bool, flag: &str, now: String, was: String| {
        if differs {
            changed.push(format!("{flag} {now} (the checkpoint's: {was})"));
        }
    };
    differ(was.attention != now.attention, "--attention", now.attention.clone(), was.attention.clone());
    differ(was.attention_eps != now.attention_eps, "--attention-eps", eps(now.attention_eps), eps(was.attention_eps));
    differ(was.dropout != now.dropout, "--dropout", now.dropout.to_string(), was.dropout.to_string());
    differ(was.mlp_bias != now.mlp_bias, "--variant", variant(now.mlp_bias).into(), variant(was.mlp_bias).into());
    differ(was.groups != now.groups, "--groups", groups(&now.groups), groups(&was.groups));
    differ(
        was.num_layers != now.num_layers || was.depth_decoder != now.depth_decoder,
        "the model's size",
        format!("{} layers, {} decoder blocks", now.num_layers, now.depth_decoder),
        format!("{} layers, {} decoder blocks", was.num_layers, was.depth_decoder),
    );
    changed
}

/// What a run's checkpoints record about how it computed, across resumes.
struct RunRecord {
    /// One entry per stretch of iterations with the same --precision and
    /// --grad-checkpointing (`from`, the first iteration of the stretch).
    compute: Vec<serde_json::Value>,
    /// Iterations at which the run was resumed.
    resumed_at: Vec<u64>,
}

impl RunRecord {
    fn fresh(args: &Args) -> Self {
        RunRecord { compute: vec![compute_entry(args, 0)], resumed_at: Vec::new() }
    }

    /// The value of `key` when every stretch used the same, else "mixed"
    /// (see `compute`): a checkpoint never states a setting some of its
    /// iterations did not use.
    fn uniform(&self, key: &str) -> serde_json::Value {
        let first = &self.compute[0][key];
        if self.compute.iter().all(|c| &c[key] == first) {
            first.clone()
        } else {
            "mixed".into()
        }
    }
}

fn compute_entry(args: &Args, from: u64) -> serde_json::Value {
    serde_json::json!({"from": from, "precision": precision_name(args.precision), "grad_checkpointing": args.grad_checkpointing})
}

/// Resumes `trainer` from `resume` after checking that this run would
/// compute what the resumed one did: the same encoder and feature dtype,
/// model and [`SHAPING`] settings (refused, naming every flag that
/// differs); --precision and --grad-checkpointing may change (to fit in
/// memory or go faster), which the record keeps. A run that kept its best
/// checkpoint must go on keeping it by the same metric on the same store,
/// and `output` must hold it.
#[allow(clippy::too_many_arguments)]
fn resume_from(
    args: &Args,
    resume: &Path,
    trainer: &mut Trainer,
    meta: &FeatureMeta,
    shaping: &serde_json::Map<String, serde_json::Value>,
    val_store: Option<&str>,
    output: &Path,
) -> anyhow::Result<RunRecord> {
    let quiet = args.quiet.quiet;
    let context = || format!("cannot resume from {}", resume.display());
    let recorded = crate::io::checkpoint::read_meta(resume).with_context(context)?;
    crate::io::features::check_store_matches(meta, &recorded.encoder).with_context(context)?;
    let mut changed = changed_settings(&recorded.training, shaping);
    changed.extend(changed_model(&recorded.model, &ModelMeta::from_config(trainer.model().config())));
    if recorded.encoder.dtype != meta.dtype {
        changed.push(
            format!("{:?} training features (the checkpoint's: {:?})", meta.dtype, recorded.encoder.dtype)
                .to_lowercase(),
        );
    }
    if !changed.is_empty() {
        bail!(
            "--resume {}: {}; a resumed run must be given the settings it started with",
            resume.display(),
            changed.join(", ")
        );
    }
    if args.keep_best.is_some() && !state_path(resume).exists() && state_path(&last_path(resume)).exists() {
        bail!(
            "--resume {}: a best checkpoint has no training state; with --keep-best the run resumes from {}",
            resume.display(),
            last_path(resume).display()
        );
    }
    trainer.resume(resume, meta).with_context(context)?;
    let done = trainer.progress.iterations_done;
    let progress = &mut trainer.progress;
    match (&progress.best, args.keep_best) {
        (Some(best), Some(metric)) => {
            if best.metric != metric.name() {
                bail!(
                    "--keep-best {}: the run being resumed keeps its best checkpoint by {}",
                    metric.name(),
                    best.metric
                );
            }
            let was_val = recorded.training["val"].as_str();
            if was_val.is_some() && was_val != val_store {
                bail!(
                    "--val {}: the run being resumed validated on {}",
                    val_store.unwrap_or("-"),
                    was_val.unwrap_or("-")
                );
            }
            let kept = crate::io::checkpoint::read_meta(output).ok().map(|m| m.training["best"].clone());
            let holds_best = kept.as_ref().is_some_and(|b| b["iteration"].as_u64() == Some(best.iteration));
            if !holds_best {
                bail!(
                    "-o {}: not the best checkpoint of the run being resumed (iteration {}, {} {:.4}); give -o that run's output",
                    output.display(),
                    best.iteration,
                    best.metric,
                    best.value
                );
            }
        }
        (Some(best), None) => {
            progress::note(
                quiet,
                TOOL,
                &format!(
                    "the resumed run kept its best checkpoint by {}; without --keep-best, the last weights go to {}",
                    best.metric,
                    output.display()
                ),
            );
            progress.best = None;
            progress.since_best = 0;
        }
        _ => {}
    }
    // Checkpoints from before these records were fp32, without checkpointing.
    let mut compute: Vec<serde_json::Value> = recorded.training["compute"].as_array().cloned().unwrap_or_else(|| {
        vec![serde_json::json!({
            "from": 0,
            "precision": recorded.training["precision"].as_str().unwrap_or("fp32"),
            "grad_checkpointing": recorded.training["grad_checkpointing"].as_bool().unwrap_or(false),
        })]
    });
    let now = compute_entry(args, done);
    let was = compute.last().cloned().unwrap_or_default();
    if was["precision"] != now["precision"] {
        progress::note(
            quiet,
            TOOL,
            &format!(
                "the checkpoint was trained with --precision {}; continuing with --precision {} (recorded)",
                show_setting(&was["precision"]),
                show_setting(&now["precision"])
            ),
        );
    }
    if was["grad_checkpointing"] != now["grad_checkpointing"] {
        progress::note(
            quiet,
            TOOL,
            &format!(
                "--grad-checkpointing is now {}: same gradients, different memory and speed (recorded)",
                onoff(args.grad_checkpointing)
            ),
        );
    }
    if was["precision"] != now["precision"] || was["grad_checkpointing"] != now["grad_checkpointing"] {
        compute.push(now);
    }
    let mut resumed_at: Vec<u64> = recorded.training["resumed_at"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    resumed_at.push(done);
    Ok(RunRecord { compute, resumed_at })
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::Sample;
    use crate::io::features::FeatureWriter;

    #[test]
    fn a_store_held_on_the_device_keeps_its_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.safetensors");
        let meta = FeatureMeta {
            backbone: "test".into(),
            weights_sha256: "0".into(),
            embed_dim: 4,
            num_heads: 1,
            num_registers: 0,
            patch_size: 14,
            layers: vec![0, 1],
            groups: vec![vec![0, 1]],
            all_layers: false,
            resize: (14, 14),
            crop: (14, 14),
            preprocess: "pil".into(),
            pos_interp: "bicubic".into(),
            grid: (1, 1),
            dtype: StoreDtype::F32,
        };
        // (images, groups, tokens, D); 1 + 2^-20 has no float16 value.
        let values: Vec<f32> = (0..16).map(|i| 1.0 + i as f32 * 2f32.powi(-20)).collect();
        let rows = tch::Tensor::from_slice(&values).reshape([2, 1, 2, 4]);
        let mut writer = FeatureWriter::create(&path, meta).unwrap();
        writer.push(&[Sample::from_path("a.png"), Sample::from_path("b.png")], &rows).unwrap();
        writer.finish().unwrap();
        let held = held_copy(&FeatureStore::open(&path).unwrap(), tch::Device::Cpu).unwrap();
        assert_eq!(held.kind(), Kind::Float);
        assert!(held.equal(&rows), "the rows were rounded");
    }
}
