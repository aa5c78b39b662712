//! The noisy bottleneck (official `models/vision_transformer.py` `bMlp`, paper §3.2; docs/sources.md): one MLP on the token-wise mean of the
//! target-layer features, no norm, no residual,
//! Dropout(p) → Linear(D, 4D) → GELU → Dropout(p) → Linear(4D, D) → Dropout(p).
//! Its dropout is the only noise in the model (p = 0.2, 0.4 for Real-IAD
//! multi-class). Keys `bottleneck.0.fc1`, `bottleneck.0.fc2` (a one-element
//! ModuleList in both references); biases on officially, off in anomalib.

use tch::{nn, Tensor};

use super::amp::Amp;
use super::mlp::Mlp;
use super::NamedTensor;
use crate::Result;

/// Hidden width of the bottleneck MLP relative to the embedding.
pub const BOTTLENECK_RATIO: i64 = 4;

#[derive(Debug)]
pub struct Bottleneck {
    pub mlp: Mlp,
}

impl Bottleneck {
    /// `path` is the bottleneck's own path (`bottleneck`); the MLP lives
    /// at `{path}.0`.
    pub fn new(path: &nn::Path, dim: i64, dropout: f64, bias: bool) -> Result<Self> {
        let mlp = Mlp::new(&(path / 0), dim, BOTTLENECK_RATIO * dim, bias, dropout, true)?;
        Ok(Bottleneck { mlp })
    }

    /// `(B, N, D) → (B, N, D)`; dropout only when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_amp(x, train, Amp::Off)
    }

    /// [`Bottleneck::forward_t`] with the Linear layers in `amp`'s kind;
    /// the output is float32 again (the decoder's residual stream), so
    /// under [`Amp::Off`] nothing is cast.
    pub fn forward_amp(&self, x: &Tensor, train: bool, amp: Amp) -> Result<Tensor> {
        Ok(amp.full(&self.mlp.forward_amp(x, train, amp)?))
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        self.mlp.push_parameters(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn keys_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let b = Bottleneck::new(&(vs.root() / "bottleneck"), 8, 0.2, true).unwrap();
        let mut p = Vec::new();
        b.push_parameters(&mut p);
        let got: Vec<_> = p.iter().map(|(k, t)| (k.as_str(), t.size())).collect();
        assert_eq!(
            got,
            [
                ("bottleneck.0.fc1.weight", vec![32, 8]),
                ("bottleneck.0.fc1.bias", vec![32]),
                ("bottleneck.0.fc2.weight", vec![8, 32]),
                ("bottleneck.0.fc2.bias", vec![8]),
            ]
        );
    }
}
