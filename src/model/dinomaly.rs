//! The trainable Dinomaly model on encoder features (official `ViTill`
//! without its encoder; official `models/uad.py` `ViTill`, docs/sources.md):
//!
//! 1. bottleneck input = token-wise mean of all target-layer outputs
//!    (cls and register tokens included);
//! 2. noisy bottleneck, then the decoder blocks, keeping every block output;
//! 3. decoder outputs reversed (index 0 = last block), so group
//!    `[0,1,2,3]` pairs shallow encoder layers with the last decoder blocks;
//! 4. both sides fused per group by a mean, prefix tokens dropped,
//!    `(B, N, D) → (B, D, H, W)`.
//!
//! Two entry points give the same groups: [`Dinomaly::forward_t`] from the
//! target-layer outputs, and [`Dinomaly::forward_groups_t`] from fused
//! encoder groups with all tokens `(B, G, N, D)`, which is what a feature
//! store keeps: when the groups partition the layers into equal sizes the
//! mean of the group means is the bottleneck input, so no encoder is needed.

use tch::{nn, Device, Tensor};

use super::attention::AttentionKind;
use super::bottleneck::Bottleneck;
use super::decoder::Decoder;
use super::fusion::{self, GroupPreset};
use super::NamedTensor;
use crate::{Error, Result};

/// Shape of the trainable half. See [`DinomalyConfig::official`] and
/// [`DinomalyConfig::anomalib`] for the two reference settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DinomalyConfig {
    /// Token width D (384 / 768 / 1024 for ViT-S / B / L).
    pub embed_dim: i64,
    /// Decoder attention heads (the encoder's: 6 / 12 / 16).
    pub num_heads: i64,
    /// Register tokens R after the cls token (4 for DINOv2-reg).
    pub num_registers: i64,
    /// Number of encoder target layers fed in (8).
    pub num_layers: usize,
    /// Number of decoder blocks (8).
    pub depth_decoder: usize,
    /// Bottleneck dropout (0.2; 0.4 for Real-IAD multi-class).
    pub dropout: f64,
    pub attention: AttentionKind,
    /// Biases in the bottleneck and decoder MLPs (official on, anomalib off).
    pub mlp_bias: bool,
    /// Layer groups, used for both the encoder and the (reversed) decoder
    /// lists.
    pub groups: Vec<Vec<usize>>,
}

impl DinomalyConfig {
    /// The official setting: 8 layers, 8 blocks, loose groups, linear
    /// attention without eps, MLP biases on.
    pub fn official(embed_dim: i64, num_heads: i64, num_registers: i64, dropout: f64) -> Self {
        DinomalyConfig {
            embed_dim,
            num_heads,
            num_registers,
            num_layers: 8,
            depth_decoder: 8,
            dropout,
            attention: AttentionKind::OFFICIAL,
            mlp_bias: true,
            groups: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
        }
    }

    /// anomalib 2.7's setting: as official but without MLP biases.
    pub fn anomalib(embed_dim: i64, num_heads: i64, num_registers: i64, dropout: f64) -> Self {
        DinomalyConfig { mlp_bias: false, ..DinomalyConfig::official(embed_dim, num_heads, num_registers, dropout) }
    }

    /// Replaces the groups by a preset for the configured layer count.
    pub fn with_groups(mut self, preset: GroupPreset) -> Result<Self> {
        self.groups = preset.groups(self.num_layers)?;
        Ok(self)
    }

    /// Tokens before the patches: cls + registers.
    pub fn prefix_tokens(&self) -> i64 {
        1 + self.num_registers
    }

