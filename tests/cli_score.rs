//! `dinomaly-score` end to end with a checkpoint trained on the tiny
//! encoder: output lines, maps and overlays, scoring from a store, sharding,
//! cron reruns, exit codes, a closed stdout, and bad input; then
//! `dinomaly-metrics` on the pipeline's output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use dinomaly::io::npy;
use serde_json::{json, Value};

use crate::util::fixture::{self as fx, assert_error, entries, parse_lines};
use crate::util::{self, assert_code, Dir};

/// Scores the shared records (stdin) with `flags`.
fn score_shared(flags: &[&str]) -> Output {
    let shared = fx::shared();
    util::run(fx::score(&shared.ckpt, &shared.weights).args(flags), &fx::lines(&shared.records))
}

/// `dinomaly-score -q -c CKPT --features` (no --weights: no encoder runs,
/// and the flag is refused there).
fn score_features(ckpt: &Path) -> std::process::Command {
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("-q").arg("-c").arg(ckpt).arg("--features");
    cmd
}

/// The record of an output line: the line without what scoring adds.
fn input_part(line: &Value) -> Value {
    let mut obj = line.as_object().unwrap().clone();
    for key in [
        "score",
        "model",
        "anomalous",
        "threshold",
        "normalized_score",
        "map",
        "map_geometry",
        "map_space",
        "regions",
        "regions_omitted",
        "pixel_threshold",
        "error",
    ] {
        obj.remove(key);
    }
    Value::Object(obj)
}

fn score_of(line: &Value) -> f64 {
    line["score"].as_f64().unwrap_or_else(|| panic!("no score in {line}"))
}

#[test]
fn cli_score_lines_maps_overlays_and_threshold() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_lines");
    let settings = ["--map-size", "48", "--max-ratio", "0"];
    let plain = score_shared(&[&settings[..], &["--batch", "3"]].concat());
    assert_code(&plain, 0);
    let lines = parse_lines(&util::stdout(&plain));
    // One line per input, in input order, every input field kept.
    assert_eq!(lines.iter().map(input_part).collect::<Vec<_>>(), shared.records);
    let mut scores: Vec<f64> = lines.iter().map(score_of).collect();
    assert!(scores.iter().all(|s| s.is_finite() && *s > 0.0), "{scores:?}");
    scores.sort_by(f64::total_cmp);
    let threshold = (scores[3] + scores[4]) / 2.0;

    let maps = dir.join("maps");
    let t = threshold.to_string();
    let out = score_shared(
        &[
            &settings[..],
            &["--threshold", &t, "--maps-dir", maps.to_str().unwrap(), "--overlay", "--pixel-threshold", "0.5"],
        ]
        .concat(),
    );
    assert_code(&out, 0);
    let with_maps = parse_lines(&util::stdout(&out));
    assert_eq!(with_maps.len(), shared.records.len());
    let mut anomalous = 0;
    for ((line, record), first) in with_maps.iter().zip(&shared.records).zip(&lines) {
        assert_eq!(input_part(line), *record);
        let score = score_of(line);
        assert_eq!(score, score_of(first), "scores changed with the batch size or --maps-dir");
        assert_eq!(line["anomalous"].as_bool(), Some(score > threshold), "{line}");
        anomalous += usize::from(score > threshold);
        let map_path = PathBuf::from(line["map"].as_str().expect("map path"));
        assert_eq!(map_path.parent(), Some(maps.as_path()));
        let map = npy::read_f32_2d(&map_path).unwrap();
        assert_eq!((map.rows, map.cols), (48, 48));
        // --max-ratio 0: the score is the map's maximum.
        let max = map.data.iter().copied().fold(f32::MIN, f32::max);
        assert!((f64::from(max) - score).abs() <= 1e-6 * score, "score {score} vs map max {max}");
        let overlay = image::open(map_path.with_extension("png")).expect("overlay PNG");
        assert!(overlay.width() > 0 && overlay.height() > 0);
    }
    assert_eq!(anomalous, 4, "the median threshold splits the scores");
    // Eight maps and eight overlays (equal names in other folders would
    // still differ), no temporaries.
    let names = entries(&maps);
    assert_eq!(names.len(), 16, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn cli_score_features_equal_images() {
    let shared = fx::shared();
    let from_images = score_shared(&[]);
    assert_code(&from_images, 0);
    let out = util::run(score_features(&shared.ckpt).arg(&shared.store), "");
    assert_code(&out, 0);
    let a = parse_lines(&util::stdout(&from_images));
    let b = parse_lines(&util::stdout(&out));
    assert_eq!(a.iter().map(input_part).collect::<Vec<_>>(), b.iter().map(input_part).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (score_of(x), score_of(y));
        // fp32 store: the same encoder outputs, so the same scores.
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "image score {x} vs store score {y}");
    }
}

