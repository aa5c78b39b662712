//! A trained model ready to score: the frozen encoder (unless scoring from a
//! feature store), the bottleneck and decoder in eval mode, the
//! pre-processing and the post-processing, all reconstructed from one of
//! three checkpoint kinds:
//! - `dinomaly`: written by `dinomaly-train` (safetensors + metadata); the
//!   encoder weights are resolved by the backbone name it records and must
//!   have the sha256 it records;
//! - `official`: a `torch.save(model.state_dict())` of the official
//!   `ViTill` (keys `encoder.*` in Meta's layout, `bottleneck.0.*`,
//!   `decoder.*`); official pre- and post-processing (PIL resize 448, crop
//!   392, DINOv2's pos-embed interpolation, zero-padded blur);
//! - `anomalib`: anomalib 2.x Dinomaly weights (a Lightning `.ckpt` with
//!   `state_dict`, or the torch model's state dict; timm-layout encoder under
//!   `encoder.feature_extractor.`, no MLP biases); anomalib's pre- and
//!   post-processing (float-tensor resize, exact pos-embed resize, raw map,
//!   reflect-padded blur for the score).

use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use super::anomaly_map::{PostProcess, PostProcessor, ScoredBatch};
use crate::backbone::encoder::Encoder;
use crate::backbone::open::{open_encoder_expecting, EncoderRequest, Expected};
use crate::backbone::pos_embed::PosInterp;
use crate::backbone::weights::HashInBackground;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::io::checkpoint::{self, ModelMeta};
use crate::io::checkpoint_kind::foreign_kind;
pub use crate::io::checkpoint_kind::{detect_kind, CheckpointKind};
use crate::io::features::{FeatureMeta, StoreDtype};
use crate::io::pth::read_state_dict;
use crate::io::sniff::{self, FileKind};
use crate::model::store_input::StoreInput;
use crate::model::{AttentionKind, Dinomaly, DinomalyConfig};
use crate::{Error, Result};

/// How to open a checkpoint.
#[derive(Debug, Clone)]
pub struct ScorerRequest {
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Its kind; `None` detects it from the contents.
    pub kind: Option<CheckpointKind>,
    /// Encoder weights for `dinomaly` checkpoints (else cache/download by name).
    pub weights: Option<PathBuf>,
    /// Target layers for official/anomalib checkpoints (default per size).
    pub layers: Vec<usize>,
    /// Map side(s) after post-processing; `None` keeps the kind's default.
    pub map_size: Option<(i64, i64)>,
    /// Top-ratio of the image score; `None` keeps the default (0.01).
    pub max_ratio: Option<f64>,
    /// Build no encoder (scoring from a feature store).
    pub features_only: bool,
    /// Weights and activations precision.
    pub precision: crate::model::amp::Precision,
    /// Notes on stderr off.
    pub quiet: bool,
    /// Tool name for notes.
    pub tool: String,
}

/// A model ready to score.
pub struct Scorer {
    /// What the encoder side is (layers, groups, sizes, backbone).
    pub encoder_meta: FeatureMeta,
    /// Kind of the checkpoint.
    pub kind: CheckpointKind,
    encoder: Option<Encoder>,
    precision: crate::model::amp::Precision,
    _vs: nn::VarStore,
    model: Dinomaly,
    prep: Preprocess,
    post: PostProcessor,
    post_config: PostProcess,
    device: Device,
    /// The model's id ([`super::model_id`]), as scored lines carry it.
    model_id: String,
}

impl Scorer {
    /// Opens `req.checkpoint` on `device`.
    pub fn open(req: &ScorerRequest, device: Device) -> Result<Self> {
        let kind = match req.kind {
            Some(k) => k,
            None => detect_kind(&req.checkpoint)?,
        };
        match kind {
            CheckpointKind::Dinomaly => open_dinomaly(req, device),
            CheckpointKind::Official | CheckpointKind::Anomalib => open_foreign(req, kind, device),
        }
    }

    /// Pre-processing the model expects.
    pub fn preprocess(&self) -> Preprocess {
        self.prep
    }

