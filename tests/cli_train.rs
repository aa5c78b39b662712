//! `dinomaly-train` end to end from feature stores of the tiny encoder:
//! learning on real images, exact resumption after a kill, non-finite
//! inputs, separated mode, and each kind of bad input (exit 2 before
//! training, nothing written).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dinomaly::data::record::Sample;
use dinomaly::io::checkpoint;
use dinomaly::io::features::{FeatureStore, FeatureWriter};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::util::fixture::{self as fx, assert_error, entries};
use crate::util::{self, assert_code, Dir};

fn load(path: &Path) -> checkpoint::Checkpoint {
    checkpoint::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_finite(ckpt: &checkpoint::Checkpoint) -> bool {
    ckpt.tensors.iter().all(|(_, t)| bool::try_from(t.isfinite().all()).unwrap())
}

/// Largest absolute difference between two checkpoints' tensors (same keys).
fn max_abs_diff(a: &checkpoint::Checkpoint, b: &checkpoint::Checkpoint) -> f64 {
    let keys = |c: &checkpoint::Checkpoint| c.tensors.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b));
    a.tensors
        .iter()
        .zip(&b.tensors)
        .map(|((_, x), (_, y))| f64::try_from((x - y).abs().max()).unwrap())
        .fold(0.0, f64::max)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn cli_train_loss_decreases_on_real_images() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_loss");
    let ckpt = dir.join("m.safetensors");
    let log = dir.join("log.jsonl");
    let out = util::run(fx::train(&shared.store, &ckpt, 30, 4).arg("--log").arg(&log), "");
    assert_code(&out, 0);
    let lines = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(lines.len(), 30);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["it"].as_u64(), Some(i as u64));
        for key in ["loss", "lr", "p", "grad_norm"] {
            assert!(line[key].is_number(), "{key} missing in {line}");
        }
        assert!(line["skipped"].is_null(), "{line}");
    }
    // Seconds from a monotonic clock: positive and increasing line by line.
    let elapsed: Vec<f64> = lines.iter().map(|l| l["elapsed_s"].as_f64().unwrap()).collect();
    assert!(elapsed[0] > 0.0 && elapsed.windows(2).all(|w| w[1] > w[0]), "{elapsed:?}");
    let losses: Vec<f64> = lines.iter().map(|l| l["loss"].as_f64().unwrap()).collect();
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    assert!(last < 0.7 * first, "loss did not go down: first five {first:.4}, last five {last:.4}");
    let model = load(&ckpt);
    assert!(all_finite(&model));
    let training = &model.meta.training;
    assert_eq!(training["iterations_done"].as_u64(), Some(30));
    assert_eq!(training["skipped_steps"].as_u64(), Some(0));
    assert_eq!(training["train_images"].as_u64(), Some(8));
    assert_eq!(model.meta.encoder, *FeatureStore::open(&shared.store).unwrap().meta());
    assert!(!dir.join("m.safetensors.state").exists(), "a state file without --save-every");
}

/// Largest per-tensor relative difference `‖a − b‖ / ‖a‖` (same keys).
fn max_rel_diff(a: &checkpoint::Checkpoint, b: &checkpoint::Checkpoint) -> f64 {
    assert_eq!(a.tensors.len(), b.tensors.len());
    a.tensors
        .iter()
        .zip(&b.tensors)
        .map(|((k, x), (l, y))| {
            assert_eq!(k, l);
            let norm = f64::try_from(x.norm()).unwrap().max(1e-30);
            f64::try_from((x - y).norm()).unwrap() / norm
        })
        .fold(0.0, f64::max)
}

