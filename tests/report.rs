//! `dinomaly-metrics --html`: the report checked as a person would see it,
//! in Debian's headless Chromium (`make test` installs it with apt-get, see
//! the Makefile's `chromium` target; `CHROMIUM=path` picks another build).
//! Without a browser the test fails and says how to get one: it never
//! passes without looking at the page.
//!
//! Checked: the page loads with no console message, every image it
//! references exists, decodes here and is displayed by the browser, the
//! table holds the numbers of the JSON report, a `#sort=` link sorts it;
//! and the bad-input cases of the flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dinomaly::io::npy;
use serde_json::{json, Value};

use crate::util::{self, Dir};

/// Debian's headless Chromium, or the one `CHROMIUM` names.
fn chromium() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        Some(p) => vec![PathBuf::from(p)],
        None => ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).collect(),
    };
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "no headless Chromium: the report test renders the page in a real browser. Install Debian's \
             package with `make chromium` (apt-get install -y chromium, as root) or set CHROMIUM=/path/to/chromium"
        )
    })
}

/// Runs headless Chromium on `url` with `extra` flags; returns its output.
fn browse(url: &str, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("browser profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The console messages of a page load (Chromium logs each as
/// `INFO:CONSOLE` with --enable-logging=stderr).
fn console_messages(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect()
}

fn dump_dom(url: &str) -> (String, Vec<String>) {
    let out = browse(url, &["--dump-dom"]);
    (String::from_utf8_lossy(&out.stdout).into_owned(), console_messages(&out))
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.canonicalize().expect("absolute path").display())
}

/// The value of `name="..."` in the first element of `html` that has it.
fn attr(html: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = html.find(&key)? + key.len();
    Some(html[start..start + html[start..].find('"')?].to_string())
}

/// Every `src="..."` of `html`.
fn sources(html: &str) -> Vec<String> {
    html.split(" src=\"").skip(1).map(|s| s[..s.find('"').unwrap()].replace("&amp;", "&")).collect()
}

/// The `data-value`s and the texts of the cells of the table row
/// `<tr data-class="NAME">`.
fn row(html: &str, class: &str) -> Vec<(String, String)> {
    let start = html.find(&format!("<tr data-class=\"{class}\">")).unwrap_or_else(|| panic!("no row {class}"));
    let body = &html[start..start + html[start..].find("</tr>").unwrap()];
    body.split("<td")
        .skip(1)
        .map(|cell| {
            let value = attr(cell, "data-value").unwrap_or_default();
            let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
            let text = text.rsplit('>').next().unwrap_or(text);
            let text = text.split('<').next().unwrap_or(text);
            (value, text.to_string())
        })
        .collect()
}

/// The class names of the table body, in display order.
fn row_order(html: &str) -> Vec<String> {
    let body = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
    body.split("<tr data-class=\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect()
}

const METRICS: [&str; 7] = ["i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"];

/// Three classes of 64x48 photos with 16x16 maps and 40x40 masks: `big`
/// (5 good, 4 defective), `small` (3 and 2) and `good_only` (2 good), one
/// record that failed to score, and the geometry on the lines.
fn scored_set(dir: &Dir) -> PathBuf {
    let mut lines = Vec::new();
    let mut n = 0usize;
    for (class, good, defective) in [("big", 5, 4), ("small", 3, 2), ("good_only", 2, 0)] {
        for i in 0..good + defective {
            n += 1;
            let anomalous = i >= good;
            let photo = image::RgbImage::from_fn(64, 48, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (n * 20 % 256) as u8])
            });
            let image = dir.join(&format!("{class}/{i}.png"));
            std::fs::create_dir_all(image.parent().unwrap()).unwrap();
            photo.save(&image).unwrap();
            // Hot in the top-left corner for defective images, where the
            // mask is; the score spreads the classes' scores apart.
            let score = 0.1 * i as f64 + if anomalous { 0.25 } else { 0.0 } + 0.013 * n as f64;
            let map: Vec<f32> = (0..256)
                .map(|k| {
                    let (y, x) = (k / 16, k % 16);
                    (0.05 * n as f32) + if anomalous && x < 6 && y < 6 { 1.0 } else { 0.1 * (x as f32 / 16.0) }
                })
                .collect();
            let map_path = dir.join(&format!("{class}/{i}.npy"));
            npy::write_f32_2d(&map_path, 16, 16, &map).unwrap();
            let mask = if anomalous {
                let mut m = image::GrayImage::new(40, 40);
                for y in 4..16 {
                    for x in 4..16 {
                        m.put_pixel(x, y, image::Luma([255]));
                    }
                }
                let p = dir.join(&format!("{class}/{i}_mask.png"));
                m.save(&p).unwrap();
                json!(p)
            } else {
                Value::Null
            };
            lines.push(json!({
                "image": image, "class": class, "label": anomalous as u8, "mask": mask,
                "map": map_path, "map_geometry": {"resize": [40, 40], "crop": [32, 32]}, "score": score,
                "model": "0123abcd",
            }));
        }
    }
    lines.push(json!({"image": dir.join("small/broken.png"), "class": "small", "label": 1, "error": "cannot decode"}));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    dir.write("scores.jsonl", text)
}

