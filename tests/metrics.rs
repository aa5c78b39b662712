//! dinomaly-metrics against the golden fixtures of
//! tests/fixtures/gen/metrics.py (scikit-learn 1.9.1, scikit-image 0.26.0,
//! the official AUPRO procedure, anomalib 2.7.0). Tolerance: 1e-6 absolute
//! on every metric (the maths is float64; the expected values come from
//! float64 numpy, so differences are summation-order rounding, ~1e-15).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dinomaly::io::npy::{self, NpyData};
use dinomaly::metrics::binary;
use dinomaly::metrics::pixels::{reduce, PixelOptions, PixelSet};
use dinomaly::metrics::report::{self, ClassInput, Metric, Options};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn records() -> Vec<Value> {
    std::fs::read_to_string(dir().join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: got {g}, expected {w}"),
        (g, _) => panic!("{what}: got {g:?}, expected {want}"),
    }
}

/// The classes of the fixture with the processed GT of `rule` (read from
/// the .npy files, so the mask resampling is not involved).
fn class_inputs(rule: &str) -> Vec<ClassInput> {
    let mut classes: BTreeMap<String, ClassInput> = BTreeMap::new();
    let mut order = Vec::new();
    for r in records() {
        let name = r["class"].as_str().unwrap().to_string();
        let entry = classes.entry(name.clone()).or_insert_with(|| {
            order.push(name.clone());
            ClassInput { name: name.clone(), images: Vec::new(), pixels: Some(PixelSet::new()) }
        });
        entry.images.push((r["score"].as_f64().unwrap(), r["label"].as_u64().unwrap() == 1));
        let map = npy::read_f32_2d(dir().join(r["map"].as_str().unwrap())).unwrap();
        let gt = npy::read(dir().join(r["gt"][rule].as_str().unwrap())).unwrap();
        let NpyData::U8(gt) = gt.data else { panic!("gt not uint8") };
        let mask: Vec<bool> = gt.iter().map(|&v| v != 0).collect();
        let img = reduce(&map.data, &mask, map.rows, map.cols).unwrap();
        entry.pixels.as_mut().unwrap().push(img).unwrap();
    }
    order.into_iter().map(|n| classes.remove(&n).unwrap()).collect()
}

fn check_rule(rule: &str, fpr_limit: f64) {
    let exp = expected();
    let opts = Options { pixel: PixelOptions { fpr_limit, ..PixelOptions::default() }, ..Options::default() };
    let report = report::evaluate(class_inputs(rule), &opts);
    let (aupro_key, exact_key) = if fpr_limit == 0.3 {
        ("aupro".to_string(), "aupro_exact".to_string())
    } else {
        (format!("aupro_fpr_limit_{fpr_limit}"), format!("aupro_exact_fpr_limit_{fpr_limit}"))
    };
    for c in &report.classes {
        let e = &exp["classes"][&c.name];
        let what = |m: &str| format!("{} {rule} {m}", c.name);
        assert_eq!(c.images as u64, e["images"].as_u64().unwrap());
        let img = &e["image"];
        close(c.get(Metric::IAuroc), &img["auroc"], &what("I-AUROC"));
        close(c.get(Metric::IAp), &img["ap"], &what("I-AP"));
        close(c.get(Metric::IF1max), &img["f1max"], &what("I-F1max"));
        let px = &e["pixel"][rule];
        let pm = &px["metrics"];
        close(c.get(Metric::PAuroc), &pm["auroc"], &what("P-AUROC"));
        close(c.get(Metric::PAp), &pm["ap"], &what("P-AP"));
        close(c.get(Metric::PF1max), &pm["f1max"], &what("P-F1max"));
        close(c.get(Metric::Aupro), &px[&aupro_key], &what("AUPRO"));
        close(c.get(Metric::AuproExact), &px[&exact_key], &what("exact AUPRO"));
        let counts = c.pixel_counts.unwrap();
        assert_eq!(counts.regions as u64, px["regions"].as_u64().unwrap(), "{}", what("regions"));
        assert_eq!(counts.anomalous as u64, px["positive_pixels"].as_u64().unwrap());
        // anomalib's float32 AUPRO is the reference of the exact variant,
        // within its own float32 rounding (measured <= 1.2e-7 here).
        if fpr_limit == 0.3 {
            if let Some(a) = px["aupro_anomalib"].as_f64() {
                let ours = c.get(Metric::AuproExact).unwrap();
                assert!((ours - a).abs() < 1e-6, "{}: {ours} vs anomalib {a}", what("exact AUPRO"));
            }
        }
    }
    // One-label classes are null, and so is every mean they touch.
    let normal = report.classes.iter().find(|c| c.name == "normal_only").unwrap();
    assert!(normal.values.iter().all(|v| v.1.is_none()));
    assert!(report.mean.iter().all(|v| v.1.is_none()));
    assert!(report.warnings.iter().any(|w| w.contains("'normal_only'")));
    assert!(report.warnings.iter().any(|w| w.contains("'flat'") && w.contains("AUPRO")));
}

