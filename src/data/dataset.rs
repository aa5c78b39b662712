//! Dataset trees read by layout into sample records: MVTec-AD, VisA,
//! Real-IAD, a generic folder tree.
//!
//! The listing follows the official code (`dataset.py`, the `dinomaly_*`
//! scripts, `prepare_data/prepare_visa.py`):
//! - training sets are torchvision `ImageFolder(<class>/train)`: every file
//!   with an image extension (case-insensitive) in the sub-folders, sorted;
//! - MVTec-style test sets (`MVTecDataset`) take `*.png`, `*.JPG`, `*.bmp`
//!   (case-sensitive, as `glob`) from `test/<defect>`, and for every defect
//!   but `good` pair the sorted images with the sorted `ground_truth/
//!   <defect>/*.png` masks by index. The official code lists defects in
//!   directory order; here they are sorted, which changes no metric;
//! - Real-IAD keeps the order of its json lists.
//!
//! Every record gets `class`, `label` (0 normal, 1 anomalous), `mask`
//! (anomalous test images only) and an extra field `defect` (the defect
//! folder, `good` for normal images; Real-IAD's `anomaly_class`, `OK` for
//! normal ones). Records from the raw VisA download also get
//! `"binarize_mask": true`: the official preparation sets every non-zero
//! mask value to 255 before evaluation (see
//! [`crate::data::mask::load_sample_mask`]).
//!
//! Hidden files and folders (name starting with `.`) are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::record::Sample;
use crate::{Error, Result};

/// A dataset tree layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `<root>/<class>/{train,test}/<defect>/*`, masks in `ground_truth/<defect>/*_mask.png`.
    Mvtec,
    /// VisA: the 1cls split csv over the raw download, or the reorganised tree.
    Visa,
    /// Real-IAD: `realiad_jsons` lists over `realiad_1024` images.
    Realiad,
    /// `<root>/<class>/good/*` normal, `<root>/<class>/<defect>/*` anomalous.
    Folder,
}

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Normal training images.
    Train,
    /// Test images, normal and anomalous, with masks.
    Test,
}

/// MVTec-AD classes in the official order.
pub const MVTEC_CLASSES: [&str; 15] = [
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
];

/// VisA classes in the official order.
pub const VISA_CLASSES: [&str; 12] = [
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
];

/// Real-IAD classes in the official order.
pub const REALIAD_CLASSES: [&str; 30] = [
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy",
    "toy_brick",
    "transistor1",
    "usb",
    "usb_adaptor",
    "u_block",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
];

/// torchvision's `IMG_EXTENSIONS` (compared lowercased, as `ImageFolder`).
const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// The test-image patterns of `MVTecDataset` (glob, case-sensitive).
const MVTEC_TEST_EXTENSIONS: [&str; 3] = ["png", "JPG", "bmp"];

/// Lists the samples of `split` under `root`, sorted as the official code
/// sorts them, restricted to `classes` (in that order) when not empty.
pub fn list(root: &Path, layout: Layout, split: Split, classes: &[String]) -> Result<Vec<Sample>> {
    if !root.is_dir() {
        return Err(not_found(root, "dataset root folder"));
    }
    match layout {
        Layout::Mvtec => list_mvtec_tree(root, split, classes, &MVTEC_CLASSES),
        Layout::Visa => {
            let csv = root.join("split_csv").join("1cls.csv");
            if csv.is_file() {
                list_visa_csv(root, &csv, split, classes)
            } else {
                // The official scripts point at `<save folder>/1cls`; accept
                // the save folder itself too.
                let one_cls = root.join("1cls");
                let tree = if one_cls.is_dir() { one_cls } else { root.to_path_buf() };
                list_mvtec_tree(&tree, split, classes, &VISA_CLASSES)
            }
        }
        Layout::Realiad => list_realiad(root, split, classes),
        Layout::Folder => list_folder(root, split, classes),
    }
}

fn not_found(path: &Path, what: &str) -> Error {
    Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, format!("no such {what}")))
}

/// Names of the non-hidden entries of `dir` that satisfy `keep`, sorted.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if keep(&entry.path()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<String>> {
    entries(dir, |p| p.is_dir())
}

fn extension(name: &str) -> Option<&str> {
    Path::new(name).extension().and_then(|e| e.to_str())
}