    /// Post-processing settings.
    pub fn post_process(&self) -> &PostProcess {
        &self.post_config
    }

    /// Device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The model's id ([`super::model_id`]): the `"model"` of scored lines.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The loaded encoder (`None` when opened for feature stores only).
    pub fn encoder(&self) -> Option<&Encoder> {
        self.encoder.as_ref()
    }

    /// The loaded bottleneck and decoder.
    pub fn model(&self) -> &Dinomaly {
        &self.model
    }

    /// Scores normalised images (B, 3, h, w). An image's score and map do
    /// not depend on the other images or on B (see [`Scorer::run_alone`]);
    /// `batch` is the fixed batch shape of devices that run a batch at once.
    pub fn score_images(&self, images: &Tensor, batch: usize) -> Result<ScoredBatch> {
        let encoder =
            self.encoder.as_ref().ok_or_else(|| Error::config("this scorer was opened for feature stores only"))?;
        let size = images.size();
        if size.len() != 4 {
            return Err(Error::config(format!("images must be (B, 3, H, W), got {size:?}")));
        }
        let grid = encoder.grid(size[2], size[3])?;
        self.run_alone(images, batch, |part| {
            let layers = encoder.layer_outputs(part)?;
            tch::no_grad(|| {
                let (enc, dec) = self.model.forward_t(&layers, grid, false)?;
                self.post.apply(&enc, &dec)
            })
        })
    }

    /// Scores feature-store rows (B, G, T, D) made with `self.encoder_meta`;
    /// a row's score and map do not depend on the other rows or on B, as in
    /// [`Scorer::score_images`].
    pub fn score_features(&self, rows: &Tensor, store: &FeatureMeta, batch: usize) -> Result<ScoredBatch> {
        check_store_matches(store, &self.encoder_meta)?;
        let input = StoreInput::for_store(store, &self.model.config().groups)?;
        // Element-wise: the same bits for a row whatever the batch.
        let rows = rows.f_to_device(self.device)?.f_to_kind(self.precision.kind())?;
        self.run_alone(&rows, batch, |part| {
            tch::no_grad(|| {
                let (enc, dec) = input.with_features(part, |f| self.model.forward_features_t(f, store.grid, false))?;
                self.post.apply(&enc, &dec)
            })
        })
    }

    /// Runs `run` over `inputs` (B, ...) so that each input's result is a
    /// function of that input alone, whatever batch it came in (its size,
    /// its neighbours, its position, a shard's short last batch):
    ///
    /// - on the CPU, one input at a time, each a fresh copy: every library
    ///   call then sees the same shapes and equally aligned data, and with
    ///   the same thread count computes the same bits. A whole batch at once
    ///   does not: the kernels of matrix products and convolutions choose
    ///   their blocking, threading and so their summation order by the size
    ///   of the whole problem (on an AMD EPYC with AVX2 and no AVX-512 an
    ///   image scored 0.738229513 beside another and 0.738229573 alone).
    ///   A batch of one is already a matrix product of 1 + R + h*w rows per
    ///   layer, so little speed is lost (README: the cost, measured);
    /// - on other devices (CUDA), in batches of exactly `batch` inputs, the
    ///   last one padded with copies of its last input, so that every call
    ///   has one shape and the kernels one plan. Not verified on a GPU.
    fn run_alone(
        &self,
        inputs: &Tensor,
        batch: usize,
        run: impl Fn(&Tensor) -> Result<ScoredBatch>,
    ) -> Result<ScoredBatch> {
        let n = inputs.size().first().copied().unwrap_or(0);
        if n == 0 {
            return run(inputs);
        }
        let (step, shape) = match self.device {
            Device::Cpu => (1, 1),
            _ => {
                let shape = batch.max(1) as i64;
                (shape, shape)
            }
        };
        let (mut maps, mut scores) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(step as usize) {
            let len = step.min(n - start);
            let part = inputs.f_narrow(0, start, len)?;
            let part = if len < shape {
                let last = part.f_narrow(0, len - 1, 1)?;
                let mut size = last.size();
                size[0] = shape - len;
                Tensor::f_cat(&[part, last.f_expand(&size, false)?], 0)?
            } else {
                // A copy of its own: the same alignment wherever it was.
                let mut fresh = part.f_empty_like()?;
                fresh.f_copy_(&part)?;
                fresh
            };
            let scored = run(&part)?;
            maps.push(scored.maps.f_narrow(0, 0, len)?);
            scores.push(scored.scores.f_narrow(0, 0, len)?);
        }
        Ok(ScoredBatch { maps: Tensor::f_cat(&maps, 0)?, scores: Tensor::f_cat(&scores, 0)? })
    }
}