/// --grad-checkpointing trains the same weights (with dropout, in a
/// separate process each); --precision bf16 with it learns, keeps float32
/// weights, and both settings are recorded in the checkpoint.
#[test]
fn cli_train_grad_checkpointing_and_bf16() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_compute");
    let (plain, ck) = (dir.join("plain.safetensors"), dir.join("ck.safetensors"));
    assert_code(&util::run(&mut fx::train(&shared.store, &plain, 6, 4), ""), 0);
    assert_code(&util::run(fx::train(&shared.store, &ck, 6, 4).arg("--grad-checkpointing"), ""), 0);
    let (plain, ck) = (load(&plain), load(&ck));
    // Float32 gradients differ by the order of their sums (~1e-7), which
    // Adam's per-element normalisation magnifies where a gradient element
    // is near zero; 1e-4 relative per tensor after 6 steps.
    let diff = max_rel_diff(&plain, &ck);
    assert!(diff <= 1e-4, "checkpointed weights differ by {diff:e}");
    assert_eq!(plain.meta.training["precision"], "fp32");
    assert_eq!(plain.meta.training["grad_checkpointing"], false);
    assert_eq!(ck.meta.training["grad_checkpointing"], true);

    let (bf, log) = (dir.join("bf16.safetensors"), dir.join("bf16.jsonl"));
    let out = util::run(
        fx::train(&shared.store, &bf, 30, 4).args(["--precision", "bf16", "--grad-checkpointing", "--log"]).arg(&log),
        "",
    );
    assert_code(&out, 0);
    let losses: Vec<f64> =
        fx::parse_lines(&std::fs::read_to_string(&log).unwrap()).iter().map(|l| l["loss"].as_f64().unwrap()).collect();
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    assert!(last < 0.7 * first, "bf16 loss did not go down: {first:.4} → {last:.4}");
    let bf = load(&bf);
    assert!(all_finite(&bf));
    assert!(bf.tensors.iter().all(|(_, t)| t.kind() == Kind::Float));
    assert_eq!(bf.meta.training["precision"], "bf16");
    assert_eq!(bf.meta.training["grad_checkpointing"], true);

    let out = util::run(fx::train(&shared.store, &dir.join("x.safetensors"), 2, 4).args(["--precision", "fp16"]), "");
    assert_code(&out, 2);
}

const RESUME_ITERS: u64 = 24;
const SAVE_EVERY: u64 = 4;

