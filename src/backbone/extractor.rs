//! The frozen encoder as a feature extractor: the [`FeatureMeta`] that
//! describes its output for one input size and set of stored maps, and the
//! (B, G, T, D) maps of a batch of images. `dinomaly-extract` writes these
//! maps to a store; `dinomaly-train --images` computes them every
//! iteration; both go through here so that the two give the same rows and
//! the same metadata.

use tch::{Device, Tensor};

use crate::backbone::encoder::Encoder;
use crate::backbone::open::{open_encoder, EncoderRequest, OpenedEncoder};
use crate::data::preprocess::Preprocess;
use crate::io::features::{FeatureMeta, StoreDtype};
use crate::model::GroupPreset;
use crate::Result;

/// A loaded encoder with its pre-processing and the maps it produces.
pub struct Extractor {
    opened: OpenedEncoder,
    prep: Preprocess,
    meta: FeatureMeta,
}

impl Extractor {
    /// Opens the encoder of `req` on `device` for images pre-processed by
    /// `prep`. `maps` says what one row holds: the loose or single fused
    /// groups of the target layers, or, with `Strict`, every target layer
    /// unfused (`dinomaly-extract --all-layers`). `dtype` is recorded as the
    /// storage precision.
    pub fn open(
        req: &EncoderRequest,
        prep: Preprocess,
        maps: GroupPreset,
        dtype: StoreDtype,
        device: Device,
    ) -> Result<Self> {
        let opened = open_encoder(req, device)?;
        let encoder = &opened.encoder;
        let (crop_h, crop_w) = prep.crop();
        let grid = encoder.grid(crop_h as i64, crop_w as i64)?;
        let layers = encoder.layers().to_vec();
        let groups = maps.groups(layers.len())?;
        let cfg = encoder.config();
        let meta = FeatureMeta {
            backbone: opened.name.clone(),
            weights_sha256: opened.sha256.clone(),
            embed_dim: cfg.embed_dim,
            num_heads: cfg.num_heads,
            num_registers: cfg.num_registers,
            patch_size: cfg.patch_size,
            layers,
            groups,
            all_layers: maps == GroupPreset::Strict,
            resize: (prep.resize().0 as u32, prep.resize().1 as u32),
            crop: (crop_h as u32, crop_w as u32),
            preprocess: crate::io::names::name_of(&prep.backend()),
            pos_interp: encoder.pos_interp().as_str().to_string(),
            grid,
            dtype,
        };
        Ok(Extractor { opened, prep, meta })
    }

    /// What a row holds and how it was made.
    pub fn meta(&self) -> &FeatureMeta {
        &self.meta
    }

    /// The image pre-processing.
    pub fn preprocess(&self) -> Preprocess {
        self.prep
    }

    /// The encoder and where its weights came from.
    pub fn opened(&self) -> &OpenedEncoder {
        &self.opened
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.opened.encoder
    }

    /// Maps per image for a batch of pre-processed images (B, 3, H, W):
    /// (B, G, T, D) float32 on the encoder's device, computed without
    /// gradient up to the last target layer only.
    pub fn maps(&self, images: &Tensor) -> Result<Tensor> {
        let encoder = &self.opened.encoder;
        if self.meta.all_layers {
            // Stacked as they are (not through a mean of one), so the rows
            // are the layer outputs bit for bit.
            let outputs = encoder.layer_outputs(images)?;
            Ok(Tensor::f_stack(&outputs, 1)?)
        } else {
            encoder.fused(images, &self.meta.groups)
        }
    }
}