fn open_dinomaly(req: &ScorerRequest, device: Device) -> Result<Scorer> {
    let ckpt = checkpoint::load(&req.checkpoint)?;
    let meta = ckpt.meta.encoder.clone();
    // A flag either works or is refused: these would be silently ignored.
    if !req.layers.is_empty() {
        let recorded: Vec<String> = meta.layers.iter().map(usize::to_string).collect();
        return Err(Error::config(format!(
            "--layers applies to official and anomalib checkpoints; a dinomaly checkpoint records its layers ({})",
            recorded.join(",")
        )));
    }
    if req.features_only && req.weights.is_some() {
        return Err(Error::config(
            "--weights is not used with --features: the feature store already holds the encoder's outputs",
        ));
    }
    let encoder = if req.features_only {
        None
    } else {
        let pos_interp = PosInterp::parse(&meta.pos_interp)
            .ok_or_else(|| Error::format(&req.checkpoint, format!("unknown pos-embed mode '{}'", meta.pos_interp)))?;
        // The checkpoint's record of the weights is checked as soon as the
        // file is hashed, and the note says so.
        let checkpoint_name = req.checkpoint.display().to_string();
        let opened = open_encoder_expecting(
            &EncoderRequest {
                backbone: meta.backbone.clone(),
                weights: req.weights.clone(),
                weights_sha256: None,
                layers: meta.layers.clone(),
                pos_interp,
                quiet: req.quiet,
                tool: req.tool.clone(),
            },
            device,
            Some(Expected { sha256: &meta.weights_sha256, by: &checkpoint_name }),
        )?;
        let cfg = opened.encoder.config();
        if (cfg.embed_dim, cfg.num_registers, cfg.patch_size) != (meta.embed_dim, meta.num_registers, meta.patch_size) {
            return Err(Error::mismatch(
                req.checkpoint.display().to_string(),
                "the encoder's architecture differs from the one the checkpoint was trained on",
            ));
        }
        Some(opened.encoder)
    };
    let backend: ResizeBackend = crate::io::names::parse_name(&meta.preprocess)
        .ok_or_else(|| Error::format(&req.checkpoint, format!("unknown pre-processing '{}'", meta.preprocess)))?;
    let prep = Preprocess::new(
        (meta.resize.0 as usize, meta.resize.1 as usize),
        (meta.crop.0 as usize, meta.crop.1 as usize),
        backend,
    )?;
    let cfg = ckpt.meta.model.to_config(&meta)?;
    let post = PostProcess::official();
    finish(req, CheckpointKind::Dinomaly, meta, encoder, cfg, &ckpt.tensors, prep, post, device)
}

/// An official or anomalib checkpoint, read and converted: its encoder in
/// the canonical layout and its trainable half under dinomaly key names.
pub struct ForeignCheckpoint {
    pub kind: CheckpointKind,
    /// The encoder; `sha256` is the checkpoint file's.
    pub weights: crate::backbone::weights::EncoderWeights,
    /// `bottleneck.*` and `decoder.*` tensors, float32.
    pub trainable: Vec<(String, Tensor)>,
    /// Decoder blocks found.
    pub depth_decoder: usize,
    /// Whether the bottleneck/decoder MLPs have biases (official yes, anomalib no).
    pub mlp_bias: bool,
}

