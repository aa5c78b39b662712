//! Activation (gradient) checkpointing of the decoder blocks, by hand:
//! tch has no `torch.utils.checkpoint`.
//!
//! The plain step keeps every intermediate of all decoder blocks for
//! backward (attention q/k/v, the 4·D-wide MLP hidden layer, the norms),
//! which dominates a training step's memory at ViT-L/g widths. Here:
//!
//! 1. [`Checkpointed::forward`] runs the blocks under `no_grad`, keeping
//!    only each block's input (block i's input is block i−1's output) and
//!    handing out the block outputs as fresh leaves that require grad;
//! 2. the caller computes the loss from those leaves and runs its backward,
//!    which stops at the leaves (their `grad` is the loss's direct
//!    gradient with respect to each block output);
//! 3. [`Checkpointed::backward`] goes through the blocks from the last to
//!    the first, recomputes block i with grad from its saved input (a leaf
//!    requiring grad), and backpropagates the total gradient of its output
//!    (direct + what block i+1 sent back) with `(y·g).sum().backward()`,
//!    which is backward with grad_output `g` (∂/∂y of Σ y·g is exactly g);
//!    the parameters accumulate their gradients and the input's gradient
//!    is carried to block i−1;
//! 4. the caller backpropagates the returned gradient into the bottleneck
//!    output, whose graph (and dropout mask: the bottleneck is run once,
//!    with grad, never replayed) was kept.
//!
//! The recomputation is exact because a decoder block is a pure function
//! of its input and weights ([`Block::forward_amp`]: no dropout, no
//! drop-path, no RNG). Gradients equal the plain step's up to the order in
//! which libtorch sums the several gradient contributions of a block
//! output (float addition is not associative: ~6e-7 relative at ViT-B
//! width). Under bfloat16 mixed precision these float32 differences flip
//! the rounding of some later bfloat16 casts, so the gradients differ by
//! ~5e-3 relative at ViT-B width: a tenth of the bfloat16 gradients' own
//! difference from float32 (~5e-2).
//!
//! Peak memory: one block's activations plus the block inputs (which the
//! loss needs anyway), instead of all blocks' activations; the price is a
//! second forward of the decoder (~+30% step time).

use tch::Tensor;

use super::amp::Amp;
use super::decoder::{Block, Decoder};
use crate::Result;

/// Decoder outputs computed without activations, ready to be
/// backpropagated block by block.
#[derive(Debug)]
pub struct Checkpointed<'a> {
    blocks: &'a [Block],
    amp: Amp,
    /// Input of every block (detached), block 0 first.
    inputs: Vec<Tensor>,
    /// Output of every block: leaves that require grad.
    outputs: Vec<Tensor>,
}

impl<'a> Checkpointed<'a> {
    /// Runs the blocks on `x` (the bottleneck output) without recording
    /// the graph.
    pub fn forward(decoder: &'a Decoder, x: &Tensor, amp: Amp) -> Result<Self> {
        let blocks = decoder.blocks.as_slice();
        let mut inputs = Vec::with_capacity(blocks.len());
        let mut outputs = Vec::with_capacity(blocks.len());
        let mut h = x.detach();
        tch::no_grad(|| -> Result<()> {
            for blk in blocks {
                let y = blk.forward_amp(&h, amp)?;
                // A new tensor sharing y's storage: marking it does not
                // mark the saved input of the next block.
                outputs.push(y.detach().set_requires_grad(true));
                inputs.push(std::mem::replace(&mut h, y));
            }
            Ok(())
        })?;
        Ok(Checkpointed { blocks, amp, inputs, outputs })
    }

    /// The block outputs (block 0 first) as leaves requiring grad, to
    /// compute the loss from.
    pub fn outputs(&self) -> Vec<Tensor> {
        self.outputs.iter().map(Tensor::shallow_clone).collect()
    }

    /// After the loss's backward reached [`Checkpointed::outputs`]:
    /// recomputes and backpropagates every block, accumulating the
    /// parameter gradients, and returns the gradient with respect to the
    /// decoder input (`None` when no output reached the loss).
    pub fn backward(self) -> Result<Option<Tensor>> {
        let Checkpointed { blocks, amp, inputs, outputs } = self;
        let mut carried: Option<Tensor> = None;
        // Owned, so each block's saved input, output and its gradient are
        // freed as soon as the block is done.
        for ((blk, input), output) in blocks.iter().zip(inputs).zip(outputs).rev() {
            let direct = output.grad();
            let direct = direct.defined().then_some(direct);
            let g = match (direct, carried.take()) {
                (Some(d), Some(c)) => d.f_add(&c)?,
                (Some(d), None) => d,
                (None, Some(c)) => c,
                // Neither this block nor any later one reaches the loss.
                (None, None) => continue,
            };
            let x = input.detach().set_requires_grad(true);
            let y = tch::with_grad(|| blk.forward_amp(&x, amp))?;
            tch::with_grad(|| y.f_mul(&g)?.f_sum(y.kind()))?.f_backward()?;
            carried = Some(x.grad());
        }
        Ok(carried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::AttentionKind;
    use tch::{nn, Device, Kind};

    /// Gradients of a decoder-only objective agree with the plain graph.
    #[test]
    fn block_gradients_match_the_plain_graph() {
        tch::manual_seed(11);
        // Float64, so that only the algorithm is compared, not the order of
        // float32 sums.
        let mut vs = nn::VarStore::new(Device::Cpu);
        let dec = Decoder::new(&vs.root(), 8, 2, 3, AttentionKind::OFFICIAL, true).unwrap();
        vs.set_kind(Kind::Double);
        let x0 = Tensor::randn([2, 5, 8], (Kind::Double, Device::Cpu));
        let weights: Vec<Tensor> = (0..3).map(|_| Tensor::randn([2, 5, 8], (Kind::Double, Device::Cpu))).collect();
        let objective = |outs: &[Tensor]| -> Tensor {
            // Block 1's output is left out: its gradient comes only from
            // block 2.
            (&outs[0] * &weights[0]).sum(Kind::Double) + (&outs[2] * &weights[2]).sum(Kind::Double)
        };
        let grads =
            |vs: &nn::VarStore| -> Vec<Tensor> { vs.trainable_variables().iter().map(|t| t.grad().copy()).collect() };

        let x = x0.copy().set_requires_grad(true);
        objective(&dec.forward(&x).unwrap()).backward();
        let plain = grads(&vs);
        let plain_x = x.grad().copy();
        vs.trainable_variables().iter().for_each(|t| {
            let _ = t.grad().zero_();
        });

        let x = x0.copy().set_requires_grad(true);
        let ck = Checkpointed::forward(&dec, &x, Amp::Off).unwrap();
        objective(&ck.outputs()).backward();
        let gx = ck.backward().unwrap().unwrap();
        (&x * &gx).sum(Kind::Double).backward();
        let rel = |a: &Tensor, b: &Tensor| (a - b).norm().double_value(&[]) / a.norm().double_value(&[]).max(1e-300);
        let after = grads(&vs);
        assert_eq!(plain.len(), after.len());
        for (a, b) in plain.iter().zip(&after) {
            assert!(a.abs().max().double_value(&[]) > 0.0);
            assert!(rel(a, b) <= 1e-12, "relative difference {}", rel(a, b));
        }
        assert!(rel(&plain_x, &x.grad()) <= 1e-12);
    }
}
