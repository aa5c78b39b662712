//! Ground-truth masks as the official evaluation sees them.
//!
//! `dataset.py` opens a mask with a bare `Image.open` (no `convert`), then
//! `Resize((448, 448))` (Pillow BILINEAR on the 0/255 mask), `CenterCrop`,
//! `ToTensor` (bytes / 255); `utils.evaluation_batch` then applies
//! `F.interpolate(gt, 256, mode='nearest')` (legacy nearest: source index
//! `floor(dst * (in / out))` in f32), `gt.bool()` and, for masks with more
//! than one channel, the maximum over channels. The values returned here
//! stop before the threshold so that callers can apply either `> 0` (the
//! official rule, ~1 px larger masks) or `> 0.5`.
//!
//! Pillow modes are kept (see [`crate::data::decode`]): `L` and `RGB`
//! resize bilinearly; `P` (palette) and `1` (bilevel) resize with NEAREST
//! whatever filter is asked for, and `ToTensor` gives palette *indices* /
//! 255 and bilevel 0 / 1; `LA` and `RGBA` resize premultiplied by alpha
//! and keep the alpha as a channel, so a fully opaque alpha makes the whole
//! mask positive, as it does in the reference. 16-bit grey masks (`I;16`)
//! make the reference fail (`ToTensor` gives int16, which torch's nearest
//! interpolation rejects), so they are an error here too.

use std::path::Path;

use crate::data::decode::open;
use crate::data::pil_image::{muldiv255, PilImage};
use crate::data::preprocess::Preprocess;
use crate::data::record::Sample;
use crate::data::resample::{resize_bilinear, resize_nearest, Image8};
use crate::{Error, Result};

/// Loads a ground-truth mask at `map_size` = (height, width): one value in
/// [0, 1] per pixel, row-major, the maximum over the mask's channels.
pub fn load_mask(path: &Path, prep: &Preprocess, map_size: (usize, usize)) -> Result<Vec<f32>> {
    mask_values(open(path)?, prep, map_size).map_err(|reason| Error::Image { path: path.to_path_buf(), reason })
}

/// Like [`load_mask`], after setting every non-zero sample to 255 as the
/// official VisA preparation (`prepare_visa.py`) does before saving the
/// reorganised masks. Use it for masks read from the raw VisA download.
pub fn load_mask_binarized(path: &Path, prep: &Preprocess, map_size: (usize, usize)) -> Result<Vec<f32>> {
    mask_values(binarize_nonzero(open(path)?), prep, map_size)
        .map_err(|reason| Error::Image { path: path.to_path_buf(), reason })
}

/// The mask of a sample record: `None` when it has none (normal images:
/// an all-zero mask), binarised first when the record carries
/// `"binarize_mask": true` (raw VisA masks, see [`crate::data::dataset`]).
pub fn load_sample_mask(sample: &Sample, prep: &Preprocess, map_size: (usize, usize)) -> Result<Option<Vec<f32>>> {
    let Some(path) = &sample.mask else {
        return Ok(None);
    };
    let binarize = sample.extra.get("binarize_mask").and_then(|v| v.as_bool()).unwrap_or(false);
    if binarize {
        load_mask_binarized(path, prep, map_size).map(Some)
    } else {
        load_mask(path, prep, map_size).map(Some)
    }
}

/// `np.array(mask); a[a != 0] = 255; Image.fromarray(a)`: palette masks
/// become grey (`fromarray` of the index array), other modes keep theirs.
pub fn binarize_nonzero(img: PilImage) -> PilImage {
    let bin = |mut i: Image8| {
        i.data.iter_mut().filter(|v| **v != 0).for_each(|v| *v = 255);
        i
    };
    match img {
        PilImage::L(i) => PilImage::L(bin(i)),
        PilImage::P { indices, .. } => PilImage::L(bin(indices)),
        PilImage::Bilevel(i) => PilImage::Bilevel(i),
        PilImage::La(i) => PilImage::La(bin(i)),
        PilImage::Rgb(i) => PilImage::Rgb(bin(i)),
        PilImage::Rgba(i) => PilImage::Rgba(bin(i)),
        PilImage::Cmyk(i) => PilImage::Cmyk(bin(i)),
        PilImage::I16 { width, height, data } => {
            PilImage::I16 { width, height, data: data.into_iter().map(|v| if v != 0 { 255 } else { 0 }).collect() }
        }
    }
}

