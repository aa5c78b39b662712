//! Input pre-processing identical to the reference pipelines: resize,
//! centre crop, ImageNet normalisation, giving a (3, h, w) float tensor.
//!
//! Two backends:
//! - [`ResizeBackend::Pil`], the official code (`dataset.py`
//!   `get_data_transforms`): torchvision `Resize((448, 448))` on the PIL
//!   image (Pillow BILINEAR with antialiasing, reproduced bit for bit by
//!   [`crate::data::resample`]), `ToTensor` (uint8 / 255 in f32),
//!   `CenterCrop(392)`, `Normalize(mean, std)` (`(x - mean) / std` in f32).
//!   Matches torchvision to the last bit (fixture tolerance 1e-6).
//! - [`ResizeBackend::Tensor`], anomalib 2.7's Dinomaly pre-processor
//!   (`configure_pre_processor`): the image read as uint8 then scaled to
//!   float by `* (1/255)` (torchvision v2 `to_dtype(scale=True)`),
//!   torchvision v2 `Resize` on the float tensor (bilinear,
//!   `align_corners=False`, `antialias=True`: libtorch's
//!   `_upsample_bilinear2d_aa`), `CenterCrop`, `Normalize`. About one grey
//!   level away from the PIL path.
//!
//! Centre-crop offsets are torchvision's `int(round((H - h) / 2))`, with
//! Python's round-half-to-even.

use std::path::Path;

use image::RgbImage;
use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::data::decode::load_rgb;
use crate::data::resample::{resize_bilinear, Image8};
use crate::{Error, Result};

/// ImageNet channel means used by both references.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations used by both references.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Smallest accepted resize / crop side (one 14-pixel patch).
pub const MIN_SIDE: usize = 14;
/// Largest accepted resize / crop side.
pub const MAX_SIDE: usize = 2048;

/// How the image is resized. Its names in files are its flag values
/// (`io::names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeBackend {
    /// Pillow's antialiased bilinear on the 8-bit image (official code).
    #[default]
    Pil,
    /// libtorch antialiased bilinear on the float tensor (anomalib 2.7).
    Tensor,
}

/// Resize, centre-crop and normalisation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    resize: (usize, usize),
    crop: (usize, usize),
    backend: ResizeBackend,
}

impl Default for Preprocess {
    /// The paper's R448-C392 with the official (PIL) resize.
    fn default() -> Self {
        Preprocess { resize: (448, 448), crop: (392, 392), backend: ResizeBackend::Pil }
    }
}

impl Preprocess {
    /// The paper's R448-C392 with the given resize backend.
    pub fn default_with_backend(backend: ResizeBackend) -> Self {
        Preprocess { backend, ..Preprocess::default() }
    }

