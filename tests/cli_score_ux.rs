//! What `dinomaly-score` tells its user: --fail-above's exit 1 and summary
//! (kept when the reader closes stdout early), --skip-existing with lines
//! of images that failed, map names carrying the class, and the note on
//! what the encoder weights' hash was checked against.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{json, Value};

use crate::util::fixture::{self as fx, parse_lines};
use crate::util::{self, assert_code, Dir};

/// The shared records' scores, by image path.
fn scores_by_image() -> Vec<(PathBuf, f64)> {
    let shared = fx::shared();
    let out = util::run(&mut fx::score(&shared.ckpt, &shared.weights), &fx::lines(&shared.records));
    assert_code(&out, 0);
    parse_lines(&util::stdout(&out))
        .iter()
        .map(|l| (PathBuf::from(l["image"].as_str().unwrap()), l["score"].as_f64().unwrap()))
        .collect()
}

/// The image with the highest score and a threshold only it exceeds.
fn top_image_and_threshold() -> (PathBuf, Vec<PathBuf>, f64) {
    let mut scored = scores_by_image();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (top, best) = scored.pop().unwrap();
    let second = scored.last().unwrap().1;
    assert!(best > second, "two images share the top score {best}");
    (top, scored.into_iter().map(|s| s.0).collect(), (best + second) / 2.0)
}

/// Runs `dinomaly-score -q --batch 2 FLAGS` on `images` (in that order),
/// each line padded so that the output is several pipe buffers long, reads
/// one line and closes stdout.
pub fn score_and_close_after_one_line(images: &[PathBuf], flags: &[&str]) -> Output {
    let shared = fx::shared();
    let pad = "x".repeat(4000);
    let input: String = images.iter().map(|p| format!("{}\n", json!({"image": p, "pad": pad}))).collect();
    let mut child = fx::score(&shared.ckpt, &shared.weights)
        .args(["--batch", "2"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(serde_json::from_str::<Value>(&first).unwrap()["score"].is_number());
    drop(reader);
    child.wait_with_output().unwrap()
}

#[test]
fn cli_score_ux_fail_above_survives_a_closed_stdout() {
    let (top, others, threshold) = top_image_and_threshold();
    let t = threshold.to_string();
    // 47 images below the threshold, then the one above it: the reader is
    // gone long before (48 lines of 4 kB are three pipe buffers).
    let mut images: Vec<PathBuf> = (0..47).map(|i| others[i % others.len()].clone()).collect();
    images.push(top.clone());
    let out = score_and_close_after_one_line(&images, &["--fail-above", &t]);
    assert_code(&out, 1);
    let err = util::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    let want = format!("dinomaly-score: 1 of 48 scores above --fail-above {t}; highest ");
    assert!(err.starts_with(&want), "{err}");
    assert!(err.trim_end().ends_with(&format!("first: {}", top.display())), "{err}");
    // Nothing above the threshold: the closed pipe stays a quiet success.
    let out = score_and_close_after_one_line(&images[..47], &["--fail-above", &t]);
    assert_code(&out, 0);
    assert!(util::stderr(&out).is_empty(), "{}", util::stderr(&out));
    // Above it at once: exit 1 known, so scoring stops when the reader goes.
    let mut early = vec![top.clone()];
    early.extend_from_slice(&images[..47]);
    let out = score_and_close_after_one_line(&early, &["--fail-above", &t]);
    assert_code(&out, 1);
    let err = util::stderr(&out);
    assert!(err.contains("scores above --fail-above") && err.contains("stdout was closed, so the last"), "{err}");
}

#[test]
fn cli_score_ux_fail_above_says_how_many_and_which() {
    let shared = fx::shared();
    let (top, _, threshold) = top_image_and_threshold();
    let t = threshold.to_string();
    let out =
        util::run(fx::score(&shared.ckpt, &shared.weights).args(["--fail-above", &t]), &fx::lines(&shared.records));
    assert_code(&out, 1);
    // -q silences notes, not the reason for exit 1.
    let err = util::stderr(&out);
    let best = scores_by_image().into_iter().find(|s| s.0 == top).unwrap().1 as f32;
    assert_eq!(
        err,
        format!(
            "dinomaly-score: 1 of 8 scores above --fail-above {t}; highest {best} ({0}); first: {0}\n",
            top.display()
        )
    );
}

/// Runs `dinomaly-score -q --on-error skip --skip-existing RESULTS FLAGS`
/// on `input`, appending to RESULTS.
fn cron_run(results: &Path, input: &str, flags: &[&str]) -> Output {
    let shared = fx::shared();
    let stdout = std::fs::OpenOptions::new().create(true).append(true).open(results).unwrap();
    let mut child = fx::score(&shared.ckpt, &shared.weights)
        .args(["--on-error", "skip", "--skip-existing"])
        .arg(results)
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn cli_score_ux_skip_existing_skips_failed_images_until_retried() {
    let dir = Dir::new("cli_score_ux_skip_errors");
    let images = fx::images();
    let late = dir.join("late.png");
    let input: String = [(&images[0], 0), (&late, 1), (&images[1], 0)]
        .iter()
        .map(|(p, label)| format!("{}\n", json!({"image": p, "class": "c", "label": label})))
        .collect();
    let results = dir.join("results.jsonl");
    assert_code(&cron_run(&results, &input, &[]), 0);
    let first = std::fs::read_to_string(&results).unwrap();
    let lines = parse_lines(&first);
    assert_eq!(lines.len(), 3);
    assert!(lines[1]["error"].as_str().unwrap().contains("late.png"), "{}", lines[1]);
    // The broken image is not tried again: nothing is appended.
    assert_code(&cron_run(&results, &input, &[]), 0);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), first);
    // The file arrives; --retry-errors scores it (and only it).
    std::fs::copy(&images[2], &late).unwrap();
    assert_code(&cron_run(&results, &input, &[]), 0);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), first);
    assert_code(&cron_run(&results, &input, &["--retry-errors"]), 0);
    let all = parse_lines(&std::fs::read_to_string(&results).unwrap());
    assert_eq!(all.len(), 4);
    assert_eq!(all[3]["image"].as_str(), late.to_str());
    assert!(all[3]["score"].is_number());
    let after = std::fs::read_to_string(&results).unwrap();
    assert_code(&cron_run(&results, &input, &["--retry-errors"]), 0);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), after);
    // Metrics: the error line that a retry superseded is not a failure.
    let metrics = |text: &str| -> Value {
        let out = util::run(util::tool("dinomaly-metrics").args(["-q", "--image-only"]), text);
        assert_code(&out, 0);
        serde_json::from_str(&util::stdout(&out)).unwrap()
    };
    let before_retry = metrics(&first);
    assert_eq!((before_retry["failed"].as_u64(), before_retry["classes"][0]["images"].as_u64()), (Some(1), Some(2)));
    let now = metrics(&after);
    assert_eq!((now["failed"].as_u64(), now["classes"][0]["images"].as_u64()), (Some(0), Some(3)));
    // --retry-errors means nothing without --skip-existing.
    let out = util::run(fx::score(&fx::shared().ckpt, &fx::shared().weights).arg("--retry-errors"), &input);
    assert_code(&out, 2);
    assert!(util::stderr(&out).contains("--skip-existing"), "{}", util::stderr(&out));
}

