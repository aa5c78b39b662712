//! Reading PyTorch `torch.save` checkpoints (`.pth`, `.pt`, `.bin`, `.ckpt`)
//! as named tensors, without executing anything.
//!
//! Since PyTorch 1.6 such a file is a zip archive with one top folder (any
//! name) holding `data.pkl` (the pickled object tree), `data/<key>` (one raw
//! little-endian buffer per storage), and `byteorder`. The pickle is read by
//! [`crate::io::pickle`], which knows only the globals a state dict needs and
//! never calls anything. Tensors are strided views of storages (offset, size,
//! stride), so transposed or sliced tensors come back with the values they
//! had in Python, each as its own contiguous tensor.
//!
//! A checkpoint may be the state dict itself (Meta's DINOv2 files, the
//! official Dinomaly checkpoints) or hold it under a key (`{'model': ...}`,
//! Lightning's `{'state_dict': ...}`). Non-tensor entries of the state dict
//! (numbers, strings, lists) are skipped and listed in [`StateDict::ignored`].
//! An object of a class outside the allow-list inside the state dict is an
//! error naming the class; elsewhere in the file (hyper-parameters, say) it
//! is never looked at.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;
use tch::{Device, Kind, Tensor};
use zip::{CompressionMethod, ZipArchive};

use crate::io::pickle::{self, Dict, PickleError, StorageDtype, StorageRef, TensorRef, Value};
use crate::io::sniff::{self, FileKind};
use crate::{Error, Result};

/// Keys under which training scripts commonly nest the state dict, tried in
/// this order when no key is given and the top level holds no tensors.
pub const NESTED_KEYS: [&str; 3] = ["state_dict", "model", "module"];

/// How deep the object tree is searched for refused globals (pickles may be
/// cyclic, and real state dicts are shallow).
const SEARCH_DEPTH: usize = 32;

/// The tensors of one state dict, in file order.
pub struct StateDict {
    /// `(name, tensor)` pairs, CPU, in the dtype they were saved in.
    pub tensors: Vec<(String, Tensor)>,
    /// Entries that were not tensors, as `name (type)`.
    pub ignored: Vec<String>,
}

/// Reads the state dict of a `torch.save` checkpoint.
///
/// `key` picks a nested dict, with `/` between levels (`"model"`,
/// `"state_dict"`); without it the top level is used if it holds tensors,
/// else the first of [`NESTED_KEYS`] that holds a dict.
pub fn read_state_dict(path: &Path, key: Option<&str>) -> Result<StateDict> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::format(path, "is empty, not a pytorch checkpoint"));
    }
    // SAFETY: the map is only read. If another process truncates the file
    // while we read it, reads may fault, as with any mmap-based reader
    // (safetensors does the same); weight files are not rewritten in place.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    match sniff::classify(&map[..map.len().min(512)], len) {
        FileKind::TorchZip => {}
        FileKind::TorchLegacy => return Err(Error::format(path, sniff::legacy_message())),
        FileKind::Pickle => {
            return Err(Error::format(path, "is a plain pickle, not a torch.save checkpoint (no zip container)"))
        }
        FileKind::Safetensors => return Err(Error::format(path, "is a safetensors file, not a torch.save checkpoint")),
        FileKind::Unknown => return Err(Error::format(path, "is not a pytorch checkpoint (no zip or pickle header)")),
    }
    let mut reader = Archive::open(path, &map)?;
    let pkl = reader.entry_bytes("data.pkl", None)?;
    let root =
        pickle::unpickle(&pkl, &mut persistent_storage).map_err(|e| Error::format(path, format!("data.pkl: {e}")))?;
    let dict = select(path, &root, key)?;
    let dict = dict.borrow();
    materialize(path, &dict, &mut reader)
}