    /// Resize to `resize` = (height, width), then centre-crop `crop` =
    /// (height, width). Sides must lie in 14..=2048 and the crop must fit
    /// in the resized image. Patch-grid divisibility is the encoder's check.
    pub fn new(resize: (usize, usize), crop: (usize, usize), backend: ResizeBackend) -> Result<Self> {
        for (what, (h, w)) in [("resize", resize), ("crop", crop)] {
            for side in [h, w] {
                if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
                    return Err(Error::config(format!(
                        "{what} size {h}x{w}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels"
                    )));
                }
            }
        }
        if crop.0 > resize.0 || crop.1 > resize.1 {
            return Err(Error::config(format!(
                "crop {}x{} does not fit in the resized {}x{} image",
                crop.0, crop.1, resize.0, resize.1
            )));
        }
        Ok(Preprocess { resize, crop, backend })
    }

    /// (height, width) after resizing.
    pub fn resize(&self) -> (usize, usize) {
        self.resize
    }

    /// (height, width) of the crop: the model's input size.
    pub fn crop(&self) -> (usize, usize) {
        self.crop
    }

    /// The resize backend.
    pub fn backend(&self) -> ResizeBackend {
        self.backend
    }

    /// (top, left) of the centre crop in the resized image.
    pub fn crop_offset(&self) -> (usize, usize) {
        (centre_offset(self.resize.0, self.crop.0), centre_offset(self.resize.1, self.crop.1))
    }

    /// The image resized by Pillow's bilinear to the resize size (PIL
    /// backend's first step; exposed for checks against Pillow).
    pub fn resize_pil(&self, img: &RgbImage) -> Image8 {
        let src = rgb_to_image8(img);
        resize_bilinear(&src, self.resize.1, self.resize.0)
    }

    /// The resized and cropped RGB image the model sees, for people
    /// (overlays), before normalisation.
    pub fn visible_crop(&self, img: &RgbImage) -> RgbImage {
        let (top, left) = self.crop_offset();
        let cropped = self.resize_pil(img).crop(left, top, self.crop.1, self.crop.0);
        RgbImage::from_raw(cropped.width as u32, cropped.height as u32, cropped.data)
            .unwrap_or_else(|| RgbImage::new(self.crop.1 as u32, self.crop.0 as u32))
    }

    /// The normalised crop as a CHW buffer of `3 * h * w` values.
    pub fn image_chw(&self, img: &RgbImage) -> Result<Vec<f32>> {
        match self.backend {
            ResizeBackend::Pil => Ok(self.pil_chw(img)),
            ResizeBackend::Tensor => {
                let t = self.tensor_path(img)?;
                Vec::<f32>::try_from(t.f_flatten(0, -1)?).map_err(Error::from)
            }
        }
    }

    /// The normalised crop as a (3, h, w) float tensor on the CPU.
    pub fn image_tensor(&self, img: &RgbImage) -> Result<Tensor> {
        match self.backend {
            ResizeBackend::Pil => self.chw_to_tensor(&self.pil_chw(img)),
            ResizeBackend::Tensor => self.tensor_path(img),
        }
    }

    fn chw_to_tensor(&self, chw: &[f32]) -> Result<Tensor> {
        let (h, w) = self.crop;
        Ok(Tensor::f_from_slice(chw)?.f_view([3, h as i64, w as i64])?)
    }

    /// The PIL path's crop before normalisation: Pillow's resize, the
    /// centre crop, as `3 * h * w` bytes in channel-major (CHW) order. What
    /// a model exported with `dinomaly-export --input uint8` takes.
    pub fn crop_chw_u8(&self, img: &RgbImage) -> Vec<u8> {
        let resized = self.resize_pil(img);
        let (top, left) = self.crop_offset();
        let (h, w) = self.crop;
        let mut out = vec![0u8; 3 * h * w];
        for y in 0..h {
            let row = ((top + y) * resized.width + left) * 3;
            for x in 0..w {
                for c in 0..3 {
                    out[(c * h + y) * w + x] = resized.data[row + x * 3 + c];
                }
            }
        }
        out
    }

    fn pil_chw(&self, img: &RgbImage) -> Vec<f32> {
        let plane = self.crop.0 * self.crop.1;
        self.crop_chw_u8(img)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = i / plane;
                // ToTensor divides by 255 in f32, Normalize subtracts and
                // divides in f32: the same IEEE operations, same order.
                (f32::from(v) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            })
            .collect()
    }

    /// anomalib's pre-processor on one image, with libtorch on the CPU.
    fn tensor_path(&self, img: &RgbImage) -> Result<Tensor> {
        let (iw, ih) = (img.width() as i64, img.height() as i64);
        let (rh, rw) = (self.resize.0 as i64, self.resize.1 as i64);
        let (top, left) = self.crop_offset();
        let (ch, cw) = (self.crop.0 as i64, self.crop.1 as i64);
        let x = Tensor::f_from_slice(img.as_raw())?
            .f_view([ih, iw, 3])?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?
            // to_dtype(float32, scale=True): convert, then multiply by the
            // double 1/255 (applied as a float32 scalar), not divide.
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(1.0 / 255.0)?;
        // torchvision returns the input unchanged when the size already
        // matches; otherwise bilinear, align_corners = false, antialias on.
        let x =
            if (ih, iw) == (rh, rw) { x } else { x.f_internal_upsample_bilinear2d_aa([rh, rw], false, None, None)? };
        let x = x.f_narrow(2, top as i64, ch)?.f_narrow(3, left as i64, cw)?.f_squeeze_dim(0)?;
        let mean = Tensor::f_from_slice(&IMAGENET_MEAN)?.f_view([3, 1, 1])?;
        let std = Tensor::f_from_slice(&IMAGENET_STD)?.f_view([3, 1, 1])?;
        Ok(x.f_sub(&mean)?.f_div(&std)?.f_contiguous()?)
    }
}

