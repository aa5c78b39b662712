//! The frozen encoder as the tools use it: a ViT with its weights loaded
//! and checked, the target layers, and the fusion of layer outputs into the
//! maps that Dinomaly reconstructs.

use std::path::Path;

use tch::{nn, Device, Tensor};

use super::pos_embed::PosInterp;
use super::vit::{VisionTransformer, VitConfig};
use crate::{Error, Result};

/// A loaded, frozen encoder.
pub struct Encoder {
    // Owns the variables the ViT's modules point into.
    _vs: nn::VarStore,
    vit: VisionTransformer,
    layers: Vec<usize>,
    pos_interp: PosInterp,
    device: Device,
}

impl Encoder {
    /// Builds the ViT for `cfg` (only the blocks up to the last of `layers`),
    /// and fills it from canonical named tensors read from `path`.
    pub fn from_tensors(
        cfg: &VitConfig,
        named: &[(String, Tensor)],
        path: &Path,
        layers: &[usize],
        pos_interp: PosInterp,
        device: Device,
    ) -> Result<Self> {
        let last = *layers.iter().max().ok_or_else(|| Error::config("no encoder layers given"))?;
        // The official code collects layer outputs in block order; a list
        // out of order or with repeats would silently change the groups.
        if layers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::config(format!("target layers {layers:?} must be strictly increasing block indices")));
        }
        if last >= cfg.depth {
            return Err(Error::config(format!(
                "layer {last} asked for, but the encoder in {} has {} blocks (0..{})",
                path.display(),
                cfg.depth,
                cfg.depth - 1
            )));
        }
        let mut vs = nn::VarStore::new(device);
        let vit = VisionTransformer::new(&vs.root(), cfg, last + 1)?;
        crate::io::varstore::load_into(&vs, named, path, |k| vit.is_unused_key(k))?;
        vs.freeze();
        Ok(Encoder { _vs: vs, vit, layers: layers.to_vec(), pos_interp, device })
    }

    /// The architecture.
    pub fn config(&self) -> &VitConfig {
        self.vit.config()
    }

    /// Casts the weights to `kind` (bfloat16 for reduced-precision
    /// inference); inputs are cast to it by the forward.
    pub fn set_kind(&mut self, kind: tch::Kind) {
        self._vs.set_kind(kind);
    }

    /// The loaded weights by canonical name (`cls_token`, `pos_embed`,
    /// `blocks.{i}.attn.qkv.weight`, ...; blocks up to the last target
    /// layer only): what `dinomaly-export` writes into its graph.
    pub fn named_tensors(&self) -> std::collections::HashMap<String, Tensor> {
        self._vs.variables()
    }

    /// Target layers.
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Positional-embedding mode.
    pub fn pos_interp(&self) -> PosInterp {
        self.pos_interp
    }

    /// Patch grid for an input size.
    pub fn grid(&self, height: i64, width: i64) -> Result<(i64, i64)> {
        self.vit.grid(height, width)
    }

    /// Outputs of the target layers for a batch of normalised images
    /// (B, 3, H, W), each (B, T, D), without gradient.
    pub fn layer_outputs(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        let images = images.to_device(self.device);
        tch::no_grad(|| self.vit.forward_layers(&images, &self.layers, self.pos_interp))
    }

    /// Target-layer outputs fused by `groups` (indices into the target
    /// layers; each group is a plain token-wise mean), stacked to
    /// (B, G, T, D). With singleton groups this is every layer unfused.
    pub fn fused(&self, images: &Tensor, groups: &[Vec<usize>]) -> Result<Tensor> {
        let outputs = self.layer_outputs(images)?;
        fuse(&outputs, groups)
    }
}

/// Mean of the layer outputs in each group (the model's fusion), stacked on
/// a new axis 1: (B, G, T, D).
pub fn fuse(outputs: &[Tensor], groups: &[Vec<usize>]) -> Result<Tensor> {
    let maps = crate::model::fusion::fuse_groups(outputs, groups)?;
    Ok(Tensor::f_stack(&maps, 1)?)
}
