//! The trainable half of Dinomaly: noisy bottleneck, linear-attention
//! decoder, layer-group fusion, the loose (hard-mining) cosine loss,
//! StableAdamW, the warm-cosine schedule and one training step.
//!
//! Everything here starts from ENCODER FEATURES: either the outputs of the
//! target layers, each `(B, N, D)` with `N = 1 + R + H*W` tokens (cls, R
//! registers, patches), or the fused encoder groups a feature store keeps
//! (`(B, G, N, D)`), so training from a store needs no encoder.
//!
//! Module and key names follow the official code (`bottleneck.0.fc1`,
//! `decoder.{i}.attn.qkv`, ...), so official and anomalib checkpoints load
//! without renaming (anomalib's lack the MLP biases: `mlp_bias = false`).
//! Numbers are checked against anomalib 2.7.0's Dinomaly classes in
//! `tests/model.rs` (fixtures from `tests/fixtures/gen/model.py`).

pub mod amp;
pub mod attention;
pub mod bottleneck;
pub mod decoder;
pub mod dinomaly;
pub mod dropout;
pub mod fusion;
pub mod init;
pub mod layers;
pub mod loss;
pub mod mlp;
pub mod optim;
pub mod optim_fused;
pub mod recompute;
pub mod record;
pub mod schedule;
pub mod store_input;
pub mod train;

pub use amp::Amp;
pub use attention::{Attention, AttentionKind};
pub use bottleneck::Bottleneck;
pub use decoder::{Block, Decoder};
pub use dinomaly::{Dinomaly, DinomalyConfig, Features, Reconstruction};
pub use fusion::GroupPreset;
pub use loss::{HardMining, LossKind};
pub use optim::{clip_grad_norm_, StableAdamW, StableAdamWConfig};
pub use schedule::WarmCosine;
pub use train::{train_step, SkipReason, StepOutcome, TrainSettings};

/// A parameter tensor with its checkpoint key (`decoder.3.mlp.fc1.weight`).
pub type NamedTensor = (String, tch::Tensor);