/// Lines of stderr that are not warnings (the set's class of good images
/// only and its failed record give warnings before any error).
fn errors(stderr: &str) -> usize {
    stderr.lines().filter(|l| !l.starts_with("dinomaly-metrics: warning: ")).count()
}

fn metrics(args: &[&str], cwd: &Path) -> Output {
    util::run(util::tool("dinomaly-metrics").args(args).current_dir(cwd), "")
}

#[test]
fn report_renders_in_chromium_with_the_numbers_of_the_json_report() {
    let dir = Dir::new("report");
    let records = scored_set(&dir);
    let records = records.to_str().unwrap();
    let out_dir = dir.join("report");
    let html_arg = out_dir.to_str().unwrap();
    let out = metrics(&["-i", records, "--target-fpr", "0.2", "--worst", "2", "--html", html_arg], dir.path());
    util::assert_code(&out, 0);
    let json_report: Value = serde_json::from_str(&util::stdout(&out)).expect("the JSON report on stdout");
    assert!(util::stderr(&out).contains("report written to"), "{}", util::stderr(&out));
    // The folder holds the page and its images, nothing half-written beside it.
    let page = std::fs::read_to_string(out_dir.join("index.html")).expect("index.html");
    let beside: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!beside.iter().any(|n| n.contains(".partial")), "{beside:?}");

    // Self-contained: nothing from the network.
    for needle in ["http://", "https://", "//cdn", "@import", "url("] {
        assert!(!page.contains(needle), "the page references {needle}");
    }
    // Every image it references exists and decodes.
    let srcs = sources(&page);
    // Charts: ROC, PR, PRO and the histogram for the classes with both
    // labels, the histogram alone for good_only; cases 2+2, 2+2 and 2+0,
    // each a photo and a map.
    let charts = 4 + 4 + 1;
    let cases = 2 * ((2 + 2) + (2 + 2) + 2);
    assert_eq!(srcs.len(), charts + cases, "{srcs:?}");
    for src in &srcs {
        assert!(!src.contains('/') && !src.contains(':'), "{src}: not a file of the folder");
        let path = out_dir.join(src);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{src}: {e}"));
        if src.ends_with(".svg") {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{src}");
        } else {
            let img = image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{src}: {e}"));
            // The 32x32 crop the model saw, at its own size.
            assert_eq!((img.width(), img.height()), (32, 32), "{src}");
        }
    }

    // In the browser: no console message, every image displayed.
    let (dom, console) = dump_dom(&file_url(&out_dir.join("index.html")));
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(attr(&dom, "data-images").as_deref(), Some(srcs.len().to_string().as_str()), "scripts did not run");
    assert_eq!(attr(&dom, "data-images-broken").as_deref(), Some("0"), "images the browser cannot show");

    // The table holds the JSON report's numbers: full precision in
    // data-value, the paper's percent with one decimal as text.
    for c in json_report["classes"].as_array().unwrap() {
        let name = c["class"].as_str().unwrap();
        let cells = row(&dom, name);
        assert_eq!(cells[0].0, name);
        for (k, key) in METRICS.iter().enumerate() {
            let (value, text) = &cells[1 + k];
            match c["metrics"][key].as_f64() {
                Some(v) => {
                    assert_eq!(value.parse::<f64>().ok(), Some(v), "{name} {key}");
                    assert_eq!(*text, format!("{:.1}", 100.0 * v), "{name} {key}");
                }
                None => assert_eq!((value.as_str(), text.as_str()), ("", "–"), "{name} {key}"),
            }
        }
        assert_eq!(cells[8].0, c["images"].to_string(), "{name} images");
        assert_eq!(cells[10].0, c["failed"].to_string(), "{name} failed");
        let threshold = c["thresholds"]["image_target_fpr"]["threshold"].as_f64();
        assert_eq!(cells[11].0.parse::<f64>().ok(), threshold, "{name}: the --target-fpr threshold is in use");
    }
    let mean = row(&dom, "mean");
    for (k, key) in METRICS.iter().enumerate() {
        assert_eq!(mean[1 + k].0.parse::<f64>().ok(), json_report["mean"][key].as_f64(), "mean {key}");
    }
    assert_eq!(json_report["failed"], 1);
    assert!(dom.contains("1 failed to score"), "provenance counts the failed record");
    assert!(dom.contains("false positive rate at most 0.2"), "the threshold rule is named");
    assert!(dom.contains("Model id (records)</dt><dd>0123abcd<"), "the lines' model id");

    // A #sort= link sorts the table in the browser.
    let order = |key: &str| {
        let (dom, console) = dump_dom(&format!("{}#sort={key}", file_url(&out_dir.join("index.html"))));
        assert!(console.is_empty(), "{console:?}");
        row_order(&dom)
    };
    assert_eq!(order("class"), ["big", "good_only", "small"]);
    assert_eq!(order("-images"), ["big", "small", "good_only"]);
    assert_eq!(order("i_auroc").last().map(String::as_str), Some("good_only"), "empty cells sort last");

    // A screenshot decodes and is not blank.
    let shot = dir.join("report.png");
    browse(
        &file_url(&out_dir.join("index.html")),
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1600", "--hide-scrollbars"],
    );
    let png = image::open(&shot).expect("a screenshot").to_rgb8();
    let distinct: std::collections::HashSet<[u8; 3]> = png.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 50, "a blank screenshot ({} colours)", distinct.len());

    // The checks can fail: a copy without one image shows a banner and
    // counts it, and a console message is seen.
    let copy = dir.join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(copy.join(&srcs[srcs.len() - 1])).unwrap();
    let (dom, _) = dump_dom(&file_url(&copy.join("index.html")));
    assert_eq!(attr(&dom, "data-images-broken").as_deref(), Some("1"));
    assert!(dom.contains("images of this page cannot be shown"));
    let noisy = dir.write("noisy.html", "<!DOCTYPE html><p>x</p><script>console.error('seen')</script>");
    let (_, console) = dump_dom(&file_url(&noisy));
    assert!(console.iter().any(|l| l.contains("seen")), "console messages are not captured: {console:?}");
}

