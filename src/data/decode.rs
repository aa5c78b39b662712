//! Image decoding as Pillow does it: `Image.open(p)` gives an image in one
//! of Pillow's modes, `.convert('RGB')` turns it into 8-bit RGB.
//!
//! The reference opens every input with `Image.open(p).convert('RGB')` and
//! every ground-truth mask with a bare `Image.open(p)` (no conversion), so
//! both the mode Pillow picks and its conversion rules matter:
//!
//! | file                          | Pillow mode | to RGB (measured, Pillow 13)       |
//! |-------------------------------|-------------|------------------------------------|
//! | 8-bit grey (with or w/o tRNS) | `L`         | grey replicated                    |
//! | 1-bit grey                    | `1`         | 0 / 255 replicated                 |
//! | 2/4-bit grey                  | `L`         | scaled to 0..255 (x85, x17)        |
//! | 16-bit grey                   | `I;16`      | **clipped**: min(v, 255), no scaling |
//! | 8-bit grey + alpha            | `LA`        | grey replicated, alpha dropped     |
//! | 16-bit grey + alpha           | `RGBA`      | high byte, alpha dropped           |
//! | palette (any depth, tRNS)     | `P`         | palette colour; index past the palette -> black |
//! | RGB 8 / 16-bit                | `RGB`       | 16-bit: high byte (v >> 8)         |
//! | RGBA 8 / 16-bit               | `RGBA`      | alpha dropped, no compositing      |
//! | JPEG grey / YCbCr / CMYK      | `L`/`RGB`/`CMYK` | CMYK read Adobe-inverted, then `nk - nk*C/255` |
//!
//! PNG files are decoded here from their raw samples (the `png` crate with
//! no transformation) so that every row of this table holds exactly; JPEG
//! files by libjpeg-turbo like Pillow ([`crate::data::jpeg`]); other
//! formats go through the `image` crate and are mapped to the same modes.
//!
//! Every path reads the size from the header first and refuses an image
//! of more than [`max_image_pixels`] pixels before allocating for it, as
//! Pillow refuses a decompression bomb: a 200-byte JPEG can declare
//! 65500 x 65500 pixels (12.9 GB as RGB), and an allocation that fails
//! aborts the process, temporaries and all, whatever `--on-error` says.

use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::OnceLock;

use image::{DynamicImage, RgbImage};

use crate::data::resample::Image8;
use crate::{Error, Result};

pub use crate::data::pil_image::{muldiv255, PilImage};

/// Pillow's `Image.MAX_IMAGE_PIXELS`: above it Pillow warns
/// (`DecompressionBombWarning`), above twice it it refuses
/// (`DecompressionBombError`).
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// The largest image decoded by default: where Pillow refuses, so that
/// whatever the reference evaluation opens, the tools open too.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 2 * PILLOW_MAX_IMAGE_PIXELS;

/// Environment variable that sets the limit (a whole number of pixels).
pub const MAX_PIXELS_ENV: &str = crate::env::MAX_IMAGE_PIXELS;

/// The pixel limit of this process: `DINOMALY_MAX_IMAGE_PIXELS`, else
/// [`DEFAULT_MAX_IMAGE_PIXELS`] (the tools refuse a malformed value at
/// start-up, see [`crate::env::check`]).
pub fn max_image_pixels() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| crate::env::count_or(MAX_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS))
}

/// Refuses a `width` x `height` image of more than `max_pixels` pixels.
pub(crate) fn check_size(width: u64, height: u64, max_pixels: u64) -> std::result::Result<(), String> {
    let pixels = width.saturating_mul(height);
    if pixels > max_pixels {
        return Err(format!(
            "{width}x{height} is {pixels} pixels, over the limit of {max_pixels} (Pillow refuses such a \
             decompression bomb too); set {MAX_PIXELS_ENV} to raise the limit"
        ));
    }
    Ok(())
}

/// A zeroed buffer of `len` bytes for a `width` x `height` image, or an
/// error instead of the abort of a failed allocation (memory short of an
/// image within the limit). Zeroed by the allocator, as `vec![0; len]` is,
/// so fresh pages are not written twice.
pub(crate) fn zeroed_buffer(len: usize, width: u64, height: u64) -> std::result::Result<Vec<u8>, String> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let cannot = || format!("cannot allocate {len} bytes for a {width}x{height} image");
    let layout = std::alloc::Layout::array::<u8>(len).map_err(|_| cannot())?;
    // SAFETY: the layout has a non-zero size. A non-null result is `len`
    // zeroed bytes from the global allocator with u8's alignment, which is
    // what Vec<u8> with capacity `len` owns and frees.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout);
        if ptr.is_null() {
            return Err(cannot());
        }
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

/// Decodes `path` like `PIL.Image.open(path).convert('RGB')`.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(open(path)?.into_rgb())
}

/// Decodes `path` like `PIL.Image.open(path)`: the image in its own mode.
pub fn open(path: &Path) -> Result<PilImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes).map_err(|reason| Error::Image { path: path.to_path_buf(), reason })
}

