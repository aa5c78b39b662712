//! `dinomaly-score`: images (or a feature store) + a checkpoint → one JSON
//! line per input, in input order: the input record's fields, `score`,
//! `model` (the model id), `anomalous` with --threshold, `map` with
//! --maps-dir (in the crop's or the photo's pixels, `map_space`), `regions`
//! with a pixel threshold; with a calibrated checkpoint also `anomalous`,
//! `threshold` and `normalized_score` (see [`crate::score::decision`]).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{Map, Value};
use sha2::Digest;
use tch::{Device, Kind, Tensor};

use crate::cli::args::{CheckpointArgs, DeviceArgs, OnError, QuietArgs, SampleArgs};
use crate::cli::on_error::{OnErrorPolicy, Skipped};
use crate::cli::output::DataOut;
use crate::cli::progress;
use crate::cli::ranges;
use crate::data::batches::{decode_in_background, Batch};
use crate::data::map_geometry::MapGeometry;
use crate::data::preprocess::load_image;
use crate::data::record::{parse_scored_line, Sample, Scored, ScoredRecord};
use crate::io::calibration::{Calibration, Thresholds};
use crate::io::features::FeatureStore;
use crate::metrics::overlay::{self, MapView, Overlay};
use crate::score::anomaly_map::ScoredBatch;
use crate::score::decision::Decider;
use crate::score::photo::{self, MapSpace};
use crate::score::regions;
use crate::score::scorer::{CheckpointKind, Scorer, ScorerRequest};

const TOOL: &str = "dinomaly-score";

/// Score images with a trained Dinomaly model: one JSON line per image.
///
/// Input samples as for dinomaly-extract (JSON lines or paths on stdin,
/// --input FILE, or --dataset), or the rows of a feature store (--features).
/// Output: the input record with "score" and "model" (the model's id: the
/// first 16 hex digits of a sha256 of its weights and encoder sha256, the
/// same for any copy or calibration of the checkpoint) added, "anomalous"
/// with --threshold, "map" with --maps-dir, in input order, each line
/// flushed as soon as its image is scored (on a GPU: its batch).
///
/// Live input: samples from a pipe, a FIFO (-i FIFO) or a terminal are
/// scored as their lines arrive, without waiting for the end of the input
/// (`inotifywait -m -e close_write --format '%w%f' DIR | dinomaly-score -c
/// M`); a partial batch goes after --batch-wait without a new line, and the
/// end of the input ends the run. A bad input line then stops the run at
/// that line, after the lines before it were scored and written. A regular
/// file (--input FILE, `< FILE`) and --dataset are read whole first (a bad
/// line stops the run before anything is scored), and so is any input with
/// --shard, which needs the number of inputs.
///
/// With a checkpoint calibrated by dinomaly-calibrate each line also gets
/// "anomalous" (score > threshold), "threshold" (the one calibrated for
/// the line's class, else the global one; --threshold overrides it) and
/// "normalized_score" = clamp((score - threshold) / (max - min) + 0.5, 0,
/// 1), anomalib's min-max normalisation, with min and max the lowest and
/// highest calibration score of the class: 0.5 at the threshold.
/// Exit status: 0 ok, 1 when --fail-above is exceeded, 2 on errors.
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-score", version, allow_negative_numbers = true)]
pub struct Args {
    #[command(flatten)]
    pub model: CheckpointArgs,

    /// Encoder weights for dinomaly-train checkpoints (default: the cache or
    /// a download, by the backbone name the checkpoint records). Must be
    /// the file the model was trained with (sha256 checked). Refused with
    /// official and anomalib checkpoints (they hold their encoder) and with
    /// --features (no encoder runs).
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,

    #[command(flatten)]
    pub samples: SampleArgs,

    /// Score the rows of this feature store (made with the checkpoint's
    /// encoder settings) instead of reading images; - reads it from stdin.
    #[arg(long, value_name = "STORE", conflicts_with_all = ["input", "dataset"])]
    pub features: Option<PathBuf>,

    /// Target layers of official/anomalib checkpoints (default per size).
    /// Refused with dinomaly-train checkpoints, which record theirs.
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub layers: Vec<usize>,

    /// Write each anomaly map as float32 .npy (map size) into DIR.
    #[arg(long, value_name = "DIR")]
    pub maps_dir: Option<PathBuf>,

