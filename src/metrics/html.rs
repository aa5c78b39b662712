//! The HTML report of `dinomaly-metrics --html DIR`: one page an engineer
//! opens after an evaluation to see which classes are weak, where the
//! curves bend and, above all, which images the model gets wrong.
//!
//! `DIR/index.html` and its images, nothing else: no script, style sheet or
//! font from the network, one small inline script (table sorting, and a
//! banner when an image of the folder cannot be shown). Contents:
//! - the paper's table (seven metrics per class and their mean: the numbers
//!   of the JSON report, each cell carrying the full-precision value in
//!   `data-value`), sortable by any column;
//! - per class the ROC and precision-recall curves ([`super::plot`]), the
//!   PRO curve, and the histogram of good and defective image scores with
//!   the threshold in use: the checkpoint's calibrated one when the report
//!   is given the checkpoint and it has one, else the `--target-fpr` one,
//!   else the F1-optimal one;
//! - per class the worst cases: the highest-scored good images and the
//!   lowest-scored defective ones (each marked a false positive / negative
//!   when it is on the wrong side of the threshold), as the crop the model
//!   saw, and its anomaly map over it on ONE colour scale for every image
//!   of the page (the range of the maps shown, so that the same colour is
//!   the same map value everywhere), with the ground-truth contour when
//!   the image has a mask;
//! - the provenance of the run.
//!
//! Only the worst cases get images, so the page of a 50,000-image run is
//! as light as that of a small one (README gives the measured size and
//! time). The folder appears whole or not at all: it is written as a
//! hidden sibling and renamed into place ([`ReportDir`]).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use rayon::prelude::*;

use super::plot;
use super::report::{Metric, Report};
use crate::data::decode::load_rgb;
use crate::data::map_geometry::MapGeometry;
use crate::data::mask::load_mask;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::io::checkpoint::CheckpointMeta;
use crate::io::npy;
use crate::metrics::overlay::{self, MapView, Overlay, Scale};
use crate::{Error, Result};

/// One scored image that may be shown as a worst case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its line in the input (for error messages).
    pub line: usize,
    pub image: PathBuf,
    pub score: f64,
    pub anomalous: bool,
    pub map: Option<PathBuf>,
    pub mask: Option<PathBuf>,
}

/// The checkpoint the records were scored with, when the report is told.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub path: PathBuf,
    pub sha256: String,
    pub meta: CheckpointMeta,
}

/// Where the run came from, shown at the top of the page.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The input file (or "stdin").
    pub source: String,
    pub checkpoint: Option<CheckpointInfo>,
    /// The distinct `"model"` ids the lines carry, if any.
    pub models: Vec<String>,
    /// Resize and crop of the photos and masks, and where they came from.
    pub geometry: MapGeometry,
    pub geometry_from: &'static str,
    /// The ground-truth rule (`> T`) and the AUPRO FPR limit; `None` when
    /// image-only.
    pub mask_threshold: Option<f64>,
    pub fpr_limit: Option<f64>,
    /// When the report was written (UTC, RFC 3339).
    pub created: String,
    /// The suite's version.
    pub version: &'static str,
}

/// Report settings.
#[derive(Debug, Clone, Copy)]
pub struct HtmlOptions {
    /// Worst cases shown per class and side (good / defective).
    pub worst: usize,
    /// FPR limit of AUPRO (the PRO chart's x axis).
    pub fpr_limit: f64,
    /// Mask values above this are defect pixels (the contour).
    pub mask_threshold: f32,
}

/// The threshold the page decides with, and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdRule {
    /// The checkpoint's calibration (its rule name, e.g. "target-fpr").
    Calibrated(String),
    /// `--target-fpr`.
    TargetFpr(f64),
    /// The F1-optimal threshold of each class.
    F1,
}

impl ThresholdRule {
    fn describe(&self) -> String {
        match self {
            ThresholdRule::Calibrated(rule) => format!("calibrated in the checkpoint (rule {rule})"),
            ThresholdRule::TargetFpr(t) => format!("false positive rate at most {t} on the good images (--target-fpr)"),
            ThresholdRule::F1 => "F1-optimal per class (no calibration, no --target-fpr)".to_string(),
        }
    }

    fn short(&self) -> &'static str {
        match self {
            ThresholdRule::Calibrated(_) => "calibrated",
            ThresholdRule::TargetFpr(_) => "target FPR",
            ThresholdRule::F1 => "F1-optimal",
        }
    }
}

