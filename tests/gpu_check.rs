//! scripts/gpu-check.sh in its dry-run setting (CPU, ViT-S at 224, a few
//! images): every step of the GPU check runs here, so the script a GPU
//! session carries is known to work before a GPU minute is spent on it.
//! The device under test is then the CPU itself, so its fp32 maps must be
//! bitwise those of the CPU reference run.

use std::path::Path;
use std::process::Command;

use crate::util::Dir;

/// A bundle as `make gpu-bundle` lays it out: bin/ with the binaries and
/// data/{train,test}/CLASS/*.png.
fn bundle(dir: &Dir) {
    let bin = dir.join("bundle/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let release = Path::new(env!("CARGO_BIN_EXE_dinomaly-extract")).parent().unwrap().to_path_buf();
    for name in ["dinomaly-extract", "dinomaly-train", "dinomaly-score", "dinomaly-metrics"] {
        std::fs::copy(release.join(name), bin.join(name)).unwrap();
    }
    let demo_data = release.join("examples").join("demo-data");
    assert!(demo_data.is_file(), "{} is missing: `make test` builds it", demo_data.display());
    std::fs::copy(&demo_data, bin.join("demo-data")).unwrap();
    let save = |split: &str, i: usize, img: image::RgbImage| {
        let path = dir.join(&format!("bundle/data/{split}/cells/{i:03}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(&path).unwrap();
    };
    for i in 0..6 {
        save("train", i, stripes(i as u32, 0));
    }
    // Test images that score far apart (0.40, 0.44, 0.51, 0.76 with the
    // script's seeded weights and training): an unseen phase of the
    // stripes, the same with a white square of side 8 and 24, and black.
    for (i, side) in [0u32, 8, 24].into_iter().enumerate() {
        save("test", i, stripes(6, side));
    }
    save("test", 3, image::RgbImage::new(96, 80));
}

/// 96x80 diagonal colour stripes at phase `i`, with a white square of
/// `side` pixels at (30, 20).
fn stripes(i: u32, side: u32) -> image::RgbImage {
    image::RgbImage::from_fn(96, 80, |x, y| {
        if (30..30 + side).contains(&x) && (20..20 + side).contains(&y) {
            return image::Rgb([255, 255, 255]);
        }
        let v = ((x * 7 + y * 3 + i * 29) % 251) as u8;
        image::Rgb([v, v.wrapping_mul(3), 255 - v])
    })
}

#[test]
fn gpu_check_script_runs_every_step_on_the_cpu() {
    let dir = Dir::new("gpu-check");
    bundle(&dir);
    let out_dir = dir.join("out");
    let out = Command::new("bash")
        .arg("scripts/gpu-check.sh")
        .arg(&out_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GPU_BUNDLE", dir.join("bundle"))
        .env("GPU_CHECK_DEVICE", "cpu")
        .env("GPU_CHECK_QUICK", "1")
        .env("GPU_CHECK_IMAGES", "8")
        .env("GPU_CHECK_ITERS", "2")
        // The binaries' runpath finds libtorch here; no Python needed.
        .env("LIBTORCH_LIB", Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch/torch/lib"))
        .env("DINOMALY_NO_CUDA", "1")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run scripts/gpu-check.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gpu-check.sh failed ({:?}):\n{stderr}", out.status);
    let table = std::fs::read_to_string(out_dir.join("gpu-check.md")).expect("the table");
    let row = |label: &str| -> String {
        let line = table.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no row '{label}' in\n{table}"));
        line.trim_end_matches('|').rsplit('|').next().unwrap().trim().to_string()
    };
    // CPU against CPU: the same kernels, the same numbers.
    assert_eq!(row("fp32 maps, device vs CPU").parse::<f64>().unwrap(), 0.0, "{table}");
    assert_eq!(row("fp32 scores, device vs CPU").parse::<f64>().unwrap(), 0.0, "{table}");
    // bf16 against fp32: the test scores are 9 % or more apart (relative);
    // bf16 moved them by 1.9e-4 at most (1.5e-4 with AVX2 kernels), so the
    // order cannot change unless bf16 gets 400 times worse: correlation 1.
    let spearman: f64 = row("Spearman").parse().unwrap();
    assert!(spearman >= 1.0 - 1e-9, "bf16 against fp32 rank correlation: {spearman}\n{table}");
    let bf16_score: f64 = row("bf16 scores vs fp32 CPU: max relative").parse().unwrap();
    assert!(bf16_score <= 1e-2, "bf16 scores {bf16_score} from fp32\n{table}");
    let bf16_map: f64 = row("bf16 maps vs fp32 CPU").parse().unwrap();
    assert!(bf16_map <= 1e-2, "bf16 maps {bf16_map} from fp32\n{table}");
    // Rates are printed to three significant digits, so any run, however
    // slow the CPU, reads as a positive number.
    for label in [
        "scoring fp32, batch 4",
        "scoring bf16, batch 8",
        "training from the store fp32",
        "training from the store bf16",
    ] {
        let value = row(label);
        let rate: f64 = value.split_whitespace().next().unwrap().parse().unwrap_or(f64::NAN);
        assert!(rate.is_finite() && rate > 0.0, "{label}: {value}\n{table}");
    }
}
