#!/usr/bin/env bash
# The exported model in runtimes not written here (issue 15): a ViT-B/14-reg4
# model at 392 exported by dinomaly-export, run in onnxruntime CPU and
# OpenVINO CPU (the registry's wheels, pinned in
# scripts/onnx-check-requirements.txt), fp32 and the --precision fp16 export,
# against dinomaly-score on the same real images; then the speed of all
# three side by side on this machine. Writes OUT/onnx-check.md (the tables,
# the CPU and its flags) and prints it.
#
#   bash scripts/onnx-check.sh [OUT_DIR]        (default onnx-check-out)
#
# It builds nothing: the release binaries and demo-data must be there
# (`make build && cargo build --release --example demo-data`). The Python
# side lives in the ignored venv .venv-onnx-check, created on first use.
#
# Steps (each command is echoed to OUT/onnx-check.log):
#  1. seeded random ViT-B/14-reg4 weights in Meta's layout (the default
#     backbone's architecture; no download), as scripts/gpu-check.sh;
#  2. real images (never committed): ELPV solar cells from the pinned
#     elpv-dataset wheel and scikit-image's CC0 textures, as the demo makes
#     them; the model is trained briefly on ELPV training cells;
#  3. dinomaly-score on the test images with --maps-dir: the reference;
#  4. dinomaly-export fp32 and fp16; scripts/onnx_check.py feeds both to
#     both runtimes from the model's metadata (resize, crop, mean, std) and
#     compares maps and scores (bounds in onnx_check.py), then times
#     dinomaly-score, onnxruntime and OpenVINO at batch 1 and 8.
# Exit status: 0 when every gated comparison is within its bound, 1 when one
# is not, 2 when something fails to run.
#
# Environment:
#   ONNX_CHECK_QUICK=1      ViT-S at 224, a few images, one repeat (a dry run)
#   ONNX_CHECK_THREADS=N    threads for every runtime (default: nproc)
#   ONNX_CHECK_REPEATS=3    timed passes per speed row (median reported)
#   ONNX_CHECK_EXPLAIN=1    also profile onnxruntime and OpenVINO (per-op time)
#   ONNX_CHECK_VENV=DIR     the venv (default .venv-onnx-check)
#   DINOMALY_BIN=DIR        the binaries (default target/release)
#   DEMO_DIR=DIR            the wheel cache shared with make demo (default .demo)
#   PYTHON=python3          creates the venv and runs pip download
set -euo pipefail
cd "$(dirname "$0")/.."

OUTDIR=${1:-onnx-check-out}
BIN=${DINOMALY_BIN:-target/release}
DEMO_DATA=${DEMO_DATA:-$BIN/examples/demo-data}
PYTHON=${PYTHON:-python3}
VENV=${ONNX_CHECK_VENV:-.venv-onnx-check}
WHEELS=${DEMO_DIR:-.demo}/wheels
THREADS=${ONNX_CHECK_THREADS:-$(nproc)}
QUICK=${ONNX_CHECK_QUICK:-0}
REQUIREMENTS=scripts/onnx-check-requirements.txt
# shellcheck source=scripts/data-wheels.sh
source scripts/data-wheels.sh
if [[ $QUICK == 1 ]]; then
  ARCH=dinov2_vits14_reg4 NAME=random-vits14-reg4 RESIZE=224 CROP=224
  ELPV_SUBSET=(--train 4 --test-good 1 --test-defect 1) TEX_SUBSET=(--train 2 --test-good 1 --test-defect 1)
  ITERS=3 TRAIN_BATCH=4 SPEED_IMAGES=4 REPEATS=${ONNX_CHECK_REPEATS:-1}
else
  ARCH=dinov2_vitb14_reg4 NAME=random-vitb14-reg4 RESIZE=448 CROP=392
  ELPV_SUBSET=(--train 8 --test-good 3 --test-defect 3) TEX_SUBSET=(--train 2 --test-good 1 --test-defect 1)
  ITERS=10 TRAIN_BATCH=4 SPEED_IMAGES=8 REPEATS=${ONNX_CHECK_REPEATS:-3}
fi
# libtorch's OpenMP threads, as many as the other runtimes get.
export OMP_NUM_THREADS=$THREADS

die() { echo "onnx-check: $*" >&2; exit 2; }
say() { echo "onnx-check [$(date +%H:%M:%S)]: $*" >&2; }

for b in dinomaly-extract dinomaly-train dinomaly-score dinomaly-export; do
  [[ -x $BIN/$b ]] || die "no $BIN/$b: run 'make build' (or cargo build --release --bins) first"
done
[[ -x $DEMO_DATA ]] || die "no $DEMO_DATA: run 'cargo build --release --example demo-data' first"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/onnx-check.log
: >"$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/onnx-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# run CMD...: echoes the command to the log, its stderr too; fails loudly.
run() {
  echo "+ $*" >>"$LOG"
  "$@" 2>>"$WORK/err" || { cat "$WORK/err" >&2; die "$1 failed (see above)"; }
  cat "$WORK/err" >>"$LOG"
  : >"$WORK/err"
}