/// A checkpoint file with the given calibration (tensors do not matter to
/// the report, only the metadata).
fn checkpoint(path: &Path, calibration: Option<Value>) {
    let mut meta = json!({
        "encoder": {
            "backbone": "dinov2_vits14_reg4", "weights_sha256": "ab".repeat(32), "embed_dim": 384,
            "num_heads": 6, "num_registers": 4, "patch_size": 14, "layers": [2, 3, 4, 5, 6, 7, 8, 9],
            "groups": [[0, 1, 2, 3], [4, 5, 6, 7]], "all_layers": false, "resize": [40, 40], "crop": [32, 32],
            "preprocess": "pil", "pos_interp": "official", "grid": [2, 2], "dtype": "f16"
        },
        "model": {"attention": "linear", "attention_eps": null, "dropout": 0.2, "mlp_bias": true,
            "groups": [[0, 1, 2, 3], [4, 5, 6, 7]], "num_layers": 8, "depth_decoder": 8},
        "training": {},
    });
    if let Some(c) = calibration {
        meta["calibration"] = c;
    }
    let meta = serde_json::from_value(meta).expect("checkpoint metadata");
    let tensors = [("x".to_string(), tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))];
    dinomaly::io::checkpoint::save(path, &tensors, &meta).expect("save checkpoint");
}