/// Runs a training that saves every [`SAVE_EVERY`] iterations into `ckpt`
/// (with `extra` flags), calls `watch` (which returns when the moment to
/// interrupt has come) and kills the run (SIGKILL). A run that ended on its
/// own first (a slow poller on a loaded machine) is retried, at most three
/// times.
fn interrupted_run<R>(store: &Path, ckpt: &Path, extra: &[&str], mut watch: impl FnMut() -> R) -> R {
    for _ in 0..3 {
        let _ = std::fs::remove_file(ckpt);
        let _ = std::fs::remove_file(ckpt.with_extension("safetensors.state"));
        let mut child = fx::train(store, ckpt, RESUME_ITERS, 4)
            .args(["--save-every", &SAVE_EVERY.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dinomaly-train");
        let seen = watch();
        child.kill().unwrap();
        if child.wait().unwrap().code().is_none() {
            return seen;
        }
    }
    panic!("the training run always ended before it could be killed");
}

/// Polls until `cond` holds (panics after 60 s).
fn poll(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Resumes `ckpt` to the end and compares with the uninterrupted `reference`.
fn resume_and_compare(store: &Path, ckpt: &Path, reference: &checkpoint::Checkpoint, case: &str) {
    let out = util::run(
        fx::train(store, ckpt, RESUME_ITERS, 4)
            .args(["--save-every", &SAVE_EVERY.to_string()])
            .arg("--resume")
            .arg(ckpt),
        "",
    );
    assert_code(&out, 0);
    let resumed = load(ckpt);
    assert_eq!(resumed.meta.training["iterations_done"].as_u64(), Some(RESUME_ITERS));
    let diff = max_abs_diff(&resumed, reference);
    assert!(diff <= 1e-6, "{case}: resumed weights differ from the uninterrupted run by {diff:e}");
    assert_eq!(resumed.meta.training["loss_history"], reference.meta.training["loss_history"]);
}

#[test]
fn cli_train_killed_and_resumed_equals_uninterrupted() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_resume");
    let reference = dir.join("a.safetensors");
    assert_code(&util::run(&mut fx::train(&shared.store, &reference, RESUME_ITERS, 4), ""), 0);
    let reference = load(&reference);

    // Killed (SIGKILL) as soon as its first save is complete.
    let ckpt = dir.join("b.safetensors");
    interrupted_run(&shared.store, &ckpt, &[], || poll(|| ckpt.exists()));
    let done = load(&ckpt).meta.training["iterations_done"].as_u64().unwrap();
    assert!(done < RESUME_ITERS && done % SAVE_EVERY == 0, "saved at {done}");
    resume_and_compare(&shared.store, &ckpt, &reference, "killed after a save");

    // Killed between the two files of a save: the training state of a
    // later save is on disk while the checkpoint still holds the earlier
    // weights (put back here, as the kill would have left them).
    let ckpt = dir.join("c.safetensors");
    let first = interrupted_run(&shared.store, &ckpt, &[], || {
        poll(|| ckpt.exists());
        let first = std::fs::read(&ckpt).unwrap();
        let inode = std::fs::metadata(&ckpt).unwrap().ino();
        poll(|| std::fs::metadata(&ckpt).map(|m| m.ino() != inode).unwrap_or(false));
        first
    });
    std::fs::write(&ckpt, &first).unwrap();
    resume_and_compare(&shared.store, &ckpt, &reference, "killed within a save");
}

/// A copy of the shared store's rows with `poison` applied to row `row`.
fn poisoned_store(dest: &Path, row: i64, value: f64) {
    let shared = FeatureStore::open(&fx::shared().store).unwrap();
    let rows = shared.all(Kind::Float, Device::Cpu).unwrap();
    let _ = rows.get(row).get(0).get(10).get(3).fill_(value);
    let mut writer = FeatureWriter::create(dest, shared.meta().clone()).unwrap();
    writer.push(shared.records(), &rows).unwrap();
    writer.finish().unwrap();
}

#[test]
fn cli_train_non_finite_features_never_reach_the_weights() {
    let dir = Dir::new("cli_train_nan");
    for (name, value) in [("nan", f64::NAN), ("inf", f64::INFINITY)] {
        let store = dir.join(&format!("{name}.st"));
        poisoned_store(&store, 3, value);
        let ckpt = dir.join(&format!("{name}.safetensors"));
        let log = dir.join(&format!("{name}.jsonl"));
        let out = util::run(fx::train(&store, &ckpt, 8, 4).arg("--log").arg(&log), "");
        assert_code(&out, 0);
        let lines = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
        let skipped = lines.iter().filter(|l| !l["skipped"].is_null()).count();
        // Eight iterations are four epochs of two batches of four: the
        // bad image is in one batch of each.
        assert_eq!(skipped, 4, "{name}: log {lines:?}");
        assert_eq!(util::stderr(&out).matches("step skipped").count(), 4, "{}", util::stderr(&out));
        let model = load(&ckpt);
        assert!(all_finite(&model), "{name} reached the weights");
        assert_eq!(model.meta.training["skipped_steps"].as_u64(), Some(4));
        assert_eq!(model.meta.training["iterations_done"].as_u64(), Some(8));
    }
}

/// Writes a store like the shared one but with no rows at all.
fn empty_store(dest: &Path) {
    let shared = FeatureStore::open(&fx::shared().store).unwrap();
    let meta = shared.meta();
    let mut kv = serde_json::Map::new();
    kv.insert("format".into(), "dinomaly-features".into());
    kv.insert("format_version".into(), "1".into());
    kv.insert("meta".into(), serde_json::to_string(meta).unwrap().into());
    kv.insert("records".into(), "[]".into());
    let header = serde_json::json!({
        "__metadata__": kv,
        "features": {"dtype": "F32", "shape": [0, 2, 69, 64], "data_offsets": [0, 0]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(dest, bytes).unwrap();
    assert!(FeatureStore::open(dest).unwrap().is_empty());
}

/// Runs a million-iteration training on `store` with `flags` (default
/// output `out/m.safetensors`, batch 4), expects it to fail before training
/// (else it would not end in time) with every needle in its one error
/// line, and `out/` to stay empty.
fn assert_train_fails(dir: &Dir, store: &Path, flags: &[String], needles: &[&str]) {
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut cmd = fx::train_base(store);
    cmd.args(["--iterations", "1000000"]).args(flags);
    if !flags.iter().any(|f| f == "-o") {
        cmd.arg("-o").arg(out_dir.join("m.safetensors"));
    }
    if !flags.iter().any(|f| f == "--batch") {
        cmd.args(["--batch", "4"]);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    fx::wait_at_most(&mut child, Duration::from_secs(30));
    let out = child.wait_with_output().unwrap();
    assert_error(&out, needles);
    assert!(entries(&out_dir).is_empty(), "left behind: {:?}", entries(&out_dir));
}

#[test]
fn cli_train_bad_stores_are_refused() {
    let dir = Dir::new("cli_train_bad_store");
    let empty = dir.join("empty.st");
    empty_store(&empty);
    assert_train_fails(&dir, &empty, &[], &["empty.st", "no images"]);
    // Eight images cannot fill a batch of sixteen.
    let shared = fx::shared();
    assert_train_fails(&dir, &shared.store, &["--batch".into(), "16".into()], &["features.safetensors", "16"]);
    let bytes = std::fs::read(&shared.store).unwrap();
    let cut = dir.write("cut.st", &bytes[..bytes.len() - 1000]);
    assert_train_fails(&dir, &cut, &[], &["cut.st", "truncated"]);
    let header_cut = dir.write("header.st", &bytes[..100]);
    assert_train_fails(&dir, &header_cut, &[], &["header.st"]);
    let text = dir.write("text.st", b"a text file, not a store\n");
    assert_train_fails(&dir, &text, &[], &["text.st", "not a feature store"]);
    assert_train_fails(&dir, &shared.ckpt, &[], &["model.safetensors", "not a feature store"]);
    assert_train_fails(&dir, &dir.join("absent.st"), &[], &["absent.st"]);
}

#[test]
fn cli_train_unwritable_outputs_fail_before_training() {
    let dir = Dir::new("cli_train_bad_output");
    let store = &fx::shared().store;
    let file = dir.write("plain-file", b"x");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-o".into(), dir.join("no/such/m.st").display().to_string()], "no/such"),
        (vec!["-o".into(), file.join("m.st").display().to_string()], "plain-file"),
        (
            vec!["--mode".into(), "separated".into(), "-o".into(), file.join("models").display().to_string()],
            "plain-file",
        ),
        (vec!["--log".into(), dir.join("no/such/log.jsonl").display().to_string()], "no/such"),
    ];
    for (flags, needle) in cases {
        assert_train_fails(&dir, store, &flags, &[needle]);
    }
    assert_eq!(entries(dir.path()), vec!["out", "plain-file"]);
}

#[test]
fn cli_train_resume_refuses_a_store_of_another_encoder() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_resume_mismatch");
    let ckpt = dir.join("m.safetensors");
    assert_code(&util::run(fx::train(&shared.store, &ckpt, 4, 4).args(["--save-every", "2"]), ""), 0);
    let before = std::fs::read(&ckpt).unwrap();
    let input: String = fx::images()[..4].iter().map(|p| format!("{}\n", p.display())).collect();
    // Same architecture, other weights; then the same weights at another input size.
    let other = dir.join("other.safetensors");
    fx::tiny_weights(&other, 2);
    let by_weights = dir.join("other-weights.st");
    assert_code(&util::run(&mut fx::extract(&other, &by_weights), &input), 0);
    let by_size = dir.join("other-size.st");
    assert_code(&util::run(&mut fx::extract_sized(&shared.weights, &by_size, 126), &input), 0);
    for (store, needle) in [(&by_weights, "sha256"), (&by_size, "126")] {
        let out = util::run(fx::train(store, &dir.join("new.safetensors"), 8, 4).arg("--resume").arg(&ckpt), "");
        assert_error(&out, &["m.safetensors", needle]);
        assert!(!dir.join("new.safetensors").exists());
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "the checkpoint was changed");
}

#[test]
fn cli_train_separated_writes_one_checkpoint_per_class() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_separated");
    let models = dir.join("models");
    let out = util::run(fx::train(&shared.store, &models, 3, 2).args(["--mode", "separated"]), "");
    assert_code(&out, 0);
    assert_eq!(entries(&models), vec!["c0.safetensors", "c1.safetensors"]);
    let models: Vec<checkpoint::Checkpoint> = ["c0", "c1"]
        .iter()
        .map(|c| {
            let model = load(&models.join(format!("{c}.safetensors")));
            assert!(all_finite(&model));
            let t = &model.meta.training;
            assert_eq!((t["mode"].as_str(), t["class"].as_str()), (Some("separated"), Some(*c)));
            assert_eq!((t["train_images"].as_u64(), t["iterations_done"].as_u64()), (Some(4), Some(3)));
            assert_eq!(t["eps"].as_f64(), Some(1e-8), "separated training uses eps 1e-8");
            model
        })
        .collect();
    assert!(max_abs_diff(&models[0], &models[1]) > 0.0, "both classes gave the same model");
}

/// A store of the shared store's rows `rows` (repeats allowed), each record
/// changed by `edit(position, record)`.
fn store_of_rows(dest: &Path, rows: &[i64], edit: impl Fn(usize, &mut Sample)) {
    let shared = FeatureStore::open(&fx::shared().store).unwrap();
    let all = shared.all(Kind::Float, Device::Cpu).unwrap();
    let picked = all.index_select(0, &Tensor::from_slice(rows));
    let records: Vec<Sample> = rows
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let mut record = shared.records()[r as usize].clone();
            edit(i, &mut record);
            record
        })
        .collect();
    let mut writer = FeatureWriter::create(dest, shared.meta().clone()).unwrap();
    writer.push(&records, &picked).unwrap();
    writer.finish().unwrap();
}

/// The validation lines of a log.
fn validations(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("validation").is_some()).collect()
}

