//! `dinomaly-calibrate`: scored lines + a checkpoint → the same checkpoint
//! with decision thresholds in its metadata (`"calibration"`), written to a
//! new file. The rules are in [`crate::score::calibrate`].

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::args::QuietArgs;
use crate::cli::output::DataOut;
use crate::cli::progress;
use crate::cli::ranges;
use crate::data::record::{parse_scored_line, ScoredRecord};
use crate::io::calibration::Calibration;
use crate::io::{atomic, checkpoint};
use crate::score::calibrate::{self, CalLine, Rule};
use crate::score::model_id;
use crate::score::scorer::{detect_kind, CheckpointKind};
use crate::Error;

const TOOL: &str = "dinomaly-calibrate";

/// Calibrate a trained model's decisions from its scored lines.
///
/// Input: the JSON lines of dinomaly-score for calibration images (stdin,
/// or --input FILE), scored with the checkpoint given by -c: each line must
/// carry the "model" id dinomaly-score writes, and lines of another model
/// are refused. Lines labelled 1 are defective images; lines labelled 0 or
/// without a label are good images. Lines with "error" are skipped.
///
/// Output: a copy of the checkpoint with the thresholds in its metadata
/// ("calibration": image thresholds per class and global, the score ranges
/// of the normalised score, pixel thresholds when the lines have maps, the
/// rule, target, images per class, date and model id), written atomically
/// to -o; the input checkpoint is never changed. dinomaly-score then adds
/// "anomalous", "threshold" and "normalized_score" to each line. stdout:
/// the stored calibration as one JSON line; stderr: a summary per class.
/// Exit status: 0 ok, 2 on errors (nothing written).
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-calibrate", version, allow_negative_numbers = true)]
pub struct Args {
    /// The checkpoint that scored the lines (written by dinomaly-train).
    #[arg(long, short = 'c', value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// Where to write the calibrated checkpoint (not the input checkpoint).
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: PathBuf,

    /// Read the scored lines from FILE instead of stdin ('-' is stdin).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// How thresholds are chosen: target-fpr (the lowest threshold whose
    /// false-positive rate on the good images is at most --target-fpr; good
    /// images only are enough) or f1 (F1-optimal; needs defective lines,
    /// and for the pixel threshold their masks).
    #[arg(long, value_enum, default_value = "target-fpr")]
    pub rule: Rule,

    /// False-positive rate aimed at on good images, in [0, 1): the
    /// threshold is np.quantile(good, 1 - F, method="inverted_cdf"). Needs
    /// at least 1/F good images per class (warned when fewer). Also the
    /// pixel rule of --rule f1 when masks are missing.
    #[arg(long, default_value_t = 0.01, value_name = "F", value_parser = ranges::FRACTION_BELOW_ONE, allow_hyphen_values = true)]
    pub target_fpr: f64,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// Runs the tool.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet.quiet;
    crate::cli::stdio::refuse_dash(&[
        ("-c", Some(&args.checkpoint), "the checkpoint is read from a file"),
        ("-o", Some(&args.output), "the calibrated checkpoint is written to a file"),
    ])?;
    if same_file(&args.checkpoint, &args.output) {
        bail!(
            "-o {}: the input checkpoint is never changed: write the calibrated one to another file",
            args.output.display()
        );
    }
    atomic::check_writable(&args.output).with_context(|| "-o is not writable")?;
    let kind = detect_kind(&args.checkpoint)?;
    if kind != CheckpointKind::Dinomaly {
        bail!(
            "{}: an {} checkpoint cannot hold a calibration: its encoder is inside the file, while a dinomaly \
             checkpoint names its encoder weights file by backbone and sha256{}; train or fine-tune a dinomaly \
             checkpoint from it (dinomaly-train --init) and calibrate that",
            args.checkpoint.display(),
            if kind == CheckpointKind::Official { "official" } else { "anomalib" },
            if kind == CheckpointKind::Anomalib {
                ", and anomalib's pre- and post-processing (tensor resize, raw map, score at 256) are not a dinomaly \
                 checkpoint's"
            } else {
                ""
            }
        );
    }
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let model = model_id::model_id(&ckpt.tensors, &ckpt.meta.encoder.weights_sha256)?;

