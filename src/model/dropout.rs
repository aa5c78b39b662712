//! Inverted dropout, `x · mask / (1 − p)`, as torch's CPU `dropout` computes
//! it (`noise = bernoulli(1 − p) / (1 − p)`, then `x · noise`), with the
//! keep mask drawn here on CPU instead of by torch's `bernoulli_`.
//!
//! Why: torch draws CPU Bernoulli masks one element at a time from its
//! Mersenne twister, about 7 ns an element on this machine. The bottleneck
//! drops 58 M activations a batch-16 ViT-B training step (its input, its
//! 3072-wide hidden layer and its output): 0.43 s of every 24 s iteration,
//! on one core while the other waits. Here each element's draw is a pure
//! function of a key and its index (SplitMix64's output function applied
//! to a counter), so the mask is filled by all rayon threads at once and is
//! the same whatever their number.
//!
//! The key comes from torch's default generator, so `tch::manual_seed`
//! still decides every mask (the trainer seeds it per iteration) and two
//! calls in a row draw different masks. Masks differ from the ones torch's
//! `bernoulli_` would draw for the same seed, as the two references'
//! masks already differ from each other's for one seed in any model that
//! does not run the same operations in the same order: only the
//! distribution (each element kept independently with probability 1 − p)
//! is the method's. On other devices torch's own fused dropout runs.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Elements a rayon task fills; the mask does not depend on it.
const CHUNK: usize = 1 << 16;

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Inverted dropout of `x` with drop probability `p` in `[0, 1)`; `x` itself
/// when `p` is 0. Differentiable in `x` (a product with a constant mask).
pub fn dropout(x: &Tensor, p: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config(format!("dropout must be in [0, 1), got {p}")));
    }
    if p == 0.0 {
        return Ok(x.shallow_clone());
    }
    if x.device() != Device::Cpu {
        return Ok(x.f_dropout(p, true)?);
    }
    let key = draw_key()?;
    let noise = noise(&x.size(), p, key)?;
    let noise = if x.kind() == Kind::Float {
        noise
    } else {
        // bfloat16 activations: the kept value 1/(1 − p) rounded as torch's
        // `div_` on a bfloat16 noise tensor rounds it.
        noise.f_to_kind(x.kind())?
    };
    Ok(x.f_mul(&noise)?)
}

/// 64 random bits from torch's default CPU generator.
fn draw_key() -> Result<u64> {
    let draw = Tensor::f_randint_low(i64::MIN, i64::MAX, [1], (Kind::Int64, Device::Cpu))?;
    Ok(draw.f_int64_value(&[0])? as u64)
}

/// The float32 noise tensor of `shape`: `1/(1 − p)` where element `i` is
/// kept, 0 where it is dropped.
fn noise(shape: &[i64], p: f64, key: u64) -> Result<Tensor> {
    let noise = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
    let numel = noise.numel();
    // The kept value as torch computes `noise.div_(1 - p)` on a float32
    // tensor: one float32 division of 1 by float32(1 − p).
    let kept = 1.0f32 / (1.0 - p) as f32;
    let threshold = keep_threshold(p);
    if numel > 0 {
        // SAFETY: `noise` was just allocated by libtorch as a contiguous
        // float32 CPU tensor of `numel` elements; no other handle to its
        // storage exists while the slice lives, and it is written before it
        // is read.
        let values = unsafe { std::slice::from_raw_parts_mut(noise.data_ptr() as *mut f32, numel) };
        fill(values, key, threshold, kept);
    }
    Ok(noise)
}

/// An element is kept when its 32 random bits are below this:
/// `round((1 − p) · 2³²)`, exact to 2⁻³² in probability.
fn keep_threshold(p: f64) -> u64 {
    ((1.0 - p) * 4_294_967_296.0).round() as u64
}

