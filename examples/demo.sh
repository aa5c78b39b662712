#!/usr/bin/env bash
# The demo behind `make demo`: extract -> train -> score -> metrics on two
# real data sets, then the metric tables, the HTML reports
# (OUT/NAME/report/index.html, with a screenshot OUT/NAME/report.png when
# chromium is installed) and where the maps are.
#
#   elpv      solar-cell electroluminescence photos (pip package elpv-dataset,
#             CC BY-NC-SA 4.0, read from its wheel, never committed); classes
#             mono and poly; image-level metrics (no masks).
#   textures  tiles of scikit-image's CC0 brick, grass and gravel photos with
#             synthetic defects and exact masks (MVTec-AD tree); all metrics.
#
# Both are trained unified (one model for all classes of the data set).
# Settings are reduced to stay near 10 minutes on 2 CPU cores: ViT-S, small
# inputs, a few hundred iterations at batch 8 (the paper: ViT-B, 448/392,
# 10,000 iterations at batch 16). Numbers are therefore below the paper's.
#
# Environment:
#   WEIGHTS=FILE     DINOv2 ViT-S/14-reg4 weights to use (BACKBONE=NAME for
#                    another registry backbone). Default: the cache
#                    ($DINOMALY_CACHE) or the official download; when both
#                    fail (or DINOMALY_OFFLINE=1), a seeded RANDOM encoder,
#                    announced loudly: its scores are not meaningful.
#   DEMO_QUICK=1     a few images and 10 iterations (the test suite's run).
#   DEMO_DIR=DIR     where data, weights and outputs go (default .demo).
#   DEVICE=auto|cpu|cuda   (default auto).
#   DINOMALY_BIN=DIR the binaries (default target/release); demo-data is
#                    DIR/examples/demo-data unless DEMO_DATA=FILE.
#   PYTHON=python3   used for `pip download` and the decisions table.
#   OMP_WAIT_POLICY  default passive here: libtorch's OpenMP threads otherwise
#                    busy-wait, which slows every step several times on a
#                    machine shared with other jobs (and costs little alone).
# Prepared data are reused on re-runs; outputs are regenerated.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-.demo}
BIN=${DINOMALY_BIN:-target/release}
DEMO_DATA=${DEMO_DATA:-$BIN/examples/demo-data}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-auto}
QUICK=${DEMO_QUICK:-0}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# shellcheck source=scripts/data-wheels.sh
source scripts/data-wheels.sh

if [[ $QUICK == 1 ]]; then
  MODE="quick (smoke test)"
  ROOT=$DEMO_DIR/quick
  ELPV_SUBSET=(--train 8 --test-good 3 --test-defect 3)
  TEX_SUBSET=(--train 8 --test-good 2 --test-defect 1)
  ITERATIONS=10 WARMUP=2 BATCH=4
  ELPV_SIZE=112 TEX_SIZE=112
else
  MODE="full"
  ROOT=$DEMO_DIR
  ELPV_SUBSET=(--train 150 --test-good 30 --test-defect 30)
  TEX_SUBSET=(--train 100 --test-good 12 --test-defect 8)
  ITERATIONS=${DEMO_ITERATIONS:-200} WARMUP=20 BATCH=8
  ELPV_SIZE=168 TEX_SIZE=126
fi
DATA=$ROOT/data
OUT=$ROOT/out
WHEELS=$DEMO_DIR/wheels

