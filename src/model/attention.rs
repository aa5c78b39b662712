//! Decoder self-attention: the ELU+1 linear attention Dinomaly uses
//! (official `LinearAttention2`, anomalib `LinearAttention`) and plain
//! softmax attention (the ablation). Both project with `qkv` and `proj`
//! Linear layers with biases (`decoder.{i}.attn.qkv`, `decoder.{i}.attn.proj`).
//!
//! Linear attention per head (head dim d, tokens n):
//! `φ(x) = ELU(x) + 1`, `KV = Σₙ φ(kₙ) vₙᵀ` (d×d), `s = Σₙ φ(kₙ)`,
//! `outₙ = φ(qₙ)ᵀ KV / (φ(qₙ)·s)`, with no 1/√d scaling. It is computed
//! through the d×d matrix, never the N×N attention, so it costs O(N d²).
//! The released code has no epsilon in the denominator; the official README
//! suggests adding 1e-6 if NaNs appear, which [`AttentionKind::Linear`]'s
//! `eps` provides.

use tch::{nn, Kind, Tensor};

use super::amp::Amp;
use super::layers::Linear;
use super::NamedTensor;
use crate::Result;

/// Which attention the decoder blocks use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionKind {
    /// ELU+1 linear attention (Dinomaly's default). `eps`, if set, is added
    /// to the normaliser `φ(q)·s` (official README's fix for NaN losses).
    Linear { eps: Option<f64> },
    /// Softmax attention with scale 1/√(head dim) (ablation).
    Softmax,
}

impl AttentionKind {
    /// The released code: linear attention, no epsilon.
    pub const OFFICIAL: AttentionKind = AttentionKind::Linear { eps: None };
}

/// Multi-head self-attention with `qkv` and `proj` projections.
#[derive(Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    num_heads: i64,
    kind: AttentionKind,
}

impl Attention {
    /// `path` is the attention's own path (`decoder.{i}.attn`).
    pub fn new(path: &nn::Path, dim: i64, num_heads: i64, kind: AttentionKind) -> Result<Self> {
        if num_heads <= 0 || dim % num_heads != 0 {
            return Err(crate::Error::config(format!(
                "embedding dimension {dim} is not divisible into {num_heads} heads"
            )));
        }
        if let AttentionKind::Linear { eps: Some(eps) } = kind {
            if !(eps >= 0.0 && eps.is_finite()) {
                return Err(crate::Error::config(format!("linear-attention eps must be finite and >= 0, got {eps}")));
            }
        }
        Ok(Attention {
            qkv: Linear::new(&(path / "qkv"), dim, 3 * dim, true)?,
            proj: Linear::new(&(path / "proj"), dim, dim, true)?,
            num_heads,
            kind,
        })
    }

    /// `(B, N, D) → (B, N, D)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_amp(x, Amp::Off)
    }

    /// [`Attention::forward`] with the projections and attention products
    /// in `amp`'s kind (the output is bfloat16 under [`Amp::Bf16`]).
    pub fn forward_amp(&self, x: &Tensor, amp: Amp) -> Result<Tensor> {
        let (b, n, c) = x.size3()?;
        let h = self.num_heads;
        let expected = self.proj.weight.size()[0];
        if c != expected {
            return Err(crate::Error::mismatch("attention input", format!("width {c}, expected {expected}")));
        }
        // (B, N, 3, h, d) → (3, B·h, N, d), the references' layout, copied
        // once into head-major order: every product below then reads
        // contiguous per-head matrices (the references' strided views cost
        // matmul a copy of each operand, forward and backward).
        let heads = self
            .qkv
            .forward_amp(x, amp)
            .f_view([b, n, 3, h, c / h])?
            .f_permute([2, 0, 3, 1, 4])?
            .f_contiguous()?
            .f_view([3, b * h, n, c / h])?;
        // `split`, not three `select`s: its backward is one concatenation,
        // where each select's backward fills a zero tensor of all three.
        let parts = heads.f_split_with_sizes([2, 1], 0)?;
        let (qk, v) = (&parts[0], parts[1].f_squeeze_dim(0)?);
        let y = match self.kind {
            AttentionKind::Linear { eps } => linear_attention(qk, &v, eps, amp)?,
            AttentionKind::Softmax => {
                let qk = qk.f_unbind(0)?;
                softmax_attention(&qk[0], &qk[1], &v, amp)
            }
        };
        // (B·h, N, d) → (B, N, h·d).
        Ok(self.proj.forward_amp(&y.f_view([b, h, n, c / h])?.f_transpose(1, 2)?.f_reshape([b, n, c])?, amp))
    }

    pub fn push_parameters(&self, out: &mut Vec<NamedTensor>) {
        self.qkv.push_parameters(out);
        self.proj.push_parameters(out);
    }
}

