#!/usr/bin/env bash
# Benchmark: dinomaly-metrics against the official evaluation (re-implemented
# with scikit-learn + scikit-image, bench/metrics_ref.py) and anomalib 2.7's
# metrics, on one MVTec-sized synthetic set (1,725 maps of 256x256 over 15
# classes, 1,258 PNG masks), all reading the same files in one run.
#
#   PYTHON=/path/to/python bench/metrics.sh [DIR]
#
# PYTHON needs the packages of tests/fixtures/gen/requirements.txt (numpy,
# scikit-learn, scikit-image, torch, torchvision, pillow, anomalib). The set
# is generated into DIR (default /tmp/dinomaly-bench-metrics) if missing;
# MASK_SIDE (default 1024, like most MVTec masks) sets the mask image size.
# Build first: cargo build --release. Takes several minutes (the official
# AUPRO loop dominates).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/dinomaly-bench-metrics}
PY=${PYTHON:-python3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/dinomaly-metrics}
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release" >&2; exit 2; }
if [ ! -f "$DIR/records.jsonl" ]; then
    echo "generating the set in $DIR ..." >&2
    "$PY" bench/metrics_ref.py gen "$DIR" --mask-side "${MASK_SIDE:-1024}"
fi
# Same page-cache state for everyone.
cat "$DIR"/maps/*.npy "$DIR"/masks/*.png > /dev/null

# Ours: three runs, the median counts (the machine may be shared).
runs=()
for i in 1 2 3; do
    t0=$(date +%s%N)
    "$BIN" --input "$DIR/records.jsonl" --quiet > "$DIR/ours.json"
    t1=$(date +%s%N)
    runs+=($(( (t1 - t0) / 1000000 )))
done
ours_ms=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
t0=$(date +%s%N)
"$BIN" --input "$DIR/records.jsonl" --quiet --image-only > /dev/null
t1=$(date +%s%N)
echo "ours_runs_ms ${runs[*]} (median $ours_ms)"
echo "ours_image_only_ms $(( (t1 - t0) / 1000000 ))"

"$PY" bench/metrics_ref.py run "$DIR" "$DIR/ref.json" | tee "$DIR/ref_times.txt"

"$PY" - "$DIR" "$ours_ms" <<'PYEOF'
import json, sys
d, ours_ms = sys.argv[1], int(sys.argv[2])
ours = ours_ms / 1000
t = dict(line.split() for line in open(f"{d}/ref_times.txt"))
t = {k: float(v) for k, v in t.items()}
ref = json.load(open(f"{d}/ref.json"))
mine = {c["class"]: c["metrics"] for c in json.load(open(f"{d}/ours.json"))["classes"]}
worst = max(abs(mine[c][k] - v) for c, m in ref["official"].items() for k, v in m.items())
worst_a = max(abs(mine[c]["aupro_exact"] - m["aupro"]) for c, m in ref["anomalib"].items())
load = t["ref_load_s"]
print(f"max |ours - official| over 7 metrics x 15 classes: {worst:.2e}")
print(f"max |ours exact AUPRO - anomalib AUPRO|: {worst_a:.2e}")
print(f"ours (read maps+masks, all metrics): {ours:.2f} s")
print(f"official: load {load:.1f} s + metrics {t['official_compute_s']:.1f} s"
      f" -> {(load + t['official_compute_s']) / ours:.1f}x (metrics alone {t['official_compute_s'] / ours:.1f}x)")
print(f"anomalib: load {load:.1f} s + metrics {t['anomalib_compute_s']:.1f} s"
      f" -> {(load + t['anomalib_compute_s']) / ours:.1f}x (metrics alone {t['anomalib_compute_s'] / ours:.1f}x)")
PYEOF
