//! NumPy `.npy` arrays: reading float32, float64, uint8 and bool arrays in
//! C order, and writing float32 2-D arrays (format version 1.0).
//!
//! Anomaly maps travel between `dinomaly-score` and `dinomaly-metrics` as
//! float32 (H, W) `.npy` files, so they keep their exact values and open in
//! NumPy directly. Every error names the file.
//!
//! The format: the magic `\x93NUMPY`, a major and minor version byte, the
//! header length (u16 little-endian in version 1, u32 in versions 2 and 3),
//! then a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (256, 256), }`
//! padded with spaces and a newline so that the data starts on a 64-byte
//! boundary, then the raw data.

use std::io::Write;
use std::path::Path;

use crate::io::atomic::AtomicFile;
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The element data of an array, in C order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4` (or `>f4`, converted to native order).
    F32(Vec<f32>),
    /// `<f8` (or `>f8`).
    F64(Vec<f64>),
    /// `|u1`.
    U8(Vec<u8>),
    /// `|b1`.
    Bool(Vec<bool>),
}

impl NpyData {
    /// The NumPy type string of the data (`<f4`, `<f8`, `|u1`, `|b1`).
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::U8(_) => "|u1",
            NpyData::Bool(_) => "|b1",
        }
    }

    fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }
}

/// An array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// The shape as stored.
    pub shape: Vec<usize>,
    /// The elements in C order.
    pub data: NpyData,
}

/// A 2-D float32 array in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array2 {
    /// Number of rows (height).
    pub rows: usize,
    /// Number of columns (width).
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f32>,
}

/// Reads a `.npy` file of any supported type and shape.
pub fn read(path: impl AsRef<Path>) -> Result<Npy> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|reason| Error::format(path, reason))
}

/// Reads a float32 array that is 2-D once leading axes of length 1 are
/// dropped ((1, H, W) and (1, 1, H, W) are accepted as (H, W)).
pub fn read_f32_2d(path: impl AsRef<Path>) -> Result<Array2> {
    let path = path.as_ref();
    let npy = read(path)?;
    let descr = npy.data.descr();
    let shape = squeeze_leading(&npy.shape);
    let NpyData::F32(data) = npy.data else {
        return Err(Error::format(path, format!("expected a float32 ('<f4') array, found '{descr}'")));
    };
    match shape[..] {
        [rows, cols] => Ok(Array2 { rows, cols, data }),
        _ => Err(Error::format(path, format!("expected a 2-D (H, W) array, found shape {:?}", npy.shape))),
    }
}

/// Writes `data` as a float32 (rows, cols) array, atomically.
pub fn write_f32_2d(path: impl AsRef<Path>, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    if rows * cols != data.len() {
        return Err(Error::config(format!(
            "{}: {} values cannot form a {rows} x {cols} array",
            path.display(),
            data.len()
        )));
    }
    let bytes = to_bytes(&[rows, cols], &NpyData::F32(data.to_vec()));
    let mut file = AtomicFile::create(path)?;
    file.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    file.commit()
}

/// Serialises an array in format version 1.0, little-endian.
pub fn to_bytes(shape: &[usize], data: &NpyData) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}", data.descr());
    // Pad with spaces so that magic + version + length + header + '\n' is a
    // multiple of 64, as NumPy does (aligned data for memory mapping).
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match data {
        NpyData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::U8(v) => out.extend_from_slice(v),
        NpyData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
    }
    out
}

/// Parses the bytes of a `.npy` file; the error is the reason only (the
/// caller adds the path).
pub fn parse(bytes: &[u8]) -> std::result::Result<Npy, String> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".to_string());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".to_string());
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!(".npy format version {v} is not supported (1, 2 or 3)")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| "truncated .npy header".to_string())?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "the .npy header is not text".to_string())?;
    let descr = dict_value(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order")?;
    if fortran.trim() != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".to_string());
    }
    let shape = parse_shape(&dict_value(header, "shape")?)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let body = &bytes[end..];
    let (size, little) = match descr {
        "<f4" | "=f4" => (4, true),
        ">f4" => (4, false),
        "<f8" | "=f8" => (8, true),
        ">f8" => (8, false),
        "|u1" | "<u1" | ">u1" | "=u1" | "|b1" => (1, true),
        other => return Err(format!("element type '{other}' is not supported (float32, float64, uint8 or bool)")),
    };
    // The declared size is checked against the file before anything is
    // allocated; a shape whose byte count overflows would otherwise wrap
    // to a small number and pass.
    let needed = count.checked_mul(size).ok_or_else(|| format!("shape {shape:?} of '{descr}' is too large"))?;
    if body.len() < needed {
        return Err(format!("truncated data: shape {shape:?} of '{descr}' needs {needed} bytes, found {}", body.len()));
    }
    let body = &body[..needed];
    let data = match (descr, size) {
        (_, 4) => NpyData::F32(
            body.chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if little {
                        f32::from_le_bytes(b)
                    } else {
                        f32::from_be_bytes(b)
                    }
                })
                .collect(),
        ),
        (_, 8) => NpyData::F64(
            body.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    if little {
                        f64::from_le_bytes(b)
                    } else {
                        f64::from_be_bytes(b)
                    }
                })
                .collect(),
        ),
        ("|b1", _) => NpyData::Bool(body.iter().map(|&b| b != 0).collect()),
        _ => NpyData::U8(body.to_vec()),
    };
    debug_assert_eq!(data.len(), count);
    Ok(Npy { shape, data })
}

/// The text after `'key':` in the header dict, up to the next top-level
/// comma (a tuple's commas are inside parentheses).
fn dict_value(header: &str, key: &str) -> std::result::Result<String, String> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let pos = quoted
        .iter()
        .find_map(|q| header.find(q.as_str()).map(|p| p + q.len()))
        .ok_or_else(|| format!("the .npy header has no '{key}'"))?;
    let rest = header[pos..].trim_start();
    let rest = rest.strip_prefix(':').ok_or_else(|| format!("malformed .npy header near '{key}'"))?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim().to_string()),
            _ => {}
        }
    }
    Err(format!("malformed .npy header near '{key}'"))
}

fn parse_shape(text: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("malformed shape '{text}'"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("malformed shape '{text}'"))
}

fn squeeze_leading(shape: &[usize]) -> Vec<usize> {
    let mut s = shape;
    while s.len() > 2 && s[0] == 1 {
        s = &s[1..];
    }
    s.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip_and_alignment() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = to_bytes(&[2, 3], &NpyData::F32(data.clone()));
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let npy = parse(&bytes).unwrap();
        assert_eq!(npy.shape, vec![2, 3]);
        assert_eq!(npy.data, NpyData::F32(data));
    }

    #[test]
    fn file_round_trip_and_squeeze() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_f32_2d(&path, 2, 2, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let a = read_f32_2d(&path).unwrap();
        assert_eq!((a.rows, a.cols), (2, 2));
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0]);
        let path3 = dir.path().join("m3.npy");
        std::fs::write(&path3, to_bytes(&[1, 1, 2], &NpyData::F32(vec![5.0, 6.0]))).unwrap();
        let a = read_f32_2d(&path3).unwrap();
        assert_eq!((a.rows, a.cols), (1, 2));
    }

    #[test]
    fn other_types_and_big_endian() {
        let npy = parse(&to_bytes(&[3], &NpyData::Bool(vec![true, false, true]))).unwrap();
        assert_eq!(npy.data, NpyData::Bool(vec![true, false, true]));
        let npy = parse(&to_bytes(&[2, 1], &NpyData::U8(vec![0, 255]))).unwrap();
        assert_eq!(npy.data, NpyData::U8(vec![0, 255]));
        let npy = parse(&to_bytes(&[1], &NpyData::F64(vec![0.1]))).unwrap();
        assert_eq!(npy.data, NpyData::F64(vec![0.1]));
        // A big-endian float32 written by hand.
        let mut bytes = to_bytes(&[1], &NpyData::F32(vec![0.0]));
        let n = bytes.len();
        let pos = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        bytes[pos] = b'>';
        bytes[n - 4..].copy_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(parse(&bytes).unwrap().data, NpyData::F32(vec![1.5]));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.npy");
        std::fs::write(&bad, b"hello").unwrap();
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.npy") && e.contains("magic"), "{e}");
        let f64file = dir.path().join("d.npy");
        std::fs::write(&f64file, to_bytes(&[1, 1], &NpyData::F64(vec![1.0]))).unwrap();
        let e = read_f32_2d(&f64file).unwrap_err().to_string();
        assert!(e.contains("d.npy") && e.contains("float32") && e.contains("<f8"), "{e}");
        let three = dir.path().join("t.npy");
        std::fs::write(&three, to_bytes(&[2, 1, 1], &NpyData::F32(vec![1.0, 2.0]))).unwrap();
        let e = read_f32_2d(&three).unwrap_err().to_string();
        assert!(e.contains("2-D"), "{e}");
        let mut trunc = to_bytes(&[4, 4], &NpyData::F32(vec![0.0; 16]));
        trunc.truncate(trunc.len() - 3);
        let e = parse(&trunc).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let missing = dir.path().join("none.npy");
        assert!(read(&missing).unwrap_err().to_string().contains("none.npy"));
    }

    /// A header written by hand around `shape_text` and `descr`, followed
    /// by `data`.
    fn crafted(descr: &str, shape_text: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}\n");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn shapes_that_overflow_or_exceed_the_file_are_errors() {
        // Element counts that fit in usize but whose byte counts wrap to 0:
        // 2^62 * 4 and 2^61 * 8 are 2^64. Without the check they read as an
        // empty array of a huge shape, which callers index out of bounds.
        for (descr, shape) in [
            ("<f4", "(4611686018427387904,)"),
            ("<f8", "(2305843009213693952, 1)"),
            ("<f4", "(2147483648, 2147483648)"),
        ] {
            let e = parse(&crafted(descr, shape, &[])).unwrap_err();
            assert!(e.contains("too large"), "{descr} {shape}: {e}");
        }
        // A count that itself overflows.
        let e = parse(&crafted("|u1", "(4294967296, 4294967296, 2)", &[])).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        // A plausible declared size larger than the file: refused before
        // anything is allocated for it.
        let e = parse(&crafted("<f4", "(65536, 65536)", &[0; 64])).unwrap_err();
        assert_eq!(e, "truncated data: shape [65536, 65536] of '<f4' needs 17179869184 bytes, found 64");
        // A file that names one and holds it reads fine.
        let ok = parse(&crafted("<f4", "(1, 2)", &[0, 0, 128, 63, 0, 0, 0, 64])).unwrap();
        assert_eq!(ok.data, NpyData::F32(vec![1.0, 2.0]));
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.npy");
        std::fs::write(&bomb, crafted("<f4", "(4611686018427387904, 1)", &[])).unwrap();
        let e = read_f32_2d(&bomb).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: shape", bomb.display())) && e.contains("too large"), "{e}");
    }
}
