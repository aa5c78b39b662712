//! `dinomaly-train --init CKPT`: training starts from the bottleneck and
//! decoder of a trained model instead of the random initialisation, with a
//! fresh optimizer and schedule: fine-tuning a released model on a new
//! product. A checkpoint of any kind is read: dinomaly-train's, the official
//! repository's (`ViTill`'s state dict) or anomalib's.
//!
//! Whatever the kind, the model must have been trained on features of the
//! encoder the feature store was made with, and its shape must be the one
//! this run builds; both are checked before any step:
//! - a dinomaly checkpoint records its encoder (weights sha256, layers, input
//!   size, pre-processing) and model settings, compared as `--resume` does;
//! - an official or anomalib checkpoint holds its encoder's tensors, which are
//!   compared one by one with the encoder weights the store was made with
//!   (found by the store's backbone name, or `--weights`, and checked against
//!   the sha256 the store records), and its pre-processing is its reference's
//!   (official: Pillow resize with DINOv2's pos-embed interpolation; anomalib:
//!   tensor resize with the exact pos-embed resize), which the store must
//!   have been made with.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::backbone::open::default_layers;
use crate::backbone::weights::EncoderWeights;
use crate::io::checkpoint::{self, CheckpointMeta, ModelMeta};
use crate::io::features::FeatureMeta;
use crate::model::DinomalyConfig;
use crate::score::scorer::{detect_kind, foreign_pipeline, read_foreign, CheckpointKind};
use crate::{Error, Result};

/// A checkpoint to start from, read.
pub struct InitCheckpoint {
    pub path: PathBuf,
    pub kind: CheckpointKind,
    /// `bottleneck.*` and `decoder.*` by dinomaly key name.
    pub tensors: Vec<(String, Tensor)>,
    origin: Origin,
}

enum Origin {
    Dinomaly(Box<CheckpointMeta>),
    Foreign { encoder: EncoderWeights, depth_decoder: usize, mlp_bias: bool },
}

/// Reads `path` (its kind detected from its contents).
pub fn read(path: &Path) -> Result<InitCheckpoint> {
    let kind = detect_kind(path)?;
    let (tensors, origin) = match kind {
        CheckpointKind::Dinomaly => {
            let ckpt = checkpoint::load(path)?;
            (ckpt.tensors, Origin::Dinomaly(Box::new(ckpt.meta)))
        }
        CheckpointKind::Official | CheckpointKind::Anomalib => {
            let f = read_foreign(path, kind)?;
            (f.trainable, Origin::Foreign { encoder: f.weights, depth_decoder: f.depth_decoder, mlp_bias: f.mlp_bias })
        }
    };
    Ok(InitCheckpoint { path: path.to_path_buf(), kind, tensors, origin })
}

impl InitCheckpoint {
    /// Whether checking this checkpoint needs the store's encoder weights
    /// (an official or anomalib checkpoint: its encoder tensors are compared).
    pub fn needs_store_encoder(&self) -> bool {
        matches!(self.origin, Origin::Foreign { .. })
    }