#[test]
fn cli_score_shards_concatenate_to_a_single_run() {
    let single = score_shared(&["--batch", "2"]);
    assert_code(&single, 0);
    let mut joined = Vec::new();
    for i in 1..=3 {
        let out = score_shared(&["--batch", "2", "--shard", &format!("{i}/3")]);
        assert_code(&out, 0);
        joined.extend_from_slice(&out.stdout);
    }
    assert_eq!(String::from_utf8(joined).unwrap(), util::stdout(&single));
    let out = score_shared(&["--shard", "4/3"]);
    assert_code(&out, 2);
}

#[test]
fn cli_score_skip_existing_appends_only_new_lines() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_skip");
    let full = score_shared(&[]);
    assert_code(&full, 0);
    let full = util::stdout(&full);
    let lines: Vec<&str> = full.lines().collect();
    // A killed cron run: three complete lines and half of the fourth.
    let results = dir.write("results.jsonl", format!("{}\n{}\n{}\n{}", lines[0], lines[1], lines[2], &lines[3][..20]));
    let rerun = || {
        let stdout = std::fs::OpenOptions::new().append(true).open(&results).unwrap();
        let mut child = fx::score(&shared.ckpt, &shared.weights)
            .arg("--skip-existing")
            .arg(&results)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(fx::lines(&shared.records).as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = rerun();
    assert_code(&out, 0);
    assert!(util::stderr(&out).contains("partial last line"), "{}", util::stderr(&out));
    assert_eq!(std::fs::read_to_string(&results).unwrap(), full);
    // Nothing new: nothing added.
    let out = rerun();
    assert_code(&out, 0);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), full);
}

#[test]
fn cli_score_fail_above_exits_1() {
    let out = score_shared(&["--fail-above", "0"]);
    assert_code(&out, 1);
    assert_eq!(parse_lines(&util::stdout(&out)).len(), 8, "all lines still written");
    // One line saying why (cli_score_ux.rs checks it), even with -q.
    assert!(
        util::stderr(&out).starts_with("dinomaly-score: 8 of 8 scores above --fail-above 0;"),
        "{}",
        util::stderr(&out)
    );
    assert_code(&score_shared(&["--fail-above", "1e9"]), 0);
}

#[test]
fn cli_score_on_error_skip_and_stop() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_on_error");
    let images = fx::images();
    let png = std::fs::read(&images[0]).unwrap();
    let truncated = dir.write("truncated.png", &png[..png.len() / 3]);
    let input: String = [images[0].clone(), dir.join("missing.png"), images[1].clone(), truncated]
        .iter()
        .map(|p| format!("{}\n", json!({"image": p, "k": 1})))
        .collect();
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).args(["--on-error", "skip"]), &input);
    assert_code(&out, 0);
    let lines = parse_lines(&util::stdout(&out));
    assert_eq!(lines.len(), 4);
    for (i, name) in [(1, "missing.png"), (3, "truncated.png")] {
        assert!(lines[i]["error"].as_str().unwrap().contains(name), "{}", lines[i]);
        assert!(lines[i].get("score").is_none());
        assert_eq!(lines[i]["k"], 1);
    }
    assert!(lines[0]["score"].is_number() && lines[2]["score"].is_number());
    // Even with --fail-above exceeded, errors are reported, not hidden.
    for batch in ["1", "8"] {
        let out =
            util::run(fx::score(&shared.ckpt, &shared.weights).args(["--batch", batch, "--fail-above", "0"]), &input);
        assert_error(&out, &["missing.png", "--on-error skip"]);
        // What was scored before the bad image is on stdout.
        let lines = parse_lines(&util::stdout(&out));
        assert_eq!(lines.len(), 1, "batch {batch}");
        assert_eq!(lines[0]["image"].as_str(), images[0].to_str());
    }
}

