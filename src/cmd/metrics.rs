//! `dinomaly-metrics`: the paper's seven metrics (and the exact AUPRO) per
//! class and as the mean over classes, from the JSON lines of
//! `dinomaly-score`.
//!
//! Records are read first (cheap, and every malformed line is reported
//! before any heavy work); then maps and masks are loaded on rayon threads
//! in chunks, reduced to per-class pixel lists as they come, and each
//! class is evaluated after one sort of its pixels.
//!
//! `--html DIR` also writes the report page ([`crate::metrics::html`]):
//! its folder is claimed before any heavy work, so that an unwritable one
//! fails at once.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::cli::args::QuietArgs;
use crate::cli::output::DataOut;
use crate::cli::progress;
use crate::cli::ranges;
use crate::data::map_geometry::MapGeometry;
use crate::data::mask::load_mask;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::data::record::{parse_scored_line, ScoredRecord};
use crate::io::{atomic, checkpoint, hash, npy};
use crate::metrics::html;
use crate::metrics::pixels::{self, PixelOptions, PixelSet, ReducedImage};
use crate::metrics::plot;
use crate::metrics::report::{self, ClassInput, Options, Report};
use crate::{Error, Result};

const TOOL: &str = "dinomaly-metrics";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document: settings, per-class metrics and thresholds, the
    /// mean, warnings.
    Json,
    /// One row per class then `mean`; fractions, empty cells for null.
    Csv,
    /// The paper's table: percent, one decimal, classes as rows, mean last.
    Markdown,
}

/// Computes I-AUROC, I-AP, I-F1max, P-AUROC, P-AP, P-F1max and AUPRO per
/// class and their mean over classes, exactly as the official evaluation.
///
/// Input: JSON lines from dinomaly-score, each with "label" (0 normal, 1
/// anomalous), "score", and for pixel metrics "map" (a float32 (H, W) .npy
/// file) and "mask" (the ground-truth image; normal images may have none).
/// "class" groups the lines; lines without one form the class "default".
/// Lines with an "error" field (images that failed to score) are left out
/// of the figures and counted in every format ("failed"), unless a later
/// line scores the same image.
///
/// Ground truth as the official code: the mask is resized (PIL bilinear)
/// to --resize, centre-cropped to --crop, resized (nearest) to the map size,
/// and a pixel is anomalous when its value in [0, 1] exceeds
/// --mask-threshold (0: the official rule; 0.5: the common one).
///
/// Thresholds use the rule "anomalous when score > threshold".
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-metrics", version, allow_negative_numbers = true)]
pub struct Args {
    /// Read records from FILE instead of stdin ('-' is stdin).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,

    /// Write ROC and PR curves per class (image and pixel level) and the
    /// PRO curve of AUPRO (up to --fpr-limit, its area shaded) as SVG files
    /// into DIR (created if missing): CLASS-roc.svg, CLASS-pr.svg,
    /// CLASS-pro.svg.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,

    /// Image metrics only: maps and masks are neither needed nor read.
    #[arg(long)]
    pub image_only: bool,

    /// False positive rate limit of both AUPRO variants, in (0, 1]
    /// (official: 0.3; official AUPRO keeps points with FPR < limit).
    #[arg(long, default_value_t = 0.3, value_name = "FPR", value_parser = ranges::FRACTION_ABOVE_ZERO, conflicts_with = "image_only", allow_hyphen_values = true)]
    pub fpr_limit: f64,

    /// A GT pixel is anomalous when its mask value in [0, 1] is greater than
    /// this, in [0, 1): 0 is the official rule, 0.5 the common one.
    #[arg(long, default_value_t = 0.0, value_name = "T", value_parser = ranges::FRACTION_BELOW_ONE, conflicts_with = "image_only", allow_hyphen_values = true)]
    pub mask_threshold: f64,

