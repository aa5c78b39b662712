//! The two-layer MLP shared by the bottleneck and the decoder blocks
//! (official `bMlp` / `Mlp`, anomalib `DinomalyMLP`):
//! [Dropout] → fc1 → GELU (exact, erf form) → Dropout → fc2 → Dropout.

use tch::{nn, Tensor};

use super::amp::Amp;
use super::dropout::dropout;
use super::layers::Linear;
use super::NamedTensor;
use crate::Result;

/// `D → hidden → D` MLP with keys `{path}.fc1`, `{path}.fc2`.
#[derive(Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    /// Inverted-dropout probability, active only when training.
    dropout: f64,
    /// Also drop the input (the bottleneck does, the decoder MLP does not).
    input_dropout: bool,
}

impl Mlp {
    pub fn new(path: &nn::Path, dim: i64, hidden: i64, bias: bool, dropout: f64, input_dropout: bool) -> Result<Self> {
        if !(0.0..1.0).contains(&dropout) {
            return Err(crate::Error::config(format!("dropout must be in [0, 1), got {dropout}")));
        }
        Ok(Mlp {
            fc1: Linear::new(&(path / "fc1"), dim, hidden, bias)?,
            fc2: Linear::new(&(path / "fc2"), hidden, dim, bias)?,
            dropout,
            input_dropout,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_amp(x, train, Amp::Off)
    }

    /// [`Mlp::forward_t`] with both Linear layers in `amp`'s kind; under
    /// [`Amp::Bf16`] the hidden activations (and their dropout) and the
    /// output are bfloat16.
    pub fn forward_amp(&self, x: &Tensor, train: bool, amp: Amp) -> Result<Tensor> {
        let x = if self.input_dropout { self.drop(x, train)? } else { x.shallow_clone() };
        // Exact GELU (`approximate = "none"`), as nn.GELU() in both references.
        let h = self.fc1.forward_amp(&x, amp).gelu("none");
        let h = self.drop(&h, train)?;
        let y = self.fc2.forward_amp(&h, amp);
        self.drop(&y, train)
    }

    fn drop(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            dropout(x, self.dropout)
        } else {
            Ok(x.shallow_clone())
        }
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        self.fc1.push_parameters(out);
        self.fc2.push_parameters(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn dropout_only_in_training() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mlp = Mlp::new(&vs.root(), 8, 32, true, 0.5, true).unwrap();
        let x = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu));
        let a = mlp.forward_t(&x, false).unwrap();
        let b = mlp.forward_t(&x, false).unwrap();
        assert!(a.equal(&b));
        let c = mlp.forward_t(&x, true).unwrap();
        assert!(!a.allclose(&c, 1e-6, 1e-9, false));
    }

    #[test]
    fn bias_switch_and_keys() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mlp = Mlp::new(&(vs.root() / "m"), 4, 16, false, 0.0, false).unwrap();
        let mut p = Vec::new();
        mlp.push_parameters(&mut p);
        let keys: Vec<_> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["m.fc1.weight", "m.fc2.weight"]);
        assert!(Mlp::new(&vs.root(), 4, 16, true, 1.0, false).is_err());
    }
}
