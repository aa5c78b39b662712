//! The feature store: what `dinomaly-extract` writes and `dinomaly-train`
//! (and `dinomaly-score --features`) read, so the frozen encoder runs once
//! per image instead of once per training iteration.
//!
//! A single safetensors file, loadable in one line of Python
//! (`safetensors.torch.load_file(path)["features"]`), memory-mapped here:
//! - tensor `features`, shape (N, G, T, D), fp16 (default) or fp32: per image,
//!   G encoder feature maps with all T = 1 + R + gh*gw tokens (class token,
//!   registers, patches in row-major order), D channels. G is the number of
//!   fused groups (2 for Dinomaly's loose groups) or, with `--all-layers`,
//!   the number of target layers (8), for the strict/single ablations;
//! - `__metadata__`: format name and version, backbone, weights sha256,
//!   architecture, layers, groups, what G holds, resize/crop, pre-processing
//!   backend, positional-embedding mode, grid, and the sample records (one
//!   per row, as JSON) so class labels, masks and extra fields travel along.
//!
//! Written atomically: rows stream to an unnamed temporary file (beside the
//! destination; in `$TMPDIR` when the store goes to stdout), and the final
//! file (header + rows) appears, or is written to stdout, only when all
//! rows are in. A store piped in on stdin is spooled to an unnamed file in
//! `$TMPDIR` before it is opened ([`FeatureStore::from_file`]): reading
//! memory-maps the store, which needs a file.
//!
//! Several stores of the same encoder settings (the shards of one data set,
//! from `dinomaly-extract --shard I/N` on several machines) open as one
//! with [`FeatureStore::concat`]: their rows in the given order, each read
//! from its own memory map, nothing copied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::record::Sample;
use crate::io::atomic::AtomicFile;
use crate::{Error, Result};

/// Name of the format, stored in metadata.
pub const FORMAT: &str = "dinomaly-features";
/// Version of the layout described above.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the tensor holding the rows.
const TENSOR: &str = "features";

/// Storage precision of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// Half precision: half the disk and memory, ~1e-3 relative rounding.
    F16,
    /// Full precision, bit-exact encoder outputs.
    F32,
}

impl StoreDtype {
    fn kind(self) -> Kind {
        match self {
            StoreDtype::F16 => Kind::Half,
            StoreDtype::F32 => Kind::Float,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            StoreDtype::F16 => "F16",
            StoreDtype::F32 => "F32",
        }
    }

    fn bytes(self) -> usize {
        match self {
            StoreDtype::F16 => 2,
            StoreDtype::F32 => 4,
        }
    }
}

/// What a feature store was made from; everything a consumer must check
/// before trusting the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// Backbone name (e.g. `dinov2_vitb14_reg4`, or the weights file stem).
    pub backbone: String,
    /// sha256 of the weights file.
    pub weights_sha256: String,
    /// Token width D.
    pub embed_dim: i64,
    /// Encoder attention heads (the decoder uses as many).
    pub num_heads: i64,
    /// Register tokens R.
    pub num_registers: i64,
    /// Patch size in pixels.
    pub patch_size: i64,
    /// Target encoder layers, 0-based block indices, in order.
    pub layers: Vec<usize>,
    /// Groups of indices into `layers` that were averaged per stored map;
    /// with `all_layers` each layer is its own group.
    pub groups: Vec<Vec<usize>>,
    /// True when the G axis holds every target layer unfused.
    pub all_layers: bool,
    /// Resize before cropping, (height, width).
    pub resize: (u32, u32),
    /// Centre crop fed to the encoder, (height, width).
    pub crop: (u32, u32),
    /// Image pre-processing backend name.
    pub preprocess: String,
    /// Positional-embedding resize mode name.
    pub pos_interp: String,
    /// Patch grid (gh, gw).
    pub grid: (i64, i64),
    /// Storage dtype.
    pub dtype: StoreDtype,
}

impl FeatureMeta {
    /// Tokens per map: class token, registers, patches.
    pub fn tokens(&self) -> i64 {
        1 + self.num_registers + self.grid.0 * self.grid.1
    }

