//! What the command-line tests share: a tiny random DINOv2-with-registers
//! checkpoint written in Meta's key layout, the real images they feed it,
//! and one extract → train pipeline built once per test process.
//!
//! The tiny encoder (embed 64, so one head; 4 blocks; 4 registers; patch 14;
//! a 37×37 positional grid as Meta's files have) makes every tool run in a
//! fraction of a second at a 112×112 crop, so the tests exercise the real
//! binaries end to end.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::Digest;
use tch::Tensor;

use crate::util::{self, assert_code};

/// Token width of the tiny encoder (one head of 64).
pub const DIM: i64 = 64;
/// Encoder blocks.
pub const DEPTH: usize = 4;

/// Writes a seeded random DINOv2-reg4 checkpoint with Meta's canonical key
/// names (the `dinov2_vit*14_reg4_pretrain.pth` state dict) as safetensors.
/// Values are uniform with the standard deviations of a trained ViT's
/// layers, LayerScale gammas at 0.1 so every block matters.
pub fn tiny_weights(path: &Path, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensor = |shape: &[i64], mean: f32, std: f32| {
        let n: i64 = shape.iter().product();
        // Uniform on [-a, a] has standard deviation a / sqrt(3).
        let a = std * 3f32.sqrt();
        let values: Vec<f32> = (0..n).map(|_| mean + a * (2.0 * rng.random::<f32>() - 1.0)).collect();
        Tensor::from_slice(&values).reshape(shape)
    };
    let d = DIM;
    let w = 1.0 / (d as f32).sqrt();
    let mut named: Vec<(String, Tensor)> = vec![
        ("cls_token".into(), tensor(&[1, 1, d], 0.0, 0.1)),
        ("register_tokens".into(), tensor(&[1, 4, d], 0.0, 0.1)),
        ("pos_embed".into(), tensor(&[1, 1 + 37 * 37, d], 0.0, 0.1)),
        ("patch_embed.proj.weight".into(), tensor(&[d, 3, 14, 14], 0.0, 1.0 / 588f32.sqrt())),
        ("patch_embed.proj.bias".into(), tensor(&[d], 0.0, 0.02)),
    ];
    for i in 0..DEPTH {
        let b = |name: &str| format!("blocks.{i}.{name}");
        named.push((b("norm1.weight"), tensor(&[d], 1.0, 0.1)));
        named.push((b("norm1.bias"), tensor(&[d], 0.0, 0.02)));
        named.push((b("attn.qkv.weight"), tensor(&[3 * d, d], 0.0, w)));
        named.push((b("attn.qkv.bias"), tensor(&[3 * d], 0.0, 0.02)));
        named.push((b("attn.proj.weight"), tensor(&[d, d], 0.0, w)));
        named.push((b("attn.proj.bias"), tensor(&[d], 0.0, 0.02)));
        named.push((b("ls1.gamma"), tensor(&[d], 0.1, 0.03)));
        named.push((b("norm2.weight"), tensor(&[d], 1.0, 0.1)));
        named.push((b("norm2.bias"), tensor(&[d], 0.0, 0.02)));
        named.push((b("mlp.fc1.weight"), tensor(&[4 * d, d], 0.0, w)));
        named.push((b("mlp.fc1.bias"), tensor(&[4 * d], 0.0, 0.02)));
        named.push((b("mlp.fc2.weight"), tensor(&[d, 4 * d], 0.0, w / 2.0)));
        named.push((b("mlp.fc2.bias"), tensor(&[d], 0.0, 0.02)));
        named.push((b("ls2.gamma"), tensor(&[d], 0.1, 0.03)));
    }
    named.push(("norm.weight".into(), tensor(&[d], 1.0, 0.1)));
    named.push(("norm.bias".into(), tensor(&[d], 0.0, 0.02)));
    Tensor::write_safetensors(&named, path).expect("write tiny weights");
}

/// `dinomaly-extract -q` with the tiny encoder at a 112×112 crop, writing
/// `output`.
pub fn extract(weights: &Path, output: &Path) -> Command {
    extract_sized(weights, output, 112)
}

/// `dinomaly-extract -q` with the tiny encoder, resize = crop = `size`.
pub fn extract_sized(weights: &Path, output: &Path, size: u32) -> Command {
    let mut cmd = util::tool("dinomaly-extract");
    let size = size.to_string();
    cmd.args(["-q", "--backbone", "tiny", "--layers", "0,1,2,3", "--resize", &size, "--crop", &size, "--weights"])
        .arg(weights)
        .arg("-o")
        .arg(output);
    cmd
}