    /// Refuses settings the model cannot run with.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim <= 0 || self.num_heads <= 0 || self.embed_dim % self.num_heads != 0 {
            return Err(Error::config(format!(
                "embedding dimension {} is not divisible into {} heads",
                self.embed_dim, self.num_heads
            )));
        }
        if self.num_registers < 0 {
            return Err(Error::config(format!("register count must be >= 0, got {}", self.num_registers)));
        }
        if self.num_layers == 0 || self.depth_decoder == 0 {
            return Err(Error::config("need at least one target layer and one decoder block"));
        }
        // Groups index the encoder list and the reversed decoder list alike.
        fusion::check_groups(&self.groups, self.num_layers.min(self.depth_decoder))
    }
}

/// Inputs the model can start from.
#[derive(Debug, Clone, Copy)]
pub enum Features<'a> {
    /// The target-layer outputs, each `(B, N, D)`.
    Layers(&'a [Tensor]),
    /// Fused encoder groups with all tokens, `(B, G, N, D)`.
    Groups(&'a Tensor),
}

/// Token-level intermediates of one reconstruction.
#[derive(Debug)]
pub struct Reconstruction {
    /// Bottleneck output `(B, N, D)`.
    pub bottleneck: Tensor,
    /// Output of every decoder block, block 0 first, each `(B, N, D)`.
    pub blocks: Vec<Tensor>,
}

/// Bottleneck + decoder, with the configuration that shaped them.
#[derive(Debug)]
pub struct Dinomaly {
    cfg: DinomalyConfig,
    device: Device,
    pub bottleneck: Bottleneck,
    pub decoder: Decoder,
}

impl Dinomaly {
    /// Builds the modules under `path` (`{path}.bottleneck.0.*`,
    /// `{path}.decoder.{i}.*`) with the official initialisation, drawing
    /// from libtorch's global generator (seed it with `tch::manual_seed`).
    pub fn new(path: &nn::Path, cfg: DinomalyConfig) -> Result<Self> {
        cfg.validate()?;
        let bottleneck = Bottleneck::new(&(path / "bottleneck"), cfg.embed_dim, cfg.dropout, cfg.mlp_bias)?;
        let decoder = Decoder::new(
            &(path / "decoder"),
            cfg.embed_dim,
            cfg.num_heads,
            cfg.depth_decoder,
            cfg.attention,
            cfg.mlp_bias,
        )?;
        Ok(Dinomaly { cfg, device: path.device(), bottleneck, decoder })
    }

    pub fn config(&self) -> &DinomalyConfig {
        &self.cfg
    }

    /// Every trainable tensor with its key, in the official module order
    /// (bottleneck, then decoder blocks 0..depth).
    pub fn named_parameters(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        self.bottleneck.push_parameters(&mut out);
        self.decoder.push_parameters(&mut out);
        out
    }

    /// Bottleneck and decoder on a token sequence `(B, N, D)`.
    pub fn reconstruct_t(&self, bottleneck_input: &Tensor, train: bool) -> Result<Reconstruction> {
        self.check_tokens("bottleneck input", bottleneck_input, None)?;
        let bottleneck = self.bottleneck.forward_t(bottleneck_input, train)?;
        let blocks = self.decoder.forward(&bottleneck)?;
        Ok(Reconstruction { bottleneck, blocks })
    }

    /// From target-layer outputs (each `(B, N, D)`, `N = 1 + R + H·W`) to
    /// `(encoder groups, decoder groups)`, each `(B, D, H, W)`.
    pub fn forward_t(
        &self,
        encoder_layers: &[Tensor],
        grid: (i64, i64),
        train: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let (x, enc) = self.layer_inputs(encoder_layers, grid)?;
        self.finish(&x, enc, grid, train)
    }

    /// Bottleneck input and encoder groups (tokens) from target-layer
    /// outputs.
    fn layer_inputs(&self, encoder_layers: &[Tensor], grid: (i64, i64)) -> Result<(Tensor, Vec<Tensor>)> {
        self.check_layers(encoder_layers, Some(grid))?;
        let all: Vec<usize> = (0..encoder_layers.len()).collect();
        let x = fusion::fuse(encoder_layers, &all)?;
        let enc = fusion::fuse_groups(encoder_layers, &self.cfg.groups)?;
        Ok((x, enc))
    }

    /// The fused encoder groups with all tokens, `(B, G, N, D)`: what a
    /// feature store keeps per image for [`Dinomaly::forward_groups_t`].
    pub fn encoder_groups(&self, encoder_layers: &[Tensor]) -> Result<Tensor> {
        self.check_layers(encoder_layers, None)?;
        let groups = fusion::fuse_groups(encoder_layers, &self.cfg.groups)?;
        Ok(Tensor::f_stack(&groups, 1)?)
    }

    /// From fused encoder groups `(B, G, N, D)` (G = number of configured
    /// groups, which must partition the layers into equal sizes) to
    /// `(encoder groups, decoder groups)`, each `(B, D, H, W)`.
    ///
    /// The bottleneck input is the mean of the group means; it equals the
    /// mean of all layers up to float rounding (~1e-7 relative).
    pub fn forward_groups_t(
        &self,
        groups: &Tensor,
        grid: (i64, i64),
        train: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let (x, enc) = self.group_inputs(groups, grid)?;
        self.finish(&x, enc, grid, train)
    }

    /// Bottleneck input and encoder groups (tokens) from fused groups.
    fn group_inputs(&self, groups: &Tensor, grid: (i64, i64)) -> Result<(Tensor, Vec<Tensor>)> {
        if !fusion::is_equal_partition(&self.cfg.groups, self.cfg.num_layers) {
            return Err(Error::config(format!(
                "training from fused groups needs groups that split the {} layers into equal \
                 parts, got {:?}",
                self.cfg.num_layers, self.cfg.groups
            )));
        }
        let size = groups.size();
        let g = self.cfg.groups.len() as i64;
        if size.len() != 4 || size[1] != g {
            return Err(Error::mismatch(
                "encoder groups",
                format!("shape {size:?}, expected (batch, {g}, tokens, {})", self.cfg.embed_dim),
            ));
        }
        let enc: Vec<Tensor> = (0..g).map(|i| groups.select(1, i)).collect();
        self.check_tokens("encoder group 0", &enc[0], Some(grid))?;
        let x = groups.f_mean_dim(1, false, None)?;
        Ok((x, enc))
    }

    /// Either entry point, by input kind.
    pub fn forward_features_t(
        &self,
        features: Features<'_>,
        grid: (i64, i64),
        train: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        match features {
            Features::Layers(layers) => self.forward_t(layers, grid, train),
            Features::Groups(groups) => self.forward_groups_t(groups, grid, train),
        }
    }

    /// The checked bottleneck input `(B, N, D)` and the encoder groups
    /// (tokens, each `(B, N, D)`) of either input kind: the first half of
    /// [`Dinomaly::forward_features_t`], for a caller that runs the
    /// bottleneck and decoder itself (the training step) and then calls
    /// [`Dinomaly::group_outputs`].
    pub fn inputs(&self, features: Features<'_>, grid: (i64, i64)) -> Result<(Tensor, Vec<Tensor>)> {
        match features {
            Features::Layers(layers) => self.layer_inputs(layers, grid),
            Features::Groups(groups) => self.group_inputs(groups, grid),
        }
    }

    /// Reconstructs from `x`, groups the reversed decoder outputs and lays
    /// both sides out spatially.
    fn finish(
        &self,
        x: &Tensor,
        enc_groups: Vec<Tensor>,
        grid: (i64, i64),
        train: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let rec = self.reconstruct_t(x, train)?;
        self.group_outputs(enc_groups, rec.blocks, grid)
    }

    /// From encoder groups (tokens) and the decoder block outputs (block 0
    /// first) to `(encoder groups, decoder groups)`, each `(B, D, H, W)`:
    /// the decoder list is reversed, fused by the configured groups, and
    /// both sides lose their prefix tokens.
    pub fn group_outputs(
        &self,
        enc_groups: Vec<Tensor>,
        mut blocks: Vec<Tensor>,
        grid: (i64, i64),
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        if blocks.len() != self.cfg.depth_decoder {
            return Err(Error::mismatch(
                "decoder outputs",
                format!("{} block outputs, the model has {} blocks", blocks.len(), self.cfg.depth_decoder),
            ));
        }
        blocks.reverse();
        let dec_groups = fusion::fuse_groups(&blocks, &self.cfg.groups)?;
        let prefix = self.cfg.prefix_tokens();
        let spatial =
            |v: Vec<Tensor>| -> Result<Vec<Tensor>> { v.iter().map(|t| fusion::to_spatial(t, prefix, grid)).collect() };
        Ok((spatial(enc_groups)?, spatial(dec_groups)?))
    }

    /// Checks the target-layer outputs: the configured count, all of one
    /// `(B, N, D)` shape (see [`Dinomaly::check_tokens`]).
    fn check_layers(&self, layers: &[Tensor], grid: Option<(i64, i64)>) -> Result<()> {
        if layers.len() != self.cfg.num_layers {
            return Err(Error::mismatch(
                "encoder features",
                format!("{} layers given, the model was built for {}", layers.len(), self.cfg.num_layers),
            ));
        }
        let first = self.check_tokens("encoder layer 0", &layers[0], grid)?;
        for (i, t) in layers.iter().enumerate().skip(1) {
            let shape = self.check_tokens(&format!("encoder layer {i}"), t, grid)?;
            if shape != first {
                return Err(Error::mismatch(
                    format!("encoder layer {i}"),
                    format!("shape {shape:?} differs from layer 0's {first:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks a `(B, N, D)` token tensor (float, on the model's device,
    /// D = embed_dim, and with `grid` N = 1 + R + H·W); returns its shape.
    fn check_tokens(&self, what: &str, t: &Tensor, grid: Option<(i64, i64)>) -> Result<Vec<i64>> {
        let size = t.size();
        let d = self.cfg.embed_dim;
        if size.len() != 3 || size[2] != d {
            return Err(Error::mismatch(what, format!("shape {size:?}, expected (batch, tokens, {d})")));
        }
        if let Some((h, w)) = grid {
            let n = self.cfg.prefix_tokens() + h * w;
            if h <= 0 || w <= 0 || size[1] != n {
                return Err(Error::mismatch(
                    what,
                    format!(
                        "{} tokens, expected 1 cls + {} registers + {h}x{w} patches = {n}",
                        size[1], self.cfg.num_registers
                    ),
                ));
            }
        }
        // Inputs come in the parameters' dtype (float32, or bfloat16 when
        // the whole model was cast for reduced-precision inference).
        let expected = self.bottleneck.mlp.fc1.weight.kind();
        if t.kind() != expected {
            return Err(Error::mismatch(what, format!("dtype {:?}, expected {expected:?}", t.kind())));
        }
        if t.device() != self.device {
            return Err(Error::mismatch(what, format!("on {:?}, the model is on {:?}", t.device(), self.device)));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn tiny() -> DinomalyConfig {
        DinomalyConfig::official(8, 2, 2, 0.0)
    }

    fn layers(b: i64, n: i64, d: i64) -> Vec<Tensor> {
        (0..8).map(|_| Tensor::randn([b, n, d], (Kind::Float, Device::Cpu))).collect()
    }

    #[test]
    fn shapes_and_parameter_count() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Dinomaly::new(&vs.root(), tiny()).unwrap();
        let (enc, dec) = m.forward_t(&layers(2, 3 + 12, 8), (3, 4), false).unwrap();
        assert_eq!(enc.len(), 2);
        assert_eq!(dec.len(), 2);
        for t in enc.iter().chain(&dec) {
            assert_eq!(t.size(), [2, 8, 3, 4]);
        }
        // Official counts (biases on): bottleneck 8d² + 5d, each block
        // 12d² + 13d: 15.38 M / 61.43 M / 109.16 M trainable parameters for S/B/L.
        let expected = |d: i64| 8 * d * d + 5 * d + 8 * (12 * d * d + 13 * d);
        for (d, millions) in [(384, 1538), (768, 6143), (1024, 10916)] {
            assert_eq!((expected(d) as f64 / 1e4).round() as i64, millions);
        }
        let n: i64 = m.named_parameters().iter().map(|(_, t)| t.numel() as i64).sum();
        assert_eq!(n, expected(8));
    }

    #[test]
    fn init_is_the_official_one() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Dinomaly::new(&vs.root(), DinomalyConfig::official(32, 4, 4, 0.2)).unwrap();
        for (k, t) in m.named_parameters() {
            let max = t.abs().max().double_value(&[]);
            if k.ends_with("norm1.weight") || k.ends_with("norm2.weight") {
                assert!((t - 1.0).abs().max().double_value(&[]) == 0.0, "{k}");
            } else if k.ends_with("bias") {
                assert_eq!(max, 0.0, "{k}");
            } else {
                assert!(max <= 0.03 && max > 0.01, "{k}: max {max}");
            }
        }
    }

    #[test]
    fn group_entry_point_matches_layer_entry_point() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        for preset in [GroupPreset::Loose, GroupPreset::Strict, GroupPreset::Single] {
            let cfg = tiny().with_groups(preset).unwrap();
            let m = Dinomaly::new(&(vs.root() / preset.name()), cfg).unwrap();
            let l = layers(2, 3 + 4, 8);
            let (e1, d1) = m.forward_t(&l, (2, 2), false).unwrap();
            let g = m.encoder_groups(&l).unwrap();
            let (e2, d2) = m.forward_groups_t(&g, (2, 2), false).unwrap();
            for (a, b) in e1.iter().zip(&e2).chain(d1.iter().zip(&d2)) {
                assert!(a.allclose(b, 1e-5, 1e-6, false), "{preset}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Dinomaly::new(&vs.root(), tiny()).unwrap();
        let l = layers(2, 7, 8);
        // Wrong layer count, wrong token count, wrong width, wrong dtype.
        assert!(m.forward_t(&l[..7], (2, 2), false).is_err());
        assert!(m.encoder_groups(&l[..7]).is_err());
        assert!(m.forward_t(&l, (3, 2), false).is_err());
        assert!(m.forward_t(&layers(2, 7, 6), (2, 2), false).is_err());
        let dbl: Vec<_> = l.iter().map(|t| t.to_kind(Kind::Double)).collect();
        assert!(m.forward_t(&dbl, (2, 2), false).is_err());
        let mut mixed = layers(2, 7, 8);
        mixed[3] = Tensor::randn([3, 7, 8], (Kind::Float, Device::Cpu));
        assert!(m.forward_t(&mixed, (2, 2), false).is_err());
        // Groups with the wrong count, and groups that do not partition.
        let g = Tensor::randn([2, 3, 7, 8], (Kind::Float, Device::Cpu));
        assert!(m.forward_groups_t(&g, (2, 2), false).is_err());
        let mut cfg = tiny();
        cfg.groups = vec![vec![0, 1, 2], vec![3, 4, 5, 6, 7]];
        let m2 = Dinomaly::new(&(vs.root() / "uneven"), cfg).unwrap();
        let g = Tensor::randn([2, 2, 7, 8], (Kind::Float, Device::Cpu));
        assert!(m2.forward_groups_t(&g, (2, 2), false).is_err());
        // Configuration errors.
        let mut cfg = tiny();
        cfg.groups = vec![vec![0, 8]];
        assert!(Dinomaly::new(&vs.root(), cfg).is_err());
        let mut cfg = tiny();
        cfg.num_heads = 3;
        assert!(Dinomaly::new(&vs.root(), cfg).is_err());
    }
}