    /// Side the mask is resized to before the centre crop, as the images
    /// were (default: the "map_geometry" dinomaly-score writes beside each
    /// map, else 448).
    #[arg(long, value_name = "PIXELS", value_parser = ranges::at_least::<usize>(1), conflicts_with = "image_only", allow_hyphen_values = true)]
    pub resize: Option<usize>,

    /// Side of the centre crop of the resized mask, the model's input
    /// (default: the lines' "map_geometry", else 392).
    #[arg(long, value_name = "PIXELS", value_parser = ranges::at_least::<usize>(1), conflicts_with = "image_only", allow_hyphen_values = true)]
    pub crop: Option<usize>,

    /// Also report, per class and overall, the threshold reaching this false
    /// positive rate on the normal images, in [0, 1) (e.g. 0.01), with the
    /// FPR and TPR it reaches: in JSON under "thresholds", in CSV three more
    /// columns (the mean row: all images pooled), in markdown a second table.
    #[arg(long, value_name = "FPR", value_parser = ranges::FRACTION_BELOW_ONE, allow_hyphen_values = true)]
    pub target_fpr: Option<f64>,

    /// Also write a report to look at into the folder DIR: DIR/index.html
    /// and its images (self-contained: no network needed to view it). The
    /// table of --format json's numbers (sortable), per class the ROC, PR
    /// and PRO curves, the histogram of good and defective scores with the
    /// threshold in use (the --checkpoint's calibrated one, else the
    /// --target-fpr one, else the F1-optimal one), the worst cases (see
    /// --worst) as the crop the model saw and its map on one colour scale
    /// for all images with the ground-truth contour, and the run's
    /// provenance. The folder is written under a hidden name beside DIR and
    /// renamed into place when complete; an existing DIR is replaced only if
    /// it is empty or holds an index.html. The images of the records must be
    /// readable for the worst cases; their maps are shown when the lines
    /// name them (also with --image-only).
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,

    /// Worst cases shown per class in the --html report: the N
    /// highest-scored good images and the N lowest-scored defective ones (0:
    /// none).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = ranges::at_least::<u8>(0), requires = "html", allow_hyphen_values = true)]
    pub worst: u8,