/// What was written, for the command's summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Files in the folder, index.html included.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Longest side of the photos and overlays on the page: large enough to
/// see a defect, small enough that hundreds of cases stay a few megabytes.
const MAX_SIDE: u32 = 256;

/// JPEG quality of the photos and overlays (photographs: JPEG is ~10x
/// smaller than PNG at no visible loss).
const JPEG_QUALITY: u8 = 85;

/// Weight of the heatmap over the photo (the overlay module's default).
const ALPHA: f32 = 0.5;

/// The report folder while it is being written: a hidden sibling of the
/// destination, renamed into place by [`ReportDir::commit`] and removed if
/// dropped before.
#[derive(Debug)]
pub struct ReportDir {
    staging: PathBuf,
    /// Where an earlier report at `dest` is moved while the new one is
    /// renamed in.
    aside: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl ReportDir {
    /// Creates the staging folder beside `dest`. Refuses a `dest` that
    /// exists and is neither an empty folder nor a report (a folder with
    /// `index.html`), so that a mistyped path never replaces other files.
    pub fn create(dest: &Path) -> Result<ReportDir> {
        let name = dest.file_name().filter(|n| !n.is_empty() && *n != "..").ok_or_else(|| {
            Error::config(format!(
                "--html {}: give a folder name (the report is written as DIR/index.html)",
                dest.display()
            ))
        })?;
        if dest.exists() {
            if !dest.is_dir() {
                return Err(Error::config(format!("--html {}: exists and is not a folder", dest.display())));
            }
            let mut entries = fs::read_dir(dest).map_err(|e| Error::io(dest, e))?;
            if entries.next().is_some() && !dest.join("index.html").is_file() {
                return Err(Error::config(format!(
                    "--html {}: the folder exists and holds files but no index.html; refusing to replace it",
                    dest.display()
                )));
            }
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::config(format!(
                "--html {}: folder {} does not exist",
                dest.display(),
                parent.display()
            )));
        }
        let hidden = |what: &str| parent.join(format!(".{}.{what}-{}", name.to_string_lossy(), std::process::id()));
        let (staging, aside) = (hidden("partial"), hidden("old"));
        // Leftovers of a killed run that had the same process id.
        let _ = fs::remove_dir_all(&staging);
        let _ = fs::remove_dir_all(&aside);
        fs::create_dir(&staging).map_err(|e| {
            Error::io(dest, std::io::Error::new(e.kind(), format!("cannot write in {}: {e}", parent.display())))
        })?;
        Ok(ReportDir { staging, aside, dest: dest.to_path_buf(), committed: false })
    }

    /// Where files go until the commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Puts the folder in place: an earlier report at the destination is
    /// moved aside, the new one renamed in, the old one removed.
    pub fn commit(mut self) -> Result<()> {
        let aside = self.aside.clone();
        let had_old = self.dest.exists();
        if had_old {
            fs::rename(&self.dest, &aside).map_err(|e| Error::io(&self.dest, e))?;
        }
        if let Err(e) = fs::rename(&self.staging, &self.dest) {
            if had_old {
                let _ = fs::rename(&aside, &self.dest);
            }
            return Err(Error::io(&self.dest, e));
        }
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        Ok(())
    }
}

impl Drop for ReportDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// The per-class threshold in use, and its rule.
pub fn thresholds_in_use(
    report: &Report,
    checkpoint: Option<&CheckpointInfo>,
    default_class: &str,
) -> (ThresholdRule, Vec<Option<f64>>) {
    if let Some(cal) = checkpoint.and_then(|c| c.meta.calibration.as_ref()) {
        let per_class = report
            .classes
            .iter()
            .map(|c| {
                let class = (c.name != default_class || cal.image.per_class.contains_key(&c.name)).then_some(&*c.name);
                Some(cal.image.for_class(class))
            })
            .collect();
        return (ThresholdRule::Calibrated(cal.rule.clone()), per_class);
    }
    if let Some(t) = report.target_fpr {
        return (
            ThresholdRule::TargetFpr(t),
            report.classes.iter().map(|c| c.target.as_ref().map(|t| t.threshold)).collect(),
        );
    }
    (ThresholdRule::F1, report.classes.iter().map(|c| c.image_f1_threshold).collect())
}