    /// Also write a PNG heatmap over the image per input (needs --maps-dir
    /// and a pixel threshold: the calibration's or --pixel-threshold). One
    /// colour scale for all images: 0 dark blue, the threshold light green,
    /// twice the threshold and above dark red; with --map-space photo it is
    /// drawn on the photo, the border the crop cut off hatched grey.
    #[arg(long, requires = "maps_dir")]
    pub overlay: bool,

    /// Where --maps-dir maps lie: crop (the model's centre crop at the map
    /// size, as the paper evaluates and dinomaly-metrics reads) or photo
    /// (the original image's pixels; the border the crop cut off is NaN,
    /// not inspected). Lines say which in "map_space".
    #[arg(long, value_enum, default_value = "crop")]
    pub map_space: crate::score::photo::MapSpace,

    /// Pixel threshold on the maps (default: the checkpoint's calibration,
    /// per class): each line lists its "regions" above it, in photo
    /// pixels, and overlays put it at their midpoint colour. Needs images
    /// (refused with --features).
    #[arg(long, value_name = "T", value_parser = ranges::POSITIVE, allow_hyphen_values = true)]
    pub pixel_threshold: Option<f64>,

    /// Most regions listed per line, strongest peak first ("regions_omitted"
    /// counts the rest).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = ranges::at_least::<usize>(1), allow_hyphen_values = true)]
    pub max_regions: usize,

    /// Side of the anomaly map: N or HxW (official: 256). Refused with
    /// anomalib checkpoints, whose map is anomalib's raw map at the crop
    /// size and whose score is taken at 256, as anomalib does.
    #[arg(long, value_name = "SIZE")]
    pub map_size: Option<crate::cli::args::Size2>,

    /// Image score = mean of the top fraction of map pixels, in [0, 1]
    /// (0 = max; default 0.01).
    #[arg(long, value_name = "R", value_parser = ranges::FRACTION, allow_hyphen_values = true)]
    pub max_ratio: Option<f64>,

    /// Add "anomalous": score > T to each line (with a calibrated
    /// checkpoint: instead of the calibrated thresholds).
    #[arg(long, value_name = "T", value_parser = ranges::FINITE, allow_hyphen_values = true)]
    pub threshold: Option<f64>,

    /// Exit with status 1 when any score exceeds T (for alerting); stderr
    /// then says how many, the highest and the first few images (even with
    /// --quiet). Without T: when any line is decided anomalous by the
    /// calibrated thresholds (or --threshold); refused with an uncalibrated
    /// checkpoint (a T that starts with '-' and is not a plain number takes
    /// '=': --fail-above=-inf). A reader that closes stdout early (`| head`)
    /// does not turn this into success: scoring goes on without writing
    /// until a score exceeds T.
    #[arg(long, value_name = "T", num_args = 0..=1, value_parser = ranges::FINITE)]
    pub fail_above: Option<Option<f64>>,

    /// Skip inputs whose image already has a line in this results file, with
    /// a score or an "error" (--retry-errors scores the latter again); for
    /// cron reruns that append: `--skip-existing r.jsonl >> r.jsonl`.
    /// A partial last line left by a killed run is cut off first.
    #[arg(long, value_name = "RESULTS")]
    pub skip_existing: Option<PathBuf>,

    /// Score only shard I of N (1-based): a contiguous block of the inputs,
    /// so the outputs of shards 1..N concatenated equal a single run's.
    /// Reads all input first (it needs the number of inputs), also from a
    /// pipe.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,

    /// Images (or store rows) per batch.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = ranges::at_least::<usize>(1), allow_hyphen_values = true)]
    pub batch: usize,

    /// Live input: milliseconds a partial batch waits for another line
    /// before it is scored (0: score what has arrived at once). The
    /// default, 50, keeps a burst of lines (a camera's images written
    /// together) in one batch and adds little to an image's latency next to
    /// scoring it (README: measured latencies). Ignored for input read
    /// whole.
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = ranges::at_least::<u16>(0), allow_hyphen_values = true)]
    pub batch_wait: u16,

    /// Precision of the encoder and decoder: fp32 (the references') or
    /// bf16 (faster on CUDA; maps within ~1e-2 of fp32).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::cli::args::Precision,

    /// What to do with an input that cannot be scored: stop (exit 2; the
    /// lines of the inputs before it are already on stdout) or skip (a line
    /// with "error" instead of a score, and go on).
    #[arg(long, value_enum, default_value = "stop")]
    pub on_error: OnError,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub quiet: QuietArgs,

    /// With --skip-existing: score again the inputs whose only lines in the
    /// results file are "error" lines (by default they are skipped, so a
    /// broken image does not add an error line on every run).
    #[arg(long, requires = "skip_existing")]
    pub retry_errors: bool,
}