#[test]
fn report_uses_the_checkpoints_calibrated_thresholds() {
    let dir = Dir::new("report-calibrated");
    let records = scored_set(&dir);
    let ckpt = dir.join("model.safetensors");
    checkpoint(
        &ckpt,
        Some(json!({
            "image": {"global": 0.5, "per_class": {"big": 0.75}}, "rule": "target-fpr", "target_fpr": 0.01,
            "counts": {"big": {"good": 30, "defective": 0}}, "created": "2026-12-05T08:00:00Z", "model": "0123abcd"
        })),
    );
    let sha = dinomaly::io::hash::sha256_file(&ckpt).unwrap();
    let out_dir = dir.join("r");
    let args = ["-i", records.to_str().unwrap(), "--html", "r", "--checkpoint", ckpt.to_str().unwrap(), "--worst", "1"];
    let out = metrics(&args, dir.path());
    util::assert_code(&out, 0);
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert_eq!(row(&page, "big")[11].0, "0.75", "big's own calibrated threshold");
    assert_eq!(row(&page, "small")[11].0, "0.5", "the global one for the others");
    assert!(page.contains(&sha), "checkpoint sha256 in the provenance");
    assert!(page.contains("dinov2_vits14_reg4") && page.contains("calibrated in the checkpoint (rule target-fpr)"));
    // Without calibration: the F1-optimal thresholds, said so.
    checkpoint(&ckpt, None);
    let out = metrics(&args, dir.path());
    util::assert_code(&out, 0);
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(page.contains("none in the checkpoint") && page.contains("F1-optimal per class"));
    // --image-only reports still show the worst cases' maps and photos.
    let out = metrics(&["-i", records.to_str().unwrap(), "--image-only", "--html", "r"], dir.path());
    util::assert_code(&out, 0);
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(page.contains("-map.jpg") && page.contains("image labels only"));
}

#[test]
fn report_bad_input_is_one_line_exit_2_and_nothing_written() {
    let dir = Dir::new("report-bad");
    let records = scored_set(&dir);
    let records = records.to_str().unwrap();
    let listing = |d: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let before = listing(dir.path());
    dir.write("not-a-folder", "x");
    let foreign = dir.join("photos");
    std::fs::create_dir(&foreign).unwrap();
    dir.write("photos/a.jpg", "x");
    let before_with = listing(dir.path());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--html", "/proc/dinomaly-report"], "/proc/dinomaly-report"),
        (vec!["--html", "missing/report"], "does not exist"),
        (vec!["--html", "not-a-folder"], "not a folder"),
        (vec!["--html", "photos"], "refusing to replace it"),
        (vec!["--html", "-"], "--html"),
        (vec!["--html", "r", "--worst", "256"], "--worst"),
        (vec!["--html", "r", "--worst", "-1"], "--worst"),
        (vec!["--worst", "2"], "--html"),
        (vec!["--checkpoint", "model.safetensors"], "--html"),
        (vec!["--html", "r", "--checkpoint", "gone.safetensors"], "gone.safetensors"),
        (vec!["--html", "r", "--checkpoint", "not-a-folder"], "not-a-folder"),
    ];
    for (flags, want) in cases {
        let out = metrics(&[&["-i", records][..], &flags].concat(), dir.path());
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: expected '{want}' in {err}");
        assert!(util::stdout(&out).is_empty(), "{flags:?}");
        if !err.contains("Usage") {
            assert_eq!(errors(&err), 1, "{flags:?}: {err}");
        }
        assert_eq!(listing(dir.path()), before_with, "{flags:?} left something");
    }
    assert_eq!(listing(&foreign), ["a.jpg"]);
    // A worst case whose photo is missing: the line is named, nothing written.
    let text = std::fs::read_to_string(records).unwrap();
    std::fs::rename(dir.join("big/8.png"), dir.join("big/8.moved")).unwrap();
    let out = metrics(&["-i", records, "--html", "r"], dir.path());
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("scores.jsonl:9: ") && err.contains("big/8.png") && errors(&err) == 1, "{err}");
    assert!(!dir.join("r").exists());
    // A missing map of a worst case in an --image-only report.
    std::fs::rename(dir.join("big/8.moved"), dir.join("big/8.png")).unwrap();
    std::fs::remove_file(dir.join("big/8.npy")).unwrap();
    let out = metrics(&["-i", records, "--image-only", "--html", "r"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    assert!(util::stderr(&out).contains("big/8.npy"), "{}", util::stderr(&out));
    assert!(!dir.join("r").exists());
    assert!(text.contains("\"error\""));
    drop(before);
}