/// Image files of `dir` (not recursive), sorted, with an extension in
/// `exts`, compared exactly or lowercased.
fn images_in(dir: &Path, exts: &[&str], case_sensitive: bool) -> Result<Vec<PathBuf>> {
    let names = entries(dir, |p| p.is_file())?;
    Ok(names
        .into_iter()
        .filter(|n| {
            extension(n).is_some_and(|e| {
                if case_sensitive {
                    exts.contains(&e)
                } else {
                    exts.contains(&e.to_lowercase().as_str())
                }
            })
        })
        .map(|n| dir.join(n))
        .collect())
}

/// `ImageFolder(dir)`: the images of every sub-folder, recursively, folders
/// and files sorted; the first path component below `dir` is the folder.
fn image_folder(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        out.extend(images_in(dir, &IMAGE_EXTENSIONS, false)?);
        for sub in subdirs(dir)? {
            walk(&dir.join(sub), out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    for folder in subdirs(dir)? {
        let mut files = Vec::new();
        walk(&dir.join(&folder), &mut files)?;
        out.extend(files.into_iter().map(|f| (folder.clone(), f)));
    }
    Ok(out)
}

/// The classes to read: `wanted` in its order, each checked against
/// `found`; or every found class, in the official order when the dataset
/// has one (`official`), unknown ones after it, sorted.
fn choose_classes(found: &[String], wanted: &[String], official: &[&str], root: &Path) -> Result<Vec<String>> {
    if !wanted.is_empty() {
        for w in wanted {
            if !found.contains(w) {
                return Err(Error::config(format!(
                    "unknown class '{w}' under {} (found: {})",
                    root.display(),
                    if found.is_empty() { "none".to_string() } else { found.join(", ") }
                )));
            }
        }
        return Ok(wanted.to_vec());
    }
    if found.is_empty() {
        return Err(Error::config(format!("no class folders found under {}", root.display())));
    }
    let mut out: Vec<String> =
        official.iter().filter(|c| found.iter().any(|f| f == *c)).map(|c| c.to_string()).collect();
    out.extend(found.iter().filter(|f| !official.contains(&f.as_str())).cloned());
    Ok(out)
}

fn sample(image: PathBuf, class: &str, label: u8, mask: Option<PathBuf>, defect: &str) -> Sample {
    let mut s = Sample::from_path(image);
    s.class = Some(class.to_string());
    s.label = Some(label);
    s.mask = mask;
    s.extra.insert("defect".to_string(), Value::String(defect.to_string()));
    s
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The official pairing: sorted images with sorted masks, by index. Counts
/// must agree and every mask name must start with its image's stem
/// (`000.png` / `000_mask.png`, `0000.JPG` / `0000.png`), which catches a
/// missing mask shifting the pairs.
fn pair_by_order(images: &[PathBuf], masks: &[PathBuf], mask_dir: &Path) -> Result<Vec<PathBuf>> {
    if images.len() != masks.len() {
        let detail = images
            .iter()
            .find(|i| !masks.iter().any(|m| stem(m).starts_with(&stem(i))))
            .map(|i| format!("; no mask for {}", i.display()))
            .unwrap_or_default();
        return Err(Error::format(
            mask_dir,
            format!(
                "{} test images but {} masks (images and masks are paired in sorted order){detail}",
                images.len(),
                masks.len()
            ),
        ));
    }
    for (i, m) in images.iter().zip(masks) {
        if !stem(m).starts_with(&stem(i)) {
            return Err(Error::format(
                m,
                format!("paired in sorted order with {}, but the names do not match", i.display()),
            ));
        }
    }
    Ok(masks.to_vec())
}

/// MVTec-AD and the reorganised VisA tree (both read by `MVTecDataset`).
fn list_mvtec_tree(root: &Path, split: Split, wanted: &[String], official: &[&str]) -> Result<Vec<Sample>> {
    let found = entries(root, |p| p.join("train").is_dir() || p.join("test").is_dir())?;
    let classes = choose_classes(&found, wanted, official, root)?;
    let mut out = Vec::new();
    for class in &classes {
        let class_dir = root.join(class);
        match split {
            Split::Train => {
                let train = class_dir.join("train");
                if !train.is_dir() {
                    return Err(not_found(&train, "training folder"));
                }
                for (folder, image) in image_folder(&train)? {
                    out.push(sample(image, class, 0, None, &folder));
                }
            }
            Split::Test => {
                let test = class_dir.join("test");
                if !test.is_dir() {
                    return Err(not_found(&test, "test folder"));
                }
                let gt = class_dir.join("ground_truth");
                for defect in subdirs(&test)? {
                    let images = images_in(&test.join(&defect), &MVTEC_TEST_EXTENSIONS, true)?;
                    if defect == "good" {
                        out.extend(images.into_iter().map(|i| sample(i, class, 0, None, &defect)));
                        continue;
                    }
                    let mask_dir = gt.join(&defect);
                    if !images.is_empty() && !mask_dir.is_dir() {
                        return Err(not_found(&mask_dir, "mask folder for the anomalous test images"));
                    }
                    let masks = if mask_dir.is_dir() { images_in(&mask_dir, &["png"], true)? } else { Vec::new() };
                    let masks = pair_by_order(&images, &masks, &mask_dir)?;
                    for (i, m) in images.into_iter().zip(masks) {
                        out.push(sample(i, class, 1, Some(m), &defect));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One split-csv row: (defect folder name, image, mask).
type CsvRow = (&'static str, PathBuf, Option<PathBuf>);

/// The raw VisA download read through `split_csv/1cls.csv` (columns
/// object, split, label, image, mask; paths relative to the root).
fn list_visa_csv(root: &Path, csv_path: &Path, split: Split, wanted: &[String]) -> Result<Vec<Sample>> {
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| csv_error(csv_path, 0, e))?;
    let headers = reader.headers().map_err(|e| csv_error(csv_path, 1, e))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| Error::Record {
            source_name: csv_path.display().to_string(),
            line: 1,
            reason: format!("missing column '{name}' (expected object, split, label, image, mask)"),
        })
    };
    let (c_obj, c_split, c_label, c_image, c_mask) =
        (column("object")?, column("split")?, column("label")?, column("image")?, column("mask")?);
    let split_name = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    // (class) -> (defect, image, mask) rows of the split.
    let mut by_class: BTreeMap<String, Vec<CsvRow>> = BTreeMap::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| csv_error(csv_path, line, e))?;
        let field = |c: usize| row.get(c).unwrap_or("").trim().to_string();
        let rec_err = |reason: String| Error::Record { source_name: csv_path.display().to_string(), line, reason };
        let class = field(c_obj);
        let rows = by_class.entry(class).or_default();
        if field(c_split) != split_name {
            continue;
        }
        let image = root.join(field(c_image));
        let (defect, mask) = match field(c_label).as_str() {
            "normal" => ("good", None),
            "anomaly" => {
                let m = field(c_mask);
                if m.is_empty() {
                    return Err(rec_err("an anomalous image without a mask".to_string()));
                }
                ("bad", Some(root.join(m)))
            }
            other => return Err(rec_err(format!("label must be 'normal' or 'anomaly', not '{other}'"))),
        };
        rows.push((defect, image, mask));
    }
    let found: Vec<String> = by_class.keys().cloned().collect();
    let classes = choose_classes(&found, wanted, &VISA_CLASSES, csv_path)?;
    let mut out = Vec::new();
    for class in &classes {
        let mut rows = by_class.remove(class).unwrap_or_default();
        // The same order as the reorganised tree: defect folders (bad,
        // good) sorted, then file names; the csv rows are not sorted.
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (defect, image, mask) in rows {
            if !image.is_file() {
                return Err(not_found(&image, "image listed in the split csv"));
            }
            if let Some(m) = &mask {
                if !m.is_file() {
                    return Err(not_found(m, "mask listed in the split csv"));
                }
            }
            let label = u8::from(defect != "good");
            let mut s = sample(image, class, label, mask, defect);
            if label == 1 {
                s.extra.insert("binarize_mask".to_string(), Value::Bool(true));
            }
            out.push(s);
        }
    }
    Ok(out)
}

fn csv_error(path: &Path, line: usize, e: csv::Error) -> Error {
    let line = e.position().map_or(line, |p| p.line() as usize);
    Error::Record { source_name: path.display().to_string(), line, reason: e.to_string() }
}

/// Real-IAD: `<root>/realiad_jsons/realiad_jsons/<class>.json` (or one
/// level less) listing images under `<root>/realiad_1024/<class>/`.
fn list_realiad(root: &Path, split: Split, wanted: &[String]) -> Result<Vec<Sample>> {
    let nested = root.join("realiad_jsons").join("realiad_jsons");
    let json_dir = if nested.is_dir() { nested } else { root.join("realiad_jsons") };
    if !json_dir.is_dir() {
        return Err(not_found(&json_dir, "Real-IAD json folder (realiad_jsons)"));
    }
    let image_root = root.join("realiad_1024");
    if !image_root.is_dir() {
        return Err(not_found(&image_root, "Real-IAD image folder (realiad_1024)"));
    }
    let found: Vec<String> = entries(&json_dir, |p| p.is_file())?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    let classes = choose_classes(&found, wanted, &REALIAD_CLASSES, &json_dir)?;
    let key = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let mut out = Vec::new();
    for class in &classes {
        let path = json_dir.join(format!("{class}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("not valid JSON: {e}")))?;
        let list =
            doc.get(key).and_then(Value::as_array).ok_or_else(|| Error::format(&path, format!("no \"{key}\" list")))?;
        let class_dir = image_root.join(class);
        for (i, entry) in list.iter().enumerate() {
            let field = |name: &str| entry.get(name).and_then(Value::as_str);
            let bad = |reason: &str| Error::format(&path, format!("\"{key}\"[{i}]: {reason}"));
            let image = field("image_path").ok_or_else(|| bad("no \"image_path\""))?;
            let anomaly = field("anomaly_class").ok_or_else(|| bad("no \"anomaly_class\""))?;
            let image = class_dir.join(image);
            if !image.is_file() {
                return Err(not_found(&image, "image listed in the Real-IAD json"));
            }
            // "OK" is the normal class; every other anomaly class has a mask
            // relative to the class folder.
            let label = u8::from(anomaly != "OK");
            let mask = if label == 1 {
                let m = field("mask_path").ok_or_else(|| bad("an anomalous image without \"mask_path\""))?;
                let m = class_dir.join(m);
                if split == Split::Test && !m.is_file() {
                    return Err(not_found(&m, "mask listed in the Real-IAD json"));
                }
                Some(m)
            } else {
                None
            };
            out.push(sample(image, class, label, mask, anomaly));
        }
    }
    Ok(out)
}

/// A generic tree: `<class>/good/*` normal, `<class>/<defect>/*`
/// anomalous, masks optional in `<class>/ground_truth/<defect>/`. A root
/// that itself holds `good/` is one class named after the root folder.
/// The training split is the `good` images; the test split is all images.
fn list_folder(root: &Path, split: Split, wanted: &[String]) -> Result<Vec<Sample>> {
    let single = root.join("good").is_dir();
    let found = if single {
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".to_string());
        vec![name]
    } else {
        subdirs(root)?
    };
    let classes = choose_classes(&found, wanted, &[], root)?;
    let mut out = Vec::new();
    for class in &classes {
        let class_dir = if single { root.to_path_buf() } else { root.join(class) };
        let good = class_dir.join("good");
        if split == Split::Train || good.is_dir() {
            if !good.is_dir() {
                return Err(not_found(&good, "folder of normal images (good)"));
            }
            for i in images_in(&good, &IMAGE_EXTENSIONS, false)? {
                out.push(sample(i, class, 0, None, "good"));
            }
        }
        if split == Split::Train {
            continue;
        }
        let gt = class_dir.join("ground_truth");
        for defect in subdirs(&class_dir)? {
            if defect == "good" || defect == "ground_truth" {
                continue;
            }
            let mask_dir = gt.join(&defect);
            let masks = if mask_dir.is_dir() { images_in(&mask_dir, &["png"], false)? } else { Vec::new() };
            for image in images_in(&class_dir.join(&defect), &IMAGE_EXTENSIONS, false)? {
                let mask = if mask_dir.is_dir() { Some(mask_for(&image, &masks, &mask_dir)?) } else { None };
                out.push(sample(image, class, 1, mask, &defect));
            }
        }
    }
    Ok(out)
}

/// The mask of `image` among `masks`: stem equal to the image's, or the
/// image's stem followed by `_`, `-` or `.` (`000_mask.png`).
fn mask_for(image: &Path, masks: &[PathBuf], mask_dir: &Path) -> Result<PathBuf> {
    let s = stem(image);
    let matches: Vec<&PathBuf> = masks
        .iter()
        .filter(|m| {
            let ms = stem(m);
            ms == s || ms.strip_prefix(&s).is_some_and(|rest| rest.starts_with(['_', '-', '.']))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            Err(Error::format(mask_dir, format!("no mask for {} (expected {s}.png or {s}_mask.png)", image.display())))
        }
        many => Err(Error::format(
            mask_dir,
            format!(
                "{} masks match {}: {}",
                many.len(),
                image.display(),
                many.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}
