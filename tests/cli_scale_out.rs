//! Scale-out of extraction (issue 14, section 5): `dinomaly-extract --shard
//! I/N` on N machines, then one `dinomaly-train` on the N stores, equals
//! extracting and training on one store, bit for bit; stores of other
//! settings are refused by name and field.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use dinomaly::io::features::FeatureStore;
use tch::{Device, Kind, Tensor};

use crate::util::fixture::{self as fx, assert_error, entries};
use crate::util::{self, assert_code, Dir};

/// Every tensor of a checkpoint, by name, in file order.
fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut named = Tensor::read_safetensors(path).expect("read checkpoint");
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Asserts two checkpoints hold the same tensors, bit for bit.
fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.iter().map(|t| &t.0).collect::<Vec<_>>(), b.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!((x.kind(), x.size()), (y.kind(), y.size()), "{name}");
        // Bit for bit: equal() would call -0.0 and 0.0 equal.
        let bits = |t: &Tensor| Vec::<u8>::try_from(t.contiguous().view_dtype(Kind::Uint8).reshape([-1])).unwrap();
        assert!(bits(x) == bits(y), "{name} differs");
    }
}

/// `dinomaly-extract` of the shared records, one image per batch (so that
/// every image is encoded alone, whichever shard it is in).
fn extract(output: &Path, flags: &[&str]) -> std::process::Output {
    let shared = fx::shared();
    util::run(fx::extract(&shared.weights, output).args(["--batch", "1", "-i"]).arg(&shared.input).args(flags), "")
}

#[test]
fn cli_scale_out_three_shards_train_as_one_store() {
    let dir = Dir::new("cli_scale_out");
    let whole = dir.join("whole.st");
    assert_code(&extract(&whole, &[]), 0);
    let parts: Vec<PathBuf> = (1..=3).map(|i| dir.join(&format!("part{i}.st"))).collect();
    for (i, part) in parts.iter().enumerate() {
        assert_code(&extract(part, &["--shard", &format!("{}/3", i + 1)]), 0);
    }
    // The parts' rows, in order, are the whole store's, bit for bit.
    let concat = FeatureStore::concat(parts.iter().map(|p| FeatureStore::open(p).unwrap()).collect()).unwrap();
    let one = FeatureStore::open(&whole).unwrap();
    assert_eq!(concat.records(), one.records());
    assert_eq!(concat.len(), 8);
    let sizes: Vec<usize> = parts.iter().map(|p| FeatureStore::open(p).unwrap().len()).collect();
    assert_eq!(sizes, [2, 3, 3]);
    let all = |s: &FeatureStore| s.all(Kind::Half, Device::Cpu).unwrap();
    assert!(all(&concat).equal(&all(&one)), "the shards' rows differ from the single run's");

    // Training on the three stores equals training on the one.
    let from_one = dir.join("one.safetensors");
    assert_code(&util::run(&mut fx::train(&whole, &from_one, 6, 4), ""), 0);
    let from_parts = dir.join("parts.safetensors");
    let mut train = fx::train(&parts[0], &from_parts, 6, 4);
    train.arg(&parts[1]).arg(&parts[2]);
    assert_code(&util::run(&mut train, ""), 0);
    assert_same_tensors(&from_one, &from_parts);

    // A part from stdin among files.
    let from_stdin = dir.join("stdin.safetensors");
    let mut child = fx::train(&parts[0], &from_stdin, 6, 4)
        .arg("-")
        .arg(&parts[2])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(&parts[1]).unwrap()).unwrap();
    assert_code(&child.wait_with_output().unwrap(), 0);
    assert_same_tensors(&from_one, &from_stdin);
}

#[test]
fn cli_scale_out_refuses_mismatched_stores_dashes_and_empty_shards() {
    let shared = fx::shared();
    let dir = Dir::new("cli_scale_out_bad");
    let inputs = Dir::new("cli_scale_out_bad_inputs");
    // A store of the same images at another crop.
    let other = inputs.join("crop126.st");
    assert_code(&util::run(fx::extract_sized(&shared.weights, &other, 126).arg("-i").arg(&shared.input), ""), 0);
    let out = dir.join("model.safetensors");
    let mut train = fx::train(&shared.store, &out, 2, 4);
    train.arg(&other);
    assert_error(&util::run(&mut train, ""), &["crop126.st", "its resize [126,126] differs from [112,112]"]);
    let mut train = fx::train(&shared.store, &out, 2, 4);
    train.args(["-", "-"]);
    assert_error(&util::run(&mut train, ""), &["- is given 2 times"]);
    // More shards than inputs: the empty one says so.
    let out = extract(&dir.join("part.st"), &["--shard", "1/9"]);
    assert_error(&out, &["--shard 1/9", "no samples in this shard", "8 inputs"]);
    assert!(entries(dir.path()).is_empty(), "a refused run wrote {:?}", entries(dir.path()));
}

#[test]
fn examples_slurm_extract_trains_on_the_parts_as_on_one_store() {
    let shared = fx::shared();
    let dir = Dir::new("examples_slurm_extract");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm-extract.sbatch");
    let bin = Path::new(env!("CARGO_BIN_EXE_dinomaly-extract")).parent().unwrap().to_path_buf();
    let work = dir.join("work");
    let bash = |args: &[&std::ffi::OsStr], task: Option<u32>| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script).args(args).env("DINOMALY_BIN", &bin).env("DINOMALY_NO_CUDA", "1").env("OMP_NUM_THREADS", "1");
        if let Some(task) = task {
            cmd.env("SLURM_ARRAY_TASK_ID", task.to_string())
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_MAX", "3")
                .env("SLURM_ARRAY_TASK_COUNT", "3");
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let tiny = [
        "--",
        "-q",
        "--backbone",
        "tiny",
        "--layers",
        "0,1,2,3",
        "--resize",
        "112",
        "--crop",
        "112",
        "--batch",
        "1",
        "--weights",
    ];
    // Tasks in any order, as Slurm may run them.
    for task in [3, 1, 2] {
        let mut args: Vec<&std::ffi::OsStr> = vec![shared.input.as_os_str(), work.as_os_str()];
        args.extend(tiny.iter().map(std::ffi::OsStr::new));
        args.push(shared.weights.as_os_str());
        assert_code(&bash(&args, Some(task)), 0);
    }
    let model = dir.join("model.safetensors");
    let train = ["--", "-q", "--warmup", "5", "--iterations", "6", "--batch", "4"];
    let mut args: Vec<&std::ffi::OsStr> = vec!["--train".as_ref(), work.as_os_str(), model.as_os_str()];
    args.extend(train.iter().map(std::ffi::OsStr::new));
    assert_code(&bash(&args, None), 0);
    // The same model as from one store of the whole list.
    let whole = dir.join("whole.st");
    assert_code(&extract(&whole, &[]), 0);
    let from_one = dir.join("one.safetensors");
    assert_code(&util::run(&mut fx::train(&whole, &from_one, 6, 4), ""), 0);
    assert_same_tensors(&from_one, &model);
}
