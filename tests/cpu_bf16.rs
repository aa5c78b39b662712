//! `--precision bf16` on the CPU: it runs where libtorch's kernels are not
//! the AVX-512 ones (the fused attention kernel failed there on a CPU with
//! AMX: "pack_vnni2 is only supported when avx512 is supported", a panic),
//! stays within the documented 1e-2 of fp32, and the tool says in one line
//! that bf16 is emulated and slower than fp32 wherever bfloat16 is not
//! native (issue 13).

use std::process::Output;

use crate::util::fixture::{self as fx, parse_lines};
use crate::util::{self, assert_code};

/// `dinomaly-score` (notes on) over the shared records at `precision`,
/// with `ATEN_CPU_CAPABILITY` set to `kernels` when given.
fn score(precision: &str, kernels: Option<&str>) -> Output {
    let shared = fx::shared();
    let mut cmd = util::tool("dinomaly-score");
    cmd.arg("-c").arg(&shared.ckpt).arg("--weights").arg(&shared.weights).args([
        "--precision",
        precision,
        "--device",
        "cpu",
    ]);
    if let Some(level) = kernels {
        cmd.env("ATEN_CPU_CAPABILITY", level);
    }
    util::run(&mut cmd, &fx::lines(&shared.records))
}

fn scores(out: &Output) -> Vec<f64> {
    assert_code(out, 0);
    parse_lines(&util::stdout(out))
        .iter()
        .map(|l| l["score"].as_f64().unwrap_or_else(|| panic!("no score in {l}")))
        .collect()
}

fn notes_slower(out: &Output) -> usize {
    util::stderr(out).lines().filter(|l| l.contains("bf16") && l.contains("slower than fp32")).count()
}

#[test]
fn cpu_bf16_runs_on_avx2_kernels_near_fp32_and_says_it_is_emulated() {
    let fp32 = score("fp32", Some("avx2"));
    let bf16 = score("bf16", Some("avx2"));
    let (a, b) = (scores(&fp32), scores(&bf16));
    assert_eq!(a.len(), fx::shared().records.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(y.is_finite() && (x - y).abs() <= 1e-2 * x.abs(), "fp32 {x} vs bf16 {y}");
    }
    assert_eq!(notes_slower(&bf16), 1, "{}", util::stderr(&bf16));
    assert!(
        util::stderr(&bf16).contains("ATEN_CPU_CAPABILITY") || !dinomaly::cpu::features().avx512,
        "{}",
        util::stderr(&bf16)
    );
    assert_eq!(notes_slower(&fp32), 0, "{}", util::stderr(&fp32));
}

#[test]
fn cpu_bf16_note_only_where_bfloat16_is_not_native() {
    // The environment the tests run in (native, or an emulation that sets
    // ATEN_CPU_CAPABILITY), which the tool inherits.
    let out = score("bf16", None);
    scores(&out);
    let expected = usize::from(!dinomaly::cpu::native_bf16());
    assert_eq!(notes_slower(&out), expected, "{}", util::stderr(&out));
}