/// The worst cases of one class: the `n` highest-scored good images and
/// the `n` lowest-scored defective ones (ties in input order).
pub fn worst_cases(cases: &[Case], n: usize) -> (Vec<&Case>, Vec<&Case>) {
    let mut good: Vec<&Case> = cases.iter().filter(|c| !c.anomalous).collect();
    let mut defective: Vec<&Case> = cases.iter().filter(|c| c.anomalous).collect();
    good.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.line.cmp(&b.line)));
    defective.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.line.cmp(&b.line)));
    good.truncate(n);
    defective.truncate(n);
    (good, defective)
}

/// A worst case with its files on the page.
struct Shown<'a> {
    case: &'a Case,
    class: usize,
    photo: String,
    overlay: Option<String>,
}

/// Writes the report into `dir` (a [`ReportDir::path`]): the page and its
/// images. `cases[k]` are the scored images of `report.classes[k]`.
pub fn write(
    dir: &Path,
    report: &Report,
    cases: &[Vec<Case>],
    prov: &Provenance,
    opts: &HtmlOptions,
    default_class: &str,
) -> Result<Written> {
    let (rule, thresholds) = thresholds_in_use(report, prov.checkpoint.as_ref(), default_class);
    let prep = Preprocess::new(prov.geometry.resize, prov.geometry.crop, ResizeBackend::Pil)?;
    let names = class_file_names(report);

    // Charts.
    let mut charts: Vec<Vec<(&'static str, String)>> = Vec::new();
    for (k, c) in report.classes.iter().enumerate() {
        let mut files = Vec::new();
        for (suffix, svg) in plot::class_charts(c, opts.fpr_limit) {
            let file = format!("{}-{suffix}.svg", names[k]);
            write_file(&dir.join(&file), svg.as_bytes())?;
            files.push((suffix, file));
        }
        let scores = cases.get(k).map(Vec::as_slice).unwrap_or(&[]);
        if !scores.is_empty() {
            let good: Vec<f64> = scores.iter().filter(|c| !c.anomalous).map(|c| c.score).collect();
            let defective: Vec<f64> = scores.iter().filter(|c| c.anomalous).map(|c| c.score).collect();
            let label = thresholds[k].map(|t| format!("{} threshold {}", rule.short(), short_number(t)));
            let svg = plot::histogram(
                &format!("{} — image scores", c.name),
                &good,
                &defective,
                thresholds[k].zip(label.as_deref()),
            );
            let file = format!("{}-scores.svg", names[k]);
            write_file(&dir.join(&file), svg.as_bytes())?;
            files.push(("scores", file));
        }
        charts.push(files);
    }

    // Worst cases: one colour scale over every map shown.
    let mut picked: Vec<(usize, &Case, &'static str, usize)> = Vec::new();
    for (k, class_cases) in cases.iter().enumerate() {
        let (good, defective) = worst_cases(class_cases, opts.worst);
        picked.extend(good.into_iter().enumerate().map(|(i, c)| (k, c, "good", i + 1)));
        picked.extend(defective.into_iter().enumerate().map(|(i, c)| (k, c, "defective", i + 1)));
    }
    // Errors name the record's line as the rest of dinomaly-metrics does.
    let at_line = |case: &Case, e: Error| Error::Record {
        source_name: prov.source.clone(),
        line: case.line,
        reason: e.to_string(),
    };
    let ranges: Vec<Result<Option<(f32, f32)>>> =
        picked.par_iter().map(|(_, c, _, _)| map_range(c).map_err(|e| at_line(c, e))).collect();
    let mut scale: Option<(f32, f32)> = None;
    for r in ranges {
        if let Some((lo, hi)) = r? {
            scale = Some(scale.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    let fixed = scale.map(|(lo, hi)| {
        // A constant map set still needs low < high.
        let hi = if hi > lo { hi } else { lo + lo.abs().max(1.0) * 1e-6 };
        Scale::Fixed { low: lo, high: hi }
    });
    let shown: Vec<Result<Shown>> = picked
        .par_iter()
        .map(|&(k, case, side, rank)| {
            let stem = format!("{}-{side}-{rank}", names[k]);
            render_case(dir, &stem, case, &prep, fixed, opts.mask_threshold)
                .map(|(photo, overlay)| Shown { case, class: k, photo, overlay })
                .map_err(|e| at_line(case, e))
        })
        .collect();
    let shown: Vec<Shown> = shown.into_iter().collect::<Result<_>>()?;

    let page = page(report, cases, prov, &rule, &thresholds, &names, &charts, &shown, scale);
    write_file(&dir.join("index.html"), page.as_bytes())?;
    let mut written = Written { files: 0, bytes: 0 };
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        written.files += 1;
        written.bytes += entry.metadata().map_err(|e| Error::io(entry.path(), e))?.len();
    }
    Ok(written)
}

/// File-name-safe, distinct names of the classes ("NN-stem").
fn class_file_names(report: &Report) -> Vec<String> {
    report.classes.iter().enumerate().map(|(k, c)| format!("{:02}-{}", k + 1, plot::file_stem(&c.name))).collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The (min, max) of a case's map, or `None` without one.
fn map_range(case: &Case) -> Result<Option<(f32, f32)>> {
    let Some(path) = &case.map else { return Ok(None) };
    let map = npy::read_f32_2d(path)?;
    if map.data.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("{}: the map has non-finite values", path.display())));
    }
    Ok(Some(map.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))))
}