/// ELU+1 linear attention on per-head queries and keys stacked as `qk`,
/// `(2, …, N, d)`, and values `v`, `(…, N, d)` (before the feature map).
/// Returns `(…, N, d)`. The two products run in `amp`'s kind; the feature
/// map and the normaliser stay float32 under [`Amp::Bf16`] (so does the
/// output).
pub fn linear_attention(qk: &Tensor, v: &Tensor, eps: Option<f64>, amp: Amp) -> Result<Tensor> {
    // φ(x) = ELU(x) + 1 with ELU's alpha 1 (x + 1 for x > 0, exp(x) otherwise),
    // on queries and keys in one pass each. The +1 may go in place: ELU's
    // backward reads its input, not its output.
    let mut phi = amp.full(qk).f_elu()?;
    let _ = phi.f_add_scalar_(1.0)?;
    let phi = phi.f_unbind(0)?;
    let (q, k) = (&phi[0], &phi[1]);
    // Σₙ φ(kₙ) vₙᵀ: (…, d, d).
    let kv = amp.matmul(&k.f_transpose(-2, -1)?, v);
    // Σₙ φ(kₙ): (…, 1, d); the normaliser φ(qₙ)·Σφ(k) as a product, as the
    // references' einsum computes it: (…, N, 1).
    let s = k.f_sum_dim_intlist(-2, true, None)?;
    let denom = q.f_matmul(&s.f_transpose(-2, -1)?)?;
    let denom = match eps {
        Some(e) => denom.f_add_scalar(e)?,
        None => denom,
    };
    // Multiply by the reciprocal, as both references do.
    Ok(amp.matmul(q, &kv).f_mul(&denom.f_reciprocal()?)?)
}

/// Softmax attention on per-head `q, k, v` of shape `(…, N, d)`:
/// `softmax(q kᵀ / √d) v`. Returns `(…, N, d)`. The two products run in
/// `amp`'s kind; under [`Amp::Bf16`] the softmax is taken in float32.
pub fn softmax_attention(q: &Tensor, k: &Tensor, v: &Tensor, amp: Amp) -> Tensor {
    let d = q.size().last().copied().unwrap_or(1);
    let scale = (d as f64).powf(-0.5);
    let logits = amp.matmul(q, &k.transpose(-2, -1)) * scale;
    let softmax_kind = match amp {
        Amp::Off => None,
        Amp::Bf16 => Some(Kind::Float),
    };
    let attn = logits.softmax(-1, softmax_kind);
    amp.matmul(&attn, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn rand(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    /// The direct O(N²) form: A = φ(q) φ(k)ᵀ, rows normalised, then A v.
    fn direct(q: &Tensor, k: &Tensor, v: &Tensor, eps: f64) -> (Tensor, Tensor) {
        let (q, k) = (q.elu() + 1.0, k.elu() + 1.0);
        let a = q.matmul(&k.transpose(-2, -1));
        let a = &a / (a.sum_dim_intlist(-1, true, None) + eps);
        (a.matmul(v), a)
    }

    #[test]
    fn linear_attention_equals_direct_formula() {
        tch::manual_seed(5);
        let (q, k, v) = (rand(&[2, 3, 17, 8]), rand(&[2, 3, 17, 8]), rand(&[2, 3, 17, 8]));
        let fast = linear_attention(&Tensor::stack(&[&q, &k], 0), &v, None, Amp::Off).unwrap();
        let (slow, a) = direct(&q, &k, &v, 0.0);
        let diff = (&fast - &slow).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "max diff {diff}");
        // The implicit attention rows are a distribution.
        let rows = a.sum_dim_intlist(-1, false, None);
        let dev = (rows - 1.0).abs().max().double_value(&[]);
        assert!(dev < 1e-12, "row sums off by {dev}");
        assert!(a.min().double_value(&[]) > 0.0);
    }

    #[test]
    fn linear_attention_eps_enters_the_denominator() {
        tch::manual_seed(6);
        let (q, k, v) = (rand(&[1, 2, 9, 4]), rand(&[1, 2, 9, 4]), rand(&[1, 2, 9, 4]));
        let fast = linear_attention(&Tensor::stack(&[&q, &k], 0), &v, Some(0.5), Amp::Off).unwrap();
        let (slow, _) = direct(&q, &k, &v, 0.5);
        let diff = (&fast - &slow).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "max diff {diff}");
    }

    #[test]
    fn softmax_attention_rows_sum_to_one() {
        tch::manual_seed(7);
        let (q, k) = (rand(&[1, 2, 6, 4]), rand(&[1, 2, 6, 4]));
        let eye = Tensor::eye(6, (Kind::Double, Device::Cpu)).view([1, 1, 6, 6]);
        let v = eye.expand([1, 2, 6, 6], false);
        // With v = I the output is the attention matrix itself.
        let a = softmax_attention(&q, &k, &v, Amp::Off);
        let dev = (a.sum_dim_intlist(-1, false, None) - 1.0).abs().max().double_value(&[]);
        assert!(dev < 1e-12);
        let manual = (q.matmul(&k.transpose(-2, -1)) / 2.0).softmax(-1, None);
        assert!(a.allclose(&manual, 1e-12, 1e-12, false));
    }

    #[test]
    fn heads_must_divide_the_dimension() {
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(Attention::new(&vs.root(), 10, 4, AttentionKind::OFFICIAL).is_err());
        let attn = Attention::new(&vs.root(), 8, 4, AttentionKind::OFFICIAL).unwrap();
        assert!(attn.forward(&Tensor::zeros([1, 3, 6], (Kind::Float, Device::Cpu))).is_err());
        assert!(attn.forward(&Tensor::zeros([3, 8], (Kind::Float, Device::Cpu))).is_err());
        let bad = AttentionKind::Linear { eps: Some(-1.0) };
        assert!(Attention::new(&vs.root(), 8, 4, bad).is_err());
    }
}