/// Relative difference of two logged numbers (both null counts as equal).
fn rel(a: &Value, b: &Value) -> f64 {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() / x.abs().max(y.abs()).max(1e-30),
        _ if a == b => 0.0,
        _ => f64::INFINITY,
    }
}

/// A run killed after its first save and resumed has the log of the whole
/// run (validations included), the same lines as an uninterrupted run's,
/// and leaves no partial files.
#[test]
fn cli_train_killed_and_resumed_log_is_the_whole_run() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_resume_log");
    let store = shared.store.display().to_string();
    let val = ["--val", &store, "--val-every", "6"];
    let reference = dir.join("ref.jsonl");
    let out = util::run(
        fx::train(&shared.store, &dir.join("ref.safetensors"), RESUME_ITERS, 4).args(val).arg("--log").arg(&reference),
        "",
    );
    assert_code(&out, 0);
    let (ckpt, log) = (dir.join("m.safetensors"), dir.join("m.jsonl"));
    let log_flag = log.display().to_string();
    let flags: Vec<&str> = val.iter().copied().chain(["--log", &log_flag]).collect();
    interrupted_run(&shared.store, &ckpt, &flags, || poll(|| ckpt.exists()));
    let done = load(&ckpt).meta.training["iterations_done"].as_u64().unwrap();
    let out = util::run(
        fx::train(&shared.store, &ckpt, RESUME_ITERS, 4)
            .args(["--save-every", &SAVE_EVERY.to_string()])
            .args(&flags)
            .arg("--resume")
            .arg(&ckpt),
        "",
    );
    assert_code(&out, 0);
    let got = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
    let want = fx::parse_lines(&std::fs::read_to_string(&reference).unwrap());
    assert_eq!(
        got.len(),
        want.len(),
        "resumed at {done}: {} lines, the uninterrupted run has {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g["it"], &g["validation"]), (&w["it"], &w["validation"]), "resumed at {done}");
        for key in ["loss", "lr", "grad_norm", "i_auroc"] {
            assert!(rel(&g[key], &w[key]) <= 1e-6, "resumed at {done}, {key}: {g} against {w}");
        }
    }
    let at: Vec<u64> = validations(&got).iter().map(|l| l["validation"].as_u64().unwrap()).collect();
    assert_eq!(at, vec![6, 12, 18, 24]);
    assert_eq!(
        entries(dir.path()),
        vec!["m.jsonl", "m.safetensors", "m.safetensors.state", "ref.jsonl", "ref.safetensors"],
        "partial or stray files"
    );
}

