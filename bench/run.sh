#!/usr/bin/env bash
# `make bench`: our tools against anomalib 2.7.0 / timm 1.0.31 (and the
# official evaluation for metrics) on this machine, in one run, same config,
# same random weights, outputs compared; prints one table of speed-ups and
# writes it to bench/results.md with the date and the command.
#
#   PYTHON=/path/to/python bench/run.sh          (make bench does this)
#
# PYTHON needs the packages of tests/fixtures/gen/requirements.txt (make
# bench creates .venv-ref from it when BENCH_PYTHON is not given). Build
# first: cargo build --release --bins --example bench_encoder.
# Environment:
#   BENCH_METRICS=0    skip bench/metrics.sh (it takes ~8 minutes on 2 cores)
#   BENCH_DIR=DIR      work folder (default /tmp/dinomaly-bench; ~2 GB)
#   BENCH_ARGS="..."   extra flags for bench/bench.py (--rounds, --sizes, ...)
# About 26 minutes on 2 idle cores without the metrics, 36 with them; a
# shared machine stretches that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1
TARGET=${CARGO_TARGET_DIR:-target}
for b in dinomaly-extract dinomaly-train dinomaly-score dinomaly-metrics examples/bench_encoder; do
    [ -x "$TARGET/release/$b" ] || { echo "bench: no $TARGET/release/$b: cargo build --release --bins --example bench_encoder" >&2; exit 2; }
done
flags=()
[ "${BENCH_METRICS:-1}" = 0 ] || flags+=(--metrics)
# shellcheck disable=SC2086
exec "$PY" bench/bench.py --dir "${BENCH_DIR:-/tmp/dinomaly-bench}" "${flags[@]}" ${BENCH_ARGS:-}
