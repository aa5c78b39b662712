//! Mixed-precision compute of the trainable modules, in the manner of
//! `torch.autocast(dtype=torch.bfloat16)`, done by hand at the call sites:
//! the only autocast switch tch 0.24 reaches (`at::autocast::set_enabled`)
//! is libtorch's CUDA one, and libtorch's CPU autocast is not exposed.
//!
//! With [`Amp::Bf16`] the weights stay float32 (the optimizer's masters);
//! each matrix product casts its operands to bfloat16 (a differentiable
//! cast, so the gradients land in float32 on the masters). These run in
//! bfloat16: the Linear layers of the bottleneck and decoder (qkv, proj,
//! fc1, fc2; bias added in bfloat16, as autocast's `linear` does) and the
//! attention products (`φ(k)ᵀv`, `φ(q)·KV`, `q kᵀ`, `softmax·v`). These
//! stay float32: LayerNorm, ELU+1 and the linear-attention normaliser sums,
//! softmax, the residual stream (a branch's bfloat16 output is promoted by
//! the float32 residual add) and the bottleneck output, the loss and its
//! cosines. Between two Linear layers (fc1 → GELU → fc2) activations stay
//! bfloat16, as under autocast, which halves what the MLPs keep for
//! backward.
//!
//! [`Amp::Off`] casts nothing: modules compute in the kind of their
//! weights (float32, or bfloat16 for a model cast whole for inference).

use tch::{Kind, Tensor};

/// Numeric precision of a run (`--precision`): what the rules below select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    /// float32 everywhere (the references' setting).
    #[default]
    Fp32,
    /// Encoder and decoder in bfloat16 (for CUDA; maps and scores are
    /// still computed in float32 from the bfloat16 features).
    Bf16,
}

impl Precision {
    /// The tensor kind of the weights.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// How the trainable modules compute their matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Amp {
    /// No casts: everything in the weights' kind.
    #[default]
    Off,
    /// Matrix products in bfloat16 on float32 weights.
    Bf16,
}

impl From<Precision> for Amp {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp32 => Amp::Off,
            Precision::Bf16 => Amp::Bf16,
        }
    }
}

impl Amp {
    /// The kind matrix products run in, if they are cast.
    fn low(self) -> Option<Kind> {
        match self {
            Amp::Off => None,
            Amp::Bf16 => Some(Kind::BFloat16),
        }
    }

    /// `t` in the matrix-product kind (`t` itself when off).
    pub fn cast(self, t: &Tensor) -> Tensor {
        match self.low() {
            Some(k) => t.to_kind(k),
            None => t.shallow_clone(),
        }
    }

    /// `t` in float32 when on (a reduced-precision island ends here);
    /// `t` itself when off.
    pub fn full(self, t: &Tensor) -> Tensor {
        match self {
            Amp::Off => t.shallow_clone(),
            Amp::Bf16 => t.to_kind(Kind::Float),
        }
    }

    /// `x Wᵀ + b` in the matrix-product kind.
    pub fn linear(self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        match self.low() {
            Some(_) => {
                let bias = bias.map(|b| self.cast(b));
                self.cast(x).linear(&self.cast(weight), bias.as_ref())
            }
            None => x.linear(weight, bias),
        }
    }

    /// `a · b` (batched) in the matrix-product kind.
    pub fn matmul(self, a: &Tensor, b: &Tensor) -> Tensor {
        self.cast(a).matmul(&self.cast(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn bf16_products_are_close_and_differentiable_into_f32() {
        tch::manual_seed(4);
        let x = Tensor::randn([3, 5, 16], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([8, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([8], (Kind::Float, Device::Cpu));
        let exact = Amp::Off.linear(&x, &w, Some(&b));
        let low = Amp::Bf16.linear(&x, &w, Some(&b));
        assert_eq!(exact.kind(), Kind::Float);
        assert_eq!(low.kind(), Kind::BFloat16);
        let rel = (&exact - low.to_kind(Kind::Float)).norm().double_value(&[]) / exact.norm().double_value(&[]);
        assert!(rel < 1e-2 && rel > 0.0, "relative error {rel}");
        low.to_kind(Kind::Float).sum(Kind::Float).backward();
        assert_eq!(w.grad().kind(), Kind::Float);
        assert!(w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // Off casts nothing.
        let y = Tensor::randn([3, 16, 4], (Kind::Float, Device::Cpu));
        assert!(Amp::Off.matmul(&x, &y).equal(&x.matmul(&y)));
        assert_eq!(Amp::Bf16.matmul(&x, &y).kind(), Kind::BFloat16);
        assert_eq!(Amp::from(Precision::Bf16), Amp::Bf16);
        assert_eq!(Amp::from(Precision::Fp32), Amp::Off);
    }
}