#[test]
fn cli_score_closed_stdout_ends_quietly() {
    // 48 padded lines: the tool is still writing when the reader goes away.
    let images: Vec<std::path::PathBuf> = (0..48).map(|i| std::path::PathBuf::from(&fx::images()[i % 8])).collect();
    let out = crate::cli_score_ux::score_and_close_after_one_line(&images, &[]);
    assert_code(&out, 0);
    assert!(util::stderr(&out).is_empty(), "a message after the reader left: {}", util::stderr(&out));
}

#[test]
fn cli_score_refuses_other_weights_and_damaged_checkpoints() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_bad_ckpt");
    let input = format!("{}\n", fx::images()[0].display());
    let other = dir.join("other.safetensors");
    fx::tiny_weights(&other, 2);
    let out = util::run(&mut fx::score(&shared.ckpt, &other), &input);
    assert_error(&out, &[&fx::sha256(&shared.weights), &fx::sha256(&other), "other.safetensors"]);
    assert!(out.stdout.is_empty());
    let bytes = std::fs::read(&shared.ckpt).unwrap();
    let cut = dir.write("cut.safetensors", &bytes[..bytes.len() / 2]);
    let out = util::run(&mut fx::score(&cut, &shared.weights), &input);
    assert_error(&out, &["cut.safetensors", "truncated"]);
    let text = dir.write("notes.safetensors", b"not a checkpoint");
    assert_error(&util::run(&mut fx::score(&text, &shared.weights), &input), &["notes.safetensors"]);
    let absent = dir.join("absent.safetensors");
    assert_error(&util::run(&mut fx::score(&absent, &shared.weights), &input), &["absent.safetensors"]);
    // A checkpoint of a later format version.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(r#""format_version":"1""#));
    let newer = header.replacen(r#""format_version":"1""#, r#""format_version":"7""#, 1);
    let mut future = bytes[..8].to_vec();
    future.extend_from_slice(newer.as_bytes());
    future.extend_from_slice(&bytes[8 + header_len..]);
    let future = dir.write("future.safetensors", future);
    assert_error(&util::run(&mut fx::score(&future, &shared.weights), &input), &["future.safetensors", "version 7"]);
    // A store made at another input size than the checkpoint's.
    let store = dir.join("126.st");
    assert_code(&util::run(&mut fx::extract_sized(&shared.weights, &store, 126), &input), 0);
    let out = util::run(score_features(&shared.ckpt).arg(&store), "");
    assert_error(&out, &["input size", "126"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn cli_score_bad_input_lines_and_maps_dir() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_bad_input");
    let good = json!({"image": fx::images()[0]}).to_string();
    let input = format!("{good}\n{{\"image\": \n{good}\n");
    // A file is read whole first: nothing is scored.
    let lists = Dir::new("cli_score_bad_input_list");
    let list = lists.write("list.jsonl", &input);
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).arg("-i").arg(&list), "");
    assert_error(&out, &["list.jsonl:2", "JSON"]);
    assert!(out.stdout.is_empty(), "lines scored before the input was checked");
    // A pipe is live input: the line before the bad one is scored and
    // written, then the run stops at it (as at an unreadable image).
    let out = util::run(&mut fx::score(&shared.ckpt, &shared.weights), &input);
    assert_error(&out, &["stdin:2", "JSON"]);
    let lines = parse_lines(&util::stdout(&out));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["score"].is_number());
    // The maps folder is checked before anything else: even the missing
    // checkpoint is not reached.
    let file = dir.write("plain-file", b"x");
    let out = util::run(
        fx::score(&dir.join("absent.safetensors"), &shared.weights).arg("--maps-dir").arg(file.join("maps")),
        &format!("{good}\n"),
    );
    assert_error(&out, &["--maps-dir", "plain-file"]);
    assert_eq!(entries(dir.path()), vec!["plain-file"]);
}