/// Decodes an in-memory file; the error is a one-line reason. Images over
/// [`max_image_pixels`] are refused.
pub fn decode(bytes: &[u8]) -> std::result::Result<PilImage, String> {
    decode_limited(bytes, max_image_pixels())
}

/// [`decode`] refusing images of more than `max_pixels` pixels, from
/// their header, before anything is allocated for their pixels.
pub fn decode_limited(bytes: &[u8], max_pixels: u64) -> std::result::Result<PilImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_string());
    }
    // Pillow identifies the format by content, never by the file name.
    let format = image::guess_format(bytes).map_err(|_| "unknown image format".to_string())?;
    match format {
        image::ImageFormat::Png => return decode_png(bytes, max_pixels),
        image::ImageFormat::Jpeg => return crate::data::jpeg::decode(bytes, max_pixels),
        _ => {}
    }
    let reader = || image::ImageReader::with_format(BufReader::new(Cursor::new(bytes)), format);
    let (w, h) = reader().into_dimensions().map_err(|e| one_line(&e.to_string()))?;
    check_size(u64::from(w), u64::from(h), max_pixels)?;
    // The image crate's own allocation limit (512 MiB by default) would
    // refuse images within ours: allow the largest decoded form (16-bit
    // RGBA, 8 bytes a pixel) and as much again for the decoder's work.
    let mut limits = image::Limits::default();
    let needed = u64::from(w) * u64::from(h) * 16;
    limits.max_alloc = Some(limits.max_alloc.map_or(needed, |default| default.max(needed)));
    let mut reader = reader();
    reader.limits(limits);
    let img = reader.decode().map_err(|e| one_line(&e.to_string()))?;
    from_dynamic(img)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Maps a non-PNG decode onto Pillow's modes.
fn from_dynamic(img: DynamicImage) -> std::result::Result<PilImage, String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let img8 = |c: usize, data: Vec<u8>| Image8::new(w, h, c, data).ok_or_else(|| "corrupt pixel buffer".to_string());
    let hi = |v: &[u16]| v.iter().map(|&x| (x >> 8) as u8).collect::<Vec<u8>>();
    Ok(match img {
        DynamicImage::ImageLuma8(b) => PilImage::L(img8(1, b.into_raw())?),
        DynamicImage::ImageLumaA8(b) => PilImage::La(img8(2, b.into_raw())?),
        DynamicImage::ImageRgb8(b) => PilImage::Rgb(img8(3, b.into_raw())?),
        DynamicImage::ImageRgba8(b) => PilImage::Rgba(img8(4, b.into_raw())?),
        DynamicImage::ImageLuma16(b) => PilImage::I16 { width: w, height: h, data: b.into_raw() },
        DynamicImage::ImageLumaA16(b) => PilImage::La(img8(2, hi(b.as_raw()))?),
        DynamicImage::ImageRgb16(b) => PilImage::Rgb(img8(3, hi(b.as_raw()))?),
        DynamicImage::ImageRgba16(b) => PilImage::Rgba(img8(4, hi(b.as_raw()))?),
        other => return Err(format!("unsupported pixel format {:?}", other.color())),
    })
}