    /// Checks that this checkpoint can start a run that builds `cfg` on
    /// features described by `store`. `store_encoder` gives the encoder
    /// weights the store was made with (called for foreign kinds only).
    pub fn check(
        &self,
        store: &FeatureMeta,
        cfg: &DinomalyConfig,
        store_encoder: impl FnOnce() -> Result<EncoderWeights>,
    ) -> Result<()> {
        let what = || format!("--init {}", self.path.display());
        let run = ModelMeta::from_config(cfg);
        let mut differences = Vec::new();
        match &self.origin {
            Origin::Dinomaly(meta) => {
                crate::io::features::check_store_matches(store, &meta.encoder)
                    .map_err(|e| Error::mismatch(what(), e.to_string()))?;
                let m = &meta.model;
                if m.attention != run.attention {
                    differences.push(format!("attention {} (this run: {}; --attention)", m.attention, run.attention));
                }
                structure_differences(&mut differences, m.mlp_bias, m.depth_decoder, &m.groups, &run);
            }
            Origin::Foreign { encoder, depth_decoder, mlp_bias } => {
                let arch = &encoder.arch;
                let mut encoder_differences = Vec::new();
                if (arch.embed_dim, arch.num_registers, arch.patch_size)
                    != (store.embed_dim, store.num_registers, store.patch_size)
                {
                    encoder_differences.push(format!(
                        "its encoder is a {} (embed {}, {} registers, patch {}), the store's embed {}, {} registers, patch {}",
                        arch.name(),
                        arch.embed_dim,
                        arch.num_registers,
                        arch.patch_size,
                        store.embed_dim,
                        store.num_registers,
                        store.patch_size
                    ));
                }
                let (pos_interp, backend, _) = foreign_pipeline(self.kind);
                let backend = crate::io::names::name_of(&backend);
                if store.pos_interp != pos_interp.as_str() || store.preprocess != backend {
                    encoder_differences.push(format!(
                        "it was trained on features made with --preprocess {backend} --pos-interp {}, the store with --preprocess {} --pos-interp {} (extract again with the former)",
                        pos_interp.as_str(),
                        store.preprocess,
                        store.pos_interp
                    ));
                }
                // The reference's target layers for this size, when it has
                // defaults (an unknown size takes the store's).
                if let Ok(layers) = default_layers(arch, None) {
                    if layers != store.layers {
                        encoder_differences.push(format!(
                            "its reference takes layers {layers:?} of a {}, the store has {:?}",
                            arch.name(),
                            store.layers
                        ));
                    }
                }
                if !encoder_differences.is_empty() {
                    return Err(Error::mismatch(what(), encoder_differences.join("; ")));
                }
                let store_weights = store_encoder()?;
                compare_encoders(encoder, &store_weights).map_err(|reason| Error::mismatch(what(), reason))?;
                // Foreign models take their target layers in two halves.
                let n = store.layers.len();
                let halves: Vec<Vec<usize>> = vec![(0..n / 2).collect(), (n / 2..n).collect()];
                if run.attention != "linear" {
                    differences.push(format!("attention linear (this run: {}; --attention)", run.attention));
                }
                structure_differences(&mut differences, *mlp_bias, *depth_decoder, &halves, &run);
            }
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::mismatch(
                what(),
                format!("its model differs from the one this run builds: {}", differences.join(", ")),
            ))
        }
    }
}

/// The differences that would make the checkpoint's tensors not fit, with
/// the flag that sets each.
fn structure_differences(
    out: &mut Vec<String>,
    mlp_bias: bool,
    depth_decoder: usize,
    groups: &[Vec<usize>],
    run: &ModelMeta,
) {
    if mlp_bias != run.mlp_bias {
        let variant = if mlp_bias { "official" } else { "anomalib" };
        out.push(format!(
            "MLP biases {} (this run: {}; --variant {variant})",
            if mlp_bias { "on" } else { "off" },
            if run.mlp_bias { "on" } else { "off" }
        ));
    }
    if depth_decoder != run.depth_decoder {
        out.push(format!("{depth_decoder} decoder blocks (this run: {})", run.depth_decoder));
    }
    if groups != run.groups.as_slice() {
        out.push(format!("layer groups {groups:?} (this run: {:?}; --groups)", run.groups));
    }
}

/// Compares two encoders tensor by tensor (canonical names, exact values).
fn compare_encoders(checkpoint: &EncoderWeights, store: &EncoderWeights) -> std::result::Result<(), String> {
    let source = format!("the encoder weights the store was made with ({})", store.path.display());
    if checkpoint.tensors.len() != store.tensors.len() {
        return Err(format!("its encoder has {} tensors, {source} {}", checkpoint.tensors.len(), store.tensors.len()));
    }
    for ((name, a), (other, b)) in checkpoint.tensors.iter().zip(&store.tensors) {
        if name != other || a.size() != b.size() {
            return Err(format!("its encoder's {name} {:?} is not {source}'s {other} {:?}", a.size(), b.size()));
        }
        if !a.equal(b) {
            return Err(format!("its encoder's {name} differs from {source}'s: not the same encoder"));
        }
    }
    Ok(())
}