/// A --log FIFO whose reader goes away after the first line: training goes
/// on, the checkpoint is written whole, a warning names the log once, and
/// the run ends with exit 2 naming the log and the complete checkpoint (a
/// cron job sees that the log it asked for is incomplete, not a quiet 0).
#[test]
fn cli_train_log_fifo_whose_reader_exits_keeps_the_checkpoint() {
    use std::io::BufRead;
    use std::os::unix::fs::OpenOptionsExt;
    let shared = fx::shared();
    let dir = Dir::new("cli_train_log_fifo");
    let fifo = dir.join("log.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let ckpt = dir.join("m.safetensors");
    const ITERS: u64 = 60;
    let mut child = fx::train(&shared.store, &ckpt, ITERS, 4)
        .arg("--log")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader: the first line, then gone (the tool has iterations left).
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut file = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
            file.read_line(&mut line).unwrap();
            line
        })
    };
    fx::wait_at_most(&mut child, Duration::from_secs(120));
    // Should the tool have failed before opening its log, free the reader.
    let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
    let first = reader.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = util::stderr(&out);
    assert_code(&out, 2);
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["it"], 0, "{first}");
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    let last = err.trim_end().lines().last().unwrap();
    for needle in ["--log", "log.fifo", "m.safetensors", "complete"] {
        assert!(last.contains(needle), "{needle} not in the last line:\n{err}");
    }
    let model = load(&ckpt);
    assert!(all_finite(&model));
    assert_eq!(model.meta.training["iterations_done"].as_u64(), Some(ITERS));
    assert_eq!(entries(dir.path()), vec!["log.fifo", "m.safetensors"]);
}