#[test]
fn cli_score_ux_map_names_carry_the_class() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_ux_map_names");
    let maps = dir.join("maps");
    let out = util::run(
        fx::score(&shared.ckpt, &shared.weights)
            .args(["--map-size", "16", "--overlay", "--pixel-threshold", "0.5", "--maps-dir"])
            .arg(&maps),
        &fx::lines(&shared.records),
    );
    assert_code(&out, 0);
    for line in parse_lines(&util::stdout(&out)) {
        let map = PathBuf::from(line["map"].as_str().unwrap());
        let name = map.file_name().unwrap().to_string_lossy().into_owned();
        let class = line["class"].as_str().unwrap();
        let stem = Path::new(line["image"].as_str().unwrap()).file_stem().unwrap().to_string_lossy().replace('.', "_");
        assert!(name.starts_with(&format!("{class}_fixtures_preprocess_{stem}-")), "{name} for {line}");
        assert!(map.with_extension("png").is_file(), "no overlay beside {name}");
    }
}

#[test]
fn cli_score_ux_weights_note_says_the_checkpoint_checked_them() {
    let shared = fx::shared();
    let out = util::run(
        util::tool("dinomaly-score").arg("-c").arg(&shared.ckpt).arg("--weights").arg(&shared.weights),
        &format!("{}\n", fx::images()[0].display()),
    );
    assert_code(&out, 0);
    let err = util::stderr(&out);
    let note = err.lines().find(|l| l.contains("weights: ")).unwrap_or_else(|| panic!("no weights note in {err}"));
    assert!(!note.contains("not checked"), "{note}");
    let want = format!(
        "sha256 {}: matches the weights {} was trained with",
        fx::sha256(&shared.weights),
        shared.ckpt.display()
    );
    assert!(note.ends_with(&want), "{note}");
}