    let (source, reader): (String, Box<dyn Read>) = match args.input.as_deref() {
        None => ("stdin".to_string(), Box::new(std::io::stdin())),
        Some(p) if crate::cli::stdio::is_dash(p) => ("stdin".to_string(), Box::new(std::io::stdin())),
        Some(p) => (p.display().to_string(), Box::new(std::fs::File::open(p).map_err(|e| Error::io(p, e))?)),
    };
    let (lines, skipped) = read_lines(BufReader::new(reader), &source, &model)?;
    if skipped > 0 {
        progress::note(quiet, TOOL, &format!("{skipped} lines with \"error\" (images that failed to score) skipped"));
    }
    if lines.is_empty() {
        bail!("{source}: no scored lines to calibrate from");
    }
    let image = calibrate::image_calibration(&lines, args.rule, args.target_fpr)?;
    for w in &image.warnings {
        eprintln!("{TOOL}: warning: {w}");
    }
    let pixel = calibrate::pixel_calibration(&lines, args.rule, args.target_fpr, &source)?;
    let mut details = serde_json::Map::new();
    details.insert("tool".into(), json!(TOOL));
    details.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    details.insert("input".into(), json!(source));
    details.insert("lines".into(), json!(lines.len()));
    if skipped > 0 {
        details.insert("skipped_error_lines".into(), json!(skipped));
    }
    let pixel_thresholds = match pixel {
        Ok(p) => {
            for n in &p.notes {
                progress::note(quiet, TOOL, n);
            }
            details.insert("pixel_rule".into(), json!(p.rule));
            details.insert("pixel_images".into(), json!(p.images));
            Some(p.thresholds)
        }
        Err(reason) => {
            progress::note(quiet, TOOL, &reason);
            None
        }
    };
    let calibration = Calibration {
        image: image.thresholds,
        pixel: pixel_thresholds,
        image_range: Some(image.ranges),
        rule: args.rule.name().to_string(),
        target_fpr: (args.rule == Rule::TargetFpr).then_some(args.target_fpr),
        counts: image.counts,
        created: utc_now(),
        model,
        details,
    };
    if !quiet {
        for line in summary(&calibration) {
            eprintln!("{TOOL}: {line}");
        }
    }
    let mut meta = ckpt.meta.clone();
    meta.calibration = Some(calibration.clone());
    checkpoint::save(&args.output, &ckpt.tensors, &meta)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    progress::note(quiet, TOOL, &format!("wrote {}", args.output.display()));
    let mut out = DataOut::stdout();
    out.line(&serde_json::to_string(&calibration)?)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Whether two paths name the same file (the second may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| {
        p.canonicalize().ok().or_else(|| {
            let parent = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            parent.canonicalize().ok().zip(p.file_name()).map(|(d, n)| d.join(n))
        })
    };
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Parses the scored lines: every one must be a JSON record with a finite
/// "score" and this model's "model". Returns the usable lines and the
/// number of "error" lines skipped.
fn read_lines(reader: impl std::io::BufRead, source: &str, model: &str) -> crate::Result<(Vec<CalLine>, usize)> {
    let mut lines = Vec::new();
    let mut skipped = 0;
    for line in crate::data::record::lines(reader, source) {
        let (line_no, text) = line?;
        let bad = |reason: String| Error::Record { source_name: source.to_string(), line: line_no, reason };
        let Some(ScoredRecord { sample, scored }) = parse_scored_line(&text, source, line_no)? else {
            continue;
        };
        // A failed image has no score to calibrate with (nor a model id).
        if scored.error.is_some() {
            skipped += 1;
            continue;
        }
        match &scored.model {
            Some(m) if m == model => {}
            Some(m) => {
                return Err(bad(format!(
                    "scored by model {m}, but the checkpoint is model {model}: calibrate with the lines of this \
                     checkpoint (dinomaly-score -c CKPT)"
                )))
            }
            None => {
                return Err(bad(
                    "the record has no \"model\" id: score with this version of dinomaly-score (-c CKPT)".to_string()
                ))
            }
        }
        let score = scored.score.filter(|s| s.is_finite()).ok_or_else(|| {
            // The value as written: null (a NaN score) or missing.
            let written = sample.extra.get("score").map_or_else(|| "missing".to_string(), Value::to_string);
            bad(format!("\"score\" is {written}, not a finite number"))
        })?;
        let map = match scored.map {
            None => None,
            Some(m) if !m.is_empty() => Some(PathBuf::from(m)),
            Some(_) => return Err(bad("\"map\" must be a path, not \"\"".to_string())),
        };
        let geometry = scored.map_geometry;
        lines.push(CalLine {
            line: line_no,
            class: sample.class.clone().filter(|c| !c.is_empty()),
            defective: sample.label == Some(1),
            score,
            map,
            mask: sample.mask.clone(),
            geometry,
        });
    }
    Ok((lines, skipped))
}

/// The per-class summary for stderr.
fn summary(c: &Calibration) -> Vec<String> {
    let mut out = vec![format!(
        "rule {}{}, model {}",
        c.rule,
        c.target_fpr.map(|f| format!(" (target FPR {f})")).unwrap_or_default(),
        c.model
    )];
    let pixel = |class: Option<&str>| {
        c.pixel.as_ref().map(|p| format!(", pixel threshold {:.6}", p.for_class(class))).unwrap_or_default()
    };
    for (key, counts) in &c.counts {
        if key.is_empty() {
            continue;
        }
        out.push(format!(
            "class {key}: threshold {:.6} from {} good and {} defective images{}",
            c.image.for_class(Some(key)),
            counts.good,
            counts.defective,
            pixel(Some(key))
        ));
    }
    let (good, defective) = c.counts.values().fold((0, 0), |(g, d), n| (g + n.good, d + n.defective));
    out.push(format!(
        "global (other classes): threshold {:.6} from {good} good and {defective} defective images{}",
        c.image.global,
        pixel(None)
    ));
    out
}

use crate::clock::utc_now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_another_model_or_without_scores_are_refused() {
        let model = "0123456789abcdef";
        let read = |text: &str| read_lines(text.as_bytes(), "in", model);
        let ok = r#"{"image": "a.png", "score": 0.5, "model": "0123456789abcdef", "class": "x"}"#;
        let (lines, skipped) = read(&format!("{ok}\n\n")).unwrap();
        assert_eq!((lines.len(), skipped, lines[0].class.as_deref(), lines[0].defective), (1, 0, Some("x"), false));
        let err = read(&format!("{ok}\n{}\n", ok.replace("0123", "9999"))).unwrap_err().to_string();
        assert!(err.starts_with("in:2: scored by model 9999456789abcdef, but the checkpoint is model"), "{err}");
        let err = read(r#"{"image": "a.png", "score": 0.5}"#).unwrap_err().to_string();
        assert!(err.contains("in:1: the record has no \"model\""), "{err}");
        let err = read(&ok.replace("0.5", "null")).unwrap_err().to_string();
        assert!(err.contains("in:1: \"score\" is null, not a finite number"), "{err}");
        let err = read(&ok.replace("0.5", "\"NaN\"")).unwrap_err().to_string();
        assert!(err.contains("\"score\" is \"NaN\""), "{err}");
        let err = read("a.png\n").unwrap_err().to_string();
        assert!(err.contains("in:1: a plain path"), "{err}");
        let err = read("{\"image\": \n").unwrap_err().to_string();
        assert!(err.contains("in:1: not valid JSON"), "{err}");
        let failed = r#"{"image": "b.png", "error": "unreadable"}"#;
        let (lines, skipped) = read(&format!("{ok}\n{failed}\n")).unwrap();
        assert_eq!((lines.len(), skipped), (1, 1));
    }
}
