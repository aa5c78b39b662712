//! Resizing the stored positional embedding to the patch grid of the input.
//!
//! Three modes, because the references disagree and each one's numbers
//! depend on it (spec 1.4 and 13.4):
//! - `official`: Meta's DINOv2 code as the official Dinomaly runs it: bicubic
//!   (A = -0.75), align_corners false, no antialias, driven by a *scale
//!   factor* `(grid + 0.1) / stored` per axis rather than a target size. The
//!   output size is `floor(stored * scale)` = grid, but the source coordinate
//!   of each output cell is `(dst + 0.5) / scale - 0.5`, which shifts every
//!   sample slightly compared to a size-driven resize.
//! - `exact`: a size-driven bicubic resize with no antialias: timm with
//!   `dynamic_img_size`, as anomalib 2.7 patches it.
//! - `exact-antialias`: the same with antialias, timm's default and what
//!   Hugging Face transformers does.
//!
//! When the grid equals the stored grid, no mode interpolates.

use tch::{Kind, Tensor};

/// How the positional embedding is fitted to the patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PosInterp {
    /// Official DINOv2: bicubic driven by the scale factor (grid + 0.1) / stored.
    #[default]
    Official,
    /// Bicubic to the exact grid size, no antialias (timm dynamic size, anomalib).
    Exact,
    /// Bicubic to the exact grid size with antialias (timm default, Hugging Face).
    ExactAntialias,
}

impl PosInterp {
    /// The name stored in feature-store and checkpoint metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            PosInterp::Official => "official",
            PosInterp::Exact => "exact",
            PosInterp::ExactAntialias => "exact-antialias",
        }
    }

    /// Parses a metadata name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "official" => Some(PosInterp::Official),
            "exact" => Some(PosInterp::Exact),
            "exact-antialias" => Some(PosInterp::ExactAntialias),
            _ => None,
        }
    }
}

/// The offset the official DINOv2 code adds to the target grid before
/// turning it into a scale factor ("to avoid floating point error").
const OFFICIAL_OFFSET: f64 = 0.1;

/// Fits `patch_pos` (1, S_h*S_w, D) stored on a `stored` grid to `grid`.
/// Returns (1, grid_h*grid_w, D) in the input's dtype; the interpolation
/// runs in fp32 as in the references.
pub fn resize(patch_pos: &Tensor, stored: (i64, i64), grid: (i64, i64), mode: PosInterp) -> Tensor {
    if stored == grid {
        return patch_pos.shallow_clone();
    }
    let dim = patch_pos.size()[2];
    let dtype = patch_pos.kind();
    // (1, S_h*S_w, D) -> (1, D, S_h, S_w), row-major patch order.
    let grid_tensor = patch_pos.to_kind(Kind::Float).reshape([1, stored.0, stored.1, dim]).permute([0, 3, 1, 2]);
    let out_size = [grid.0, grid.1];
    let resized = match mode {
        PosInterp::Official => {
            let scale_h = (grid.0 as f64 + OFFICIAL_OFFSET) / stored.0 as f64;
            let scale_w = (grid.1 as f64 + OFFICIAL_OFFSET) / stored.1 as f64;
            // Bicubic, align_corners=false, no antialias, scales given.
            grid_tensor.upsample_bicubic2d(out_size, false, scale_h, scale_w)
        }
        // Bicubic, align_corners=false, no antialias, size-driven.
        PosInterp::Exact => grid_tensor.upsample_bicubic2d(out_size, false, None, None),
        // Bicubic, align_corners=false, antialias, size-driven.
        PosInterp::ExactAntialias => grid_tensor.internal_upsample_bicubic2d_aa(out_size, false, None, None),
    };
    resized.permute([0, 2, 3, 1]).reshape([1, grid.0 * grid.1, dim]).to_kind(dtype)
}