    /// The checkpoint the records were scored with, for the --html report:
    /// its sha256, backbone and pre-processing go into the provenance, and
    /// its calibrated thresholds (dinomaly-calibrate), when it has them,
    /// become the threshold in use. Records do not name their checkpoint,
    /// so the report only knows it from this flag.
    #[arg(long, short = 'c', value_name = "CKPT", requires = "html")]
    pub checkpoint: Option<PathBuf>,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// One usable input record.
#[derive(Debug, Clone)]
struct Job {
    line: usize,
    class: usize,
    anomalous: bool,
    score: f64,
    map: Option<PathBuf>,
    mask: Option<PathBuf>,
    /// The "map_geometry" of the line, when it has one.
    geometry: Option<MapGeometry>,
    /// The image (shown in the --html report).
    image: PathBuf,
    /// The line's "model" id, when it has one.
    model: Option<String>,
}

/// The geometry masks are brought to: the flags where given, else what the
/// lines say (all alike), else the official one.
fn mask_geometry(args: &Args, jobs: &[Job], source: &str) -> Result<(MapGeometry, &'static str)> {
    let mut from_lines: Option<(MapGeometry, usize)> = None;
    for job in jobs {
        let Some(g) = job.geometry else { continue };
        match from_lines {
            None => from_lines = Some((g, job.line)),
            Some((first, line)) if first != g => {
                return Err(Error::Record {
                    source_name: source.to_string(),
                    line: job.line,
                    reason: format!(
                    "its map_geometry {g:?} differs from line {line}'s {first:?}: score one model's outputs at a time"
                ),
                })
            }
            Some(_) => {}
        }
    }
    let lines = from_lines.map(|(g, _)| g);
    let from = match (args.resize.or(args.crop), lines) {
        (Some(_), _) => "--resize/--crop",
        (None, Some(_)) => "the lines' map_geometry",
        (None, None) => "the official default: the lines carry no map_geometry",
    };
    let base = lines.unwrap_or(MapGeometry::OFFICIAL);
    let chosen = MapGeometry {
        resize: args.resize.map_or(base.resize, |r| (r, r)),
        crop: args.crop.map_or(base.crop, |c| (c, c)),
    };
    if let Some(g) = lines.filter(|g| *g != chosen) {
        if !args.quiet.quiet {
            eprintln!(
                "{TOOL}: warning: the maps were made at resize {:?} crop {:?}, but --resize/--crop bring the masks to resize {:?} crop {:?}",
                g.resize, g.crop, chosen.resize, chosen.crop
            );
        }
    }
    Ok((chosen, from))
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::cli::stdio::refuse_dash(&[
        ("--plots", args.plots.as_deref(), "plots are written as files into a folder"),
        ("--html", args.html.as_deref(), "the report is a folder of files"),
        ("--checkpoint", args.checkpoint.as_deref(), "it is read for its metadata and sha256"),
    ])?;
    if let Some(dir) = &args.plots {
        atomic::check_writable_dir(dir)?;
    }
    // Before any heavy work: the folder can be written, the checkpoint read.
    let report_dir = args.html.as_deref().map(html::ReportDir::create).transpose()?;
    let checkpoint = match &args.checkpoint {
        Some(path) => Some(html::CheckpointInfo {
            meta: checkpoint::read_meta(path)?,
            sha256: hash::sha256_file(path)?,
            path: path.clone(),
        }),
        None => None,
    };
    let (source, reader): (String, Box<dyn Read>) = match args.input.as_deref() {
        None => ("stdin".to_string(), Box::new(std::io::stdin())),
        Some(p) if p == Path::new("-") => ("stdin".to_string(), Box::new(std::io::stdin())),
        Some(p) => (p.display().to_string(), Box::new(std::fs::File::open(p).map_err(|e| Error::io(p, e))?)),
    };
    let files = Files { maps_required: !args.image_only, read: !args.image_only || args.html.is_some() };
    let (classes, jobs, failed) = read_jobs(BufReader::new(reader), &source, files, args.quiet.quiet)?;
    if jobs.is_empty() {
        anyhow::bail!("{source}: no scored records to evaluate");
    }
    let mut inputs: Vec<ClassInput> = classes
        .iter()
        .map(|name| ClassInput {
            name: name.clone(),
            images: Vec::new(),
            pixels: (!args.image_only).then(PixelSet::new),
        })
        .collect();
    for job in &jobs {
        inputs[job.class].images.push((job.score, job.anomalous));
    }
    let mut map_size = None;
    let mut used_geometry = None;
    // Masks (and the report's photos) are brought to the maps' geometry.
    let geometry = if files.read { Some(mask_geometry(&args, &jobs, &source)?) } else { None };
    if let (false, Some((geometry, _))) = (args.image_only, geometry) {
        let prep = Preprocess::new(geometry.resize, geometry.crop, ResizeBackend::Pil)?;
        map_size =
            Some(reduce_pixels(&jobs, &mut inputs, &prep, args.mask_threshold as f32, &source, args.quiet.quiet)?);
        used_geometry = Some(geometry);
    }
    let opts = Options {
        pixel: PixelOptions { fpr_limit: args.fpr_limit, ..PixelOptions::default() },
        target_fpr: args.target_fpr,
        plots: args.plots.is_some() || args.html.is_some(),
    };
    let mut report = report::evaluate(inputs, &opts);
    report.count_failed(&failed);
    report.settings = settings(&args, map_size, used_geometry);
    for w in &report.warnings {
        eprintln!("{TOOL}: warning: {w}");
    }
    if let Some(dir) = &args.plots {
        write_plots(&report, dir, args.fpr_limit)?;
    }
    if let Some(dir) = report_dir {
        let geometry = geometry.unwrap_or((MapGeometry::OFFICIAL, "the official default"));
        write_html(&args, dir, &report, &jobs, checkpoint, geometry, &source)?;
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report.to_json())? + "\n",
        Format::Csv => report.to_csv(),
        Format::Markdown => report.to_markdown(),
    };
    let mut out = DataOut::stdout();
    std::io::Write::write_all(&mut out, text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The class of lines without "class".
pub const DEFAULT_CLASS: &str = "default";

/// A line with an "error" field: an image that failed to score.
struct FailedLine {
    line: usize,
    image: String,
    class: String,
    reason: String,
}

/// Which files of the lines are read.
#[derive(Debug, Clone, Copy)]
struct Files {
    /// Every scored line must name a map (and a defective one a mask).
    maps_required: bool,
    /// Maps, masks and map geometry are taken from the lines (pixel metrics
    /// or the report's worst cases).
    read: bool,
}

/// Parses every line; returns class names in order of first appearance,
/// the jobs, and per class the images that failed to score (lines with an
/// "error" field, each image once, none that a scored line also has: a
/// retry that worked).
fn read_jobs(
    reader: impl BufRead,
    source: &str,
    files: Files,
    quiet: bool,
) -> Result<(Vec<String>, Vec<Job>, Vec<usize>)> {
    let mut classes: Vec<String> = Vec::new();
    let mut jobs = Vec::new();
    let mut failed_lines: Vec<FailedLine> = Vec::new();
    let mut scored_images: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut classless = 0usize;
    for line in crate::data::record::lines(reader, source) {
        let (line_no, line) = line?;
        let bad = |reason: String| Error::Record { source_name: source.to_string(), line: line_no, reason };
        let Some(ScoredRecord { sample, scored }) = parse_scored_line(&line, source, line_no)? else {
            continue;
        };
        if sample.class.is_none() {
            classless += 1;
        }
        let class = sample.class.clone().unwrap_or_else(|| DEFAULT_CLASS.to_string());
        if let Some(reason) = scored.error {
            failed_lines.push(FailedLine {
                line: line_no,
                image: sample.image.to_string_lossy().into_owned(),
                class,
                reason,
            });
            continue;
        }
        scored_images.insert(sample.image.to_string_lossy().into_owned());
        let label =
            sample.label.ok_or_else(|| bad("the record has no \"label\" (0 normal, 1 anomalous)".to_string()))?;
        let score = scored
            .score
            .filter(|s| s.is_finite())
            .ok_or_else(|| bad("the record has no numeric \"score\" (is it dinomaly-score output?)".to_string()))?;
        let map = if !files.maps_required {
            let named = scored.map.as_deref().filter(|m| !m.is_empty() && files.read);
            named.map(PathBuf::from)
        } else {
            let map = scored.map.as_deref().filter(|m| !m.is_empty()).ok_or_else(|| {
                bad("the record has no \"map\" path (score with --maps-dir, or use --image-only)".to_string())
            })?;
            if label == 1 && sample.mask.is_none() {
                return Err(bad(
                    "an anomalous image without a \"mask\": pixel metrics need its ground truth (or use --image-only)"
                        .to_string(),
                ));
            }
            // Photo-space maps (dinomaly-score --map-space photo) have the
            // photo's size and a NaN border: the paper's pixel metrics are
            // defined on the crop.
            if let Some(space) = scored.map_space.as_deref().filter(|s| *s != "crop") {
                return Err(bad(format!(
                    "its map is in {space} space: pixel metrics need crop-space maps (score with --map-space crop, the default, or use --image-only)"
                )));
            }
            Some(PathBuf::from(map))
        };
        let geometry = scored.map_geometry.filter(|_| files.read);
        let class_idx = match classes.iter().position(|c| *c == class) {
            Some(k) => k,
            None => {
                classes.push(class);
                classes.len() - 1
            }
        };
        jobs.push(Job {
            line: line_no,
            class: class_idx,
            anomalous: label == 1,
            score,
            map,
            mask: if files.read { sample.mask.clone() } else { None },
            geometry,
            image: sample.image.clone(),
            model: scored.model,
        });
    }
    if classless > 0 && classes.iter().any(|c| c != DEFAULT_CLASS) && !quiet {
        eprintln!(
            "{TOOL}: warning: {classless} record(s) without \"class\" are evaluated as the class '{DEFAULT_CLASS}'"
        );
    }
    // Failed images count in their class, a class of failed images only
    // included: a mean over the classes that scored would hide it.
    let mut counted: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut failed = vec![0usize; classes.len()];
    for f in &failed_lines {
        if scored_images.contains(&f.image) || !counted.insert(&f.image) {
            continue;
        }
        if !quiet {
            eprintln!("{TOOL}: warning: {source}:{}: skipping {}: it failed to score: {}", f.line, f.image, f.reason);
        }
        let k = match classes.iter().position(|c| *c == f.class) {
            Some(k) => k,
            None => {
                classes.push(f.class.clone());
                failed.push(0);
                classes.len() - 1
            }
        };
        failed[k] += 1;
    }
    Ok((classes, jobs, failed))
}

/// Loads maps and masks on rayon threads, a chunk at a time, and appends
/// each image's pixels to its class in input order. Returns the map size.
fn reduce_pixels(
    jobs: &[Job],
    inputs: &mut [ClassInput],
    prep: &Preprocess,
    mask_threshold: f32,
    source: &str,
    quiet: bool,
) -> Result<(usize, usize)> {
    // The first map fixes the size every other map must have.
    let first_path = jobs[0].map.as_deref().unwrap_or(Path::new(""));
    let first = npy::read_f32_2d(first_path).map_err(|e| Error::Record {
        source_name: source.to_string(),
        line: jobs[0].line,
        reason: e.to_string(),
    })?;
    let size = (first.rows, first.cols);
    let bar = progress::bar(jobs.len() as u64, "maps", quiet);
    // Chunks bound the memory of maps in flight (~64 decoded maps).
    const CHUNK: usize = 64;
    for chunk in jobs.chunks(CHUNK) {
        let reduced: Vec<Result<ReducedImage>> =
            chunk.par_iter().map(|job| load_and_reduce(job, size, prep, mask_threshold, source)).collect();
        for (job, r) in chunk.iter().zip(reduced) {
            let img = r?;
            let set = inputs[job.class].pixels.as_mut().ok_or_else(|| Error::config("pixel set missing"))?;
            set.push(img).map_err(|reason| Error::Record {
                source_name: source.to_string(),
                line: job.line,
                reason,
            })?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(size)
}

fn load_and_reduce(
    job: &Job,
    size: (usize, usize),
    prep: &Preprocess,
    mask_threshold: f32,
    source: &str,
) -> Result<ReducedImage> {
    let at_line = |e: Error| Error::Record { source_name: source.to_string(), line: job.line, reason: e.to_string() };
    let map_path = job.map.as_deref().unwrap_or(Path::new(""));
    let map = npy::read_f32_2d(map_path).map_err(at_line)?;
    if (map.rows, map.cols) != size {
        return Err(at_line(Error::mismatch(
            map_path.display().to_string(),
            format!(
                "the map is {}x{}, but the first map is {}x{}: all maps must have one size",
                map.rows, map.cols, size.0, size.1
            ),
        )));
    }
    let gt: Vec<bool> = match &job.mask {
        Some(mask) => load_mask(mask, prep, size).map_err(at_line)?.into_iter().map(|v| v > mask_threshold).collect(),
        None => vec![false; size.0 * size.1],
    };
    pixels::reduce(&map.data, &gt, size.0, size.1).map_err(|reason| Error::Record {
        source_name: source.to_string(),
        line: job.line,
        reason: format!("{}: {reason}", map_path.display()),
    })
}

fn settings(
    args: &Args,
    map_size: Option<(usize, usize)>,
    geometry: Option<MapGeometry>,
) -> serde_json::Map<String, Value> {
    let mut s = serde_json::Map::new();
    s.insert("tool".into(), json!(TOOL));
    s.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    s.insert("image_only".into(), json!(args.image_only));
    if !args.image_only {
        s.insert("fpr_limit".into(), json!(args.fpr_limit));
        s.insert("aupro_thresholds".into(), json!(crate::metrics::aupro::OFFICIAL_THRESHOLDS));
        s.insert("mask_threshold".into(), json!(args.mask_threshold));
        if let Some(g) = geometry {
            // A side as one number when square (the flags' form).
            let side = |(h, w): (usize, usize)| if h == w { json!(h) } else { json!([h, w]) };
            s.insert("resize".into(), side(g.resize));
            s.insert("crop".into(), side(g.crop));
        }
        if let Some((h, w)) = map_size {
            s.insert("map_size".into(), json!([h, w]));
        }
    }
    if let Some(t) = args.target_fpr {
        s.insert("target_fpr".into(), json!(t));
    }
    s
}

fn write_plots(report: &Report, dir: &Path, fpr_limit: f64) -> anyhow::Result<()> {
    for c in &report.classes {
        let stem = plot::file_stem(&c.name);
        for (suffix, svg) in plot::class_charts(c, fpr_limit) {
            atomic::write_bytes(dir.join(format!("{stem}-{suffix}.svg")), svg.as_bytes())
                .with_context(|| "writing plots")?;
        }
    }
    Ok(())
}

/// Writes the --html report into its staging folder and renames it into
/// place.
fn write_html(
    args: &Args,
    dir: html::ReportDir,
    report: &Report,
    jobs: &[Job],
    checkpoint: Option<html::CheckpointInfo>,
    (geometry, geometry_from): (MapGeometry, &'static str),
    source: &str,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut cases: Vec<Vec<html::Case>> = vec![Vec::new(); report.classes.len()];
    let mut models: Vec<String> = Vec::new();
    for job in jobs {
        cases[job.class].push(html::Case {
            line: job.line,
            image: job.image.clone(),
            score: job.score,
            anomalous: job.anomalous,
            map: job.map.clone(),
            mask: job.mask.clone(),
        });
        if let Some(m) = job.model.as_ref().filter(|m| !models.contains(m)) {
            models.push(m.clone());
        }
    }
    if let Some(ck) = &checkpoint {
        let e = &ck.meta.encoder;
        let trained = MapGeometry {
            resize: (e.resize.0 as usize, e.resize.1 as usize),
            crop: (e.crop.0 as usize, e.crop.1 as usize),
        };
        if trained != geometry && !args.quiet.quiet {
            eprintln!(
                "{TOOL}: warning: --checkpoint {} was trained at resize {:?} crop {:?}, the report shows resize {:?} crop {:?}: were the records scored with it?",
                ck.path.display(),
                trained.resize,
                trained.crop,
                geometry.resize,
                geometry.crop
            );
        }
    }
    let prov = html::Provenance {
        source: source.to_string(),
        checkpoint,
        models,
        geometry,
        geometry_from,
        mask_threshold: (!args.image_only).then_some(args.mask_threshold),
        fpr_limit: (!args.image_only).then_some(args.fpr_limit),
        created: html::utc_now(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let opts = html::HtmlOptions {
        worst: usize::from(args.worst),
        fpr_limit: args.fpr_limit,
        mask_threshold: args.mask_threshold as f32,
    };
    let written = html::write(dir.path(), report, &cases, &prov, &opts, DEFAULT_CLASS)?;
    dir.commit()?;
    if !args.quiet.quiet {
        let dest = args.html.as_deref().unwrap_or(Path::new("."));
        eprintln!(
            "{TOOL}: report written to {} ({} files, {:.1} MB, {:.1} s)",
            dest.join("index.html").display(),
            written.files,
            written.bytes as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