/// `dinomaly-score -q` with checkpoint `ckpt` and the tiny weights.
pub fn score(ckpt: &Path, weights: &Path) -> Command {
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("-q").arg("-c").arg(ckpt).arg("--weights").arg(weights);
    cmd
}

/// `dinomaly-export -q ARGS`: asserts success and returns the one JSON
/// line it prints.
pub fn export_line<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Value {
    let out = util::run(util::tool("dinomaly-export").arg("-q").args(args), "");
    assert_code(&out, 0);
    let text = util::stdout(&out);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(text.trim()).expect("a JSON line")
}

/// `dinomaly-train -q FEATURES --warmup 5` (add -o, --iterations, --batch).
pub fn train_base(features: &Path) -> Command {
    let mut cmd = util::tool("dinomaly-train");
    cmd.arg("-q").arg(features).args(["--warmup", "5"]);
    cmd
}

/// `dinomaly-train -q FEATURES -o OUTPUT` with a short schedule.
pub fn train(features: &Path, output: &Path, iterations: u64, batch: usize) -> Command {
    let mut cmd = train_base(features);
    cmd.arg("-o").arg(output).args(["--iterations", &iterations.to_string(), "--batch", &batch.to_string()]);
    cmd
}

/// Real images (CC0 crops) of several formats and colour modes.
pub fn images() -> Vec<PathBuf> {
    let dir = util::fixtures().join("preprocess");
    [
        "chelsea.png",
        "gravel_l.png",
        "coffee_420.jpg",
        "coffee_444.jpg",
        "textures.png",
        "mode_rgb.bmp",
        "mode_p.png",
        "mode_la.png",
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect()
}

/// One JSON record per image: two classes, both labels, extra fields.
pub fn records(images: &[PathBuf]) -> Vec<Value> {
    images
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"image": p, "class": format!("c{}", i % 2), "label": (i / 2) % 2, "id": i, "note": format!("n{i}")}))
        .collect()
}

/// Records as JSON lines.
pub fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// sha256 of a file, lowercase hex.
pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file to hash");
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Names in a folder, sorted (hidden temporaries included).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a failed run: exit 2, exactly one line on stderr containing
/// every one of `needles`.
pub fn assert_error(out: &Output, needles: &[&str]) {
    assert_code(out, 2);
    let err = util::stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "expected one stderr line, got:\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
}

/// Waits for `child` at most `limit`; kills it and panics past that.
pub fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the tool still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses JSON lines.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

/// One extract → train pipeline, built once per test process: the tiny
/// weights, a fp32 store of [`images`] with [`records`], and a checkpoint
/// trained on it for a few iterations.
pub struct Shared {
    /// The folder holding everything below.
    pub dir: PathBuf,
    /// Tiny weights (seed 1).
    pub weights: PathBuf,
    /// The input records.
    pub records: Vec<Value>,
    /// The records as a JSON-lines file.
    pub input: PathBuf,
    /// fp32 feature store of the records.
    pub store: PathBuf,
    /// Checkpoint trained on the store.
    pub ckpt: PathBuf,
}

/// The shared pipeline (built on first use).
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(build_shared)
}

fn build_shared() -> Shared {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-scratch");
    std::fs::create_dir_all(&base).expect("scratch base");
    // A static is never dropped: remove the folders of earlier test
    // processes that are gone instead.
    for entry in std::fs::read_dir(&base).expect("read scratch base").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("cli-shared.") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("cli-shared.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("shared folder");
    let weights = dir.join("tiny.safetensors");
    tiny_weights(&weights, 1);
    let records = records(&images());
    let input = dir.join("records.jsonl");
    std::fs::write(&input, lines(&records)).expect("write records");
    let store = dir.join("features.safetensors");
    let out = util::run(extract(&weights, &store).args(["--dtype", "f32", "--input"]).arg(&input), "");
    assert_code(&out, 0);
    let ckpt = dir.join("model.safetensors");
    let out = util::run(&mut train(&store, &ckpt, 6, 4), "");
    assert_code(&out, 0);
    Shared { dir, weights, records, input, store, ckpt }
}
