//! Leaf layers of the trainable modules (Linear, LayerNorm) created with
//! the official initialisation and remembering their checkpoint keys, so
//! that the optimizer and checkpoints can list parameters in module order.

use tch::{nn, Tensor};

use super::amp::Amp;
use super::init::{trunc_normal_, LINEAR_INIT_CUT, LINEAR_INIT_STD};
use super::NamedTensor;
use crate::Result;

/// `y = x Wᵀ + b` with `W` of shape `(out, in)`, keys `{path}.weight` and
/// `{path}.bias`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    keys: (String, String),
}

impl Linear {
    /// A Linear layer with weight ~ truncated normal(0, 0.01, ±0.03) and
    /// bias 0 (the official init of every trainable Linear).
    pub fn new(path: &nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Result<Self> {
        let weight = path.f_zeros("weight", &[out_dim, in_dim])?;
        trunc_normal_(&weight, 0.0, LINEAR_INIT_STD, -LINEAR_INIT_CUT, LINEAR_INIT_CUT)?;
        let bias = if bias { Some(path.f_zeros("bias", &[out_dim])?) } else { None };
        Ok(Linear { weight, bias, keys: (path.path("weight"), path.path("bias")) })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_amp(x, Amp::Off)
    }

    /// [`Linear::forward`] with the product in `amp`'s kind (the output
    /// is bfloat16 under [`Amp::Bf16`]).
    pub fn forward_amp(&self, x: &Tensor, amp: Amp) -> Tensor {
        amp.linear(x, &self.weight, self.bias.as_ref())
    }

    /// Appends `(key, tensor)` for the weight, then the bias if any.
    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        out.push((self.keys.0.clone(), self.weight.shallow_clone()));
        if let Some(b) = &self.bias {
            out.push((self.keys.1.clone(), b.shallow_clone()));
        }
    }
}

/// Layer normalisation over the last dimension with an explicit eps
/// (weight 1, bias 0 at init).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
    keys: (String, String),
}

impl LayerNorm {
    pub fn new(path: &nn::Path, dim: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: path.f_ones("weight", &[dim])?,
            bias: path.f_zeros("bias", &[dim])?,
            eps,
            keys: (path.path("weight"), path.path("bias")),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        out.push((self.keys.0.clone(), self.weight.shallow_clone()));
        out.push((self.keys.1.clone(), self.bias.shallow_clone()));
    }
}