    /// Maps per image (the G axis).
    pub fn maps_per_image(&self) -> i64 {
        if self.all_layers {
            self.layers.len() as i64
        } else {
            self.groups.len() as i64
        }
    }

    fn row_shape(&self) -> [i64; 3] {
        [self.maps_per_image(), self.tokens(), self.embed_dim]
    }
}

/// Streams rows into a new feature store.
pub struct FeatureWriter {
    meta: FeatureMeta,
    /// The destination file; for messages only when `to_stdout`.
    dest: PathBuf,
    to_stdout: bool,
    /// Unnamed: the system removes it however the process ends.
    rows: File,
    records: Vec<Sample>,
    row_bytes: usize,
}

impl FeatureWriter {
    /// Starts a store at `dest`; fails now if the folder is not writable.
    pub fn create(dest: &Path, meta: FeatureMeta) -> Result<Self> {
        crate::io::atomic::check_writable(dest)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let rows = tempfile::tempfile_in(&dir).map_err(|e| Error::io(dest, e))?;
        Ok(Self::with_rows(dest.to_path_buf(), false, rows, meta))
    }

    /// Starts a store that [`FeatureWriter::finish`] writes to stdout, in
    /// one piece once all rows are in (nothing is written before: a failed
    /// run leaves the reader an empty input, never a partial store). The
    /// rows wait in an unnamed temporary file in `$TMPDIR`.
    pub fn to_stdout(meta: FeatureMeta) -> Result<Self> {
        let tmp = std::env::temp_dir();
        let rows = tempfile::tempfile_in(&tmp).map_err(|e| {
            Error::io(&tmp, std::io::Error::new(e.kind(), format!("cannot hold the rows of the store in $TMPDIR: {e}")))
        })?;
        Ok(Self::with_rows(PathBuf::from("stdout"), true, rows, meta))
    }

    fn with_rows(dest: PathBuf, to_stdout: bool, rows: File, meta: FeatureMeta) -> Self {
        let row_bytes = meta.row_shape().iter().product::<i64>() as usize * meta.dtype.bytes();
        FeatureWriter { meta, dest, to_stdout, rows, records: Vec::new(), row_bytes }
    }

    /// Appends one row per sample from `maps`, shaped (B, G, T, D).
    pub fn push(&mut self, samples: &[Sample], maps: &Tensor) -> Result<()> {
        let [g, t, d] = self.meta.row_shape();
        let expected = vec![samples.len() as i64, g, t, d];
        if maps.size() != expected {
            return Err(Error::Shape { path: self.dest.clone(), key: TENSOR.into(), expected, found: maps.size() });
        }
        let host = maps.to_device(Device::Cpu).to_kind(self.meta.dtype.kind()).contiguous();
        let numel = host.numel();
        let mut bytes = vec![0u8; numel * self.meta.dtype.bytes()];
        host.f_copy_data_u8(&mut bytes, numel)?;
        self.rows.write_all(&bytes).map_err(|e| Error::io(&self.dest, e))?;
        self.records.extend_from_slice(samples);
        Ok(())
    }