#[test]
fn fixture_metrics_official_mask_rule() {
    check_rule("gt0", 0.3);
}

#[test]
fn fixture_metrics_half_mask_rule() {
    check_rule("gt05", 0.3);
}

#[test]
fn fixture_metrics_fpr_limit() {
    check_rule("gt0", 0.1);
}

#[test]
fn fixture_binary_cases_with_ties() {
    let exp = expected();
    for case in exp["binary_cases"].as_array().unwrap() {
        let labels = case["labels"].as_array().unwrap();
        let scores = case["scores"].as_array().unwrap();
        let pairs: Vec<(f64, bool)> =
            scores.iter().zip(labels).map(|(s, l)| (s.as_f64().unwrap(), l.as_u64().unwrap() == 1)).collect();
        let m = binary::from_pairs(&pairs, false).unwrap();
        let name = case["name"].as_str().unwrap();
        let e = &case["expected"];
        close(Some(m.auroc), &e["auroc"], &format!("{name} AUROC"));
        close(Some(m.ap), &e["ap"], &format!("{name} AP"));
        close(Some(m.f1max), &e["f1max"], &format!("{name} F1max"));
    }
}

#[test]
fn fixture_mean_over_classes() {
    let exp = expected();
    let keep = ["ties", "tiny", "nonbinary", "random"];
    let inputs: Vec<ClassInput> = class_inputs("gt0").into_iter().filter(|c| keep.contains(&c.name.as_str())).collect();
    let report = report::evaluate(inputs, &Options::default());
    let mean = |f: &dyn Fn(&Value) -> f64| keep.iter().map(|c| f(&exp["classes"][c])).sum::<f64>() / 4.0;
    let want_i = mean(&|c| c["image"]["auroc"].as_f64().unwrap());
    let want_p = mean(&|c| c["pixel"]["gt0"]["aupro"].as_f64().unwrap());
    let got = |m: Metric| report.mean.iter().find(|v| v.0 == m).unwrap().1.unwrap();
    assert!((got(Metric::IAuroc) - want_i).abs() < TOL);
    assert!((got(Metric::Aupro) - want_p).abs() < TOL);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

// ---------------------------------------------------------------------------
// The command line.

use std::io::Write;
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli(args: &[&str], cwd: &Path, stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dinomaly-metrics"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const SMALL: [&str; 4] = ["--resize", "36", "--crop", "32"];

fn check_cli_json(out: &Out, rule: &str) {
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    let exp = expected();
    for c in got["classes"].as_array().unwrap() {
        let name = c["class"].as_str().unwrap();
        let e = &exp["classes"][name];
        let m = &c["metrics"];
        let what = |k: &str| format!("cli {name} {rule} {k}");
        let img = &e["image"];
        close(m["i_auroc"].as_f64(), &img["auroc"], &what("I-AUROC"));
        close(m["i_ap"].as_f64(), &img["ap"], &what("I-AP"));
        close(m["i_f1max"].as_f64(), &img["f1max"], &what("I-F1max"));
        let px = &e["pixel"][rule];
        close(m["p_auroc"].as_f64(), &px["metrics"]["auroc"], &what("P-AUROC"));
        close(m["p_ap"].as_f64(), &px["metrics"]["ap"], &what("P-AP"));
        close(m["p_f1max"].as_f64(), &px["metrics"]["f1max"], &what("P-F1max"));
        close(m["aupro"].as_f64(), &px["aupro"], &what("AUPRO"));
        close(m["aupro_exact"].as_f64(), &px["aupro_exact"], &what("exact AUPRO"));
        assert_eq!(c["pixels"]["regions"], px["regions"], "{}", what("regions"));
    }
    assert_eq!(got["settings"]["map_size"], serde_json::json!([24, 24]));
    assert!(out.stderr.contains("warning: class 'normal_only'"), "{}", out.stderr);
}

#[test]
fn cli_png_masks_official_rule() {
    // The whole path: PNG masks through the official GT pipeline (PIL
    // bilinear resize, centre crop, nearest, > 0), including non-binary,
    // RGB, non-square and crop-cut masks.
    let out = cli(&[&SMALL[..], &["--input", "records.jsonl"]].concat(), &dir(), None);
    check_cli_json(&out, "gt0");
}

#[test]
fn cli_png_masks_half_rule_from_stdin() {
    let records = std::fs::read_to_string(dir().join("records.jsonl")).unwrap();
    let args = [&SMALL[..], &["--mask-threshold", "0.5", "--input", "-"]].concat();
    let out = cli(&args, &dir(), Some(&records));
    check_cli_json(&out, "gt05");
}

#[test]
fn cli_formats_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let plots = tmp.path().join("plots");
    let plots_arg = plots.to_str().unwrap();
    let args = [&SMALL[..], &["-i", "records.jsonl", "--format", "markdown", "--plots", plots_arg]].concat();
    let out = cli(&args, &dir(), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "| Class | I-AUROC | I-AP | I-F1max | P-AUROC | P-AP | P-F1max | AUPRO |");
    assert!(lines[2].starts_with("| ties | 70.8 | 74.3 | 76.9 |"), "{}", lines[2]);
    assert!(lines.last().unwrap().starts_with("| Mean |"));
    for f in ["ties-roc.svg", "ties-pr.svg", "random-roc.svg", "anomalous_only-pr.svg"] {
        let svg = std::fs::read_to_string(plots.join(f)).unwrap_or_default();
        assert!(svg.starts_with("<svg") && svg.contains("pixel (A"), "{f}");
    }
    // No curve at all for a class with normal images only.
    assert!(!plots.join("normal_only-roc.svg").exists());
    assert!(!plots.join("normal_only-pro.svg").exists());
    let args = [&SMALL[..], &["-i", "records.jsonl", "--format", "csv"]].concat();
    let out = cli(&args, &dir(), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap();
    assert_eq!(first, "class,images,anomalous,failed,i_auroc,i_ap,i_f1max,p_auroc,p_ap,p_f1max,aupro,aupro_exact");
    assert!(out.stdout.lines().any(|l| l.starts_with("normal_only,4,0,0,,,,,,,,")));
    assert!(out.stdout.lines().last().unwrap().starts_with("mean,54,"));
}

/// The frame (x, y, width, height) and the data points of the PRO curve of
/// an SVG written by --plots, x mapped to 0..`x_max`, y to 0..1.
fn pro_points(svg: &str, x_max: f64) -> Vec<(f64, f64)> {
    let attr = |tag: &str, name: &str| -> f64 {
        let start = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        tag[start..start + tag[start..].find('"').unwrap()].parse().unwrap()
    };
    let frame = svg.lines().find(|l| l.contains(r#"fill="none" stroke="black""#)).expect("a frame");
    let (fx, fy, fw, fh) = (attr(frame, "x"), attr(frame, "y"), attr(frame, "width"), attr(frame, "height"));
    let curve = svg.lines().find(|l| l.contains(r#"class="curve""#)).expect("a curve");
    let start = curve.find(" d=\"").unwrap() + 4;
    let d = &curve[start..start + curve[start..].find('"').unwrap()];
    d.split(['M', 'L'])
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (x, y) = p.trim().split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            ((x - fx) / fw * x_max, (fy + fh - y) / fh)
        })
        .collect()
}

#[test]
fn cli_pro_plot_is_the_curve_of_the_reported_aupro() {
    let tmp = tempfile::tempdir().unwrap();
    let plots = tmp.path().join("plots");
    for limit in ["0.3", "0.1"] {
        let args =
            [&SMALL[..], &["-q", "-i", "records.jsonl", "--fpr-limit", limit, "--plots", plots.to_str().unwrap()]]
                .concat();
        let out = cli(&args, &dir(), None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        let mut drawn = 0;
        for c in report["classes"].as_array().unwrap() {
            let name = c["class"].as_str().unwrap();
            let path = plots.join(format!("{name}-pro.svg"));
            let Some(aupro) = c["metrics"]["aupro"].as_f64() else {
                assert!(!path.exists(), "{name}: a PRO plot without an AUPRO");
                continue;
            };
            let svg = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.trim_end().ends_with("</svg>"));
            assert_eq!(svg.matches("<svg").count(), 1);
            assert!(svg.contains(r#"class="area""#), "{name}: no shaded area");
            assert!(svg.contains(&format!("AUPRO {:.1}", aupro * 100.0)), "{name}: no AUPRO in the legend");
            let limit: f64 = limit.parse().unwrap();
            let points = pro_points(&svg, limit);
            assert!(points.len() >= 2 && points.iter().all(|p| p.0 >= 0.0 && p.0 < limit + 1e-9), "{name}: {points:?}");
            // The official AUPRO is the trapezoidal area of these points
            // divided by the last FPR: the plot is its curve.
            let area: f64 = points.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum();
            let last = points.last().unwrap().0;
            assert!(
                (area / last - aupro).abs() <= TOL,
                "{name} limit {limit}: plotted {} vs AUPRO {aupro}",
                area / last
            );
            drawn += 1;
        }
        assert!(drawn >= 4, "only {drawn} PRO plots");
    }
}

#[test]
fn cli_image_only_and_thresholds() {
    // No maps needed: strip them from the records.
    let records: String = records()
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("map");
            r.to_string() + "\n"
        })
        .collect();
    let out = cli(&["--image-only", "--target-fpr", "0.25"], &dir(), Some(&records));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    let ties = &got["classes"][0];
    assert!(ties["metrics"].get("p_auroc").is_none());
    close(ties["metrics"]["i_auroc"].as_f64(), &expected()["classes"]["ties"]["image"]["auroc"], "image-only");
    let t = &ties["thresholds"]["image_target_fpr"];
    assert!(t["fpr"].as_f64().unwrap() <= 0.25);
    assert!(got["thresholds"]["overall"]["image_f1"].is_number());
    assert_eq!(got["thresholds"]["rule"], "anomalous when score > threshold");
    // The same thresholds in the other formats.
    let overall = &got["thresholds"]["overall"]["image_target_fpr"];
    let csv = cli(&["--image-only", "--target-fpr", "0.25", "--format", "csv"], &dir(), Some(&records));
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert!(
        rows[0].ends_with(",i_f1max,image_target_fpr_threshold,image_target_fpr_fpr,image_target_fpr_tpr"),
        "{}",
        rows[0]
    );
    let cell = |v: &Value| v.as_f64().map(|x| x.to_string()).unwrap_or_default();
    let want = |t: &Value| format!(",{},{},{}", cell(&t["threshold"]), cell(&t["fpr"]), cell(&t["tpr"]));
    assert!(rows[1].starts_with("ties,") && rows[1].ends_with(&want(t)), "{} vs {}", rows[1], want(t));
    assert!(rows.last().unwrap().starts_with("mean,") && rows.last().unwrap().ends_with(&want(overall)));
    let md = cli(&["--image-only", "--target-fpr", "0.25", "--format", "markdown"], &dir(), Some(&records));
    assert_eq!(md.code, 0, "{}", md.stderr);
    assert!(md.stdout.contains("at most 0.25 on the normal images"), "{}", md.stdout);
    let pct = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{:.1}", x * 100.0));
    let row = |name: &str, t: &Value| {
        format!("| {name} | {} | {} | {} |", cell(&t["threshold"]), pct(&t["fpr"]), pct(&t["tpr"]))
    };
    assert!(md.stdout.lines().any(|l| l == row("ties", t)), "{} not in\n{}", row("ties", t), md.stdout);
    assert!(md.stdout.lines().any(|l| l == row("All images", overall)), "{}", md.stdout);
}

#[test]
fn cli_records_without_class_form_the_default_class() {
    let tmp = tiny_set();
    let d = tmp.path();
    let lines: Vec<String> = ok_lines(d).iter().map(|l| l.replace("\"class\":\"c\",", "")).collect();
    let out = bad_run(d, &(lines.join("\n") + "\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["classes"].as_array().unwrap().len(), 1);
    assert_eq!(got["classes"][0]["class"], "default");
    assert_eq!(got["classes"][0]["images"], 4);
    // Mixed with named classes: evaluated, and said.
    let mut mixed = ok_lines(d);
    mixed[0] = lines[0].clone();
    let out = bad_run(d, &(mixed.join("\n") + "\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("1 record(s) without \"class\" are evaluated as the class 'default'"),
        "{}",
        out.stderr
    );
}

/// A tiny scored set in a temporary folder: two normal and two anomalous
/// images of 24x24 maps, 40x40 masks.
fn tiny_set() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut lines = String::new();
    for i in 0..4 {
        let map: Vec<f32> = (0..576).map(|k| ((k * 7 + i * 13) % 97) as f32 / 97.0).collect();
        npy::write_f32_2d(d.join(format!("m{i}.npy")), 24, 24, &map).unwrap();
        let label = (i >= 2) as u8;
        let mask = if label == 1 {
            let mut img = image::GrayImage::new(40, 40);
            for y in 10..20 {
                for x in 5..15 {
                    img.put_pixel(x, y, image::Luma([255]));
                }
            }
            img.save(d.join(format!("k{i}.png"))).unwrap();
            format!("\"k{i}.png\"")
        } else {
            "null".to_string()
        };
        lines += &format!(
            "{{\"image\":\"i{i}.png\",\"class\":\"c\",\"label\":{label},\"mask\":{mask},\"map\":\"m{i}.npy\",\"score\":{}}}\n",
            0.1 * i as f64
        );
    }
    std::fs::write(d.join("ok.jsonl"), lines).unwrap();
    tmp
}

fn bad_run(tmp: &Path, records: &str, extra: &[&str]) -> Out {
    std::fs::write(tmp.join("bad.jsonl"), records).unwrap();
    cli(&[&SMALL[..], extra, &["-i", "bad.jsonl"]].concat(), tmp, None)
}

fn ok_lines(tmp: &Path) -> Vec<String> {
    std::fs::read_to_string(tmp.join("ok.jsonl")).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn cli_tiny_set_runs() {
    let tmp = tiny_set();
    let out = cli(&[&SMALL[..], &["-i", "ok.jsonl"]].concat(), tmp.path(), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn cli_bad_records_name_the_line() {
    let tmp = tiny_set();
    let d = tmp.path();
    let lines = ok_lines(d);
    let cases: Vec<(String, &str)> = vec![
        (format!("{}\n{{oops\n", lines[0]), "bad.jsonl:2: not valid JSON"),
        (
            format!("{}\n{}\n", lines[0], lines[1].replace("\"label\":0,", "")),
            "bad.jsonl:2: the record has no \"label\"",
        ),
        (lines[0].replace(",\"score\":0", "") + "\n", "bad.jsonl:1: the record has no numeric \"score\""),
        (lines[0].replace("\"map\":\"m0.npy\",", "") + "\n", "bad.jsonl:1: the record has no \"map\""),
        (
            lines[2].replace("\"mask\":\"k2.png\"", "\"mask\":null") + "\n",
            "bad.jsonl:1: an anomalous image without a \"mask\"",
        ),
        ("x.png\n".to_string(), "bad.jsonl:1: a plain path"),
        ("\n\n".to_string(), "no scored records"),
    ];
    for (records, want) in cases {
        let out = bad_run(d, &records, &[]);
        assert_eq!(out.code, 2, "{want}: {}", out.stderr);
        assert!(out.stderr.starts_with("dinomaly-metrics: "), "{}", out.stderr);
        assert!(out.stderr.contains(want), "expected '{want}' in: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn cli_bad_files() {
    let tmp = tiny_set();
    let d = tmp.path();
    let lines = ok_lines(d);
    // A map of another size.
    npy::write_f32_2d(d.join("big.npy"), 32, 32, &vec![0.5; 1024]).unwrap();
    // A float64 map and a map with NaN.
    std::fs::write(d.join("f64.npy"), npy::to_bytes(&[24, 24], &NpyData::F64(vec![0.5; 576]))).unwrap();
    let mut nan = vec![0.5f32; 576];
    nan[30] = f32::NAN;
    npy::write_f32_2d(d.join("nan.npy"), 24, 24, &nan).unwrap();
    std::fs::write(d.join("notapng.png"), b"not an image").unwrap();
    let all = |l: &[String]| l.join("\n") + "\n";
    let with = |i: usize, from: &str, to: &str| {
        let mut l = lines.clone();
        l[i] = l[i].replace(from, to);
        all(&l)
    };
    let cases = vec![
        (with(1, "m1.npy", "gone.npy"), "gone.npy"),
        (with(1, "m1.npy", "big.npy"), "big.npy: the map is 32x32, but the first map is 24x24"),
        (with(1, "m1.npy", "f64.npy"), "f64.npy: expected a float32"),
        (with(1, "m1.npy", "nan.npy"), "non-finite"),
        (with(2, "k2.png", "nomask.png"), "nomask.png"),
        (with(2, "k2.png", "notapng.png"), "notapng.png"),
    ];
    for (records, want) in cases {
        let out = bad_run(d, &records, &[]);
        assert_eq!(out.code, 2, "{want}: {}", out.stderr);
        assert!(out.stderr.contains(want), "expected '{want}' in: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn cli_bad_flags_and_error_lines() {
    let tmp = tiny_set();
    let d = tmp.path();
    for flags in [
        &["--fpr-limit", "0"][..],
        &["--fpr-limit", "1.5"],
        &["--mask-threshold", "1"],
        &["--target-fpr", "-0.1"],
        &["--format", "xml"],
    ] {
        let out = cli(&[&SMALL[..], flags, &["-i", "ok.jsonl"]].concat(), d, None);
        assert_eq!(out.code, 2, "{flags:?}: {}", out.stderr);
    }
    let out = cli(&["--resize", "36", "--crop", "40", "-i", "ok.jsonl"], d, None);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("crop 40x40 does not fit"), "{}", out.stderr);
    let out = cli(&[&SMALL[..], &["-i", "missing.jsonl"]].concat(), d, None);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("missing.jsonl"), "{}", out.stderr);
    // Lines that dinomaly-score marked as failed are skipped with a warning.
    let mut lines = ok_lines(d);
    lines.push(r#"{"image":"broken.png","class":"c","label":1,"error":"cannot decode"}"#.to_string());
    let out = bad_run(d, &(lines.join("\n") + "\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipping broken.png") && out.stderr.contains("cannot decode"), "{}", out.stderr);
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["classes"][0]["images"], 4);
}

#[test]
fn cli_failed_records_are_counted_in_every_format() {
    let tmp = tiny_set();
    let d = tmp.path();
    let mut lines = ok_lines(d);
    // Two failures of class c (one image failed twice: counted once), one
    // of a class that has nothing else, and one that a later line scored.
    let failed = |image: &str, class: &str| {
        format!(r#"{{"image":"{image}","class":"{class}","label":0,"error":"cannot decode"}}"#)
    };
    lines.push(failed("broken.png", "c"));
    lines.push(failed("broken.png", "c"));
    lines.push(failed("gone.png", "c"));
    lines.push(failed("x.png", "other"));
    lines.insert(0, failed("i0.png", "c"));
    let records = lines.join("\n") + "\n";
    let note = "3 of 7 records failed to score (lines with \"error\") and are not in these figures: c 2, other 1";
    // Even with -q, which silences the per-line warnings.
    let out = bad_run(d, &records, &["-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().filter(|l| l.contains("failed to score")).collect::<Vec<_>>(),
        vec![format!("dinomaly-metrics: warning: {note}")]
    );
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["failed"], 3);
    assert_eq!((got["classes"][0]["class"].as_str(), got["classes"][0]["failed"].as_u64()), (Some("c"), Some(2)));
    assert_eq!((got["classes"][1]["class"].as_str(), got["classes"][1]["images"].as_u64()), (Some("other"), Some(0)));
    assert_eq!(got["classes"][1]["failed"], 1);
    assert!(got["warnings"].as_array().unwrap().iter().any(|w| w == note), "{}", got["warnings"]);
    // A class that failed entirely leaves the mean undefined, not silently
    // computed over the other classes.
    assert!(got["mean"]["i_auroc"].is_null());
    let out = bad_run(d, &records, &["-q", "--format", "csv"]);
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert!(rows[0].starts_with("class,images,anomalous,failed,"));
    assert!(
        rows[1].starts_with("c,4,2,2,") && rows[2].starts_with("other,0,0,1,") && rows[3].starts_with("mean,4,2,3,"),
        "{}",
        out.stdout
    );
    let out = bad_run(d, &records, &["-q", "--format", "markdown"]);
    assert!(out.stdout.contains(&format!("\n{note}.\n")), "{}", out.stdout);
}