/// The official gt transform and evaluation resize on a decoded mask.
pub fn mask_values(
    img: PilImage,
    prep: &Preprocess,
    map_size: (usize, usize),
) -> std::result::Result<Vec<f32>, String> {
    let (rh, rw) = prep.resize();
    let resized = match img {
        PilImage::L(i) | PilImage::Rgb(i) | PilImage::Cmyk(i) => resize_bilinear(&i, rw, rh),
        PilImage::Bilevel(i) => resize_nearest(&i, rw, rh),
        PilImage::P { indices, .. } => resize_nearest(&indices, rw, rh),
        PilImage::La(i) | PilImage::Rgba(i) => unpremultiply(resize_bilinear(&premultiply(i), rw, rh)),
        PilImage::I16 { .. } => {
            return Err("16-bit grey masks are not supported (the reference evaluation fails on them: \
                        torch nearest interpolation rejects int16); save the mask as 8-bit"
                .to_string())
        }
    };
    let (top, left) = prep.crop_offset();
    let (ch, cw) = prep.crop();
    let cropped = resized.crop(left, top, cw, ch);
    Ok(nearest_channel_max(&cropped, map_size))
}

/// Pillow's RGBA -> RGBa / LA -> La: colour times alpha / 255, rounded
/// (`MULDIV255`); alpha is the last channel.
fn premultiply(mut img: Image8) -> Image8 {
    let c = img.channels;
    for px in img.data.chunks_exact_mut(c) {
        let a = u32::from(px[c - 1]);
        for v in &mut px[..c - 1] {
            *v = muldiv255(u32::from(*v), a) as u8;
        }
    }
    img
}

/// Pillow's RGBa -> RGBA / La -> LA: colour * 255 / alpha, truncated and
/// clipped, unchanged where alpha is 0 or 255.
fn unpremultiply(mut img: Image8) -> Image8 {
    let c = img.channels;
    for px in img.data.chunks_exact_mut(c) {
        let a = u32::from(px[c - 1]);
        if a == 0 || a == 255 {
            continue;
        }
        for v in &mut px[..c - 1] {
            *v = (255 * u32::from(*v) / a).min(255) as u8;
        }
    }
    img
}

/// `ToTensor` (/ 255), torch's legacy nearest to `map_size`, then the
/// maximum over channels.
fn nearest_channel_max(img: &Image8, (mh, mw): (usize, usize)) -> Vec<f32> {
    let ys = torch_nearest_indices(img.height, mh);
    let xs = torch_nearest_indices(img.width, mw);
    let c = img.channels;
    let mut out = Vec::with_capacity(mh * mw);
    for &y in &ys {
        for &x in &xs {
            let px = &img.data[(y * img.width + x) * c..(y * img.width + x + 1) * c];
            let max = px.iter().copied().max().unwrap_or(0);
            // max commutes with the monotone /255, so take it on bytes.
            out.push(f32::from(max) / 255.0);
        }
    }
    out
}

/// Source indices of `F.interpolate(mode='nearest')` without a scale
/// factor: identity for equal sizes, `dst >> 1` for exact doubling,
/// otherwise `min(floor(dst * (in / out as f32)), in - 1)` in f32.
pub fn torch_nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    if in_size == out_size {
        return (0..out_size).collect();
    }
    if out_size == 2 * in_size {
        return (0..out_size).map(|d| d >> 1).collect();
    }
    let scale = in_size as f32 / out_size as f32;
    (0..out_size).map(|d| ((d as f32 * scale).floor() as usize).min(in_size.saturating_sub(1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::ResizeBackend;

    #[test]
    fn nearest_indices_match_torch_legacy_rule() {
        assert_eq!(torch_nearest_indices(4, 8), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(torch_nearest_indices(392, 256)[..4], [0, 1, 3, 4]);
        assert_eq!(torch_nearest_indices(5, 3), vec![0, 1, 3]);
        assert_eq!(torch_nearest_indices(3, 3), vec![0, 1, 2]);
    }

    #[test]
    fn premultiply_round_trip_is_pillows() {
        let img = Image8::new(3, 1, 2, vec![200, 0, 200, 128, 200, 255]).unwrap();
        let p = premultiply(img);
        assert_eq!(p.data, vec![0, 0, 100, 128, 200, 255]);
        let u = unpremultiply(p);
        assert_eq!(u.data, vec![0, 0, 199, 128, 200, 255]);
    }

    #[test]
    fn sixteen_bit_masks_are_refused() {
        let prep = Preprocess::new((20, 20), (16, 16), ResizeBackend::Pil).unwrap();
        let m = PilImage::I16 { width: 4, height: 4, data: vec![0; 16] };
        assert!(mask_values(m, &prep, (8, 8)).unwrap_err().contains("16-bit"));
    }

    #[test]
    fn binarize_turns_palette_into_grey() {
        let p = PilImage::P { indices: Image8::new(3, 1, 1, vec![0, 1, 2]).unwrap(), palette: vec![0; 9] };
        assert_eq!(binarize_nonzero(p), PilImage::L(Image8::new(3, 1, 1, vec![0, 255, 255]).unwrap()));
    }
}