/// Reads an official or anomalib checkpoint (`kind`, as detected or given):
/// what scoring and `dinomaly-train --init` start from.
pub fn read_foreign(path: &Path, kind: CheckpointKind) -> Result<ForeignCheckpoint> {
    let all = match sniff::file_kind(path)? {
        FileKind::Safetensors => {
            crate::io::safetensors_load::read_safetensors(path, crate::io::safetensors_load::FloatKind::F32)?
        }
        // Lightning checkpoints keep the weights under "state_dict" (found).
        _ => read_state_dict(path, None)?.tensors,
    };
    // A kind given by hand that the keys contradict would fail later with a
    // confusing missing-tensor error: say what the file is instead.
    if let Some(found) = foreign_kind(all.iter().map(|(k, _)| k.as_str())) {
        if found != kind {
            return Err(Error::mismatch(
                path.display().to_string(),
                // Both foreign kinds start with a vowel: "an".
                format!(
                    "its keys are those of an {} checkpoint, not an {} one (use --kind {})",
                    crate::io::names::name_of(&found),
                    crate::io::names::name_of(&kind),
                    crate::io::names::name_of(&found)
                ),
            ));
        }
    }
    // The decoder side is found by its first key; its prefix ("" or
    // "model.") is also the prefix of the encoder.
    let anchor = all
        .iter()
        .find_map(|(k, _)| k.strip_suffix("bottleneck.0.fc1.weight").map(str::to_string))
        .ok_or_else(|| Error::MissingKey {
            path: path.to_path_buf(),
            key: "bottleneck.0.fc1.weight".into(),
            hint: " (not a Dinomaly checkpoint?)".into(),
        })?;
    let encoder_prefix = match kind {
        CheckpointKind::Anomalib => format!("{anchor}encoder.feature_extractor."),
        _ => format!("{anchor}encoder."),
    };
    // The whole file is already read: convert its encoder part from memory
    // while its hash is computed on another thread.
    let hashing = HashInBackground::start(path, None);
    let encoder_part = all.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let mut weights = crate::backbone::weights::from_raw(path, encoder_part, Some(&encoder_prefix), None, None)?;
    let trainable: Vec<(String, Tensor)> = all
        .into_iter()
        .filter_map(|(k, t)| {
            let k = k.strip_prefix(anchor.as_str())?.to_string();
            (k.starts_with("bottleneck.") || k.starts_with("decoder.")).then(|| (k, t.to_kind(Kind::Float)))
        })
        .collect();
    let depth_decoder =
        (0..).take_while(|i| trainable.iter().any(|(k, _)| k.starts_with(&format!("decoder.{i}.")))).count();
    let mlp_bias = trainable.iter().any(|(k, _)| k == "bottleneck.0.fc1.bias");
    weights.sha256 = hashing.finish()?;
    Ok(ForeignCheckpoint { kind, weights, trainable, depth_decoder, mlp_bias })
}

/// The pre-processing a foreign kind's model was trained under: the
/// official code's PIL resize and DINOv2 pos-embed interpolation, or
/// anomalib's tensor resize and exact pos-embed resize.
pub fn foreign_pipeline(kind: CheckpointKind) -> (PosInterp, ResizeBackend, PostProcess) {
    match kind {
        CheckpointKind::Anomalib => (PosInterp::Exact, ResizeBackend::Tensor, PostProcess::anomalib()),
        _ => (PosInterp::Official, ResizeBackend::Pil, PostProcess::official()),
    }
}

