//! Live input: `dinomaly-score` reading a FIFO or a pipe scores each line as
//! it arrives and writes its result before the end of the input (issue 14,
//! section 4). A writer feeds one line a second and waits for each result
//! before it writes the next line; a tool that waited for the end of the
//! input would never answer while the writer holds it open. The only time
//! limits are generous ones against a hung tool, never a speed threshold.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::fixture::{self as fx, parse_lines, wait_at_most};
use crate::util::{self, assert_code, Dir};

/// How long a result may take on a slow, loaded machine before the test
/// calls the tool hung.
const PATIENCE: Duration = Duration::from_secs(300);

/// The lines the tool writes, as they come.
fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("read stdout")).is_err() {
                return;
            }
        }
    });
    rx
}

/// Writes the shared records one a second to `input`, and checks that each
/// result comes before the next line is written and equals the result of
/// scoring the records from a file.
fn feed_one_line_a_second(child: &mut Child, input: &mut dyn Write, results: &Receiver<String>, expected: &[String]) {
    let records = &fx::shared().records;
    for (i, record) in records.iter().enumerate() {
        let written = Instant::now();
        writeln!(input, "{record}").expect("write a line");
        input.flush().expect("flush the line");
        let line = results.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no result for input line {} within {PATIENCE:?} while the input stayed open", i + 1)
        });
        let got: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(got["id"], record["id"], "results in input order");
        assert!(got["score"].is_number(), "{got}");
        assert_eq!(line, expected[i], "the live result differs from the whole-input run's");
        // One line a second (or slower, when scoring took longer).
        std::thread::sleep(Duration::from_secs(1).saturating_sub(written.elapsed()));
    }
}

/// The results of scoring the shared records from a file (read whole).
fn whole_input_results() -> Vec<String> {
    let shared = fx::shared();
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).arg("-i").arg(&shared.input), "");
    assert_code(&out, 0);
    util::stdout(&out).lines().map(str::to_string).collect()
}

/// Opens the FIFO for writing once the tool has opened it for reading;
/// panics if the tool ends first or never opens it.
fn open_writer(fifo: &Path, child: &mut Child) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let start = Instant::now();
    loop {
        // Non-blocking: without a reader, open fails (ENXIO) instead of
        // waiting forever for a tool that may have failed.
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo) {
            Ok(file) => return file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("open {}: {e}", fifo.display()),
        }
        if let Some(status) = child.try_wait().expect("poll the tool") {
            panic!("the tool ended ({status}) before opening the FIFO");
        }
        assert!(start.elapsed() < PATIENCE, "the tool did not open the FIFO within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cli_score_live_fifo_gets_each_result_before_the_next_line() {
    let shared = fx::shared();
    let expected = whole_input_results();
    let dir = Dir::new("cli_score_live_fifo");
    let fifo = dir.join("lines.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("UTF-8 path")).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {}", fifo.display());
    // The default batch (8) and batch wait: each lone line goes on after
    // the wait.
    let mut child = fx::score(&shared.ckpt, &shared.weights)
        .arg("-i")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the tool");
    let results = stdout_lines(&mut child);
    let mut writer = open_writer(&fifo, &mut child);
    feed_one_line_a_second(&mut child, &mut writer, &results, &expected);
    // The end of the input ends the run normally.
    drop(writer);
    let status = wait_at_most(&mut child, PATIENCE);
    assert!(status.success(), "{status}");
    assert!(results.recv().is_err(), "a line after the last input's");
}

#[test]
fn cli_score_live_pipe_with_fail_above_exits_1_at_the_end() {
    let shared = fx::shared();
    let expected = whole_input_results();
    let mut child = fx::score(&shared.ckpt, &shared.weights)
        .args(["--batch", "2", "--batch-wait", "0", "--fail-above", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the tool");
    let results = stdout_lines(&mut child);
    let mut stdin = child.stdin.take().expect("stdin");
    feed_one_line_a_second(&mut child, &mut stdin, &results, &expected);
    drop(stdin);
    let status = wait_at_most(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(1), "--fail-above 0 is exceeded");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.starts_with("dinomaly-score: 8 of 8 scores above --fail-above 0;"), "{err}");
}

#[test]
fn cli_score_live_empty_input_is_a_run_with_nothing_to_score() {
    let shared = fx::shared();
    // The longest wait: it never applies, as no line comes.
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).args(["--batch-wait", "65535"]), "");
    assert_code(&out, 0);
    assert!(parse_lines(&util::stdout(&out)).is_empty());
}