/// Writes the noise of elements `0..values.len()` (chunks in parallel).
fn fill(values: &mut [f32], key: u64, threshold: u64, kept: f32) {
    values.par_chunks_mut(CHUNK).enumerate().for_each(|(chunk, out)| {
        let start = chunk * CHUNK;
        for (offset, value) in out.iter_mut().enumerate() {
            let bits = element_bits(key, (start + offset) as u64);
            *value = if (bits as u64) < threshold { kept } else { 0.0 };
        }
    });
}

/// 32 random bits for element `index`: half of SplitMix64's output at
/// counter `index / 2` (the low half for even, the high half for odd
/// indices), so one 64-bit mix serves two elements.
#[inline]
fn element_bits(key: u64, index: u64) -> u32 {
    let z = mix(key.wrapping_add((index / 2).wrapping_add(1).wrapping_mul(GAMMA)));
    if index % 2 == 0 {
        z as u32
    } else {
        (z >> 32) as u32
    }
}

/// SplitMix64's output function (Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014; the variant-13 constants
/// of java.util.SplittableRandom).
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // SplitMix64 seeded with 0: state advances by GAMMA before each
        // output (reference values of the published generator).
        assert_eq!(mix(GAMMA), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(GAMMA.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn keeps_or_scales_each_element_and_keeps_the_right_share() {
        tch::manual_seed(3);
        let x = Tensor::ones([1000, 1000], (Kind::Float, Device::Cpu));
        let y = dropout(&x, 0.2).unwrap();
        let v = values(&y);
        assert!(v.iter().all(|&e| e == 0.0 || e == 1.25));
        let kept = v.iter().filter(|&&e| e != 0.0).count() as f64 / v.len() as f64;
        // Binomial standard deviation at n = 1e6, p = 0.8: 4e-4.
        assert!((kept - 0.8).abs() < 2e-3, "kept share {kept}");
        // Neighbouring halves of one 64-bit draw are not correlated.
        let both = v.chunks(2).filter(|c| c[0] != 0.0 && c[1] != 0.0).count() as f64 / (v.len() / 2) as f64;
        assert!((both - 0.64).abs() < 3e-3, "pairs kept together {both}");
    }

    #[test]
    fn the_seed_decides_the_mask_and_calls_differ() {
        let x = Tensor::randn([7, 33, 5], (Kind::Float, Device::Cpu));
        tch::manual_seed(11);
        let a = dropout(&x, 0.4).unwrap();
        let b = dropout(&x, 0.4).unwrap();
        tch::manual_seed(11);
        let c = dropout(&x, 0.4).unwrap();
        assert!(a.equal(&c));
        assert!(!a.equal(&b));
    }

    #[test]
    fn the_mask_does_not_depend_on_the_thread_count() {
        let shape = [3 * CHUNK as i64 + 17];
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let a = one.install(|| noise(&shape, 0.3, 99).unwrap());
        let b = four.install(|| noise(&shape, 0.3, 99).unwrap());
        assert!(a.equal(&b));
    }

    #[test]
    fn gradient_is_the_mask_and_other_kinds_and_p_zero() {
        tch::manual_seed(5);
        let x = Tensor::randn([64, 9], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = dropout(&x, 0.5).unwrap();
        y.sum(Kind::Float).backward();
        let g = x.grad();
        // Where the output is zero the gradient is zero; elsewhere 2.
        let kept = y.ne(0.0);
        assert!(g.masked_select(&kept).eq(2.0).all().int64_value(&[]) == 1);
        assert!(g.masked_select(&kept.logical_not()).eq(0.0).all().int64_value(&[]) == 1);
        let xb = x.detach().to_kind(Kind::BFloat16);
        assert_eq!(dropout(&xb, 0.2).unwrap().kind(), Kind::BFloat16);
        assert!(dropout(&x, 0.0).unwrap().equal(&x));
        assert!(dropout(&x, 1.0).is_err());
        assert!(dropout(&x, -0.1).is_err());
    }
}