/// --keep-best with --save-every (the README's example): the output keeps
/// the best weights, the resumable saves go to NAME.last.EXT, and a run
/// killed and resumed keeps comparing against the best it had found.
#[test]
fn cli_train_keep_best_with_save_every_keeps_the_best() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_keep_best");
    // Each class's normal and anomalous image have the same features, so
    // every validation gives the same I-AUROC: the first (iteration 4)
    // stays the best, and every later save would have replaced it.
    let val = dir.join("val.st");
    store_of_rows(&val, &[0, 0, 1, 1], |i, r| r.label = Some((i % 2) as u8));
    let val = val.display().to_string();
    let flags = ["--val", &val, "--val-every", "4", "--keep-best", "i-auroc"];
    let ckpt = dir.join("m.safetensors");
    let log = dir.join("m.jsonl");
    let out = util::run(
        fx::train(&shared.store, &ckpt, RESUME_ITERS, 4)
            .args(["--save-every", &SAVE_EVERY.to_string()])
            .args(flags)
            .arg("--log")
            .arg(&log),
        "",
    );
    assert_code(&out, 0);
    let lines = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
    let values: Vec<&Value> = validations(&lines).iter().map(|l| &l["i_auroc"]).collect();
    assert_eq!(values.len(), 6);
    assert!(values.iter().all(|v| v.is_number() && *v == values[0]), "{values:?}");
    let best = load(&ckpt);
    assert_eq!(best.meta.training["iterations_done"].as_u64(), Some(4));
    assert_eq!(best.meta.training["best"]["iteration"].as_u64(), Some(4));
    let last = load(&dir.join("m.last.safetensors"));
    assert_eq!(last.meta.training["iterations_done"].as_u64(), Some(RESUME_ITERS));
    assert_eq!(last.meta.training["best"]["iteration"].as_u64(), Some(4));
    assert!(max_abs_diff(&best, &last) > 0.0);
    assert_eq!(
        entries(dir.path()),
        vec!["m.jsonl", "m.last.safetensors", "m.last.safetensors.state", "m.safetensors", "val.st"]
    );

    // Killed after its first save and resumed from its resume point.
    let (killed, resume_point) = (dir.join("k.safetensors"), dir.join("k.last.safetensors"));
    interrupted_run(&shared.store, &killed, &flags, || poll(|| resume_point.exists()));
    let resume = |from: &Path| {
        util::run(
            fx::train(&shared.store, &killed, RESUME_ITERS, 4)
                .args(["--save-every", &SAVE_EVERY.to_string()])
                .args(flags)
                .arg("--resume")
                .arg(from),
            "",
        )
    };
    // The best checkpoint is not a resume point: the message names it.
    assert_error(&resume(&killed), &["k.safetensors", "k.last.safetensors"]);
    assert_code(&resume(&resume_point), 0);
    let resumed_best = load(&killed);
    assert_eq!(resumed_best.meta.training["iterations_done"].as_u64(), Some(4));
    assert!(max_abs_diff(&resumed_best, &best) <= 1e-6, "the best of the resumed run is not the iteration-4 weights");
    assert_eq!(load(&resume_point).meta.training["iterations_done"].as_u64(), Some(RESUME_ITERS));
}