/// Writes the photo (the crop the model saw) and, with a map, the overlay
/// with the ground-truth contour; returns their file names.
fn render_case(
    dir: &Path,
    stem: &str,
    case: &Case,
    prep: &Preprocess,
    scale: Option<Scale>,
    mask_threshold: f32,
) -> Result<(String, Option<String>)> {
    let crop = prep.visible_crop(&load_rgb(&case.image)?);
    let (w, h) = crop.dimensions();
    let factor = (MAX_SIDE as f64 / w.max(h) as f64).min(1.0);
    let size = (((w as f64 * factor).round() as u32).max(1), ((h as f64 * factor).round() as u32).max(1));
    let photo = if size == (w, h) { crop } else { imageops::resize(&crop, size.0, size.1, FilterType::Triangle) };
    let photo_name = format!("{stem}-photo.jpg");
    write_jpeg(&dir.join(&photo_name), &photo)?;
    let (Some(map_path), Some(scale)) = (&case.map, scale) else { return Ok((photo_name, None)) };
    let map = npy::read_f32_2d(map_path)?;
    let view = MapView { values: &map.data, height: map.rows, width: map.cols };
    let mut over = overlay::render(&photo, view, &Overlay { scale, alpha: ALPHA })?;
    if let Some(mask) = &case.mask {
        // The mask brought to the photo as the evaluation brings it to the
        // map: resized and cropped like the image, then nearest.
        let values = load_mask(mask, prep, (size.1 as usize, size.0 as usize))?;
        let defect: Vec<bool> = values.iter().map(|&v| v > mask_threshold).collect();
        draw_contour(&mut over, &defect);
    }
    let overlay_name = format!("{stem}-map.jpg");
    write_jpeg(&dir.join(&overlay_name), &over)?;
    Ok((photo_name, Some(overlay_name)))
}

/// Paints white every pixel whose 3x3 neighbourhood holds both defect and
/// good pixels: a two-pixel line along the ground truth's edge.
fn draw_contour(image: &mut RgbImage, defect: &[bool]) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if defect.len() != w * h {
        return;
    }
    for y in 0..h {
        for x in 0..w {
            let (mut any_in, mut any_out) = (false, false);
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    if defect[yy * w + xx] {
                        any_in = true;
                    } else {
                        any_out = true;
                    }
                }
            }
            if any_in && any_out {
                image.put_pixel(x as u32, y as u32, Rgb([255, 255, 255]));
            }
        }
    }
}

fn write_jpeg(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
        .encode_image(image)
        .map_err(|e| Error::format(path, format!("cannot encode jpeg: {e}")))?;
    write_file(path, &bytes)
}

/// A number as the JSON report writes it (shortest round-trip form).
fn full_number(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string())
}

