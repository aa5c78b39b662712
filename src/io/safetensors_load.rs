//! Reading safetensors files (Hugging Face `model.safetensors`, timm and
//! converted checkpoints) as named tensors, in the order their data lies in
//! the file, with errors that name the file and the tensor.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// How floating-point tensors come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    /// As stored (F16, BF16, F32 or F64).
    AsStored,
    /// Converted to F32 (integer and bool tensors are left as they are).
    F32,
}

/// `path` mapped read-only, so that a header can be read without reading
/// the data behind it (an empty file maps to an empty slice, which no
/// header parses).
pub fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the file is opened read-only; the tools never modify a
    // weights file, checkpoint or store in place (outputs are written to a
    // temporary name and renamed), so no writer changes it under the map.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Why a safetensors header could not be read, for an error about a `what`
/// (e.g. "feature store"): a file cut short (or grown) is reported as
/// truncated rather than as some other kind of file.
pub fn header_problem(what: &str, err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::MetadataIncompleteBuffer | E::InvalidHeaderLength => {
            format!("truncated or corrupt {what}: the file's length does not match its safetensors header")
        }
        other => format!("not a {what} (safetensors header: {other:?})"),
    }
}

fn kind_of(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file, on the CPU.
pub fn read_safetensors(path: &Path, floats: FloatKind) -> Result<Vec<(String, Tensor)>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::format(path, "is empty, not a safetensors file"));
    }
    // SAFETY: read-only map; see io::pth for the same reasoning.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::format(path, format!("is not a valid safetensors file ({e})")))?;
    let base = map.as_ptr() as usize;
    let mut views = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize - base);
    let mut out = Vec::with_capacity(views.len());
    for (name, view) in views {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            Error::format(path, format!("tensor '{name}' has dtype {:?}, which is not supported", view.dtype()))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let data = view.data();
        // deserialize checked that the byte range matches shape x dtype, which
        // from_data_size relies on (it copies numel x element-size bytes).
        let numel: usize = view.shape().iter().product();
        if data.len() != numel * view.dtype().size() {
            return Err(Error::format(path, format!("tensor '{name}' has {} bytes for shape {shape:?}", data.len())));
        }
        if kind == Kind::Bool && data.iter().any(|&b| b > 1) {
            return Err(Error::format(path, format!("bool tensor '{name}' holds values other than 0 and 1")));
        }
        let mut t = Tensor::f_from_data_size(data, &shape, kind)?;
        if floats == FloatKind::F32 && matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Double) {
            t = t.f_to_kind(Kind::Float)?;
        }
        out.push((name, t));
    }
    Ok(out)
}