/// --val validates each model on the classes it is trained on: each model
/// of separated training on its own class, a unified model on --classes;
/// --keep-best is refused when a class cannot define its metric.
#[test]
fn cli_train_validates_each_model_on_its_own_classes() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_val_classes");
    // Class c1 has only normal images here: its I-AUROC is undefined.
    let val = dir.join("val.st");
    store_of_rows(&val, &[0, 1, 2, 3, 4, 5, 6, 7], |_, r| {
        if r.class_name() == "c1" {
            r.label = Some(0);
        }
    });
    let models = dir.join("models");
    let separated = |extra: &[&str]| {
        let mut cmd = util::tool("dinomaly-train");
        cmd.arg(&shared.store)
            .args(["--warmup", "2", "--iterations", "2", "--batch", "2", "--mode", "separated", "-o"])
            .arg(&models)
            .arg("--val")
            .arg(&val)
            .args(extra);
        util::run(&mut cmd, "")
    };
    let out = separated(&["-q", "--keep-best", "i-auroc", "--val-every", "1"]);
    assert_error(&out, &["--keep-best", "class 'c1'", "only normal", "val.st"]);
    assert!(entries(&models).is_empty(), "{:?}", entries(&models));

    let log = dir.join("separated.jsonl");
    let out = separated(&["--log", log.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(util::stderr(&out).contains("class 'c1' has only normal images"), "{}", util::stderr(&out));
    let lines = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
    let seen = validations(&lines);
    assert_eq!(seen.len(), 2);
    for line in seen {
        let class = line["class"].as_str().unwrap();
        let classes: Vec<&String> = line["classes"].as_object().unwrap().keys().collect();
        assert_eq!(classes, vec![class], "{line}");
        let own = &line["classes"][class]["i_auroc"];
        assert_eq!(&line["i_auroc"], own, "{line}");
        assert_eq!(own.is_null(), class == "c1", "{line}");
    }

    // Unified on --classes c0: c0 only.
    let log = dir.join("unified.jsonl");
    let out = util::run(
        fx::train(&shared.store, &dir.join("m.safetensors"), 2, 2)
            .args(["--classes", "c0", "--val"])
            .arg(&shared.store)
            .arg("--log")
            .arg(&log),
        "",
    );
    assert_code(&out, 0);
    let lines = fx::parse_lines(&std::fs::read_to_string(&log).unwrap());
    let seen = validations(&lines);
    assert_eq!(seen.len(), 1);
    let classes: Vec<&String> = seen[0]["classes"].as_object().unwrap().keys().collect();
    assert_eq!(classes, vec!["c0"], "{}", seen[0]);
}

/// Resuming with a flag that shapes the training changed is refused, naming
/// every such flag, and leaves the checkpoint alone; --grad-checkpointing
/// may change and is recorded from the iteration it took effect.
#[test]
fn cli_train_resume_refuses_changed_flags() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_resume_flags");
    let ckpt = dir.join("m.safetensors");
    interrupted_run(&shared.store, &ckpt, &[], || poll(|| ckpt.exists()));
    let done = load(&ckpt).meta.training["iterations_done"].as_u64().unwrap();
    let before = (std::fs::read(&ckpt).unwrap(), std::fs::read(dir.join("m.safetensors.state")).unwrap());
    let resume = |iterations: u64, batch: usize, extra: &[&str]| {
        let mut cmd = fx::train(&shared.store, &ckpt, iterations, batch);
        cmd.args(["--save-every", &SAVE_EVERY.to_string()]).args(extra).arg("--resume").arg(&ckpt);
        util::run(&mut cmd, "")
    };
    let cases: Vec<(u64, usize, &[&str], &[&str])> = vec![
        (RESUME_ITERS, 4, &["--lr", "1e-3"], &["--lr 0.001", "0.002"]),
        (RESUME_ITERS, 2, &[], &["--batch 2", "(the checkpoint's: 4)"]),
        (RESUME_ITERS, 2, &["--lr", "1e-3"], &["--lr 0.001", "--batch 2"]),
        (48, 4, &[], &["--iterations 48"]),
        (RESUME_ITERS, 4, &["--seed", "2"], &["--seed 2"]),
        // (--warmup is already given by the fixture's command.)
        (RESUME_ITERS, 4, &["--weight-decay", "0.5"], &["--weight-decay 0.5"]),
        (RESUME_ITERS, 4, &["--dropout", "0"], &["--dropout 0"]),
        (RESUME_ITERS, 4, &["--spike-factor", "0"], &["--spike-factor 0"]),
        (RESUME_ITERS, 4, &["--classes", "c0"], &["--classes c0", "4 images"]),
    ];
    for (iterations, batch, extra, needles) in cases {
        let out = resume(iterations, batch, extra);
        let mut needles = needles.to_vec();
        needles.push("m.safetensors");
        assert_error(&out, &needles);
    }
    let after = (std::fs::read(&ckpt).unwrap(), std::fs::read(dir.join("m.safetensors.state")).unwrap());
    assert!(after == before, "a refused resume changed the checkpoint");

    let out = resume(RESUME_ITERS, 4, &["--grad-checkpointing"]);
    assert_code(&out, 0);
    let t = load(&ckpt).meta.training;
    assert_eq!(t["iterations_done"].as_u64(), Some(RESUME_ITERS));
    assert_eq!(t["grad_checkpointing"], "mixed");
    assert_eq!(t["precision"], "fp32");
    let compute = serde_json::json!([
        {"from": 0, "precision": "fp32", "grad_checkpointing": false},
        {"from": done, "precision": "fp32", "grad_checkpointing": true},
    ]);
    assert_eq!(t["compute"], compute);
    assert_eq!(t["resumed_at"], serde_json::json!([done]));
    assert_eq!((t["batch"].as_u64(), t["lr"].as_f64()), (Some(4), Some(2e-3)));
}