# --- the venv with the pinned wheels ----------------------------------------
STAMP=$VENV/.requirements
if ! cmp -s "$REQUIREMENTS" "$STAMP" 2>/dev/null; then
  say "creating $VENV with $(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' ')"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" || die "pip could not install $REQUIREMENTS"
  cp "$REQUIREMENTS" "$STAMP"
fi

# --- 1. weights ---------------------------------------------------------------
say "$ARCH at $CROP (resize $RESIZE), seeded random weights; $THREADS threads"
line=$("$DEMO_DATA" weights --backbone "$ARCH" --random --random-dir "$WORK/weights" --seed 0)
WEIGHTS=${line#* }
[[ -f $WEIGHTS ]] || die "demo-data did not write weights ($line)"
ENCODER=(--backbone "$NAME" --weights "$WEIGHTS" --resize "$RESIZE" --crop "$CROP")

# --- 2. images and a briefly trained model -----------------------------------
fetch_elpv_wheel "$WHEELS" || die "no ELPV wheel"
fetch_skimage_wheel "$WHEELS" || die "no scikit-image wheel"
run "$DEMO_DATA" elpv --wheel "$ELPV_WHEEL" --out "$WORK/elpv" "${ELPV_SUBSET[@]}"
run "$DEMO_DATA" textures --wheel "$SKIMAGE_WHEEL" --out "$WORK/textures" "${TEX_SUBSET[@]}"
find "$WORK/elpv/train" -type f -name '*.png' | LC_ALL=C sort >"$WORK/train.txt"
{
  find "$WORK/elpv/test" -type f -name '*.png' | LC_ALL=C sort
  find "$WORK/textures" -path '*/test/*' -type f -name '*.png' | LC_ALL=C sort
} >"$WORK/test.txt"
N_TRAIN=$(wc -l <"$WORK/train.txt") N_TEST=$(wc -l <"$WORK/test.txt")
say "extract $N_TRAIN ELPV training cells, train $ITERS iterations"
run "$BIN/dinomaly-extract" -q -i "$WORK/train.txt" "${ENCODER[@]}" --device cpu -o "$WORK/train.store"
run "$BIN/dinomaly-train" -q "$WORK/train.store" --iterations "$ITERS" --warmup 2 --batch "$TRAIN_BATCH" \
  --device cpu -o "$WORK/model.safetensors"
CKPT=$WORK/model.safetensors

# --- 3. the reference: dinomaly-score with maps --------------------------------
say "dinomaly-score on $N_TEST test images ($((N_TEST - $(grep -c /textures/ "$WORK/test.txt"))) ELPV, $(grep -c /textures/ "$WORK/test.txt") textures)"
mkdir -p "$WORK/maps"
run "$BIN/dinomaly-score" -q -c "$CKPT" --weights "$WEIGHTS" -i "$WORK/test.txt" --device cpu \
  --maps-dir "$WORK/maps" >"$WORK/reference.jsonl"

# --- 4. the exports, the runtimes ----------------------------------------------
for p in fp32 fp16; do
  run "$BIN/dinomaly-export" -c "$CKPT" --weights "$WEIGHTS" --precision "$p" -o "$WORK/model-$p.onnx" \
    >"$OUTDIR/export-$p.json"
  say "exported $p: $(cut -c1-160 "$OUTDIR/export-$p.json")..."
done
EXPLAIN=()
[[ ${ONNX_CHECK_EXPLAIN:-0} == 1 ]] && EXPLAIN=(--explain)
STATUS=0
echo "+ onnx_check.py" >>"$LOG"
"$VENV/bin/python" scripts/onnx_check.py --reference "$WORK/reference.jsonl" \
  --model "fp32=$WORK/model-fp32.onnx" --model "fp16=$WORK/model-fp16.onnx" \
  --score-bin "$BIN/dinomaly-score" --ckpt "$CKPT" --weights "$WEIGHTS" --threads "$THREADS" \
  --speed-images "$SPEED_IMAGES" --repeats "$REPEATS" --out "$OUTDIR" "${EXPLAIN[@]}" \
  >"$WORK/table.md" || STATUS=$?
[[ $STATUS == 0 || $STATUS == 1 ]] || die "onnx_check.py failed (exit $STATUS)"
{
  echo "# ONNX check ($(date -u +%Y-%m-%d), scripts/onnx-check.sh)"
  echo
  echo "Model: $ARCH, seeded random weights, resize $RESIZE crop $CROP, trained $ITERS iterations on $N_TRAIN ELPV cells;"
  echo "$N_TEST test images (ELPV solar cells and scikit-image textures)."
  echo
  cat "$WORK/table.md"
} >"$OUTDIR/onnx-check.md"
cat "$OUTDIR/onnx-check.md"
exit "$STATUS"
