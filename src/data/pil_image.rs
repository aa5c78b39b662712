//! An image in one of Pillow's modes (what `Image.open` gives) and
//! `.convert('RGB')`: the value both decoders produce (`crate::data::decode`
//! for PNG and the `image` crate's formats, `crate::data::jpeg` for JPEG
//! through libjpeg-turbo), in a module of its own so that neither decoder
//! imports the other's.

use image::RgbImage;

use crate::data::resample::Image8;

/// An image in one of Pillow's modes, as `Image.open` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PilImage {
    /// `L`: 8-bit grey.
    L(Image8),
    /// `1`: bilevel, stored as 0 / 255 like Pillow does in memory.
    Bilevel(Image8),
    /// `P`: palette indices and an RGB palette (3 bytes per entry).
    P { indices: Image8, palette: Vec<u8> },
    /// `LA`: grey and alpha.
    La(Image8),
    /// `RGB`.
    Rgb(Image8),
    /// `RGBA`.
    Rgba(Image8),
    /// `CMYK` (true ink values, after Pillow's Adobe inversion).
    Cmyk(Image8),
    /// `I;16`: 16-bit grey, kept at full precision.
    I16 { width: usize, height: usize, data: Vec<u16> },
}

impl PilImage {
    /// (width, height).
    pub fn size(&self) -> (usize, usize) {
        match self {
            PilImage::L(i)
            | PilImage::Bilevel(i)
            | PilImage::La(i)
            | PilImage::Rgb(i)
            | PilImage::Rgba(i)
            | PilImage::Cmyk(i) => (i.width, i.height),
            PilImage::P { indices, .. } => (indices.width, indices.height),
            PilImage::I16 { width, height, .. } => (*width, *height),
        }
    }

    /// Pillow's name for the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            PilImage::L(_) => "L",
            PilImage::Bilevel(_) => "1",
            PilImage::P { .. } => "P",
            PilImage::La(_) => "LA",
            PilImage::Rgb(_) => "RGB",
            PilImage::Rgba(_) => "RGBA",
            PilImage::Cmyk(_) => "CMYK",
            PilImage::I16 { .. } => "I;16",
        }
    }

    /// `.convert('RGB')`.
    pub fn into_rgb(self) -> RgbImage {
        let (w, h) = self.size();
        let rgb: Vec<u8> = match self {
            PilImage::Rgb(i) => i.data,
            PilImage::L(i) | PilImage::Bilevel(i) => i.data.iter().flat_map(|&v| [v, v, v]).collect(),
            PilImage::La(i) => i.data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            PilImage::Rgba(i) => i.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            PilImage::P { indices, palette } => indices
                .data
                .iter()
                .flat_map(|&k| {
                    let k = usize::from(k) * 3;
                    // Pillow fills the palette past its last entry with black.
                    palette.get(k..k + 3).map_or([0, 0, 0], |c| [c[0], c[1], c[2]])
                })
                .collect(),
            // Pillow's cmyk2rgb: nk - nk * C / 255 with nk = 255 - K,
            // rounded by MULDIV255.
            PilImage::Cmyk(i) => i
                .data
                .chunks_exact(4)
                .flat_map(|p| {
                    let nk = 255 - u32::from(p[3]);
                    let f = |c: u8| (nk - muldiv255(u32::from(c), nk)) as u8;
                    [f(p[0]), f(p[1]), f(p[2])]
                })
                .collect(),
            // Pillow's I;16 -> RGB conversion clips instead of scaling.
            PilImage::I16 { data, .. } => data
                .iter()
                .flat_map(|&v| {
                    let g = v.min(255) as u8;
                    [g, g, g]
                })
                .collect(),
        };
        // The length matches by construction of every variant.
        RgbImage::from_raw(w as u32, h as u32, rgb).unwrap_or_else(|| RgbImage::new(w as u32, h as u32))
    }
}

/// Pillow's `MULDIV255`: `a * b / 255` rounded, exactly, for bytes.
pub fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}