    /// Rows written so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Writes the header and the rows under the final name (or to stdout).
    /// Returns the number of rows. A store with no rows is an error:
    /// nothing is written.
    pub fn finish(mut self) -> Result<usize> {
        let n = self.records.len();
        if n == 0 {
            return Err(Error::config(format!(
                "{}: no image could be encoded, no feature store written",
                self.dest.display()
            )));
        }
        let [g, t, d] = self.meta.row_shape();
        let data_len = n * self.row_bytes;
        let mut metadata = HashMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        metadata.insert("meta".to_string(), to_json(&self.meta)?);
        metadata.insert("records".to_string(), to_json(&self.records)?);
        let header = serde_json::json!({
            "__metadata__": metadata,
            TENSOR: {
                "dtype": self.meta.dtype.safetensors_name(),
                "shape": [n as i64, g, t, d],
                "data_offsets": [0, data_len],
            }
        });
        let mut header = serde_json::to_vec(&header).map_err(|e| Error::format(&self.dest, e.to_string()))?;
        // Pad with spaces so the data starts 8-byte aligned (mmap-friendly).
        while (header.len() + 8) % 8 != 0 {
            header.push(b' ');
        }
        let dest = self.dest.clone();
        let io_err = |e| Error::io(&dest, e);
        self.rows.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let write = |out: &mut dyn Write, rows: &mut File| -> std::io::Result<u64> {
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            let copied = std::io::copy(rows, out)?;
            out.flush()?;
            Ok(copied)
        };
        let copied = if self.to_stdout {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            write(&mut out, &mut self.rows).map_err(io_err)?
        } else {
            let mut out = AtomicFile::create(&self.dest)?;
            let copied = write(&mut out, &mut self.rows).map_err(io_err)?;
            if copied as usize == data_len {
                out.commit()?;
            }
            copied
        };
        if copied as usize != data_len {
            return Err(Error::format(&self.dest, "row data was cut short while writing"));
        }
        Ok(n)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::config(format!("cannot encode metadata: {e}")))
}

/// A feature store opened for reading, memory-mapped: one file, or the
/// files of [`FeatureStore::concat`] one after the other.
pub struct FeatureStore {
    path: PathBuf,
    parts: Vec<Part>,
    meta: FeatureMeta,
    records: Vec<Sample>,
    len: usize,
    row_bytes: usize,
}

/// One file's rows.
struct Part {
    map: memmap2::Mmap,
    /// Offset of the first row in the file.
    data_start: usize,
    /// Index of the part's first row in the whole store.
    first_row: usize,
}