/// `--shard I/N`, shared with dinomaly-extract.
pub use crate::cli::args::Shard;

/// Runs the tool.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet.quiet;
    crate::cli::stdio::refuse_dash(&[
        ("-c", Some(&args.model.checkpoint), "the checkpoint is read from a file"),
        ("--weights", args.weights.as_deref(), "encoder weights are read from a file or folder"),
        ("--maps-dir", args.maps_dir.as_deref(), "maps are written as files into a folder"),
        ("--skip-existing", args.skip_existing.as_deref(), "the results file is read and trimmed in place"),
    ])?;
    if args.map_space == MapSpace::Photo && args.maps_dir.is_none() {
        bail!("--map-space photo says where --maps-dir maps lie: pass --maps-dir DIR (regions are in photo pixels without it)");
    }
    if args.features.is_some() {
        if args.map_space == MapSpace::Photo {
            bail!("--map-space photo needs the photos, and --features scores a feature store without them");
        }
        if args.pixel_threshold.is_some() {
            bail!("--pixel-threshold locates regions in photo pixels, and --features scores a feature store without the photos");
        }
    }
    if let Some(dir) = &args.maps_dir {
        crate::io::atomic::check_writable_dir(dir).with_context(|| "--maps-dir is not usable")?;
    }
    let done = match &args.skip_existing {
        Some(path) => done_images(path)?,
        None => DoneImages::default(),
    };
    let store = match &args.features {
        Some(path) => Some(crate::cli::stdio::open_store(path)?),
        None => None,
    };
    // Lines that may still be arriving are scored as they come (unless
    // --shard needs them all first); everything else is read whole here.
    let live =
        (store.is_none() && args.shard.is_none() && crate::cli::samples::arrives_over_time(&args.samples.source))
            .then(|| crate::cli::samples::read_live(&args.samples.source));
    // Inputs with their store row (when scoring a store).
    let mut inputs: Vec<(Sample, Option<usize>)> = match (&store, &live) {
        (_, Some(_)) => Vec::new(),
        (Some(store), None) => store.records().iter().cloned().enumerate().map(|(i, s)| (s, Some(i))).collect(),
        (None, None) => crate::cli::samples::read(&args.samples)?.into_iter().map(|s| (s, None)).collect(),
    };
    if let Some(shard) = args.shard {
        let range = shard.range(inputs.len());
        inputs = inputs.drain(range).collect();
    }
    let (mut skipped, mut skipped_failed) = (0usize, 0usize);
    inputs.retain(|(s, _)| {
        let image = s.image.to_string_lossy();
        if done.scored.contains(image.as_ref()) {
            skipped += 1;
            false
        } else if !args.retry_errors && done.failed.contains(image.as_ref()) {
            skipped_failed += 1;
            false
        } else {
            true
        }
    });
    let device = args.device.device.resolve()?;
    let scorer = Scorer::open(
        &ScorerRequest {
            checkpoint: args.model.checkpoint.clone(),
            kind: args.model.kind,
            weights: args.weights.clone(),
            layers: args.layers.clone(),
            map_size: args.map_size.map(|s| (s.height as i64, s.width as i64)),
            max_ratio: args.max_ratio,
            features_only: store.is_some(),
            precision: args.precision,
            quiet,
            tool: TOOL.to_string(),
        },
        device,
    )
    .with_context(|| format!("cannot use checkpoint {}", args.model.checkpoint.display()))?;
    // The checkpoint's calibration, read once for the decisions and the
    // pixel thresholds (official and anomalib checkpoints carry none).
    let calibration = match scorer.kind {
        CheckpointKind::Dinomaly => crate::io::checkpoint::read_meta(&args.model.checkpoint)?.calibration,
        _ => None,
    };
    let pixel_thresholds = pixel_thresholds(&args, calibration.as_ref());
    let decider = decider(&args, calibration)?;
    if args.overlay && pixel_thresholds.is_none() {
        bail!("--overlay needs a pixel threshold for its one colour scale: calibrate the checkpoint (dinomaly-calibrate) or pass --pixel-threshold T");
    }
    if store.is_some() && pixel_thresholds.is_some() {
        progress::note(
            quiet,
            TOOL,
            "the calibration's pixel threshold is not used: regions need the photos, not a feature store",
        );
    }
    let pixel_thresholds = pixel_thresholds.filter(|_| store.is_none());
    let total = inputs.len();
    let mut out = DataOut::stdout();
    if args.fail_above.is_some() {
        out = out.keep_going_when_closed();
    }
    let mut state = Output {
        out,
        args: &args,
        scorer: &scorer,
        pixel_thresholds,
        decider: decider.as_ref(),
        exceeded: false,
        on_error: OnErrorPolicy::new(args.on_error, TOOL, Skipped::InOutput),
        written: 0,
        above: Above::default(),
    };
    let prep = scorer.preprocess();
    let decode = move |s: &Sample| load_image(&s.image, &prep);
    let (bar, result, live_skips) = match live {
        Some((lines, name)) => {
            progress::note(
                quiet,
                TOOL,
                &format!(
                    "scoring inputs from {name} as they arrive on {} (a partial batch waits {} ms for more)",
                    crate::device::describe(device),
                    args.batch_wait
                ),
            );
            let skips = LiveSkips::default();
            let gather = crate::data::stream::Gather::new(
                lines,
                args.batch,
                std::time::Duration::from_millis(args.batch_wait.into()),
            )
            .keep(skips.filter(done, args.retry_errors));
            let batches = crate::data::batches::decode_stream_in_background(gather, 2, decode);
            // No total to show; each result is on stdout when it is done.
            let bar = indicatif::ProgressBar::hidden();
            let result = score_images(&mut state, batches.into_iter().map(|b| b.map_err(anyhow::Error::from)), &bar);
            (bar, result, Some(skips))
        }
        None => {
            let mut already = Vec::new();
            if skipped > 0 {
                already.push(format!("{skipped} already scored"));
            }
            if skipped_failed > 0 {
                already.push(format!("{skipped_failed} that failed before: --retry-errors tries them again"));
            }
            progress::note(
                quiet,
                TOOL,
                &format!(
                    "scoring {} inputs on {}{}",
                    inputs.len(),
                    crate::device::describe(device),
                    if already.is_empty() { String::new() } else { format!(" (skipped: {})", already.join("; ")) }
                ),
            );
            let bar = progress::bar(inputs.len() as u64, "score", quiet);
            let result = match &store {
                Some(store) => score_store(&mut state, store, inputs, &bar),
                None => {
                    let samples: Vec<Sample> = inputs.into_iter().map(|(s, _)| s).collect();
                    let batches = decode_in_background(samples, args.batch, 2, decode);
                    score_images(&mut state, batches.into_iter().map(Ok), &bar)
                }
            };
            (bar, result, None)
        }
    };
    bar.finish_and_clear();
    // Whatever was scored before an error is on stdout.
    state.out.flush()?;
    let stopped_early = match result {
        // The reader left after a score above --fail-above: the outcome is
        // known, the rest was not scored (emit stops there).
        Err(e) if crate::cli::exit::is_broken_pipe(&e) && state.exceeded => true,
        other => {
            other?;
            false
        }
    };
    if let Some(skips) = &live_skips {
        if let Some(text) = skips.summary() {
            progress::note(quiet, TOOL, &format!("skipped {text}"));
        }
    }
    if state.on_error.skipped() > 0 {
        let failed = state.on_error.skipped();
        progress::note(quiet, TOOL, &format!("{failed} inputs could not be scored (lines with \"error\")"));
    }
    if let (Some(limit), true) = (args.fail_above, state.exceeded) {
        let t = match limit {
            Some(t) => format!("--fail-above {t}"),
            None => "the calibrated thresholds".to_string(),
        };
        // The reason for exit 1, printed even with --quiet (as errors are).
        let unscored = total.saturating_sub(state.written);
        let stopped = match (stopped_early, live_skips.is_some()) {
            // A live input has no known end: the rest was not read.
            (true, true) => {
                format!("; stdout was closed, so the last inputs (after the first {}) were not scored", state.written)
            }
            (true, false) if unscored > 0 => {
                format!("; stdout was closed, so the last {unscored} inputs were not scored")
            }
            _ => String::new(),
        };
        eprintln!("{TOOL}: {}{stopped}", state.above.summary(&t, state.written - state.on_error.skipped()));
    }
    Ok(if state.exceeded { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The decider of a calibrated checkpoint (`None`: uncalibrated, lines as
/// before calibration existed); bare `--fail-above` needs one.
fn decider(args: &Args, calibration: Option<Calibration>) -> anyhow::Result<Option<Decider>> {
    if calibration.is_none() && args.fail_above == Some(None) {
        bail!(
            "--fail-above without a value uses the calibrated thresholds, and {} is not calibrated: give a value \
             or calibrate it with dinomaly-calibrate",
            args.model.checkpoint.display()
        );
    }
    Ok(calibration.map(|c| Decider::new(c, args.threshold)))
}

struct Output<'a> {
    out: DataOut,
    args: &'a Args,
    scorer: &'a Scorer,
    /// For regions and overlays (--pixel-threshold, else the calibration's).
    pixel_thresholds: Option<Thresholds>,
    decider: Option<&'a Decider>,
    exceeded: bool,
    /// What --on-error does with an image that cannot be scored; counts
    /// the lines with "error".
    on_error: OnErrorPolicy,
    /// Lines emitted (scored or failed), whether or not stdout took them.
    written: usize,
    above: Above,
}

/// The scores above --fail-above, for the summary line on stderr.
#[derive(Debug, Default)]
struct Above {
    count: usize,
    highest: Option<(f32, String)>,
    first: Vec<String>,
}

impl Above {
    /// Images named in the summary.
    const NAMED: usize = 3;

    fn add(&mut self, score: f32, image: &Path) {
        let name = image.display().to_string();
        self.count += 1;
        if self.highest.as_ref().is_none_or(|(h, _)| score > *h) {
            self.highest = Some((score, name.clone()));
        }
        if self.first.len() < Self::NAMED {
            self.first.push(name);
        }
    }

    /// "2 of 8 scores above --fail-above 0.3; highest 0.71 (b.png); first:
    /// a.png, b.png" (`threshold` names the limit).
    fn summary(&self, threshold: &str, scored: usize) -> String {
        let mut text = format!("{} of {scored} scores above {threshold}", self.count);
        if let Some((score, image)) = &self.highest {
            text.push_str(&format!("; highest {score} ({image})"));
        }
        if !self.first.is_empty() {
            let more = if self.count > self.first.len() { ", ..." } else { "" };
            text.push_str(&format!("; first: {}{more}", self.first.join(", ")));
        }
        text
    }
}

impl Output<'_> {
    /// Writes the lines of one batch: `results[i]` is the score and map of
    /// `samples[i]`, or why it failed.
    fn emit(
        &mut self,
        samples: &[Sample],
        results: Vec<Result<(f32, Vec<f32>), String>>,
        map_hw: (usize, usize),
    ) -> anyhow::Result<()> {
        for (sample, result) in samples.iter().zip(results) {
            if self.out.closed() && self.exceeded {
                // Nobody reads stdout and --fail-above's outcome is known.
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
            }
            let mut record: Map<String, Value> = sample.to_json();
            let mut scored = Scored::default();
            match result {
                Ok((score, map)) => {
                    let prep = self.scorer.preprocess();
                    let geometry = MapGeometry { resize: prep.resize(), crop: prep.crop() };
                    let threshold = self.pixel_thresholds.as_ref().map(|t| t.for_class(sample.class.as_deref()) as f32);
                    let in_photo = self.args.map_space == MapSpace::Photo && self.args.maps_dir.is_some();
                    // The map on the photo, for photo-space maps and regions.
                    let photo = if in_photo || threshold.is_some() {
                        let size = photo::photo_size(&sample.image)?;
                        let view = MapView { values: &map, height: map_hw.0, width: map_hw.1 };
                        Some((photo::map_to_photo(view, geometry, size)?, size))
                    } else {
                        None
                    };
                    if let (Some(t), Some((values, size))) = (threshold, &photo) {
                        let regions = regions::find_regions(values, size.0, size.1, t);
                        let omitted = regions.len().saturating_sub(self.args.max_regions);
                        scored.regions =
                            Some(regions.iter().take(self.args.max_regions).map(regions::Region::to_json).collect());
                        scored.regions_omitted = (omitted > 0).then_some(omitted);
                    }
                    if let Some(dir) = &self.args.maps_dir {
                        let stem = map_stem(&sample.image, sample.class.as_deref());
                        let path = dir.join(format!("{stem}.npy"));
                        let png = dir.join(format!("{stem}.png"));
                        match (&photo, in_photo) {
                            (Some((values, size)), true) => {
                                crate::io::npy::write_f32_2d(&path, size.0, size.1, values)?;
                                if let (true, Some(t)) = (self.args.overlay, threshold) {
                                    let rgb = crate::data::decode::load_rgb(&sample.image)?;
                                    let view = MapView { values, height: size.0, width: size.1 };
                                    let drawn =
                                        overlay::render_on_photo(&rgb, view, overlay::threshold_scale(t)?, 0.5)?;
                                    overlay::write_png(&png, &drawn)?;
                                }
                            }
                            _ => {
                                crate::io::npy::write_f32_2d(&path, map_hw.0, map_hw.1, &map)?;
                                if let (true, Some(t)) = (self.args.overlay, threshold) {
                                    write_overlay(self.scorer, &sample.image, &png, &map, map_hw, t)?;
                                }
                            }
                        }
                        scored.map = Some(path.to_string_lossy().into_owned());
                        scored.map_space = Some(self.args.map_space.name().to_string());
                        // What dinomaly-metrics needs to bring masks to a
                        // crop-space map (the centre crop of the resized image).
                        scored.map_geometry = Some(geometry);
                    }
                    scored.score = Some(f64::from(score));
                    scored.model = Some(self.scorer.model_id().to_string());
                    let decision = self.decider.map(|d| d.decide(f64::from(score), sample.class.as_deref()));
                    if let Some(d) = decision {
                        scored.anomalous = Some(d.anomalous);
                        scored.threshold = Some(d.threshold);
                        scored.normalized_score = d.normalized;
                    } else if let Some(t) = self.args.threshold {
                        scored.anomalous = Some(f64::from(score) > t);
                    }
                    let above = match self.args.fail_above {
                        Some(Some(t)) => f64::from(score) > t,
                        Some(None) => decision.is_some_and(|d| d.anomalous),
                        None => false,
                    };
                    if above {
                        self.exceeded = true;
                        self.above.add(score, &sample.image);
                    }
                }
                Err(reason) => {
                    self.on_error.failed(&sample.image, &reason, None)?;
                    scored.error = Some(reason);
                }
            }
            scored.add_to(&mut record);
            self.out.line(&Value::Object(record).to_string())?;
            self.written += 1;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Scores decoded images in batches while the next batch is decoded, and
/// writes each line as soon as its image is scored: on the CPU, which
/// scores one image at a time anyway, image by image (a live input's line
/// gets its result without waiting for the rest of its batch); elsewhere a
/// batch at once. The batches are for decoding and output; the scorer makes
/// each image's result independent of its batch (one at a time on the CPU,
/// a fixed batch shape elsewhere), so shards and reruns give the same
/// bytes. An error among the batches (a bad live input line) stops the run
/// after the lines before it.
fn score_images(
    state: &mut Output,
    batches: impl Iterator<Item = anyhow::Result<Batch>>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    for batch in batches {
        let batch = batch?;
        let step = match state.scorer.device() {
            Device::Cpu => 1,
            _ => batch.samples.len().max(1),
        };
        for (samples, images) in batch.samples.chunks(step).zip(batch.images.chunks(step)) {
            score_decoded(state, samples, images)?;
            bar.inc(samples.len() as u64);
        }
    }
    Ok(())
}

/// Scores decoded `images` (or their decoding errors) of `samples` and
/// writes their lines.
fn score_decoded(state: &mut Output, samples: &[Sample], images: &[crate::Result<Tensor>]) -> anyhow::Result<()> {
    {
        let good: Vec<usize> = images.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
        let mut results: Vec<Result<(f32, Vec<f32>), String>> = images
            .iter()
            .map(|r| match r {
                Ok(_) => Ok((0.0, Vec::new())),
                Err(e) => Err(e.to_string()),
            })
            .collect();
        let mut map_hw = (0, 0);
        if !good.is_empty() {
            let device = state.scorer.device();
            let stacked = Tensor::f_stack(
                &good
                    .iter()
                    .map(|&i| images[i].as_ref().map(|t| t.shallow_clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                0,
            )
            .and_then(|t| t.f_to_device(device))
            .map_err(|e| crate::device::out_of_memory_advice(e.into(), device, "moving a batch of images"))?;
            let scored = state.scorer.score_images(&stacked, state.args.batch)?;
            let (per_image, hw) = to_host(&scored)?;
            map_hw = hw;
            for (slot, value) in good.iter().zip(per_image) {
                results[*slot] = value;
            }
        }
        state.emit(samples, results, map_hw)?;
    }
    Ok(())
}

/// Scores feature-store rows in batches.
fn score_store(
    state: &mut Output,
    store: &FeatureStore,
    inputs: Vec<(Sample, Option<usize>)>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    for chunk in inputs.chunks(state.args.batch) {
        let rows: Vec<usize> = chunk.iter().filter_map(|(_, r)| *r).collect();
        let batch = store.batch(&rows, Kind::Float, state.scorer.device())?;
        let scored = state.scorer.score_features(&batch, store.meta(), state.args.batch)?;
        let (results, hw) = to_host(&scored)?;
        let samples: Vec<Sample> = chunk.iter().map(|(s, _)| s.clone()).collect();
        state.emit(&samples, results, hw)?;
        bar.inc(chunk.len() as u64);
    }
    Ok(())
}

/// Scores and maps on the host, one entry per image; a non-finite score or
/// map is an error for that image, never a number.
type HostResults = Vec<Result<(f32, Vec<f32>), String>>;

fn to_host(scored: &ScoredBatch) -> anyhow::Result<(HostResults, (usize, usize))> {
    let maps = scored.maps.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let size = maps.size();
    let (b, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize);
    let flat: Vec<f32> = Vec::<f32>::try_from(maps.reshape([-1]))?;
    let scores: Vec<f32> = Vec::<f32>::try_from(scored.scores.to_device(Device::Cpu).to_kind(Kind::Float))?;
    let results = (0..b)
        .map(|i| {
            let map = flat[i * h * w..(i + 1) * h * w].to_vec();
            if !scores[i].is_finite() || map.iter().any(|v| !v.is_finite()) {
                Err("the model produced NaN or infinite values for this image".to_string())
            } else {
                Ok((scores[i], map))
            }
        })
        .collect();
    Ok((results, (h, w)))
}

/// A file name for an image's map: the class (when the record has one), the
/// last path components joined, and a short hash of the whole path so equal
/// names in different folders differ, e.g. `bottle_test_broken_000-1a2b3c4d`.
pub fn map_stem(image: &Path, class: Option<&str>) -> String {
    let safe = |text: &str| text.replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-' && ch != '_', "_");
    let text = image.to_string_lossy();
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let parts: Vec<String> = image.iter().rev().take(3).map(|c| safe(&c.to_string_lossy())).collect();
    let mut parts: Vec<String> = parts.into_iter().rev().collect();
    if let Some(last) = parts.last_mut() {
        if let Some(stem) = Path::new(&image.file_name().unwrap_or_default()).file_stem() {
            *last = safe(&stem.to_string_lossy());
        }
    }
    if let Some(class) = class.filter(|c| !c.is_empty()) {
        parts.insert(0, safe(class));
    }
    format!("{}-{hash}", parts.join("_"))
}

fn write_overlay(
    scorer: &Scorer,
    image: &Path,
    dest: &Path,
    map: &[f32],
    hw: (usize, usize),
    threshold: f32,
) -> anyhow::Result<()> {
    let rgb = crate::data::decode::load_rgb(image)?;
    let visible = scorer.preprocess().visible_crop(&rgb);
    let settings = Overlay { scale: overlay::threshold_scale(threshold)?, ..Overlay::default() };
    overlay::write_overlay(dest, &visible, MapView { values: map, height: hw.0, width: hw.1 }, &settings)?;
    Ok(())
}

/// What --skip-existing left out of a live input, counted as the lines
/// arrive (on the batching thread).
#[derive(Debug, Default, Clone)]
struct LiveSkips {
    scored: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LiveSkips {
    /// The filter that keeps the inputs to score and counts the others,
    /// as the whole-input path's `retain` does.
    fn filter(&self, done: DoneImages, retry_errors: bool) -> impl FnMut(&Sample) -> bool + Send + 'static {
        let counts = self.clone();
        move |sample| {
            use std::sync::atomic::Ordering::Relaxed;
            let image = sample.image.to_string_lossy();
            if done.scored.contains(image.as_ref()) {
                counts.scored.fetch_add(1, Relaxed);
                false
            } else if !retry_errors && done.failed.contains(image.as_ref()) {
                counts.failed.fetch_add(1, Relaxed);
                false
            } else {
                true
            }
        }
    }

    /// "3 already scored; 1 that failed before: ...", or none.
    fn summary(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut parts = Vec::new();
        let (scored, failed) = (self.scored.load(Relaxed), self.failed.load(Relaxed));
        if scored > 0 {
            parts.push(format!("{scored} already scored"));
        }
        if failed > 0 {
            parts.push(format!("{failed} that failed before: --retry-errors tries them again"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The pixel thresholds in force: --pixel-threshold for every class, else
/// the checkpoint's calibration, else none.
fn pixel_thresholds(args: &Args, calibration: Option<&Calibration>) -> Option<Thresholds> {
    match args.pixel_threshold {
        Some(t) => Some(Thresholds { global: t, per_class: Default::default() }),
        None => calibration.and_then(|c| c.pixel.clone()),
    }
}

/// The images of a results file: those with a scored line, and those with
/// only "error" lines.
#[derive(Debug, Default)]
struct DoneImages {
    scored: HashSet<String>,
    failed: HashSet<String>,
}

/// The images that already have a line in `path`. A partial last line (a
/// run killed mid-write) is cut off so that appending stays valid.
fn done_images(path: &Path) -> anyhow::Result<DoneImages> {
    let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DoneImages::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot open --skip-existing file {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if complete < bytes.len() {
        eprintln!("{TOOL}: {}: cutting off a partial last line left by an interrupted run", path.display());
        file.set_len(complete as u64)?;
        file.seek(SeekFrom::End(0))?;
    }
    let mut done = DoneImages::default();
    let source = path.display().to_string();
    for line in crate::data::record::lines(&bytes[..complete], &source) {
        let (line_no, text) = line?;
        let Some(ScoredRecord { sample, scored }) = parse_scored_line(&text, &source, line_no)? else {
            continue;
        };
        let image = sample.image.to_string_lossy().into_owned();
        if scored.score.is_some() {
            done.scored.insert(image);
        } else if scored.error.is_some() {
            done.failed.insert(image);
        }
    }
    done.failed.retain(|image| !done.scored.contains(image));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_are_readable_and_distinct() {
        let a = map_stem(Path::new("data/bottle/test/broken/000.png"), None);
        let b = map_stem(Path::new("other/bottle/test/broken/000.png"), None);
        assert!(a.starts_with("test_broken_000-"), "{a}");
        assert_ne!(a, b);
        // The class leads, so equal defect names of several classes are
        // told apart at a glance (and sort by class).
        let c = map_stem(Path::new("data/capsule/test/colour_spot/000.png"), Some("capsule"));
        let d = map_stem(Path::new("data/pill/test/colour_spot/000.png"), Some("pill"));
        assert!(c.starts_with("capsule_test_colour_spot_000-"), "{c}");
        assert!(d.starts_with("pill_test_colour_spot_000-"), "{d}");
        assert!(map_stem(Path::new("x/a b.png"), Some("metal nut/2")).starts_with("metal_nut_2_x_a_b-"));
        assert_eq!(map_stem(Path::new("a.png"), Some("")), map_stem(Path::new("a.png"), None));
    }

    #[test]
    fn fail_above_summary_names_count_highest_and_first() {
        let mut above = Above::default();
        for (score, image) in [(0.5, "a.png"), (0.9, "b.png"), (0.6, "c.png"), (0.7, "d.png")] {
            above.add(score, Path::new(image));
        }
        assert_eq!(
            above.summary("--fail-above 0.3", 10),
            "4 of 10 scores above --fail-above 0.3; highest 0.9 (b.png); first: a.png, b.png, c.png, ..."
        );
    }
}