/// torchvision's centre-crop offset `int(round((size - crop) / 2))`;
/// Python rounds halves to even (57 / 2 = 28.5 -> 28, 3 / 2 -> 2).
pub fn centre_offset(size: usize, crop: usize) -> usize {
    let d = size.saturating_sub(crop);
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

fn rgb_to_image8(img: &RgbImage) -> Image8 {
    Image8 { width: img.width() as usize, height: img.height() as usize, channels: 3, data: img.as_raw().clone() }
}

/// Decodes and pre-processes one image into a (3, h, w) tensor.
pub fn load_image(path: &Path, prep: &Preprocess) -> Result<Tensor> {
    prep.image_tensor(&load_rgb(path)?)
}

/// Decodes and pre-processes images on rayon threads; one result per path,
/// in order, so the caller can stack the good ones and report the bad ones
/// by index. The tensor backend decodes in parallel and then runs the
/// libtorch ops one image at a time (libtorch parallelises them itself).
pub fn load_batch<P: AsRef<Path> + Sync>(paths: &[P], prep: &Preprocess) -> Vec<Result<Tensor>> {
    match prep.backend {
        ResizeBackend::Pil => {
            let bufs: Vec<Result<Vec<f32>>> =
                paths.par_iter().map(|p| load_rgb(p.as_ref()).map(|img| prep.pil_chw(&img))).collect();
            bufs.into_iter().map(|b| b.and_then(|chw| prep.chw_to_tensor(&chw))).collect()
        }
        ResizeBackend::Tensor => {
            let imgs: Vec<Result<RgbImage>> = paths.par_iter().map(|p| load_rgb(p.as_ref())).collect();
            imgs.into_iter().map(|i| i.and_then(|img| prep.tensor_path(&img))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_offsets_follow_python_round() {
        assert_eq!(centre_offset(448, 392), 28);
        assert_eq!(centre_offset(449, 392), 28); // 28.5 -> 28
        assert_eq!(centre_offset(451, 392), 30); // 29.5 -> 30
        assert_eq!(centre_offset(15, 14), 0); // 0.5 -> 0
        assert_eq!(centre_offset(17, 14), 2); // 1.5 -> 2
        assert_eq!(centre_offset(392, 392), 0);
    }

    #[test]
    fn config_is_validated() {
        assert!(Preprocess::new((448, 448), (392, 392), ResizeBackend::Pil).is_ok());
        assert!(Preprocess::new((448, 600), (392, 518), ResizeBackend::Tensor).is_ok());
        let e = Preprocess::new((448, 448), (449, 392), ResizeBackend::Pil).unwrap_err();
        assert_eq!(e.to_string(), "crop 449x392 does not fit in the resized 448x448 image");
        let e = Preprocess::new((13, 448), (13, 392), ResizeBackend::Pil).unwrap_err();
        assert!(e.to_string().contains("between 14 and 2048"), "{e}");
        assert!(Preprocess::new((4096, 448), (392, 392), ResizeBackend::Pil).is_err());
    }

    #[test]
    fn normalised_values_of_a_flat_image() {
        let prep = Preprocess::new((20, 30), (14, 16), ResizeBackend::Pil).unwrap();
        let img = RgbImage::from_pixel(7, 9, image::Rgb([255, 0, 128]));
        let t = prep.image_chw(&img).unwrap();
        assert_eq!(t.len(), 3 * 14 * 16);
        assert_eq!(t[0], (1.0 - 0.485f32) / 0.229);
        assert_eq!(t[14 * 16], (0.0 - 0.456f32) / 0.224);
        assert_eq!(t[2 * 14 * 16 + 5], (128.0f32 / 255.0 - 0.406) / 0.225);
        let tt = Preprocess::new((20, 30), (14, 16), ResizeBackend::Tensor).unwrap();
        let u = tt.image_chw(&img).unwrap();
        let max = t.iter().zip(&u).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-5, "{max}");
        let shape = tt.image_tensor(&img).unwrap().size();
        assert_eq!(shape, vec![3, 14, 16]);
    }
}