impl FeatureStore {
    /// Opens and validates `path`: format, version, tensor shape against the
    /// metadata, file length.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_file(&file, path)
    }

    /// Opens and validates the store in `file` (e.g. stdin spooled to an
    /// unnamed temporary file), named `path` in messages.
    pub fn from_file(file: &File, path: &Path) -> Result<Self> {
        // SAFETY: the file is opened read-only; a concurrent writer would be
        // a misuse (stores are never modified in place, only replaced).
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::format(path, reason);
        let (header_len, st_meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| bad(crate::io::safetensors_load::header_problem("feature store", &e)))?;
        let kv = st_meta.metadata().as_ref().ok_or_else(|| bad("not a feature store: no metadata".into()))?;
        if kv.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("not a feature store (format is {:?}, expected \"{FORMAT}\")", kv.get("format"))));
        }
        let version = kv.get("format_version").cloned().unwrap_or_default();
        if version != FORMAT_VERSION.to_string() {
            return Err(bad(format!(
                "feature store format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        let meta: FeatureMeta = serde_json::from_str(kv.get("meta").map(String::as_str).unwrap_or(""))
            .map_err(|e| bad(format!("bad metadata: {e}")))?;
        let records: Vec<Sample> = serde_json::from_str(kv.get("records").map(String::as_str).unwrap_or(""))
            .map_err(|e| bad(format!("bad records metadata: {e}")))?;
        let info = st_meta.info(TENSOR).ok_or_else(|| bad(format!("no '{TENSOR}' tensor")))?;
        let [g, t, d] = meta.row_shape();
        let n = records.len();
        let expected = vec![n, g as usize, t as usize, d as usize];
        if info.shape != expected {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                key: TENSOR.into(),
                expected: expected.iter().map(|&v| v as i64).collect(),
                found: info.shape.iter().map(|&v| v as i64).collect(),
            });
        }
        if format!("{:?}", info.dtype) != meta.dtype.safetensors_name() {
            return Err(bad(format!("tensor dtype {:?} does not match the metadata", info.dtype)));
        }
        let row_bytes = (g * t * d) as usize * meta.dtype.bytes();
        let data_start = 8 + header_len + info.data_offsets.0;
        if info.data_offsets.1 - info.data_offsets.0 != n * row_bytes || map.len() < data_start + n * row_bytes {
            return Err(bad(format!(
                "truncated: {} bytes of rows expected, file has {}",
                n * row_bytes,
                map.len().saturating_sub(data_start)
            )));
        }
        let parts = vec![Part { map, data_start, first_row: 0 }];
        Ok(FeatureStore { path: path.to_path_buf(), parts, meta, records, len: n, row_bytes })
    }

    /// The rows of `stores` one after the other, as one store (nothing is
    /// copied). Every store must have the first one's metadata (encoder and
    /// its weights, layers, groups, resize, crop, pre-processing, dtype,
    /// ...): the error names the first store that differs and the field.
    /// The combined store is named by its files joined with ", ".
    pub fn concat(stores: Vec<FeatureStore>) -> Result<Self> {
        let mut stores = stores.into_iter();
        let Some(mut all) = stores.next() else {
            return Err(Error::config("no feature stores to concatenate"));
        };
        let first = serde_json::to_value(&all.meta).map_err(|e| Error::config(e.to_string()))?;
        let mut names = vec![all.path.display().to_string()];
        for store in stores {
            let meta = serde_json::to_value(&store.meta).map_err(|e| Error::config(e.to_string()))?;
            if let (Some(a), Some(b)) = (first.as_object(), meta.as_object()) {
                if let Some((field, want)) = a.iter().find(|(k, v)| b.get(k.as_str()) != Some(v)) {
                    let got = b.get(field.as_str()).cloned().unwrap_or(serde_json::Value::Null);
                    return Err(Error::format(
                        &store.path,
                        format!(
                            "its {field} {got} differs from {want} in {}: stores trained together must come \
                             from the same encoder and settings",
                            names[0]
                        ),
                    ));
                }
            }
            names.push(store.path.display().to_string());
            for mut part in store.parts {
                part.first_row += all.len;
                all.parts.push(part);
            }
            all.records.extend(store.records);
            all.len += store.len;
        }
        all.path = PathBuf::from(names.join(", "));
        Ok(all)
    }

    /// Metadata.
    pub fn meta(&self) -> &FeatureMeta {
        &self.meta
    }

    /// One record per row.
    pub fn records(&self) -> &[Sample] {
        &self.records
    }

    /// Number of rows (images).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the store has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows `indices` as one (B, G, T, D) tensor of `kind` on `device`.
    pub fn batch(&self, indices: &[usize], kind: Kind, device: Device) -> Result<Tensor> {
        let [g, t, d] = self.meta.row_shape();
        let mut bytes = Vec::with_capacity(indices.len() * self.row_bytes);
        for &i in indices {
            if i >= self.len {
                return Err(Error::config(format!(
                    "{}: row {i} requested, the store has {}",
                    self.path.display(),
                    self.len
                )));
            }
            // The last part whose first row is at or before i.
            let part = &self.parts[self.parts.partition_point(|p| p.first_row <= i) - 1];
            let start = part.data_start + (i - part.first_row) * self.row_bytes;
            bytes.extend_from_slice(&part.map[start..start + self.row_bytes]);
        }
        let shape = [indices.len() as i64, g, t, d];
        let host = Tensor::f_from_data_size(&bytes, &shape, self.meta.dtype.kind())?;
        // Fallible conversions: running out of device memory is an error
        // the caller can handle, not a panic.
        Ok(host.f_to_device(device)?.f_to_kind(kind)?)
    }

    /// All rows as one tensor on `device` (for holding a store in GPU
    /// memory), filled a chunk of rows at a time so that the host never
    /// holds more than one chunk. An error (out of device memory) leaves
    /// nothing allocated.
    pub fn all(&self, kind: Kind, device: Device) -> Result<Tensor> {
        self.all_in_chunks(kind, device, 256)
    }

    /// [`FeatureStore::all`], `chunk_rows` rows at a time.
    pub fn all_in_chunks(&self, kind: Kind, device: Device, chunk_rows: usize) -> Result<Tensor> {
        let chunk_rows = chunk_rows.max(1);
        let [g, t, d] = self.meta.row_shape();
        let all = Tensor::f_empty([self.len as i64, g, t, d], (kind, device))?;
        for start in (0..self.len).step_by(chunk_rows) {
            let rows: Vec<usize> = (start..(start + chunk_rows).min(self.len)).collect();
            let chunk = self.batch(&rows, kind, device)?;
            all.f_narrow(0, start as i64, rows.len() as i64)?.f_copy_(&chunk)?;
        }
        Ok(all)
    }
}

