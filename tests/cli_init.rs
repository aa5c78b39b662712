//! `dinomaly-train --init`: training starts from a trained checkpoint of any
//! kind. A first step at learning rate 0 (the first warm-up step) changes no
//! weight, so the checkpoint it writes shows exactly what was loaded; the
//! checks of the encoder and of the model's shape refuse what does not fit.
//! (That a run from an official checkpoint then follows the official
//! training step is tests/model.rs's `official_checkpoint_as_init_...`.)

use std::path::{Path, PathBuf};

use dinomaly::io::checkpoint;
use tch::Tensor;

use crate::util::fixture::{self as fx, assert_error};
use crate::util::{self, assert_code, Dir};

/// An official-layout checkpoint (the `ViTill` state dict as the official
/// training saves it: `encoder.*` in Meta's layout, `bottleneck.*`,
/// `decoder.*`) holding the encoder of `weights` and the trained half of
/// the shared checkpoint.
fn official_checkpoint(dest: &Path, weights: &Path) -> PathBuf {
    let encoder = Tensor::read_safetensors(weights).unwrap();
    let trained = checkpoint::load(&fx::shared().ckpt).unwrap();
    let mut named: Vec<(String, Tensor)> = encoder.into_iter().map(|(k, t)| (format!("encoder.{k}"), t)).collect();
    named.extend(trained.tensors);
    Tensor::write_safetensors(&named, dest).unwrap();
    dest.to_path_buf()
}

/// Trains one step at learning rate 0 (the warm-up of fx::train starts at 0) from `init` and returns the output's
/// largest difference from the shared checkpoint's tensors.
fn first_step_from(dir: &Dir, init: &Path, extra: &[&str]) -> f64 {
    let shared = fx::shared();
    let out_path = dir.join(&format!("from-{}.safetensors", init.file_stem().unwrap().to_string_lossy()));
    let mut cmd = fx::train(&shared.store, &out_path, 1, 4);
    cmd.arg("--init").arg(init).args(extra);
    let out = util::run(&mut cmd, "");
    assert_code(&out, 0);
    let got = checkpoint::load(&out_path).unwrap();
    let want = checkpoint::load(&shared.ckpt).unwrap();
    assert_eq!(
        got.tensors.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        want.tensors.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let init_record = &got.meta.training["init"];
    assert_eq!(init_record["path"].as_str(), Some(init.display().to_string().as_str()), "{init_record}");
    got.tensors
        .iter()
        .zip(&want.tensors)
        .map(|((_, a), (_, b))| f64::try_from((a - b).abs().max()).unwrap())
        .fold(0.0, f64::max)
}

#[test]
fn cli_init_starts_from_the_checkpoint_of_each_kind() {
    let dir = Dir::new("cli_init_kinds");
    let shared = fx::shared();
    // dinomaly-train's own checkpoint.
    assert_eq!(first_step_from(&dir, &shared.ckpt, &[]), 0.0);
    // The same weights in the official layout, with the store's encoder.
    let official = official_checkpoint(&dir.join("official.safetensors"), &shared.weights);
    let weights = shared.weights.to_str().unwrap();
    assert_eq!(first_step_from(&dir, &official, &["--weights", weights]), 0.0);
    // A fresh run from the same seed does start elsewhere.
    let fresh = dir.join("fresh.safetensors");
    let out = util::run(&mut fx::train(&shared.store, &fresh, 1, 4), "");
    assert_code(&out, 0);
    let fresh = checkpoint::load(&fresh).unwrap();
    let trained = checkpoint::load(&shared.ckpt).unwrap();
    assert!(fresh.tensors.iter().zip(&trained.tensors).any(|((_, a), (_, b))| !a.equal(b)));
}

#[test]
fn cli_init_refuses_what_does_not_fit() {
    let dir = Dir::new("cli_init_refused");
    let shared = fx::shared();
    let out_path = dir.join("out.safetensors");
    let run = |extra: &[&str], init: &Path| {
        let mut cmd = fx::train(&shared.store, &out_path, 2, 4);
        cmd.arg("--init").arg(init).args(extra);
        util::run(&mut cmd, "")
    };
    // The model this run would build differs.
    let out = run(&["--variant", "anomalib"], &shared.ckpt);
    assert_error(&out, &["--init", "MLP biases on (this run: off; --variant official)"]);
    let out = run(&["--groups", "strict"], &shared.ckpt);
    assert_error(&out, &["layer groups", "--groups"]);
    // An official checkpoint whose encoder is not the store's.
    let other_weights = dir.join("other.safetensors");
    fx::tiny_weights(&other_weights, 2);
    let foreign = official_checkpoint(&dir.join("foreign.safetensors"), &other_weights);
    let weights = shared.weights.to_str().unwrap();
    let out = run(&["--weights", weights], &foreign);
    assert_error(&out, &["--init", "differs from the encoder weights the store was made with", "not the same encoder"]);
    // ... and the store's weights must be found (here only by --weights) and
    // be those the store records.
    let official = official_checkpoint(&dir.join("official.safetensors"), &shared.weights);
    let out = run(&[], &official);
    assert_error(&out, &["--weights"]);
    let out = run(&["--weights", other_weights.to_str().unwrap()], &official);
    assert_error(&out, &["sha256"]);
    // --weights means nothing to a dinomaly checkpoint, nor without --init.
    let out = run(&["--weights", weights], &shared.ckpt);
    assert_error(&out, &["--weights is not used with --init"]);
    let mut cmd = fx::train(&shared.store, &out_path, 2, 4);
    let out = util::run(cmd.args(["--weights", weights]), "");
    assert_error(&out, &["--weights applies to --images"]);
    // Files that are not checkpoints, and missing ones.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let out = run(&[], &junk);
    assert_error(&out, &["junk.safetensors"]);
    let out = run(&[], &dir.join("missing.safetensors"));
    assert_error(&out, &["missing.safetensors"]);
    // Not with --resume.
    let out = run(&["--resume", shared.ckpt.to_str().unwrap()], &shared.ckpt);
    assert_code(&out, 2);
    assert!(!out_path.exists(), "nothing is written when refused");
}