fn open_foreign(req: &ScorerRequest, kind: CheckpointKind, device: Device) -> Result<Scorer> {
    let path = &req.checkpoint;
    let foreign = read_foreign(path, kind)?;
    // A flag either works or is refused: these would be silently ignored
    // (after the check above, which says what the file really is).
    if req.weights.is_some() {
        return Err(Error::config(format!(
            "--weights applies to dinomaly checkpoints; an {} checkpoint holds its own encoder weights",
            crate::io::names::name_of(&kind)
        )));
    }
    if kind == CheckpointKind::Anomalib && req.map_size.is_some() {
        return Err(Error::config(
            "--map-size applies to dinomaly and official checkpoints; an anomalib checkpoint's map is \
             anomalib's raw map at the crop size and its score is taken at 256x256, as anomalib does",
        ));
    }
    let ForeignCheckpoint { weights, trainable, depth_decoder, mlp_bias, .. } = foreign;
    let arch = weights.arch;
    let layers =
        if req.layers.is_empty() { crate::backbone::open::default_layers(&arch, None)? } else { req.layers.clone() };
    let (pos_interp, backend, post) = foreign_pipeline(kind);
    let vit_cfg = weights.vit_config();
    let encoder = if req.features_only {
        None
    } else {
        Some(Encoder::from_tensors(&vit_cfg, &weights.tensors, &weights.path, &layers, pos_interp, device)?)
    };
    let prep = Preprocess::default_with_backend(backend);
    let (crop_h, crop_w) = prep.crop();
    let n = layers.len();
    let meta = FeatureMeta {
        backbone: format!("{} ({} checkpoint)", arch.name(), crate::io::names::name_of(&kind)).to_lowercase(),
        weights_sha256: weights.sha256.clone(),
        embed_dim: arch.embed_dim,
        num_heads: arch.num_heads,
        num_registers: arch.num_registers,
        patch_size: arch.patch_size,
        layers,
        groups: vec![(0..n / 2).collect(), (n / 2..n).collect()],
        all_layers: false,
        resize: (prep.resize().0 as u32, prep.resize().1 as u32),
        crop: (crop_h as u32, crop_w as u32),
        preprocess: crate::io::names::name_of(&backend),
        pos_interp: pos_interp.as_str().to_string(),
        grid: (crop_h as i64 / arch.patch_size, crop_w as i64 / arch.patch_size),
        dtype: StoreDtype::F32,
    };
    let cfg = DinomalyConfig {
        embed_dim: arch.embed_dim,
        num_heads: arch.num_heads,
        num_registers: arch.num_registers,
        num_layers: n,
        depth_decoder,
        dropout: 0.0,
        attention: AttentionKind::OFFICIAL,
        mlp_bias,
        groups: meta.groups.clone(),
    };
    finish(req, kind, meta, encoder, cfg, &trainable, prep, post, device)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    req: &ScorerRequest,
    kind: CheckpointKind,
    meta: FeatureMeta,
    encoder: Option<Encoder>,
    cfg: DinomalyConfig,
    tensors: &[(String, Tensor)],
    prep: Preprocess,
    post: PostProcess,
    device: Device,
) -> Result<Scorer> {
    if req.precision == crate::model::amp::Precision::Bf16 {
        if let Some(note) = crate::cpu::bf16_note(device) {
            crate::progress::note(req.quiet, &req.tool, &note);
        }
    }
    let model_id = super::model_id::model_id(tensors, &meta.weights_sha256)?;
    let mut vs = nn::VarStore::new(device);
    // Every parameter is loaded next: no random draws for them.
    let model = crate::model::init::without_random_init(|| Dinomaly::new(&vs.root(), cfg))?;
    crate::io::varstore::load_into(&vs, tensors, &req.checkpoint, |_| false)?;
    let weights_kind = req.precision.kind();
    vs.set_kind(weights_kind);
    let mut encoder = encoder;
    if let Some(e) = encoder.as_mut() {
        e.set_kind(weights_kind);
    }
    let mut post = post.with_crop((meta.crop.0 as i64, meta.crop.1 as i64));
    if let Some(size) = req.map_size {
        post = post.with_map_size(size);
    }
    if let Some(ratio) = req.max_ratio {
        post.max_ratio = ratio;
    }
    let processor = PostProcessor::new(post, device)?;
    Ok(Scorer {
        encoder_meta: meta,
        kind,
        encoder,
        precision: req.precision,
        _vs: vs,
        model,
        prep,
        post: processor,
        post_config: post,
        device,
        model_id,
    })
}

pub use crate::io::features::check_store_matches;

/// Model settings recorded for an official/anomalib model.
pub fn model_meta(scorer: &Scorer) -> ModelMeta {
    ModelMeta::from_config(scorer.model.config())
}
