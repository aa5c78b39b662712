//! The files the tools write and read, end to end: every output gets the
//! mode a plain `File::create` gives under the caller's umask; `-` is stdin
//! or stdout exactly where the README says (samples, a feature store read by
//! `dinomaly-train -` / `dinomaly-score --features -`, the store written by
//! `dinomaly-extract -o -`) and refused with one line everywhere else; and
//! the user examples (`examples/`) parse, find the build, shard without GNU
//! parallel and name runs after the encoder they use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dinomaly::io::checkpoint;
use dinomaly::io::features::FeatureStore;

use crate::util::fixture::{self as fx, assert_error, entries};
use crate::util::{self, assert_code, Dir};

/// `cmd` run by `sh` after `umask MASK`, with the same environment.
fn under_umask(mask: &str, cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!("umask {mask}; exec \"$0\" \"$@\"")).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => sh.env(key, v),
            None => sh.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    sh
}

/// Every file under `dir` (recursively) with its permission bits.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read folder") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            out.extend(modes(&entry.path()));
        } else {
            out.push((entry.path().display().to_string(), meta.permissions().mode() & 0o777));
        }
    }
    out.sort();
    out
}

#[test]
fn cli_files_every_output_gets_the_umask_mode() {
    let shared = fx::shared();
    for (mask, expected) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let dir = Dir::new(&format!("cli_files_umask_{mask}"));
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        let run = |cmd: &Command, stdin: &str| {
            let out = util::run(&mut under_umask(mask, cmd), stdin);
            assert_code(&out, 0);
            out
        };
        let store = out.join("features.safetensors");
        let mut extract = fx::extract(&shared.weights, &store);
        extract.arg("--input").arg(&shared.input);
        run(&extract, "");
        let ckpt = out.join("model.safetensors");
        let mut train = fx::train(&store, &ckpt, 3, 4);
        train.args(["--save-every", "2", "--log"]).arg(out.join("train.jsonl"));
        run(&train, "");
        let mut score = fx::score(&ckpt, &shared.weights);
        score.arg("--input").arg(&shared.input).arg("--maps-dir").arg(out.join("maps")).args([
            "--overlay",
            "--pixel-threshold",
            "0.5",
        ]);
        let scores = run(&score, "");
        // Image-level curves (the records have labels, no masks).
        let mut metrics = util::tool("dinomaly-metrics");
        metrics.arg("--image-only").arg("--plots").arg(out.join("plots"));
        run(&metrics, &util::stdout(&scores));
        let found = modes(&out);
        let kinds = |suffix: &str| found.iter().filter(|(p, _)| p.ends_with(suffix)).count();
        for (suffix, at_least) in [
            ("features.safetensors", 1),
            ("model.safetensors", 1),
            ("model.safetensors.state", 1),
            ("train.jsonl", 1),
            (".npy", shared.records.len()),
            (".png", shared.records.len()),
            (".svg", 2),
        ] {
            assert!(kinds(suffix) >= at_least, "umask {mask}: fewer than {at_least} *{suffix} in {found:?}");
        }
        for (path, mode) in &found {
            assert_eq!(*mode, expected, "umask {mask}: {path} has mode {mode:o}, expected {expected:o}");
        }
    }
}

/// `dinomaly-extract` of the shared records writing `output` (`-`: stdout).
fn extract_shared(output: &Path) -> Command {
    let shared = fx::shared();
    let mut cmd = fx::extract(&shared.weights, output);
    cmd.args(["--dtype", "f32", "--input"]).arg(&shared.input);
    cmd
}