/// A store can be scored by (or resume the training of) a model when both
/// were made with the same encoder, layers, input size and pre-processing.
pub fn check_store_matches(store: &FeatureMeta, model: &FeatureMeta) -> Result<()> {
    let mut differences = Vec::new();
    if store.weights_sha256 != model.weights_sha256 {
        differences.push(format!(
            "encoder weights (sha256 {} vs {})",
            short(&store.weights_sha256),
            short(&model.weights_sha256)
        ));
    }
    if store.layers != model.layers {
        differences.push(format!("layers ({:?} vs {:?})", store.layers, model.layers));
    }
    if store.crop != model.crop || store.resize != model.resize {
        differences.push(format!(
            "input size (resize {:?} crop {:?} vs resize {:?} crop {:?})",
            store.resize, store.crop, model.resize, model.crop
        ));
    }
    if store.pos_interp != model.pos_interp || store.preprocess != model.preprocess {
        differences.push(format!(
            "pre-processing ({}/{} vs {}/{})",
            store.preprocess, store.pos_interp, model.preprocess, model.pos_interp
        ));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::mismatch("feature store and checkpoint", format!("made differently: {}", differences.join(", "))))
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(crop: u32) -> FeatureMeta {
        FeatureMeta {
            backbone: "test".into(),
            weights_sha256: "0".into(),
            embed_dim: 4,
            num_heads: 1,
            num_registers: 0,
            patch_size: 14,
            layers: vec![0, 1],
            groups: vec![vec![0, 1]],
            all_layers: false,
            resize: (14, 14),
            crop: (crop, crop),
            preprocess: "pil".into(),
            pos_interp: "bicubic".into(),
            grid: (1, 1),
            dtype: StoreDtype::F32,
        }
    }

    /// A store of `n` rows (1, 2, 4) filled with `first`, `first + 1`, ...
    fn write(path: &Path, meta: FeatureMeta, first: usize, n: usize) {
        let values: Vec<f32> = (first..first + n).flat_map(|r| [r as f32; 8]).collect();
        let rows = Tensor::from_slice(&values).reshape([n as i64, 1, 2, 4]);
        let samples: Vec<Sample> = (first..first + n).map(|r| Sample::from_path(format!("{r}.png"))).collect();
        let mut writer = FeatureWriter::create(path, meta).unwrap();
        writer.push(&samples, &rows).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn stores_concatenate_in_order_and_must_share_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("{i}.st"))).collect();
        write(&paths[0], meta(14), 0, 2);
        write(&paths[1], meta(14), 2, 1);
        write(&paths[2], meta(14), 3, 3);
        write(&paths[3], meta(28), 6, 1);
        let open = |which: &[usize]| which.iter().map(|&i| FeatureStore::open(&paths[i]).unwrap()).collect();
        let all = FeatureStore::concat(open(&[0, 1, 2])).unwrap();
        assert_eq!(all.len(), 6);
        let names: Vec<String> = all.records().iter().map(|r| r.image.display().to_string()).collect();
        assert_eq!(names, ["0.png", "1.png", "2.png", "3.png", "4.png", "5.png"]);
        let rows = all.batch(&[5, 0, 2, 3, 1], Kind::Float, Device::Cpu).unwrap();
        let firsts: Vec<f32> = Vec::try_from(rows.select(2, 0).select(2, 0).reshape([-1])).unwrap();
        assert_eq!(firsts, [5.0, 0.0, 2.0, 3.0, 1.0]);
        assert!(all.batch(&[6], Kind::Float, Device::Cpu).is_err());
        // The store that differs and the field are named.
        let e = FeatureStore::concat(open(&[0, 1, 3])).err().unwrap().to_string();
        assert!(e.contains("3.st") && e.contains("its crop [28,28] differs from [14,14] in "), "{e}");
    }
}
