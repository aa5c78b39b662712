//! The model settings a checkpoint records (`io::checkpoint::ModelMeta`)
//! to and from the model's configuration: here, on the model's side, so that
//! the file formats in `io` know nothing of the model.

use crate::io::checkpoint::ModelMeta;
use crate::io::features::FeatureMeta;
use crate::model::{AttentionKind, DinomalyConfig};
use crate::{Error, Result};

impl ModelMeta {
    /// Records a model configuration.
    pub fn from_config(cfg: &DinomalyConfig) -> Self {
        let (attention, attention_eps) = match cfg.attention {
            AttentionKind::Linear { eps } => ("linear", eps),
            AttentionKind::Softmax => ("softmax", None),
        };
        ModelMeta {
            attention: attention.to_string(),
            attention_eps,
            dropout: cfg.dropout,
            mlp_bias: cfg.mlp_bias,
            groups: cfg.groups.clone(),
            num_layers: cfg.num_layers,
            depth_decoder: cfg.depth_decoder,
        }
    }

    /// Rebuilds the model configuration for an encoder of `encoder`'s shape.
    pub fn to_config(&self, encoder: &FeatureMeta) -> Result<DinomalyConfig> {
        let attention = match self.attention.as_str() {
            "linear" => AttentionKind::Linear { eps: self.attention_eps },
            "softmax" => AttentionKind::Softmax,
            other => return Err(Error::config(format!("unknown attention kind '{other}' in checkpoint"))),
        };
        let cfg = DinomalyConfig {
            embed_dim: encoder.embed_dim,
            num_heads: encoder.num_heads,
            num_registers: encoder.num_registers,
            num_layers: self.num_layers,
            depth_decoder: self.depth_decoder,
            dropout: self.dropout,
            attention,
            mlp_bias: self.mlp_bias,
            groups: self.groups.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