/// Decodes a PNG from its raw samples into Pillow's mode for it.
fn decode_png(bytes: &[u8], max_pixels: u64) -> std::result::Result<PilImage, String> {
    use png::{BitDepth, ColorType, Transformations};
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| one_line(&e.to_string()))?;
    let (width, height) = (u64::from(reader.info().width), u64::from(reader.info().height));
    check_size(width, height, max_pixels)?;
    let size = reader.output_buffer_size().ok_or_else(|| "image too large".to_string())?;
    let mut buf = zeroed_buffer(size, width, height)?;
    let out = reader.next_frame(&mut buf).map_err(|e| one_line(&e.to_string()))?;
    let info = reader.info();
    let (w, h) = (out.width as usize, out.height as usize);
    let depth = out.bit_depth as u8;
    let line = out.line_size;
    let rows = || buf.chunks_exact(line).take(h);
    let img8 = |c: usize, data: Vec<u8>| Image8::new(w, h, c, data).ok_or_else(|| "corrupt pixel buffer".to_string());
    // 16-bit samples are big-endian; Pillow keeps the high byte of colour
    // samples (raw modes RGB;16B, RGBA;16B, LA;16B).
    let high_bytes = |samples_per_px: usize| -> Vec<u8> {
        rows().flat_map(|r| r[..w * samples_per_px * 2].chunks_exact(2).map(|s| s[0])).collect()
    };
    let packed = |scale: bool| -> Vec<u8> {
        // Samples of 1, 2 or 4 bits, most significant first.
        let max = (1u16 << depth) - 1;
        rows()
            .flat_map(|r| {
                (0..w).map(move |x| {
                    let bit = x * depth as usize;
                    let v = (r[bit / 8] >> (8 - depth as usize - bit % 8)) & max as u8;
                    if scale {
                        (u16::from(v) * 255 / max) as u8
                    } else {
                        v
                    }
                })
            })
            .collect()
    };
    let plain =
        |samples_per_px: usize| -> Vec<u8> { rows().flat_map(|r| r[..w * samples_per_px].iter().copied()).collect() };
    Ok(match (out.color_type, out.bit_depth) {
        (ColorType::Grayscale, BitDepth::One) => PilImage::Bilevel(img8(1, packed(true))?),
        (ColorType::Grayscale, BitDepth::Two | BitDepth::Four) => PilImage::L(img8(1, packed(true))?),
        (ColorType::Grayscale, BitDepth::Eight) => PilImage::L(img8(1, plain(1))?),
        (ColorType::Grayscale, BitDepth::Sixteen) => PilImage::I16 {
            width: w,
            height: h,
            data: rows().flat_map(|r| r[..w * 2].chunks_exact(2).map(|s| u16::from_be_bytes([s[0], s[1]]))).collect(),
        },
        (ColorType::Indexed, _) => {
            let indices = if depth == 8 { plain(1) } else { packed(false) };
            let palette = info.palette.as_ref().map(|p| p.to_vec()).unwrap_or_default();
            PilImage::P { indices: img8(1, indices)?, palette }
        }
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => PilImage::La(img8(2, plain(2))?),
        (ColorType::GrayscaleAlpha, _) => PilImage::La(img8(2, high_bytes(2))?),
        (ColorType::Rgb, BitDepth::Eight) => PilImage::Rgb(img8(3, plain(3))?),
        (ColorType::Rgb, _) => PilImage::Rgb(img8(3, high_bytes(3))?),
        (ColorType::Rgba, BitDepth::Eight) => PilImage::Rgba(img8(4, plain(4))?),
        (ColorType::Rgba, _) => PilImage::Rgba(img8(4, high_bytes(4))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_limit_is_the_code_s() {
        let meaning = crate::env::vars_for("dinomaly-metrics")
            .into_iter()
            .find(|v| v.name == MAX_PIXELS_ENV)
            .map(|v| v.meaning)
            .expect("documented");
        assert!(meaning.contains(&DEFAULT_MAX_IMAGE_PIXELS.to_string()), "{meaning}");
    }

    #[test]
    fn empty_and_unknown_bytes_are_errors() {
        assert_eq!(decode(b"").unwrap_err(), "the file is empty");
        assert_eq!(decode(b"hello, not an image").unwrap_err(), "unknown image format");
    }

    #[test]
    fn png_round_trip_through_image_crate_encoder() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 70, 9]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        let got = decode(&bytes).unwrap();
        assert_eq!(got.mode(), "RGB");
        assert_eq!(got.into_rgb(), img);
        // A truncated file is an error, not a panic.
        let err = decode(&bytes[..bytes.len() - 20]).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn every_format_is_refused_over_the_pixel_limit_and_read_at_it() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8, y as u8, 7])));
        for format in
            [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Bmp, image::ImageFormat::Tiff]
        {
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            assert_eq!(decode_limited(&bytes, 128).unwrap().size(), (16, 8), "{format:?}");
            let err = decode_limited(&bytes, 127).unwrap_err();
            assert_eq!(
                err,
                "16x8 is 128 pixels, over the limit of 127 (Pillow refuses such a decompression bomb too); \
                 set DINOMALY_MAX_IMAGE_PIXELS to raise the limit",
                "{format:?}"
            );
        }
    }

    #[test]
    fn a_buffer_that_cannot_be_allocated_is_an_error_not_an_abort() {
        assert_eq!(zeroed_buffer(6, 2, 1).unwrap(), vec![0; 6]);
        assert!(zeroed_buffer(0, 0, 0).unwrap().is_empty());
        let err = zeroed_buffer(1 << 62, 1 << 31, 1 << 31).unwrap_err();
        assert_eq!(err, format!("cannot allocate {} bytes for a 2147483648x2147483648 image", 1u64 << 62));
    }

    #[test]
    fn the_default_limit_is_where_pillow_refuses() {
        assert_eq!(DEFAULT_MAX_IMAGE_PIXELS, 178_956_970);
        assert!(check_size(13_377, 13_377, DEFAULT_MAX_IMAGE_PIXELS).is_ok());
        assert!(check_size(13_378, 13_377, DEFAULT_MAX_IMAGE_PIXELS).is_err());
        assert!(
            check_size(DEFAULT_MAX_IMAGE_PIXELS, 1, DEFAULT_MAX_IMAGE_PIXELS).is_ok(),
            "Pillow refuses above, not at"
        );
        assert!(check_size(65_500, 65_500, DEFAULT_MAX_IMAGE_PIXELS).is_err());
        assert!(check_size(u64::MAX, 2, DEFAULT_MAX_IMAGE_PIXELS).is_err(), "no overflow");
    }

    #[test]
    fn sixteen_bit_grey_clips_like_pillow() {
        let img = PilImage::I16 { width: 4, height: 1, data: vec![0, 254, 256, 65535] };
        let rgb = img.into_rgb();
        assert_eq!(rgb.as_raw(), &[0, 0, 0, 254, 254, 254, 255, 255, 255, 255, 255, 255]);
    }
}