/// A score or threshold for people: four significant digits.
fn short_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 10) as usize;
    format!("{v:.decimals$}")
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The metrics of the table (the paper's seven; the exact AUPRO is in the
/// JSON report).
fn table_metrics(report: &Report) -> Vec<Metric> {
    report.mean.iter().map(|m| m.0).filter(|&m| m != Metric::AuproExact).collect()
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1em 0 0.4em; }
table.metrics { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.metrics th, table.metrics td { padding: 0.25em 0.7em; border-bottom: 1px solid #e3e3e3; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { cursor: pointer; user-select: none; background: #f3f3f3; }
table.metrics thead th[data-order="asc"]::after { content: " \25B2"; }
table.metrics thead th[data-order="desc"]::after { content: " \25BC"; }
table.metrics tfoot td { font-weight: bold; border-top: 2px solid #999; }
td.weak { background: #fde2e1; }
.note { color: #555; font-size: 0.92em; }
.warnings { background: #fff6d6; border: 1px solid #e6c84f; padding: 0.5em 1em; }
#broken { display: none; background: #fde2e1; border: 1px solid #d62728; padding: 0.5em 1em; }
dl.prov { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.93em; }
dl.prov dt { font-weight: bold; }
dl.prov dd { margin: 0; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 0.5em; }
.charts img { width: 324px; height: 270px; border: 1px solid #ddd; }
.cases { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure.case { margin: 0; padding: 0.4em; border: 1px solid #ddd; border-radius: 4px; font-size: 0.85em; }
figure.case.wrong { border: 2px solid #d62728; }
figure.case img { width: 160px; height: auto; display: inline-block; vertical-align: top; }
figure.case figcaption { max-width: 326px; }
figure.case .path { word-break: break-all; }
.verdict { font-weight: bold; }
.wrong .verdict { color: #d62728; }
.colourbar { display: inline-block; width: 240px; height: 12px; vertical-align: middle; border: 1px solid #888; }
"#;

/// Sorts the metrics table by the clicked column (numbers by their
/// `data-value`, empty cells last; the mean row stays in the footer; a
/// `#sort=KEY` or `#sort=-KEY` link opens it sorted), and
/// shows a banner when an image of the page cannot be displayed (a folder
/// copied without its images), recording the counts on `<html>`.
const SCRIPT: &str = r#"
document.querySelectorAll('table.metrics thead th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.getAttribute('data-order') !== 'asc';
    table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('data-order'); });
    th.setAttribute('data-order', asc ? 'asc' : 'desc');
    var key = function (row) { return row.cells[col].getAttribute('data-value'); };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === '' || y === '') { return (x === '') - (y === ''); }
      var nx = Number(x), ny = Number(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
// A link may name the order: index.html#sort=i_auroc (ascending) or
// #sort=-i_auroc (descending), by the columns' data-key.
var wanted = /^#sort=(-?)([a-z0-9_]+)$/.exec(location.hash);
if (wanted) {
  var th = document.querySelector('table.metrics thead th[data-key="' + wanted[2] + '"]');
  if (th) { th.click(); if (wanted[1] === '-') { th.click(); } }
}
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.documentElement.setAttribute('data-images', String(images.length));
  document.documentElement.setAttribute('data-images-broken', String(broken.length));
  if (broken.length > 0) {
    var note = document.getElementById('broken');
    note.textContent = broken.length + ' of ' + images.length +
      ' images of this page cannot be shown (copy the whole folder, not only index.html): ' +
      broken.map(function (i) { return i.getAttribute('src'); }).join(', ');
    note.style.display = 'block';
  }
});
"#;

#[allow(clippy::too_many_arguments)]
fn page(
    report: &Report,
    cases: &[Vec<Case>],
    prov: &Provenance,
    rule: &ThresholdRule,
    thresholds: &[Option<f64>],
    names: &[String],
    charts: &[Vec<(&'static str, String)>],
    shown: &[Shown],
    scale: Option<(f32, f32)>,
) -> String {
    let metrics = table_metrics(report);
    let images: usize = report.classes.iter().map(|c| c.images).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>dinomaly report — {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&prov.source)
    );
    let _ = writeln!(s, "<h1>dinomaly evaluation report</h1>");
    let _ = writeln!(
        s,
        "<p class=\"note\">{} images in {} classes from {}; {} failed to score. Written {} by dinomaly-metrics {}.</p>",
        images,
        report.classes.len(),
        esc(&prov.source),
        report.failed(),
        esc(&prov.created),
        prov.version
    );
    let _ = writeln!(s, "<div id=\"broken\"></div>");
    if !report.warnings.is_empty() {
        let _ = writeln!(s, "<div class=\"warnings\"><strong>Warnings</strong><ul>");
        for w in &report.warnings {
            let _ = writeln!(s, "<li>{}</li>", esc(w));
        }
        let _ = writeln!(s, "</ul></div>");
    }

    // The table.
    let _ = writeln!(
        s,
        "<h2 id=\"metrics\">Metrics</h2>\n<p class=\"note\">Percent, as in the paper; the mean is over classes. Click a column to sort; cells below the column's mean are shaded.</p>"
    );
    let _ = writeln!(s, "<table class=\"metrics\" id=\"metrics-table\">\n<thead><tr><th data-key=\"class\">Class</th>");
    for m in &metrics {
        let _ = write!(s, "<th data-key=\"{}\">{}</th>", m.key(), m.title());
    }
    let _ = writeln!(s, "<th data-key=\"images\">Images</th><th data-key=\"defective\">Defective</th><th data-key=\"failed\">Failed</th><th data-key=\"threshold\">Threshold</th></tr></thead>\n<tbody>");
    let mean_of = |m: Metric| report.mean.iter().find(|x| x.0 == m).and_then(|x| x.1);
    let cell = |v: Option<f64>, weak: bool| match v {
        Some(x) => format!(
            "<td data-value=\"{}\"{}>{:.1}</td>",
            full_number(x),
            if weak { " class=\"weak\"" } else { "" },
            100.0 * x
        ),
        None => "<td data-value=\"\">–</td>".to_string(),
    };
    for (k, c) in report.classes.iter().enumerate() {
        let _ = write!(
            s,
            "<tr data-class=\"{}\"><td data-value=\"{}\"><a href=\"#class-{}\">{}</a></td>",
            esc(&c.name),
            esc(&c.name),
            names[k],
            esc(&c.name)
        );
        for &m in &metrics {
            let v = c.get(m);
            let weak = matches!((v, mean_of(m)), (Some(v), Some(mean)) if v < mean);
            s.push_str(&cell(v, weak));
        }
        let _ = writeln!(
            s,
            "<td data-value=\"{0}\">{0}</td><td data-value=\"{1}\">{1}</td><td data-value=\"{2}\">{2}</td><td data-value=\"{3}\">{4}</td></tr>",
            c.images,
            c.anomalous,
            c.failed,
            thresholds[k].map(full_number).unwrap_or_default(),
            thresholds[k].map_or_else(|| "–".to_string(), short_number)
        );
    }
    let _ = write!(s, "</tbody>\n<tfoot><tr data-class=\"mean\"><td>Mean</td>");
    for &m in &metrics {
        s.push_str(&cell(mean_of(m), false));
    }
    let anomalous: usize = report.classes.iter().map(|c| c.anomalous).sum();
    let _ = writeln!(
        s,
        "<td>{images}</td><td>{anomalous}</td><td>{}</td><td></td></tr></tfoot>\n</table>",
        report.failed()
    );

    // Threshold and provenance.
    let _ = writeln!(s, "<h2 id=\"provenance\">Run</h2>\n<dl class=\"prov\">");
    let mut item = |k: &str, v: String| {
        let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    item("Records", esc(&prov.source));
    item(
        "Images",
        format!(
            "{images} scored ({anomalous} defective) in {} classes; {} failed to score",
            report.classes.len(),
            report.failed()
        ),
    );
    item("Threshold in use", esc(&format!("{} — anomalous when score > threshold", rule.describe())));
    match &prov.checkpoint {
        Some(ck) => {
            item("Checkpoint", esc(&ck.path.display().to_string()));
            item("Checkpoint sha256", format!("<code>{}</code>", esc(&ck.sha256)));
            let e = &ck.meta.encoder;
            item("Backbone", esc(&format!("{} (weights sha256 {})", e.backbone, e.weights_sha256)));
            item(
                "Model input (checkpoint)",
                esc(&format!(
                    "resize {}x{}, crop {}x{}, {} pre-processing",
                    e.resize.0, e.resize.1, e.crop.0, e.crop.1, e.preprocess
                )),
            );
            if let Some(cal) = &ck.meta.calibration {
                let target = cal.target_fpr.map(|t| format!(", target FPR {t}")).unwrap_or_default();
                item(
                    "Calibration",
                    esc(&format!(
                        "rule {}{target}, global threshold {}, {} per-class, made {} from model {}",
                        cal.rule,
                        short_number(cal.image.global),
                        cal.image.per_class.len(),
                        cal.created,
                        cal.model
                    )),
                );
            } else {
                item("Calibration", "none in the checkpoint".to_string());
            }
        }
        None => item(
            "Checkpoint",
            "not given (pass <code>--checkpoint CKPT</code> for its sha256, backbone and calibrated thresholds)"
                .to_string(),
        ),
    }
    if !prov.models.is_empty() {
        item("Model id (records)", esc(&prov.models.join(", ")));
    }
    let g = prov.geometry;
    item(
        "Resize / crop",
        esc(&format!(
            "resize {}x{}, centre crop {}x{} ({}); photos are this crop",
            g.resize.0, g.resize.1, g.crop.0, g.crop.1, prov.geometry_from
        )),
    );
    match (prov.mask_threshold, prov.fpr_limit) {
        (Some(t), Some(l)) => item(
            "Ground truth",
            esc(&format!("a mask pixel is a defect when its value in [0, 1] is > {t}; AUPRO up to FPR {l}")),
        ),
        _ => item("Ground truth", "image labels only (--image-only): no pixel metrics".to_string()),
    }
    if let Some((lo, hi)) = scale {
        item(
            "Map colours",
            format!(
                "one scale for every map on this page: <span class=\"colourbar\" style=\"background: {}\"></span> {} to {}",
                jet_gradient(),
                short_number(lo as f64),
                short_number(hi as f64)
            ),
        );
    }
    item("Written", esc(&format!("{} by dinomaly-metrics {}", prov.created, prov.version)));
    let _ = writeln!(s, "</dl>");

    // Classes.
    for (k, c) in report.classes.iter().enumerate() {
        let _ = writeln!(s, "<h2 id=\"class-{}\">{}</h2>", names[k], esc(&c.name));
        let threshold = thresholds[k].map_or_else(|| "none (undefined for this class)".to_string(), short_number);
        let _ = writeln!(
            s,
            "<p class=\"note\">{} images, {} defective, {} failed to score; threshold in use ({}): {}.</p>",
            c.images,
            c.anomalous,
            c.failed,
            rule.short(),
            esc(&threshold)
        );
        if !charts[k].is_empty() {
            let _ = writeln!(s, "<div class=\"charts\">");
            for (suffix, file) in &charts[k] {
                let _ = writeln!(s, "<img src=\"{}\" alt=\"{} {}\">", esc(file), esc(&c.name), suffix);
            }
            let _ = writeln!(s, "</div>");
        }
        let class_cases: Vec<&Shown> = shown.iter().filter(|x| x.class == k).collect();
        for (anomalous, title, wrong_name) in [
            (false, "Highest-scored good images", "false positive"),
            (true, "Lowest-scored defective images", "false negative"),
        ] {
            let side: Vec<&&Shown> = class_cases.iter().filter(|x| x.case.anomalous == anomalous).collect();
            if side.is_empty() {
                continue;
            }
            let _ = writeln!(s, "<h3>{title}</h3>\n<div class=\"cases\">");
            for x in side {
                let wrong = thresholds[k].is_some_and(|t| (x.case.score > t) != anomalous);
                let verdict = match thresholds[k] {
                    None => "no threshold",
                    Some(_) if wrong => wrong_name,
                    Some(_) => "correct",
                };
                let name = short_path(&x.case.image);
                let _ = write!(
                    s,
                    "<figure class=\"case{}\" data-score=\"{}\"><a href=\"{2}\"><img src=\"{2}\" alt=\"photo of {3}\"></a>",
                    if wrong { " wrong" } else { "" },
                    full_number(x.case.score),
                    esc(&x.photo),
                    esc(&name)
                );
                if let Some(o) = &x.overlay {
                    let _ = write!(
                        s,
                        "<a href=\"{0}\"><img src=\"{0}\" alt=\"anomaly map of {1}\"></a>",
                        esc(o),
                        esc(&name)
                    );
                }
                let mask_note = match (&x.overlay, &x.case.mask) {
                    (Some(_), Some(_)) => " · white line: ground truth",
                    (None, _) => " · no map",
                    _ => "",
                };
                let _ = writeln!(
                    s,
                    "<figcaption><span class=\"verdict\">{}</span> · score {} vs threshold {}{}<br><span class=\"path\" title=\"{}\">{}</span></figcaption></figure>",
                    verdict,
                    short_number(x.case.score),
                    esc(&threshold),
                    mask_note,
                    esc(&x.case.image.display().to_string()),
                    esc(&name)
                );
            }
            let _ = writeln!(s, "</div>");
        }
        if cases.get(k).is_some_and(|c| c.is_empty()) {
            let _ = writeln!(s, "<p class=\"note\">No scored images: every record of this class failed to score.</p>");
        }
    }
    let _ = writeln!(s, "<script>{SCRIPT}</script>\n</body>\n</html>");
    s
}

/// The last two components of an image path ("crack/000.png"): data sets
/// number their images per defect type, so the file name alone repeats.
fn short_path(path: &Path) -> String {
    let parts: Vec<String> =
        path.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The overlay colormap as a CSS gradient, for the colour bar.
fn jet_gradient() -> String {
    let stops: Vec<String> = (0..=8)
        .map(|i| {
            let t = i as f32 / 8.0;
            let c = overlay::jet(t);
            format!("rgb({},{},{}) {}%", c[0], c[1], c[2], (t * 100.0).round())
        })
        .collect();
    format!("linear-gradient(to right, {})", stops.join(", "))
}

pub use crate::clock::utc_now;

#[cfg(test)]
mod tests {
    use super::*;

    fn case(line: usize, score: f64, anomalous: bool) -> Case {
        Case { line, image: PathBuf::from(format!("{line}.png")), score, anomalous, map: None, mask: None }
    }

    #[test]
    fn worst_cases_are_the_highest_good_and_lowest_defective_scores() {
        let cases = vec![
            case(1, 0.2, false),
            case(2, 0.9, false),
            case(3, 0.5, true),
            case(4, 0.9, false),
            case(5, 0.1, true),
            case(6, 0.7, true),
        ];
        let (good, defective) = worst_cases(&cases, 2);
        assert_eq!(good.iter().map(|c| c.line).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(defective.iter().map(|c| c.line).collect::<Vec<_>>(), vec![5, 3]);
        let (good, defective) = worst_cases(&cases, 0);
        assert!(good.is_empty() && defective.is_empty());
    }

    #[test]
    fn contour_is_drawn_on_both_sides_of_the_edge_only() {
        let mut image = RgbImage::new(6, 6);
        let mut defect = vec![false; 36];
        for y in 2..4 {
            for x in 2..4 {
                defect[y * 6 + x] = true;
            }
        }
        draw_contour(&mut image, &defect);
        let white = |x: u32, y: u32| image.get_pixel(x, y)[0] == 255;
        assert!(white(2, 2) && white(1, 1) && white(4, 4));
        assert!(!white(0, 0) && !white(5, 5) && !white(0, 3));
    }

    #[test]
    fn report_dir_is_renamed_into_place_and_refuses_foreign_folders() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("report");
        let dir = ReportDir::create(&dest).unwrap();
        fs::write(dir.path().join("index.html"), "one").unwrap();
        assert!(!dest.exists(), "nothing at the destination before the commit");
        dir.commit().unwrap();
        assert_eq!(fs::read_to_string(dest.join("index.html")).unwrap(), "one");
        // A second report replaces the first.
        let dir = ReportDir::create(&dest).unwrap();
        fs::write(dir.path().join("index.html"), "two").unwrap();
        dir.commit().unwrap();
        assert_eq!(fs::read_to_string(dest.join("index.html")).unwrap(), "two");
        // Dropped before the commit: nothing is left, the old one stays.
        let dir = ReportDir::create(&dest).unwrap();
        fs::write(dir.path().join("index.html"), "three").unwrap();
        drop(dir);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
        assert_eq!(fs::read_to_string(dest.join("index.html")).unwrap(), "two");
        // A folder of other files is not replaced.
        let other = root.path().join("photos");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("a.jpg"), "x").unwrap();
        let err = ReportDir::create(&other).unwrap_err().to_string();
        assert!(err.contains("refusing to replace"), "{err}");
        assert!(ReportDir::create(&root.path().join("missing/report")).is_err());
    }

    #[test]
    fn short_numbers_keep_four_significant_digits() {
        assert_eq!(short_number(0.123456), "0.1235");
        assert_eq!(short_number(12.3456), "12.35");
        assert_eq!(short_number(1234.4), "1234");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(full_number(0.1), "0.1");
    }
}