/// Resolves torch's persistent ids `('storage', <Type>Storage, key,
/// location, numel)` to storage references; the bytes are read later.
fn persistent_storage(pid: Value) -> std::result::Result<Value, PickleError> {
    let bad = |why: &str| Err(PickleError(format!("persistent id {why}")));
    let Value::Tuple(items) = pid else {
        return bad("is not a tuple");
    };
    if items.len() != 5 || !matches!(&items[0], Value::Str(s) if &**s == "storage") {
        return bad("is not a ('storage', type, key, location, numel) tuple");
    }
    let dtype = match &items[1] {
        Value::Global(pickle::Global::Storage(d)) => *d,
        Value::Refused(name) => return Err(PickleError(format!("storage type '{name}' is not supported"))),
        _ => return bad("has no storage type"),
    };
    let key = match &items[2] {
        Value::Str(s) => s.to_string(),
        _ => return bad("has no storage key"),
    };
    let numel = match &items[4] {
        Value::Int(n) if *n >= 0 => *n,
        _ => return bad("has no element count"),
    };
    Ok(Value::Storage(Rc::new(StorageRef { key, dtype, numel })))
}

/// Walks to the dict the caller asked for.
fn select(path: &Path, root: &Value, key: Option<&str>) -> Result<Rc<std::cell::RefCell<Dict>>> {
    let refused = |name: &str| {
        Error::format(path, format!("refuses to load global '{name}' (only state dicts of tensors are read)"))
    };
    let as_dict = |v: &Value, what: &str| match v {
        Value::Dict(d) => Ok(d.clone()),
        Value::Refused(name) => Err(refused(name)),
        other => Err(Error::format(path, format!("{what} is a {}, not a state dict", other.type_name()))),
    };
    let mut dict = as_dict(root, "the checkpoint")?;
    match key {
        Some(key) => {
            let mut walked = String::new();
            for part in key.split('/').filter(|p| !p.is_empty()) {
                let next = dict.borrow().get(part).cloned();
                let Some(next) = next else {
                    let place = if walked.is_empty() { "the top level".to_string() } else { format!("'{walked}'") };
                    return Err(Error::format(
                        path,
                        format!("no entry '{part}' in {place} (entries: {})", entry_names(&dict.borrow())),
                    ));
                };
                walked = if walked.is_empty() { part.to_string() } else { format!("{walked}/{part}") };
                dict = as_dict(&next, &format!("entry '{walked}'"))?;
            }
            Ok(dict)
        }
        None => {
            // Training checkpoints nest at most a couple of levels.
            for _ in 0..3 {
                if holds_tensors(&dict.borrow()) {
                    return Ok(dict);
                }
                let nested = NESTED_KEYS.iter().find_map(|k| match dict.borrow().get(k) {
                    Some(Value::Dict(d)) => Some(d.clone()),
                    _ => None,
                });
                match nested {
                    Some(d) => dict = d,
                    None => break,
                }
            }
            if holds_tensors(&dict.borrow()) {
                return Ok(dict);
            }
            Err(Error::format(
                path,
                format!(
                    "no state dict found: no tensors at the top level, whose entries are {} \
                     (pick the dict that holds the weights by its key)",
                    entry_names(&dict.borrow())
                ),
            ))
        }
    }
}

fn holds_tensors(d: &Dict) -> bool {
    d.entries().iter().any(|(_, v)| matches!(v, Value::Tensor(_)))
}

fn entry_names(d: &Dict) -> String {
    const SHOWN: usize = 12;
    let names: Vec<String> = d
        .entries()
        .iter()
        .take(SHOWN)
        .map(|(k, _)| match k {
            Value::Str(s) => format!("'{s}'"),
            other => format!("<{}>", other.type_name()),
        })
        .collect();
    let more = d.entries().len().saturating_sub(SHOWN);
    match (names.is_empty(), more) {
        (true, _) => "none".to_string(),
        (false, 0) => names.join(", "),
        (false, n) => format!("{} and {n} more", names.join(", ")),
    }
}

fn materialize(path: &Path, dict: &Dict, reader: &mut Archive<'_>) -> Result<StateDict> {
    // Storages used by several tensors (a weight and its transpose) must
    // not be handed out twice without a copy.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, v) in dict.entries() {
        if let Value::Tensor(t) = v {
            *uses.entry(t.storage.key.as_str()).or_default() += 1;
        }
    }
    let mut tensors = Vec::new();
    let mut ignored = Vec::new();
    for (k, v) in dict.entries() {
        let name = match k {
            Value::Str(s) => s.to_string(),
            other => {
                return Err(Error::format(
                    path,
                    format!("state dict has a key of type {}, expected names", other.type_name()),
                ))
            }
        };
        match v {
            Value::Tensor(t) => {
                let shared = uses.get(t.storage.key.as_str()).copied().unwrap_or(0) > 1;
                let tensor = reader.tensor(&name, t, shared)?;
                tensors.push((name, tensor));
            }
            other => {
                if let Some(global) = other.find_refused(SEARCH_DEPTH) {
                    return Err(Error::format(
                        path,
                        format!(
                            "refuses to load global '{global}' in entry '{name}' \
                             (only state dicts of tensors are read)"
                        ),
                    ));
                }
                ignored.push(format!("{name} ({})", other.type_name()));
            }
        }
    }
    Ok(StateDict { tensors, ignored })
}

