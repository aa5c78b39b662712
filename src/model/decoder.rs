//! The decoder (official `models/vision_transformer.py` `Block` with `LinearAttention2`; docs/sources.md): pre-norm Transformer blocks
//! `x = x + Attn(LN1(x)); x = x + MLP(LN2(x))` with LayerNorm eps 1e-8 (not
//! the encoder's 1e-6), no LayerScale, no drop-path, MLP ratio 4 with exact
//! GELU and dropout 0. Keys `decoder.{i}.{norm1, attn.qkv, attn.proj, norm2,
//! mlp.fc1, mlp.fc2}`; MLP biases on officially, off in anomalib.

use tch::{nn, Tensor};

use super::amp::Amp;
use super::attention::{Attention, AttentionKind};
use super::layers::LayerNorm;
use super::mlp::Mlp;
use super::NamedTensor;
use crate::Result;

/// LayerNorm eps of the decoder blocks (`partial(nn.LayerNorm, eps=1e-8)`).
pub const DECODER_LN_EPS: f64 = 1e-8;
/// Hidden width of the block MLPs relative to the embedding.
pub const MLP_RATIO: i64 = 4;

/// One pre-norm decoder block.
#[derive(Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    /// `path` is the block's own path (`decoder.{i}`).
    pub fn new(path: &nn::Path, dim: i64, num_heads: i64, attention: AttentionKind, mlp_bias: bool) -> Result<Self> {
        Ok(Block {
            norm1: LayerNorm::new(&(path / "norm1"), dim, DECODER_LN_EPS)?,
            attn: Attention::new(&(path / "attn"), dim, num_heads, attention)?,
            norm2: LayerNorm::new(&(path / "norm2"), dim, DECODER_LN_EPS)?,
            // Decoder MLPs have no input dropout and dropout 0 (official drop=0.).
            mlp: Mlp::new(&(path / "mlp"), dim, MLP_RATIO * dim, mlp_bias, 0.0, false)?,
        })
    }

    /// `(B, N, D) → (B, N, D)`. No stochastic layer, so no train flag.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_amp(x, Amp::Off)
    }

    /// [`Block::forward`] with the matrix products in `amp`'s kind. The
    /// residual stream keeps `x`'s kind (float32 in training): the
    /// bfloat16 branch outputs are promoted by the residual adds.
    ///
    /// A pure function of `x` and the weights (no dropout: the MLP is
    /// built with p = 0 and run with `train = false`; no drop-path; no
    /// RNG draw), which is what lets gradient checkpointing recompute it
    /// exactly ([`super::recompute`]).
    pub fn forward_amp(&self, x: &Tensor, amp: Amp) -> Result<Tensor> {
        let x = x + self.attn.forward_amp(&self.norm1.forward(x), amp)?;
        let y = self.mlp.forward_amp(&self.norm2.forward(&x), false, amp)?;
        Ok(x + y)
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        self.norm1.push_parameters(out);
        self.attn.push_parameters(out);
        self.norm2.push_parameters(out);
        self.mlp.push_parameters(out);
    }
}

/// The stack of decoder blocks.
#[derive(Debug)]
pub struct Decoder {
    pub blocks: Vec<Block>,
}

impl Decoder {
    /// `path` is the decoder's path (`decoder`); block `i` lives at `{path}.{i}`.
    pub fn new(
        path: &nn::Path,
        dim: i64,
        num_heads: i64,
        depth: usize,
        attention: AttentionKind,
        mlp_bias: bool,
    ) -> Result<Self> {
        let blocks = (0..depth)
            .map(|i| Block::new(&(path / i), dim, num_heads, attention, mlp_bias))
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder { blocks })
    }

    /// The output of every block, in block order (block 0 first).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_amp(x, Amp::Off)
    }

    /// [`Decoder::forward`] with the matrix products in `amp`'s kind.
    pub fn forward_amp(&self, x: &Tensor, amp: Amp) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(self.blocks.len());
        let mut x = x.shallow_clone();
        for blk in &self.blocks {
            x = blk.forward_amp(&x, amp)?;
            outs.push(x.shallow_clone());
        }
        Ok(outs)
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        for blk in &self.blocks {
            blk.push_parameters(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn block_keys_follow_the_official_module_order() {
        let vs = nn::VarStore::new(Device::Cpu);
        let dec = Decoder::new(&(vs.root() / "decoder"), 8, 2, 2, AttentionKind::OFFICIAL, false).unwrap();
        let mut p = Vec::new();
        dec.push_parameters(&mut p);
        let keys: Vec<_> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 2 * 10);
        assert_eq!(
            &keys[..10],
            [
                "decoder.0.norm1.weight",
                "decoder.0.norm1.bias",
                "decoder.0.attn.qkv.weight",
                "decoder.0.attn.qkv.bias",
                "decoder.0.attn.proj.weight",
                "decoder.0.attn.proj.bias",
                "decoder.0.norm2.weight",
                "decoder.0.norm2.bias",
                "decoder.0.mlp.fc1.weight",
                "decoder.0.mlp.fc2.weight",
            ]
        );
    }
}
