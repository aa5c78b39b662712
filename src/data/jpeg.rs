//! JPEG decoding with libjpeg-turbo, the decoder inside Pillow.
//!
//! Pure-Rust decoders use other IDCTs and chroma upsampling and differ from
//! Pillow by up to 4 grey levels on 4:2:0 photographs (VisA and Real-IAD are
//! JPEG datasets). Pillow decodes with libjpeg-turbo's defaults: accurate
//! integer IDCT (ISLOW), fancy (triangular) upsampling, libjpeg's colour
//! conversion. The TurboJPEG API of the vendored MozJPEG build (a
//! libjpeg-turbo fork with the same decoder, `mozjpeg-sys`) with no flags
//! does exactly that, so the pixels are identical (tested against Pillow 13
//! on 4:2:0, 4:4:4, grey and CMYK files).
//!
//! The TurboJPEG API reports errors by return code (it catches libjpeg's
//! `longjmp` inside C), so no unwinding crosses the FFI boundary.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_ulong, c_void};

use crate::data::pil_image::PilImage;
use crate::data::resample::Image8;

// Links the static MozJPEG library that defines the symbols below.
use mozjpeg_sys as _;

extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg_buf: *const u8,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        jpeg_subsamp: *mut c_int,
        jpeg_colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg_buf: *const u8,
        jpeg_size: c_ulong,
        dst_buf: *mut u8,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjGetErrorCode(handle: *mut c_void) -> c_int;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

// turbojpeg.h enumerations.
const TJPF_RGB: c_int = 0;
const TJPF_GRAY: c_int = 6;
const TJPF_CMYK: c_int = 11;
const TJCS_GRAY: c_int = 2;
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;
const TJERR_FATAL: c_int = 1;

/// A TurboJPEG decompressor, destroyed on drop.
struct Handle(*mut c_void);

impl Handle {
    fn new() -> Result<Self, String> {
        // SAFETY: no arguments; returns null on failure, checked here.
        let h = unsafe { tjInitDecompress() };
        if h.is_null() {
            Err("cannot start the JPEG decoder".to_string())
        } else {
            Ok(Handle(h))
        }
    }

    /// The last error of this handle, and whether it was fatal.
    fn error(&self) -> (String, bool) {
        // SAFETY: the handle is valid; the string is owned by it and copied
        // before any other call on the handle.
        let msg = unsafe { CStr::from_ptr(tjGetErrorStr2(self.0)) }.to_string_lossy().into_owned();
        let fatal = unsafe { tjGetErrorCode(self.0) } == TJERR_FATAL;
        (msg, fatal)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by tjInitDecompress, destroyed once.
        unsafe { tjDestroy(self.0) };
    }
}

/// Decodes a JPEG file into Pillow's mode for it: `L`, `RGB`, or `CMYK`
/// (Pillow reads CMYK with Adobe's inverted polarity). An image of more
/// than `max_pixels` pixels is refused from its header.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, String> {
    let handle = Handle::new()?;
    let size = c_ulong::try_from(bytes.len()).map_err(|_| "file too large".to_string())?;
    let (mut w, mut h, mut subsamp, mut colorspace) = (0, 0, 0, 0);
    // SAFETY: `bytes` outlives the call; the out-pointers are valid ints.
    let rc =
        unsafe { tjDecompressHeader3(handle.0, bytes.as_ptr(), size, &mut w, &mut h, &mut subsamp, &mut colorspace) };
    if rc != 0 {
        return Err(handle.error().0);
    }
    // The header says the size (at most 65535 x 65535) before any pixel
    // is decoded or allocated.
    let (width, height) = (usize::try_from(w).unwrap_or(0), usize::try_from(h).unwrap_or(0));
    crate::data::decode::check_size(width as u64, height as u64, max_pixels)?;
    let (format, channels) = match colorspace {
        TJCS_GRAY => (TJPF_GRAY, 1),
        TJCS_CMYK | TJCS_YCCK => (TJPF_CMYK, 4),
        _ => (TJPF_RGB, 3),
    };
    let mut buf = crate::data::decode::zeroed_buffer(width * height * channels, width as u64, height as u64)?;
    let pitch = (width * channels) as c_int;
    // SAFETY: `buf` holds height rows of `pitch` bytes, the size TurboJPEG
    // writes for an unscaled decode (width and height from the header).
    let rc = unsafe { tjDecompress2(handle.0, bytes.as_ptr(), size, buf.as_mut_ptr(), w, pitch, h, format, 0) };
    if rc != 0 {
        let (msg, fatal) = handle.error();
        // Warnings leave a complete image (Pillow ignores them too), except
        // a premature end of data, which Pillow reports as a truncated file.
        if fatal || msg.contains("Premature end") {
            return Err(msg);
        }
    }
    let img = Image8::new(width, height, channels, buf).ok_or_else(|| "corrupt pixel buffer".to_string())?;
    Ok(match channels {
        1 => PilImage::L(img),
        3 => PilImage::Rgb(img),
        _ => {
            // Pillow's raw mode "CMYK;I": stored values are inverted.
            let mut img = img;
            img.data.iter_mut().for_each(|v| *v = 255 - *v);
            PilImage::Cmyk(img)
        }
    })
}
