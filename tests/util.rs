//! Helpers for the integration tests: a unique scratch folder, running a
//! built binary with stdin, and assertions that show everything on failure.

#![allow(dead_code)]

pub mod fixture;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The folder holding committed fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// A fresh scratch folder removed when dropped.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    /// Creates a scratch folder under target/ named after the test.
    pub fn new(name: &str) -> Self {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-scratch");
        std::fs::create_dir_all(&base).expect("create scratch base");
        let dir = tempfile::Builder::new().prefix(&format!("{name}.")).tempdir_in(base).expect("create scratch dir");
        Dir { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file inside the folder.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, bytes).expect("write file");
        path
    }
}

/// Every binary of the suite.
pub const TOOLS: &[&str] = &dinomaly::cli::generate::TOOLS;

/// A command for one of the suite's binaries.
pub fn tool(name: &str) -> Command {
    let path = match name {
        "dinomaly-extract" => env!("CARGO_BIN_EXE_dinomaly-extract"),
        "dinomaly-train" => env!("CARGO_BIN_EXE_dinomaly-train"),
        "dinomaly-score" => env!("CARGO_BIN_EXE_dinomaly-score"),
        "dinomaly-calibrate" => env!("CARGO_BIN_EXE_dinomaly-calibrate"),
        "dinomaly-metrics" => env!("CARGO_BIN_EXE_dinomaly-metrics"),
        "dinomaly-export" => env!("CARGO_BIN_EXE_dinomaly-export"),
        other => panic!("unknown tool {other}"),
    };
    let mut cmd = Command::new(path);
    cmd.env("DINOMALY_NO_CUDA", "1");
    // Tests run tools in parallel on few cores: libtorch's OpenMP threads
    // spin-waiting against each other make tiny models up to 10x slower.
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// Runs `cmd` with `stdin` and returns its output.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tool");
    {
        let mut input = child.stdin.take().expect("stdin");
        // The tool may exit before reading everything (an error case).
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait for tool")
}

/// Asserts the exit code, printing stdout and stderr when it differs.
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Maximum relative difference |a - b| / max(|b|, floor) over two tensors.
pub fn max_rel_diff(a: &tch::Tensor, b: &tch::Tensor, floor: f64) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    let denom = b.abs().clamp_min(floor);
    f64::try_from(((a - &b).abs() / denom).max()).expect("scalar")
}