fn kind_of(d: StorageDtype) -> Kind {
    match d {
        StorageDtype::F64 => Kind::Double,
        StorageDtype::F32 => Kind::Float,
        StorageDtype::F16 => Kind::Half,
        StorageDtype::BF16 => Kind::BFloat16,
        StorageDtype::I64 => Kind::Int64,
        StorageDtype::I32 => Kind::Int,
        StorageDtype::I16 => Kind::Int16,
        StorageDtype::I8 => Kind::Int8,
        StorageDtype::U8 => Kind::Uint8,
        StorageDtype::Bool => Kind::Bool,
    }
}

/// The zip container of one checkpoint, over a memory map of the file.
struct Archive<'m> {
    path: PathBuf,
    map: &'m [u8],
    zip: ZipArchive<Cursor<&'m [u8]>>,
    /// The top folder, with a trailing '/'.
    prefix: String,
    /// Storages already read, as 1-D tensors, by key.
    storages: HashMap<String, Tensor>,
}

impl<'m> Archive<'m> {
    fn open(path: &Path, map: &'m [u8]) -> Result<Self> {
        let zip = ZipArchive::new(Cursor::new(map))
            .map_err(|e| Error::format(path, format!("is a truncated or damaged checkpoint (zip: {e})")))?;
        // torch.save writes `<folder>/data.pkl`; the folder name is the file
        // stem at save time, so anything is accepted.
        let pkls: Vec<&str> =
            zip.file_names().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).collect();
        let prefix = match pkls.as_slice() {
            [one] => one.trim_end_matches("data.pkl").to_string(),
            [] => {
                return Err(Error::format(
                    path,
                    "is a zip file but not a torch.save checkpoint (no <folder>/data.pkl inside)",
                ))
            }
            _ => {
                return Err(Error::format(
                    path,
                    format!("holds {} checkpoints (several */data.pkl), expected one", pkls.len()),
                ))
            }
        };
        let mut archive = Archive { path: path.to_path_buf(), map, zip, prefix, storages: HashMap::new() };
        archive.check_byteorder()?;
        Ok(archive)
    }

    fn check_byteorder(&mut self) -> Result<()> {
        let name = format!("{}byteorder", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            // Written since PyTorch 1.10; older files come from little-endian
            // machines in practice.
            return Ok(());
        }
        let order = self.entry_bytes("byteorder", Some(16))?;
        match &order[..] {
            b"little" => Ok(()),
            b"big" => {
                Err(Error::format(&self.path, "stores tensors big-endian; re-save it on a little-endian machine"))
            }
            other => {
                Err(Error::format(&self.path, format!("has an unknown byteorder '{}'", String::from_utf8_lossy(other))))
            }
        }
    }

    /// The bytes of `<prefix><name>`, borrowed from the map when stored
    /// uncompressed (as torch writes them), else decompressed. `limit` caps
    /// what is read from a compressed entry.
    fn entry_bytes(&mut self, name: &str, limit: Option<u64>) -> Result<std::borrow::Cow<'m, [u8]>> {
        let full = format!("{}{name}", self.prefix);
        let path = self.path.clone();
        let map = self.map;
        let mut f = self.zip.by_name(&full).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => {
                Error::format(&path, format!("is missing '{full}' (truncated or damaged checkpoint)"))
            }
            e => Error::format(&path, format!("cannot read '{full}': {e}")),
        })?;
        if f.compression() == CompressionMethod::Stored {
            let start = f.data_start() as usize;
            let end = start.checked_add(f.size() as usize);
            let Some(bytes) = end.and_then(|end| map.get(start..end)) else {
                return Err(Error::format(&path, format!("'{full}' runs past the end of the file (truncated)")));
            };
            // Read from the map, the bytes bypass zip's own CRC check.
            if crc32fast::hash(bytes) != f.crc32() {
                return Err(Error::format(&path, format!("'{full}' is damaged (CRC mismatch)")));
            }
            return Ok(std::borrow::Cow::Borrowed(bytes));
        }
        let cap = limit.unwrap_or(u64::MAX).min(f.size());
        let mut out = Vec::with_capacity(cap.min(1 << 30) as usize);
        f.by_ref()
            .take(cap)
            .read_to_end(&mut out)
            .map_err(|e| Error::format(&path, format!("cannot decompress '{full}': {e}")))?;
        Ok(std::borrow::Cow::Owned(out))
    }

    /// The whole storage `s` as a 1-D tensor.
    fn storage(&mut self, s: &StorageRef) -> Result<Tensor> {
        if let Some(t) = self.storages.get(&s.key) {
            return Ok(t.shallow_clone());
        }
        let needed = (s.numel as u64)
            .checked_mul(s.dtype.size() as u64)
            .ok_or_else(|| Error::format(&self.path, format!("storage '{}' claims an impossible size", s.key)))?;
        let bytes = self.entry_bytes(&format!("data/{}", s.key), Some(needed))?;
        if (bytes.len() as u64) < needed {
            return Err(Error::format(
                &self.path,
                format!(
                    "storage data/{} holds {} bytes, expected {needed} ({} x {:?}); the file is truncated or damaged",
                    s.key,
                    bytes.len(),
                    s.numel,
                    s.dtype
                ),
            ));
        }
        let bytes = &bytes[..needed as usize];
        if s.dtype == StorageDtype::Bool && bytes.iter().any(|&b| b > 1) {
            return Err(Error::format(
                &self.path,
                format!("bool storage data/{} holds values other than 0 and 1", s.key),
            ));
        }
        // from_data_size copies numel * element-size bytes: the length was
        // checked above.
        let t = Tensor::f_from_data_size(bytes, &[s.numel], kind_of(s.dtype))?;
        self.storages.insert(s.key.clone(), t.shallow_clone());
        Ok(t)
    }

    /// Tensor `name`: the view `t` of its storage, as a contiguous tensor
    /// that owns its memory unless it is the whole storage of no one else.
    fn tensor(&mut self, name: &str, t: &TensorRef, shared: bool) -> Result<Tensor> {
        let path = self.path.clone();
        let bad = |why: String| Error::format(&path, format!("tensor '{name}': {why}"));
        if t.size.len() != t.stride.len() {
            return Err(bad(format!("size {:?} and stride {:?} differ in length", t.size, t.stride)));
        }
        if t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) || t.offset < 0 {
            return Err(bad(format!(
                "negative size, stride or offset (size {:?}, stride {:?}, offset {})",
                t.size, t.stride, t.offset
            )));
        }
        let numel = t.size.iter().try_fold(1i128, |acc, &s| acc.checked_mul(s as i128));
        let numel = numel.filter(|&n| n <= i64::MAX as i128).ok_or_else(|| bad("size overflows".into()))?;
        if numel > 0 {
            let last: i128 = t.offset as i128
                + t.size.iter().zip(&t.stride).map(|(&s, &st)| (s as i128 - 1) * st as i128).sum::<i128>();
            if last >= t.storage.numel as i128 {
                return Err(bad(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {}",
                    t.offset, t.size, t.stride, t.storage.numel
                )));
            }
        }
        let storage = self.storage(&t.storage)?;
        let whole = t.offset == 0 && numel == t.storage.numel as i128 && is_contiguous(&t.size, &t.stride);
        if whole && !shared {
            return Ok(storage.f_view(t.size.as_slice())?);
        }
        let view = storage.f_as_strided(t.size.as_slice(), t.stride.as_slice(), t.offset)?;
        let mut out = Tensor::f_empty(t.size.as_slice(), (kind_of(t.storage.dtype), Device::Cpu))?;
        out.f_copy_(&view)?;
        Ok(out)
    }
}

/// Row-major contiguity; dimensions of size 1 may have any stride.
fn is_contiguous(size: &[i64], stride: &[i64]) -> bool {
    let mut expected = 1i64;
    for (&s, &st) in size.iter().zip(stride).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(s);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
        assert!(is_contiguous(&[], &[]));
    }
}
