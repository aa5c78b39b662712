//! Gaussian smoothing of anomaly maps: the kernel of the official
//! `get_gaussian_kernel` (utils.py) and its convolution with zero padding
//! (official evaluation) or reflect padding (anomalib's `GaussianBlur2d`).
//!
//! For kernel size 5 and sigma 4 the official kernel and anomalib's (kornia's
//! separable construction) are bitwise equal in float32 (checked with
//! anomalib 2.7.0 / kornia 0.9.0), so one construction serves both.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// How the map is extended beyond its border before the convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Zeros, as `nn.Conv2d(padding=k // 2)` in the official evaluation:
    /// border pixels are pulled towards 0.
    Zero,
    /// Mirror without repeating the edge (`F.pad(mode="reflect")`), as
    /// anomalib's `GaussianBlur2d`.
    Reflect,
}

/// The normalised `size` x `size` Gaussian with standard deviation `sigma`
/// on the integer grid centred at `(size - 1) / 2`, float32, on the CPU.
///
/// Built with the same float32 tensor operations in the same order as the
/// official code (squared offsets summed, negated, divided by 2 sigma^2,
/// exponentiated, scaled by 1 / (2 pi sigma^2), divided by the sum), so the
/// values are bitwise those of the reference; for 5 and 4 the corner,
/// edge-centre and centre are 0.035204, 0.039891 and 0.045203.
pub fn gaussian_kernel(size: i64, sigma: f64) -> Result<Tensor> {
    check_kernel(size, sigma)?;
    let opts = (Kind::Float, Device::Cpu);
    let centre = (size - 1) as f64 / 2.0;
    let variance = sigma * sigma;
    let offsets = Tensor::f_arange(size, opts)?.f_sub_scalar(centre)?.f_pow_tensor_scalar(2.0)?;
    // Column offsets along x plus row offsets along y: element (i, j) is
    // (j - c)^2 + (i - c)^2, the sum over the official (x, y) grid.
    let squared = offsets.f_view([1, size])?.f_add(&offsets.f_view([size, 1])?)?;
    let kernel = squared.f_neg()?.f_div_scalar(2.0 * variance)?.f_exp()?.f_mul_scalar(1.0 / (2.0 * PI * variance))?;
    let total = kernel.f_sum(Kind::Float)?;
    Ok(kernel.f_div(&total)?)
}

/// Refuses a kernel size that is not a positive odd number and a sigma that
/// is not a positive number.
pub fn check_kernel(size: i64, sigma: f64) -> Result<()> {
    if size < 1 || size % 2 == 0 {
        return Err(Error::config(format!("gaussian kernel size must be a positive odd number, got {size}")));
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::config(format!("gaussian sigma must be a positive number, got {sigma}")));
    }
    Ok(())
}

/// Smooths `maps` (B, 1, H, W) with `kernel` (k, k) and the given padding;
/// the output has the input's shape and kind (float32).
///
/// The convolution runs in float64 and is rounded back to float32 once.
/// cuDNN runs float32 convolutions in TF32 by default (libtorch's
/// `allowTF32CuDNN`, which tch does not expose), rounding every product to
/// 10 mantissa bits, ~1e-3 relative: far outside the 1e-4 the maps must
/// meet. In float64 the result is within an ulp of the exact float32
/// convolution on every device.
pub fn smooth(maps: &Tensor, kernel: &Tensor, padding: Padding) -> Result<Tensor> {
    let (_, _, height, width) = maps.size4()?;
    let (kh, kw) = kernel.size2()?;
    let (pad_h, pad_w) = (kh / 2, kw / 2);
    if padding == Padding::Reflect && (height <= pad_h || width <= pad_w) {
        return Err(Error::config(format!(
            "reflect padding of {pad_h}x{pad_w} needs a map larger than that, got {height}x{width}"
        )));
    }
    let weight = kernel.f_to_kind(Kind::Double)?.f_to_device(maps.device())?.f_view([1, 1, kh, kw])?;
    let input = maps.f_to_kind(Kind::Double)?;
    let no_bias: Option<Tensor> = None;
    let out = match padding {
        Padding::Zero => input.f_conv2d(&weight, no_bias, [1, 1], [pad_h, pad_w], [1, 1], 1)?,
        Padding::Reflect => input.f_reflection_pad2d([pad_w, pad_w, pad_h, pad_h])?.f_conv2d(
            &weight,
            no_bias,
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )?,
    };
    Ok(out.f_to_kind(maps.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn kernel_matches_spec_values_and_sums_to_one() {
        let k = values(&gaussian_kernel(5, 4.0).unwrap());
        assert!((k[0] - 0.035204).abs() < 5e-7, "corner {}", k[0]);
        assert!((k[2] - 0.039891).abs() < 5e-7, "edge centre {}", k[2]);
        assert!((k[12] - 0.045203).abs() < 5e-7, "centre {}", k[12]);
        let sum: f64 = k.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        // Symmetric under transposition and mirroring.
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(k[i * 5 + j], k[j * 5 + i]);
                assert_eq!(k[i * 5 + j], k[(4 - i) * 5 + j]);
            }
        }
    }

    #[test]
    fn bad_kernel_settings_are_refused() {
        assert!(gaussian_kernel(4, 4.0).is_err());
        assert!(gaussian_kernel(0, 4.0).is_err());
        assert!(gaussian_kernel(5, 0.0).is_err());
        assert!(gaussian_kernel(5, f64::NAN).is_err());
    }

    #[test]
    fn constant_map_stays_constant_with_reflect_and_darkens_at_zero_border() {
        let kernel = gaussian_kernel(5, 4.0).unwrap();
        let map = Tensor::full([1, 1, 8, 8], 2.0, (Kind::Float, Device::Cpu));
        let reflect = values(&smooth(&map, &kernel, Padding::Reflect).unwrap());
        assert!(reflect.iter().all(|&v| (v - 2.0).abs() < 1e-6));
        let zero = values(&smooth(&map, &kernel, Padding::Zero).unwrap());
        assert!((zero[3 * 8 + 3] - 2.0).abs() < 1e-6, "interior untouched");
        assert!(zero[0] < 1.2, "corner sees 16 of 25 zero taps: {}", zero[0]);
    }

    #[test]
    fn reflect_needs_a_map_larger_than_the_padding() {
        let kernel = gaussian_kernel(5, 4.0).unwrap();
        let map = Tensor::zeros([1, 1, 2, 9], (Kind::Float, Device::Cpu));
        assert!(smooth(&map, &kernel, Padding::Reflect).is_err());
        assert!(smooth(&map, &kernel, Padding::Zero).is_ok());
    }
}