/// An anomaly mask: the lower-right quarter.
fn write_mask(path: &Path) {
    image::GrayImage::from_fn(80, 80, |x, y| image::Luma([if x >= 40 && y >= 40 { 255 } else { 0 }]))
        .save(path)
        .unwrap();
}

#[test]
fn cli_score_then_metrics_on_the_pipeline_output() {
    let shared = fx::shared();
    let dir = Dir::new("cli_score_metrics");
    let images = fx::images();
    let records: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let class = if i < 4 { "c0" } else { "c1" };
            if i % 2 == 1 {
                let mask = dir.join(&format!("mask{i}.png"));
                write_mask(&mask);
                json!({"image": p, "class": class, "label": 1, "mask": mask})
            } else {
                json!({"image": p, "class": class, "label": 0, "mask": null})
            }
        })
        .collect();
    let maps = dir.join("maps");
    let scored = util::run(
        fx::score(&shared.ckpt, &shared.weights).args(["--map-size", "64"]).arg("--maps-dir").arg(&maps),
        &fx::lines(&records),
    );
    assert_code(&scored, 0);
    let out = util::run(
        util::tool("dinomaly-metrics").args(["-q", "--resize", "112", "--crop", "112"]),
        &util::stdout(&scored),
    );
    assert_code(&out, 0);
    let report: Value = serde_json::from_str(&util::stdout(&out)).expect("one JSON report");
    let classes = report["classes"].as_array().unwrap();
    assert_eq!(classes.iter().map(|c| c["class"].as_str().unwrap()).collect::<Vec<_>>(), vec!["c0", "c1"]);
    for c in classes {
        assert_eq!((c["images"].as_u64(), c["anomalous"].as_u64()), (Some(4), Some(2)));
    }
    for key in ["i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"] {
        let v = report["mean"][key].as_f64().unwrap_or_else(|| panic!("no {key} in {}", report["mean"]));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // Each line carries the geometry its map was made under, so metrics
    // needs no --resize/--crop: the same report without them.
    let lines: Vec<Value> = util::stdout(&scored).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["map_geometry"], json!({"resize": [112, 112], "crop": [112, 112]}));
    let implicit = util::run(util::tool("dinomaly-metrics").arg("-q"), &util::stdout(&scored));
    assert_code(&implicit, 0);
    assert_eq!(util::stdout(&implicit), util::stdout(&out));
    // The official default (448/392) would have given other pixel metrics.
    let official = util::run(
        util::tool("dinomaly-metrics").args(["-q", "--resize", "448", "--crop", "392"]),
        &util::stdout(&scored),
    );
    assert_code(&official, 0);
    assert_ne!(util::stdout(&official), util::stdout(&out));
    // Maps of two geometries in one evaluation: refused, naming the line.
    let mut mixed = lines.clone();
    mixed[3]["map_geometry"] = json!({"resize": [448, 448], "crop": [392, 392]});
    let out = util::run(util::tool("dinomaly-metrics").arg("-q"), &fx::lines(&mixed));
    assert_code(&out, 2);
    assert!(
        util::stderr(&out).contains("stdin:4") && util::stderr(&out).contains("map_geometry"),
        "{}",
        util::stderr(&out)
    );
}

/// libtorch's MKL asks the executable, not itself, whether it may run its
/// AVX-512 kernels (src/mkl_kernels.rs): the dynamic linker's own trace
/// shows the call from libtorch_cpu.so bound to dinomaly-score.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn cli_score_binds_mkls_kernel_question_to_the_tool() {
    let shared = fx::shared();
    let mut cmd = fx::score(&shared.ckpt, &shared.weights);
    let out = util::run(cmd.env("LD_DEBUG", "bindings"), &fx::lines(&shared.records));
    assert_code(&out, 0);
    let trace = util::stderr(&out);
    let binding = trace
        .lines()
        .find(|l| l.contains("libtorch_cpu.so") && l.contains("`mkl_serv_intel_cpu_true'"))
        .unwrap_or_else(|| panic!("libtorch_cpu.so never looked up mkl_serv_intel_cpu_true"));
    let (_, bound_to) = binding.split_once(" to ").expect("a binding line names its target");
    assert!(bound_to.contains("dinomaly-score"), "bound elsewhere: {binding}");
}