START=$SECONDS
say() { printf '\n==> %s\n' "$*"; }
elapsed() { local s=$((SECONDS - START)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
die() { printf 'demo: %s\n' "$*" >&2; exit 2; }

RANDOM_BACKBONE=0
random_banner() {
  [[ $RANDOM_BACKBONE == 1 ]] || return 0
  cat <<'EOF'

!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  RANDOM BACKBONE: no pretrained DINOv2 weights were available, so the    !!
!!  encoder is a SEEDED RANDOM ViT-S/14-reg4. Every score, map and metric   !!
!!  of this run is NOT MEANINGFUL: it only shows that the pipeline runs.    !!
!!  For real results: WEIGHTS=dinov2_vits14_reg4_pretrain.pth make demo    !!
!!  (from https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/), or run it  !!
!!  where the official download is reachable.                               !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
}

for tool in extract train score calibrate metrics; do
  [[ -x $BIN/dinomaly-$tool ]] || die "$BIN/dinomaly-$tool is missing: run 'make demo' (it builds first)"
done
[[ -x $DEMO_DATA ]] || die "$DEMO_DATA is missing: run 'make demo' (it builds first)"

echo "dinomaly demo ($MODE), outputs in $OUT"

# --- weights --------------------------------------------------------------
# Decided first, so that a random encoder is announced before anything else.
if [[ -n ${WEIGHTS:-} ]]; then
  [[ -f $WEIGHTS ]] || die "WEIGHTS=$WEIGHTS is not a file"
  line=$("$DEMO_DATA" weights --given "$WEIGHTS" --random-dir "$DEMO_DIR/weights")
  ENCODER=(--backbone "${BACKBONE:-dinov2_vits14_reg4}" --weights "$WEIGHTS")
  SCORE_WEIGHTS=(--weights "$WEIGHTS")
  if [[ ${line%% *} == random ]]; then
    RANDOM_BACKBONE=1
    WEIGHTS_NOTE="${BACKBONE:-dinov2_vits14_reg4} from WEIGHTS=$WEIGHTS: SEEDED RANDOM weights written by demo-data, NOT pretrained"
  else
    WEIGHTS_NOTE="${BACKBONE:-dinov2_vits14_reg4} from WEIGHTS=$WEIGHTS"
  fi
else
  say "weights: DINOv2 ViT-S/14-reg4 from the cache or the official download"
  line=$("$DEMO_DATA" weights --random-dir "$DEMO_DIR/weights")
  kind=${line%% *} path=${line#* }
  if [[ $kind == pretrained ]]; then
    # The tools find the cached file themselves and check its sha256.
    ENCODER=(--backbone dinov2_vits14_reg4)
    WEIGHTS_NOTE="dinov2_vits14_reg4 (pretrained, $path)"
    SCORE_WEIGHTS=()
  else
    RANDOM_BACKBONE=1
    ENCODER=(--backbone random-vits14-reg4 --weights "$path")
    WEIGHTS_NOTE="random-vits14-reg4: SEEDED RANDOM weights ($path), NOT pretrained"
    SCORE_WEIGHTS=(--weights "$path")
  fi
fi
random_banner
echo "encoder: $WEIGHTS_NOTE"

# --- data -----------------------------------------------------------------
say "data: wheels from the package registry (pip download, pinned in scripts/data-wheels.sh)"
fetch_elpv_wheel "$WHEELS" || die "no ELPV wheel"
fetch_skimage_wheel "$WHEELS" || die "no scikit-image wheel"

"$DEMO_DATA" elpv --wheel "$ELPV_WHEEL" --out "$DATA/elpv" "${ELPV_SUBSET[@]}"
"$DEMO_DATA" textures --wheel "$SKIMAGE_WHEEL" --out "$DATA/textures" "${TEX_SUBSET[@]}"
echo "elpv-dataset: CC BY-NC-SA 4.0 (Buerhop-Lutz et al., EU PVSEC 2018), used locally, not redistributed"
echo "textures: scikit-image's brick, grass and gravel photographs, CC0 (see $DATA/textures/SOURCE.txt)"

# --- pipeline -------------------------------------------------------------
# hold_back ROOT OUT: splits the good training images of an MVTec-layout
# tree (ROOT/CLASS/train/good/*), every fourth of each class (sorted) held
# back for calibration: OUT/train.jsonl and OUT/calib.jsonl. Prints the
# number held back per class (the smallest).
hold_back() {
  local root=$1 out=$2 class dir i n fewest=
  : >"$out/train.jsonl"
  : >"$out/calib.jsonl"
  for dir in "$root"/*/train/good; do
    class=$(basename "$(dirname "$(dirname "$dir")")")
    i=0 n=0
    while IFS= read -r f; do
      line="{\"image\": \"$f\", \"class\": \"$class\", \"label\": 0}"
      if ((i % 4 == 0)); then echo "$line" >>"$out/calib.jsonl"; n=$((n + 1)); else echo "$line" >>"$out/train.jsonl"; fi
      i=$((i + 1))
    done < <(find "$dir" -maxdepth 1 -type f -name '*.png' | LC_ALL=C sort)
    if [[ -z $fewest || $n -lt $fewest ]]; then fewest=$n; fi
  done
  echo "${fewest:-0}"
}

# run_dataset NAME LAYOUT SIZE METRICS-FLAGS... (CALIBRATE=1: hold back a
# quarter of the good training images, calibrate on them, decide the test
# images with the calibrated model)
run_dataset() {
  local name=$1 layout=$2 size=$3
  shift 3
  local root=$DATA/$name out=$OUT/$name
  local train_root=$root test_root=$root
  if [[ $layout == folder ]]; then train_root=$root/train test_root=$root/test; fi
  rm -rf "$out"
  mkdir -p "$out"
  local train_input=(--dataset "$train_root" --layout "$layout" --split train)
  if [[ ${CALIBRATE:-0} == 1 ]]; then
    HELD=$(hold_back "$root" "$out")
    train_input=(-i "$out/train.jsonl")
    echo "held back for calibration: $HELD good training images per class (every fourth)"
  fi
  say "$name: extract (train split, --resize $size --crop $size)  [$(elapsed)]"
  "$BIN/dinomaly-extract" "${train_input[@]}" \
    "${ENCODER[@]}" --resize "$size" --crop "$size" --device "$DEVICE" \
    -o "$out/train-features.safetensors"
  say "$name: train (unified, $ITERATIONS iterations, batch $BATCH)  [$(elapsed)]"
  "$BIN/dinomaly-train" "$out/train-features.safetensors" --mode unified \
    --iterations "$ITERATIONS" --warmup "$WARMUP" --batch "$BATCH" --device "$DEVICE" \
    --log "$out/train-log.jsonl" -o "$out/model.safetensors"
  # The store is only needed for training.
  rm -f "$out/train-features.safetensors"
  local model=$out/model.safetensors
  if [[ ${CALIBRATE:-0} == 1 ]]; then
    # The target FPR the held-back images allow (n >= 1/F per class), 0.01 at best.
    TARGET_FPR=$(awk -v n="$HELD" 'BEGIN { f = (n > 0) ? 1 / n : 0.5; if (f < 0.01) f = 0.01; printf "%.4g", f }')
    say "$name: calibrate on the held-back good images (target FPR $TARGET_FPR)  [$(elapsed)]"
    "$BIN/dinomaly-score" -q -c "$model" "${SCORE_WEIGHTS[@]}" -i "$out/calib.jsonl" --device "$DEVICE" \
      --maps-dir "$out/calib-maps" >"$out/calib-scores.jsonl"
    "$BIN/dinomaly-calibrate" -c "$model" -i "$out/calib-scores.jsonl" --target-fpr "$TARGET_FPR" \
      -o "$out/model.cal.safetensors" >"$out/calibration.json"
    model=$out/model.cal.safetensors
  fi
  # Crop-space maps (what the metrics read). A calibrated model carries a
  # pixel threshold, so its overlays get one colour scale for all images
  # (--overlay needs it); overlays on the photo (--map-space photo) are
  # shown in README.
  local overlay=()
  if [[ ${CALIBRATE:-0} == 1 ]]; then overlay=(--overlay); fi
  say "$name: score (test split, maps${overlay:+, overlays})  [$(elapsed)]"
  "$BIN/dinomaly-score" -c "$model" "${SCORE_WEIGHTS[@]}" \
    --dataset "$test_root" --layout "$layout" --split test --device "$DEVICE" \
    --maps-dir "$out/maps" "${overlay[@]}" >"$out/scores.jsonl"
  say "$name: metrics  [$(elapsed)]"
  "$BIN/dinomaly-metrics" -i "$out/scores.jsonl" "$@" --format markdown >"$out/metrics.md"
  "$BIN/dinomaly-metrics" -q -i "$out/scores.jsonl" "$@" --format json >"$out/metrics.json"
  say "$name: report (dinomaly-metrics --html)  [$(elapsed)]"
  "$BIN/dinomaly-metrics" -q -i "$out/scores.jsonl" "$@" --html "$out/report" \
    --checkpoint "$model" >/dev/null
  screenshot "$out/report/index.html" "$out/report.png"
}

# A picture of the report when Debian's chromium is installed (`make test`
# installs it); the demo does not need it.
screenshot() {
  local page=$1 png=$2 browser profile
  browser=$(command -v chromium || command -v chromium-browser || true)
  [[ -n $browser ]] || return 0
  profile=$(mktemp -d)
  "$browser" --headless --disable-gpu --no-sandbox --disable-dev-shm-usage --hide-scrollbars --window-size=1400,2400 \
    --user-data-dir="$profile" --screenshot="$(realpath "$png")" "file://$(realpath "$page")" >/dev/null 2>&1 ||
    echo "demo: note: chromium could not take a screenshot of $page" >&2
  rm -rf "$profile"
}

run_dataset elpv folder "$ELPV_SIZE" --image-only
CALIBRATE=1 run_dataset textures mvtec "$TEX_SIZE" --resize "$TEX_SIZE" --crop "$TEX_SIZE"

# Per class: the target FPR, the FPR measured on the good test images and the
# share of defective test images flagged by the calibrated thresholds.
decisions_table() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
target = sys.argv[2]
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "anomalous" not in r:
        continue
    c = rows.setdefault(r.get("class", ""), [0, 0, 0, 0, r["threshold"]])
    if r["label"] == 0:
        c[0] += 1; c[1] += r["anomalous"]
    else:
        c[2] += 1; c[3] += r["anomalous"]
print("| class | threshold | target FPR | FPR on good test images | defective test images flagged |")
print("|---|---|---|---|---|")
for name, (g, fp, d, tp, t) in sorted(rows.items()):
    fpr = f"{fp}/{g} = {fp / g:.2f}" if g else "-"
    tpr = f"{tp}/{d} = {tp / d:.2f}" if d else "-"
    print(f"| {name} | {t:.4f} | {target} | {fpr} | {tpr} |")
PY
}
decisions_table "$OUT/textures/scores.jsonl" "$TARGET_FPR" >"$OUT/textures/decisions.md"

# --- results --------------------------------------------------------------
RESULTS=$OUT/results.md
{
  echo "# dinomaly demo results ($MODE)"
  echo
  if [[ $RANDOM_BACKBONE == 1 ]]; then
    echo "**RANDOM BACKBONE: the encoder has seeded random weights, not pretrained"
    echo "DINOv2 weights. These numbers are NOT MEANINGFUL; they only show that the"
    echo "pipeline runs.**"
    echo
  fi
  echo "Encoder: $WEIGHTS_NOTE. Reduced settings: ViT-S/14, unified training,"
  echo "$ITERATIONS iterations at batch $BATCH (the paper: ViT-B/14, 448/392 px, 10,000"
  echo "iterations at batch 16)."
  echo
  echo "## elpv (solar cells, ${ELPV_SIZE} px, image-level metrics only: no masks)"
  echo
  cat "$OUT/elpv/metrics.md"
  echo
  echo "## textures (scikit-image CC0 textures with synthetic defects, ${TEX_SIZE} px)"
  echo
  cat "$OUT/textures/metrics.md"
  echo
  echo "### textures: decisions calibrated on held-back good training images ($HELD per class)"
  echo
  cat "$OUT/textures/decisions.md"
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"

say "results  [$(elapsed)]"
random_banner
echo
cat "$RESULTS"
echo
echo "Overlays (heatmaps over the test images, calibrated pixel threshold): $OUT/textures/maps/*.png"
echo "Scores: $OUT/{elpv,textures}/scores.jsonl; tables: $RESULTS"
echo "Reports (open in a browser):"
for name in elpv textures; do
  echo "  $OUT/$name/report/index.html"
done
echo "Data: elpv-dataset (CC BY-NC-SA 4.0, not redistributed); textures from scikit-image (CC0)."
echo "Total time: $(elapsed)"
random_banner