/// A warm-up longer than the run is shortened to the run, said in a note,
/// and recorded as used (the schedule in the log agrees).
#[test]
fn cli_train_records_the_warmup_it_used() {
    let shared = fx::shared();
    let dir = Dir::new("cli_train_warmup");
    let (ckpt, log) = (dir.join("m.safetensors"), dir.join("log.jsonl"));
    let mut cmd = util::tool("dinomaly-train");
    cmd.arg(&shared.store)
        .args(["--warmup", "100", "--iterations", "3", "--batch", "4", "-o"])
        .arg(&ckpt)
        .arg("--log")
        .arg(&log);
    let out = util::run(&mut cmd, "");
    assert_code(&out, 0);
    assert!(util::stderr(&out).contains("--warmup 100 is longer than the 3 iterations"), "{}", util::stderr(&out));
    assert_eq!(load(&ckpt).meta.training["warmup"].as_u64(), Some(3));
    // numpy.linspace(0, 2e-3, 3): 0, 1e-3, 2e-3.
    let lrs: Vec<f64> =
        fx::parse_lines(&std::fs::read_to_string(&log).unwrap()).iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs.len(), 3);
    for (lr, want) in lrs.iter().zip([0.0, 1e-3, 2e-3]) {
        assert!((lr - want).abs() <= 1e-15, "{lrs:?}");
    }
}
