//! `dinomaly-train --images`: training from the images themselves (encoded
//! every iteration) equals training from a float32 feature store of the
//! same images, in unified and separated mode, through a kill and resume;
//! its checkpoints score like store-trained ones (scores compared); bad
//! inputs fail as for a store (exit 2, one line naming the problem, nothing
//! written).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dinomaly::io::checkpoint;
use dinomaly::io::features::FeatureStore;

use crate::util::fixture::{self as fx, assert_error, entries};
use crate::util::{self, assert_code, Dir};

/// Largest relative difference allowed between the weights trained from
/// images and from a float32 store: both see the same encoder outputs, so
/// only float rounding of a differently batched encoder forward remains.
const REL_TOL: f64 = 1e-6;

/// Largest relative difference allowed between the scores of the two
/// models: weights 1e-6 apart move a score (the mean of the top 1% of a
/// map of cosine distances) by about as much relative to it, and scoring's
/// own float32 rounding adds ~1e-6 more (the order of its sums differs
/// between batch sizes); 1e-5 leaves room for both while still failing for
/// models that differ by a single training step (relative score changes of
/// ~1e-2 here).
const SCORE_TOL: f64 = 1e-5;

fn load(path: &Path) -> checkpoint::Checkpoint {
    checkpoint::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dinomaly-train -q --images` with the tiny encoder flags of
/// [`fx::extract`], the short schedule of [`fx::train`], reading `input`.
fn train_images(weights: &Path, input: &Path, output: &Path, iterations: u64, batch: usize) -> Command {
    let mut cmd = util::tool("dinomaly-train");
    cmd.args([
        "-q",
        "--images",
        "--backbone",
        "tiny",
        "--layers",
        "0,1,2,3",
        "--resize",
        "112",
        "--crop",
        "112",
        "--warmup",
        "5",
    ])
    .arg("--weights")
    .arg(weights)
    .arg("--input")
    .arg(input)
    .arg("-o")
    .arg(output)
    .args(["--iterations", &iterations.to_string(), "--batch", &batch.to_string()]);
    cmd
}

/// Per tensor, max |a - b| / max |b|; the largest over the checkpoint.
fn max_rel_diff(a: &checkpoint::Checkpoint, b: &checkpoint::Checkpoint) -> f64 {
    let keys = |c: &checkpoint::Checkpoint| c.tensors.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b));
    a.tensors
        .iter()
        .zip(&b.tensors)
        .map(|((_, x), (_, y))| {
            let scale = f64::try_from(y.abs().max()).unwrap().max(1e-12);
            f64::try_from((x - y).abs().max()).unwrap() / scale
        })
        .fold(0.0, f64::max)
}

#[test]
fn cli_train_images_equals_training_from_an_f32_store() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_images_equal");
    // The shared checkpoint: 6 iterations, batch 4, from the f32 store.
    let ckpt = dir.join("m.safetensors");
    let out = util::run(&mut train_images(&shared.weights, &shared.input, &ckpt, 6, 4), "");
    assert_code(&out, 0);
    let from_images = load(&ckpt);
    let from_store = load(&shared.ckpt);
    let diff = max_rel_diff(&from_images, &from_store);
    assert!(diff <= REL_TOL, "weights differ from the store-trained ones by {diff:e} relative");
    // The same encoder metadata as the store: dinomaly-score treats both alike.
    assert_eq!(from_images.meta.encoder, *FeatureStore::open(&shared.store).unwrap().meta());
    assert_eq!(from_images.meta.model, from_store.meta.model);
    let t = &from_images.meta.training;
    assert_eq!((t["train_images"].as_u64(), t["images"].as_bool()), (Some(8), Some(true)));
    assert_eq!(t["loss_history"], from_store.meta.training["loss_history"]);
    // It scores like the store-trained checkpoint: the same images in the
    // same order, each score within SCORE_TOL of the other's.
    let scored = util::run(fx::score(&ckpt, &shared.weights).arg("--input").arg(&shared.input), "");
    assert_code(&scored, 0);
    let reference = util::run(fx::score(&shared.ckpt, &shared.weights).arg("--input").arg(&shared.input), "");
    assert_code(&reference, 0);
    let (ours, theirs) = (fx::parse_lines(&util::stdout(&scored)), fx::parse_lines(&util::stdout(&reference)));
    assert_eq!((ours.len(), theirs.len()), (8, 8));
    let mut worst: f64 = 0.0;
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a["image"], b["image"]);
        let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        worst = worst.max((x - y).abs() / y.abs());
    }
    assert!(worst <= SCORE_TOL, "scores differ from the store-trained model's by {worst:e} relative");

    // Separated mode: one model per class, each equal to its store twin.
    let (a, b) = (dir.join("sep-images"), dir.join("sep-store"));
    assert_code(
        &util::run(train_images(&shared.weights, &shared.input, &a, 3, 2).args(["--mode", "separated"]), ""),
        0,
    );
    assert_code(&util::run(fx::train(&shared.store, &b, 3, 2).args(["--mode", "separated"]), ""), 0);
    assert_eq!(entries(&a), vec!["c0.safetensors", "c1.safetensors"]);
    for c in ["c0", "c1"] {
        let name = format!("{c}.safetensors");
        let diff = max_rel_diff(&load(&a.join(&name)), &load(&b.join(&name)));
        assert!(diff <= REL_TOL, "class {c}: {diff:e} relative");
    }

    // Validation against a store works from images too.
    let out = util::run(
        train_images(&shared.weights, &shared.input, &dir.join("v.safetensors"), 2, 4).arg("--val").arg(&shared.store),
        "",
    );
    assert_code(&out, 0);
    assert!(util::stderr(&out).contains("validation at iteration 2"), "{}", util::stderr(&out));
}

#[test]
fn cli_train_images_killed_and_resumed_equals_the_store_run() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_images_resume");
    const ITERS: u64 = 16;
    let reference = dir.join("ref.safetensors");
    assert_code(&util::run(&mut fx::train(&shared.store, &reference, ITERS, 4), ""), 0);
    let ckpt = dir.join("m.safetensors");
    let run = || {
        let mut cmd = train_images(&shared.weights, &shared.input, &ckpt, ITERS, 4);
        cmd.args(["--save-every", "2"]);
        cmd
    };
    let mut killed = false;
    for _ in 0..3 {
        let _ = std::fs::remove_file(&ckpt);
        let mut child = run().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        while !ckpt.exists() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        if child.wait().unwrap().code().is_none() {
            killed = true;
            break;
        }
    }
    assert!(killed, "the run always ended before it could be killed");
    let done = load(&ckpt).meta.training["iterations_done"].as_u64().unwrap();
    assert!(done < ITERS, "saved at {done}");
    assert_code(&util::run(run().arg("--resume").arg(&ckpt), ""), 0);
    let diff = max_rel_diff(&load(&ckpt), &load(&reference));
    assert!(diff <= REL_TOL, "resumed from iteration {done}: {diff:e} relative");

    // Resuming with another encoder is refused, naming the checkpoint.
    let other = dir.join("other.safetensors");
    fx::tiny_weights(&other, 2);
    let out = util::run(
        train_images(&other, &shared.input, &dir.join("new.safetensors"), ITERS, 4).arg("--resume").arg(&ckpt),
        "",
    );
    assert_error(&out, &["m.safetensors", "sha256"]);
    assert!(!dir.join("new.safetensors").exists());
}

#[test]
fn cli_train_images_bad_inputs_fail_cleanly() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_images_bad");
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let images = fx::images();
    let png = std::fs::read(&images[0]).unwrap();
    let corrupt = dir.write("corrupt.png", &png[..png.len() / 2]);
    let mut paths: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
    paths.insert(3, &corrupt);
    let list = dir.write("list.txt", paths.iter().map(|p| format!("{}\n", p.display())).collect::<String>());
    let ckpt = out_dir.join("m.safetensors");
    let out = util::run(&mut train_images(&shared.weights, &list, &ckpt, 2, 4), "");
    assert_error(&out, &["corrupt.png", "no checkpoint written", "--on-error skip"]);
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
    // --on-error skip leaves it out (and says so), as extract does.
    let out = util::run(train_images(&shared.weights, &list, &ckpt, 2, 4).args(["--on-error", "skip"]), "");
    assert_code(&out, 0);
    assert!(
        util::stderr(&out).contains("skipped") && util::stderr(&out).contains("corrupt.png"),
        "{}",
        util::stderr(&out)
    );
    assert_eq!(load(&ckpt).meta.training["train_images"].as_u64(), Some(8));
    std::fs::remove_file(&ckpt).unwrap();

    // Fewer images than a batch: the store's message.
    let few = dir.write("few.txt", images[..3].iter().map(|p| format!("{}\n", p.display())).collect::<String>());
    let message = "3 training images but a batch needs 4";
    let out = util::run(&mut train_images(&shared.weights, &few, &ckpt, 2, 4), "");
    assert_error(&out, &[message]);
    let store = dir.join("few.st");
    assert_code(&util::run(fx::extract(&shared.weights, &store).arg("--input").arg(&few), ""), 0);
    assert_error(&util::run(&mut fx::train(&store, &ckpt, 2, 4), ""), &[message]);
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));

    // Empty input, and encoder flags given with a store.
    assert_error(
        &util::run(&mut train_images(&shared.weights, &dir.write("empty.txt", ""), &ckpt, 2, 4), ""),
        &["no samples"],
    );
    let out = util::run(fx::train(&shared.store, &ckpt, 2, 4).args(["--backbone", "tiny"]), "");
    assert_code(&out, 2);
    assert!(util::stderr(&out).contains("--backbone"), "{}", util::stderr(&out));
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
}