fn load(path: &Path) -> checkpoint::Checkpoint {
    checkpoint::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn cli_files_extract_to_stdout_pipes_into_train_and_score() {
    let shared = fx::shared();
    let dir = Dir::new("cli_files_pipe");
    // Spooled stores live in $TMPDIR: nothing may stay there.
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // The store on stdout is the store -o FILE writes: same size, records,
    // metadata and rows (the header's key order is a hash map's).
    let mut extract = extract_shared(Path::new("-"));
    let piped = extract.env("TMPDIR", &tmp).stdin(Stdio::null()).output().expect("run extract");
    assert_code(&piped, 0);
    assert_eq!(util::stderr(&piped), "", "extract -q -o - wrote notes");
    let reference = FeatureStore::open(&shared.store).unwrap();
    assert_eq!(piped.stdout.len() as u64, std::fs::metadata(&shared.store).unwrap().len(), "store sizes differ");
    let from_stdout = FeatureStore::open(&dir.write("from-stdout.st", &piped.stdout)).unwrap();
    assert_eq!(from_stdout.records(), reference.records());
    assert_eq!(from_stdout.meta(), reference.meta());
    let every: Vec<usize> = (0..reference.len()).collect();
    let rows = |s: &FeatureStore| s.batch(&every, tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert!(rows(&from_stdout).equal(&rows(&reference)), "rows differ");

    // extract -o - | train - : the same model as training from the file.
    let ckpt = dir.join("piped.safetensors");
    let mut producer =
        extract_shared(Path::new("-")).env("TMPDIR", &tmp).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let mut train = fx::train(Path::new("-"), &ckpt, 6, 4);
    let consumer = train
        .env("TMPDIR", &tmp)
        .stdin(producer.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(producer.wait().unwrap().success());
    assert_code(&consumer, 0);
    let (piped, reference) = (load(&ckpt), load(&shared.ckpt));
    assert_eq!(piped.tensors.len(), reference.tensors.len());
    for ((k, a), (_, b)) in piped.tensors.iter().zip(&reference.tensors) {
        assert!(a.equal(b), "{k} differs between training from stdin and from the file");
    }
    assert_eq!(piped.meta.training["features"], "-");

    // score --features - equals score --features FILE, line for line.
    let store_bytes = std::fs::read(&shared.store).unwrap();
    let mut from_file = score_store(&shared.ckpt);
    let want = util::run(from_file.arg("--features").arg(&shared.store), "");
    assert_code(&want, 0);
    let mut from_stdin = score_store(&shared.ckpt);
    let got = run_bytes(from_stdin.env("TMPDIR", &tmp).args(["--features", "-"]), &store_bytes);
    assert_code(&got, 0);
    assert_eq!(util::stdout(&got), util::stdout(&want));
    assert!(!util::stdout(&got).is_empty());
    assert_eq!(entries(&tmp), Vec::<String>::new(), "temporaries left in $TMPDIR");
    assert!(!Path::new("-").exists() && !dir.join("-").exists());
}

/// Runs `cmd` with binary `stdin`.
fn run_bytes(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tool");
    {
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait for tool")
}

#[test]
fn cli_files_stores_on_stdin_and_stdout_fail_cleanly() {
    let shared = fx::shared();
    let dir = Dir::new("cli_files_pipe_errors");
    // An unreadable image stops extract -o - before anything reaches stdout.
    let bad = dir.write("bad.png", b"not a png");
    let list = dir.write("list.txt", format!("{}\n{}\n", fx::images()[0].display(), bad.display()));
    let mut extract = fx::extract(&shared.weights, Path::new("-"));
    let out = util::run(extract.arg("--input").arg(&list), "");
    assert_error(&out, &["bad.png", "no feature store written to stdout"]);
    assert!(out.stdout.is_empty(), "{} bytes on stdout", out.stdout.len());
    // Nothing, or not a store, on stdin: one line naming stdin.
    let ckpt = dir.join("m.safetensors");
    for (input, needle) in [(&b""[..], "stdin"), (&b"hello, not a store"[..], "stdin")] {
        let out = run_bytes(&mut fx::train(Path::new("-"), &ckpt, 2, 4), input);
        assert_error(&out, &[needle]);
        let out = run_bytes(score_store(&shared.ckpt).args(["--features", "-"]), input);
        assert_error(&out, &[needle]);
    }
    // A store cut short in the pipe.
    let store = std::fs::read(&shared.store).unwrap();
    let out = run_bytes(&mut fx::train(Path::new("-"), &ckpt, 2, 4), &store[..store.len() / 2]);
    assert_error(&out, &["stdin", "truncated"]);
    assert!(!ckpt.exists());
}

/// Runs `command` (a shell command line) with stdin and stdout on a
/// terminal, through `script`; None when `script` is missing.
fn on_a_terminal(command: &str) -> Option<(i32, String)> {
    let out = Command::new("script").args(["-qec", command, "/dev/null"]).stdin(Stdio::null()).output().ok()?;
    Some((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn cli_files_binary_stores_never_touch_a_terminal() {
    let shared = fx::shared();
    let dir = Dir::new("cli_files_tty");
    let q = |p: &Path| format!("'{}'", p.display());
    let extract = format!(
        "{} -q --backbone tiny --layers 0,1,2,3 --resize 112 --crop 112 --weights {} --input {} -o -",
        env!("CARGO_BIN_EXE_dinomaly-extract"),
        q(&shared.weights),
        q(&shared.input)
    );
    let Some((code, text)) = on_a_terminal(&extract) else {
        eprintln!("skipped: `script` is not installed");
        return;
    };
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("-o -: stdout is a terminal"), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    let train = format!("{} -q - -o {}", env!("CARGO_BIN_EXE_dinomaly-train"), q(&dir.join("m.safetensors")));
    let (code, text) = on_a_terminal(&train).unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("stdin is a terminal"), "{text}");
    assert!(!dir.join("m.safetensors").exists());
}

#[test]
fn cli_files_dash_is_refused_where_it_cannot_work() {
    let shared = fx::shared();
    let dir = Dir::new("cli_files_dash");
    let ckpt = dir.join("m.safetensors");
    let path = |p: &Path| p.display().to_string();
    let (w, store, model, input) =
        (path(&shared.weights), path(&shared.store), path(&shared.ckpt), path(&shared.input));
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "dinomaly-extract",
            vec!["--weights".into(), "-".into(), "--input".into(), input.clone(), "-o".into(), "x.st".into()],
            "--weights -:",
        ),
        ("dinomaly-extract", vec!["--dataset".into(), "-".into(), "-o".into(), "x.st".into()], "--dataset -:"),
        ("dinomaly-train", vec![store.clone(), "-o".into(), "-".into()], "-o -:"),
        ("dinomaly-train", vec![store.clone(), "-o".into(), path(&ckpt), "--resume".into(), "-".into()], "--resume -:"),
        ("dinomaly-train", vec![store.clone(), "-o".into(), path(&ckpt), "--val".into(), "-".into()], "--val -:"),
        ("dinomaly-train", vec![store.clone(), "-o".into(), path(&ckpt), "--log".into(), "-".into()], "--log -:"),
        (
            "dinomaly-train",
            vec!["--images".into(), "--weights".into(), "-".into(), "-o".into(), path(&ckpt)],
            "--weights -:",
        ),
        ("dinomaly-score", vec!["-c".into(), "-".into(), "--features".into(), store.clone()], "-c -:"),
        ("dinomaly-score", vec!["-c".into(), model.clone(), "--weights".into(), "-".into()], "--weights -:"),
        (
            "dinomaly-score",
            vec!["-c".into(), model.clone(), "--features".into(), store.clone(), "--maps-dir".into(), "-".into()],
            "--maps-dir -:",
        ),
        (
            "dinomaly-score",
            vec!["-c".into(), model.clone(), "--features".into(), store.clone(), "--skip-existing".into(), "-".into()],
            "--skip-existing -:",
        ),
        (
            "dinomaly-score",
            vec!["-c".into(), model.clone(), "--weights".into(), w.clone(), "--dataset".into(), "-".into()],
            "--dataset -:",
        ),
        ("dinomaly-metrics", vec!["--plots".into(), "-".into()], "--plots -:"),
    ];
    for (tool, args, needle) in cases {
        let mut cmd = util::tool(tool);
        cmd.current_dir(dir.path()).arg("-q").args(&args);
        let out = util::run(&mut cmd, "");
        assert_error(&out, &[needle, "dinomaly-extract -o -"]);
        assert!(out.stdout.is_empty(), "{tool} {args:?} wrote to stdout");
        assert_eq!(entries(dir.path()), Vec::<String>::new(), "{tool} {args:?} left files");
    }
}

// ---- examples/ ----------------------------------------------------------------

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The folder of the built tools.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_dinomaly-score")).parent().unwrap().to_path_buf()
}

#[test]
fn examples_scripts_parse() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".sh") || name.ends_with(".sbatch") {
            let shell =
                if std::fs::read_to_string(&path).unwrap().starts_with("#!/usr/bin/env bash") { "bash" } else { "sh" };
            let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
            assert!(out.status.success(), "{shell} -n {name}: {}", String::from_utf8_lossy(&out.stderr));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} scripts found");
}

/// One `dinomaly-score` run over the shared records: what sharded runs must
/// reproduce.
fn single_run(flags: &[&str]) -> String {
    let shared = fx::shared();
    let mut cmd = if flags.contains(&"--features") {
        score_store(&shared.ckpt)
    } else {
        fx::score(&shared.ckpt, &shared.weights)
    };
    let out = util::run(cmd.args(flags), "");
    assert_code(&out, 0);
    util::stdout(&out)
}

/// A folder holding a `parallel` that is not GNU parallel (as moreutils'
/// is not), put first on PATH.
fn path_with_other_parallel(dir: &Dir) -> String {
    let fake = dir.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let script = fake.join("parallel");
    std::fs::write(&script, "#!/bin/sh\necho 'parallel: not GNU parallel' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default())
}

/// `dinomaly-score -q -c CKPT` for store rows: no --weights, which is
/// refused there (no encoder runs).
fn score_store(ckpt: &Path) -> Command {
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("-q").arg("-c").arg(ckpt);
    cmd
}

/// examples/shard-parallel.sh with ARGS; the encoder weights are passed on
/// to dinomaly-score unless the input is a store.
fn shard_parallel(path: &str, args: &[&str], store_input: bool) -> Output {
    let shared = fx::shared();
    let mut cmd = Command::new("bash");
    cmd.arg(examples().join("shard-parallel.sh")).args(args).args(["--", "--batch", "3"]);
    if !store_input {
        cmd.arg("--weights").arg(&shared.weights);
    }
    cmd.env("PATH", path)
        .env("DINOMALY_BIN", bin_dir())
        .env("DINOMALY_NO_CUDA", "1")
        .env("OMP_NUM_THREADS", "1")
        .env_remove("PARALLEL");
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn examples_shard_parallel_runs_without_gnu_parallel() {
    let shared = fx::shared();
    let dir = Dir::new("examples_shard_parallel");
    let model = shared.ckpt.display().to_string();
    let input = shared.input.display().to_string();
    let store = shared.store.display().to_string();
    let want_images = single_run(&["--input", &input]);
    let want_store = single_run(&["--features", &store]);
    let mut paths = vec![("other parallel", path_with_other_parallel(&dir))];
    let gnu = Command::new("parallel")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU parallel"));
    if gnu {
        paths.push(("GNU parallel", std::env::var("PATH").unwrap()));
    } else {
        eprintln!("GNU parallel is not installed: only the fallback is run");
    }
    for (what, path) in &paths {
        // More shards than jobs, to stdout.
        let out = shard_parallel(path, &["-c", &model, "-n", "3", "-j", "2", &input], false);
        assert_code(&out, 0);
        assert_eq!(util::stdout(&out), want_images, "{what}: images to stdout");
        // A store, to a file; the shard folder is removed once concatenated.
        let dest = dir.join(&format!("scores-{}.jsonl", what.replace(' ', "-")));
        let dest_arg = dest.display().to_string();
        let out = shard_parallel(path, &["-c", &model, "-n", "4", "-j", "3", "-o", &dest_arg, &store], true);
        assert_code(&out, 0);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), want_store, "{what}: store to -o");
        assert!(!dir.join(&format!("{}.shards", dest.file_name().unwrap().to_string_lossy())).exists());
        // Every shard fails (the model is no checkpoint): exit 2, no output,
        // the reason on stderr.
        let bad = dir.join("bad.jsonl");
        let out = shard_parallel(
            path,
            &["-c", &input, "-n", "3", "-j", "2", "-o", &bad.display().to_string(), &input],
            false,
        );
        assert_code(&out, 2);
        assert!(!bad.exists());
        let err = util::stderr(&out);
        assert!(err.contains("not all shards finished") && err.contains("cannot use checkpoint"), "{what}: {err}");
        // A missing model is an error (2), not a result (1).
        let out = shard_parallel(path, &["-c", "missing.safetensors", "-n", "2", &input], false);
        assert_code(&out, 2);
        assert!(util::stderr(&out).contains("cannot read missing.safetensors"), "{what}: {}", util::stderr(&out));
    }
}

#[test]
fn examples_slurm_score_finds_the_checkout_build() {
    let shared = fx::shared();
    let dir = Dir::new("examples_slurm");
    let input = shared.input.display().to_string();
    let want = single_run(&["--input", &input]);
    // Slurm runs a copy of the script from its spool folder.
    let spool = dir.join("spool/job42");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::copy(examples().join("slurm-score.sbatch"), spool.join("slurm_script")).unwrap();
    // A checkout: the script in examples/, the tools in target/release/.
    let checkout = |root: &Path| {
        std::fs::create_dir_all(root.join("examples")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::os::unix::fs::symlink(bin_dir(), root.join("target/release")).unwrap();
        root.join("examples/slurm-score.sbatch")
    };
    let submitted = checkout(&dir.join("checkout-a"));
    checkout(&dir.join("checkout-b"));
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    // scontrol as Slurm's: the job's Command= is the submitted script.
    let fakebin = dir.join("fakebin");
    std::fs::create_dir_all(&fakebin).unwrap();
    std::fs::write(
        fakebin.join("scontrol"),
        format!("#!/bin/sh\necho \"JobId=$4 JobName=dinomaly-score Command={} WorkDir=/x\"\n", submitted.display()),
    )
    .unwrap();
    std::fs::set_permissions(fakebin.join("scontrol"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let system_path = "/usr/local/bin:/usr/bin:/bin";
    let slurm_task = |submit: &Path, path: &str, job: Option<&str>, work: &Path, task: u32| {
        let mut cmd = Command::new("bash");
        cmd.arg(spool.join("slurm_script"))
            .arg(&shared.ckpt)
            .arg(&shared.input)
            .arg(work)
            .args(["--", "-q", "--weights"])
            .arg(&shared.weights)
            .current_dir(submit)
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .env("DINOMALY_NO_CUDA", "1")
            .env("OMP_NUM_THREADS", "1")
            .env("SLURM_SUBMIT_DIR", submit)
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_MAX", "2")
            .env("SLURM_ARRAY_TASK_COUNT", "2");
        if let Some(job) = job {
            cmd.env("SLURM_JOB_ID", job);
        }
        // The kernel choice of the run being compared with (the AVX2
        // emulation sets these): other kernels move scores in the last bits.
        for var in ["ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DINOMALY_MKL_VENDOR_CHECK"] {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    // Without a checkout to find (and no tools on the system PATH), the
    // task fails: the cases below find the build, not the PATH.
    let on_path =
        Command::new("sh").args(["-c", "command -v dinomaly-score"]).env("PATH", system_path).output().unwrap();
    if !on_path.status.success() {
        let out = slurm_task(&dir.join("elsewhere"), system_path, None, &dir.join("work-none"), 1);
        assert_code(&out, 2);
        assert!(util::stderr(&out).contains("shard 1/2 failed"), "{}", util::stderr(&out));
    }
    // (how the job was submitted, PATH, SLURM_JOB_ID)
    let cases = [
        ("from the checkout root", dir.join("checkout-b"), system_path.to_string(), None),
        ("from its examples/", dir.join("checkout-b/examples"), system_path.to_string(), None),
        (
            "from elsewhere, by scontrol",
            dir.join("elsewhere"),
            format!("{}:{system_path}", fakebin.display()),
            Some("42"),
        ),
    ];
    for (i, (what, submit, path, job)) in cases.iter().enumerate() {
        let work = dir.join(&format!("work{i}"));
        for task in 1..=2 {
            let out = slurm_task(submit, path, *job, &work, task);
            assert_code(&out, 0);
        }
        let result = dir.join(&format!("scores{i}.jsonl"));
        let out = Command::new("bash")
            .arg(spool.join("slurm_script"))
            .arg("--concat")
            .arg(&work)
            .arg(&result)
            .env("PATH", system_path)
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert_eq!(std::fs::read_to_string(&result).unwrap(), want, "submitted {what}");
    }
}

/// `make -n` of paper.mk with `vars`; None when make is missing.
fn paper_dry_run(target: &str, vars: &[&str]) -> Option<String> {
    let out = Command::new("make")
        .args(["-n", "-f"])
        .arg(examples().join("paper.mk"))
        .arg(target)
        .args(["DATA=/data/mvtec", "CLASSES=bottle", "BIN=/opt/dinomaly"])
        .args(vars)
        .env_remove("MAKEFLAGS")
        .output()
        .ok()?;
    assert!(out.status.success(), "make -n {target}: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn examples_paper_mk_names_runs_after_the_backbone_they_use() {
    let Some(default) = paper_dry_run("mvtec", &[]) else {
        eprintln!("skipped: make is not installed");
        return;
    };
    assert!(
        default.contains("--backbone dinov2_vitb14_reg4") && default.contains("features/B-r448-c392-train.safetensors"),
        "{default}"
    );
    let small = paper_dry_run("mvtec", &["BACKBONE_B=dinov2_vits14_reg4"]).unwrap();
    assert!(small.contains("--backbone dinov2_vits14_reg4"), "{small}");
    assert!(
        small.contains("features/S-r448-c392-train.safetensors") && small.contains("unified/S-r448-c392/seed1"),
        "{small}"
    );
    assert!(!small.contains("B-r448"), "a ViT-S run labelled B:\n{small}");
    let other = paper_dry_run("mvtec", &["BACKBONE_B=tiny"]).unwrap();
    assert!(other.contains("features/tiny-r448-c392-train.safetensors"), "{other}");
    // The ablation table's labels.
    let ablation =
        paper_dry_run("ablation-backbone", &["BACKBONE_B=dinov2_vits14_reg4", "BACKBONE_L=dinov2_vitg14_reg4"])
            .unwrap();
    assert!(ablation.contains("backbone ViT-S/14-reg4") && ablation.contains("backbone ViT-G/14-reg4"), "{ablation}");
    assert!(
        !ablation.contains("ViT-B/14") && !ablation.contains("ViT-L/14") && !ablation.contains("B-r448"),
        "{ablation}"
    );
    assert!(ablation.contains("features/G-r448-c392-train.safetensors"), "{ablation}");
}
