#!/usr/bin/env bash
# What dinomaly-extract's default float16 store changes in training, against
# a float32 store (what the official code trains on): the README's figure.
#
# On the demo data (examples/demo.sh's data sets at its full settings: 126 px
# textures with masks, 168 px ELPV), the same encoder, seed and schedule
# (200 iterations at batch 8, warm-up 20, as the demo trains), one model from
# an f16 store and one from an f32 store of the same training images; both
# score the test split with maps, and `demo-data compare` says how far apart
# they are: score_rel (max |Δscore| / |score|), score_range_rel (max |Δscore|
# over the spread of the scores), map_rel (max |Δmap| over all pixels / max
# |map|) and spearman (rank correlation of the scores); then the metrics of
# both.
#
#   bash scripts/f16-store-effect.sh [OUT]        (default target/f16-effect)
#
# Needs the release binaries and demo-data (cargo build --release --locked
# --bins --example demo-data) and the demo's two wheels in $DEMO_DIR/wheels
# (make demo fetches them). Encoder: WEIGHTS=FILE (ViT-S/14-reg4), else the
# demo's seeded random ViT-S/14-reg4 (DINOMALY_OFFLINE=1 skips the download);
# with random weights only the f16-vs-f32 differences mean something, not
# the metrics. ITERATIONS=N changes the schedule length. About 5 minutes
# per data set on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/f16-effect}
BIN=${DINOMALY_BIN:-target/release}
DEMO_DATA=${DEMO_DATA:-$BIN/examples/demo-data}
WHEELS=${DEMO_DIR:-.demo}/wheels
ITERATIONS=${ITERATIONS:-200}
DATASETS=${DATASETS:-textures elpv}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

die() { printf 'f16-store-effect: %s\n' "$*" >&2; exit 2; }
for b in dinomaly-extract dinomaly-train dinomaly-score dinomaly-metrics; do
  [[ -x $BIN/$b ]] || die "no $BIN/$b (cargo build --release --locked --bins --example demo-data)"
done
[[ -x $DEMO_DATA ]] || die "no $DEMO_DATA"
mkdir -p "$OUT"

if [[ -n ${WEIGHTS:-} ]]; then
  ENCODER=(--backbone dinov2_vits14_reg4 --weights "$WEIGHTS") SCORE_W=(--weights "$WEIGHTS")
  echo "encoder: $WEIGHTS"
else
  line=$(DINOMALY_OFFLINE=${DINOMALY_OFFLINE:-1} "$DEMO_DATA" weights --random-dir "$OUT/weights")
  kind=${line%% *} path=${line#* }
  if [[ $kind == pretrained ]]; then
    ENCODER=(--backbone dinov2_vits14_reg4) SCORE_W=()
  else
    ENCODER=(--backbone random-vits14-reg4 --weights "$path") SCORE_W=(--weights "$path")
  fi
  echo "encoder: $kind $path"
fi

# run_one NAME LAYOUT SIZE TRAIN_ROOT TEST_ROOT METRICS-FLAGS...
run_one() {
  local name=$1 layout=$2 size=$3 train_root=$4 test_root=$5
  shift 5
  local out=$OUT/$name
  mkdir -p "$out"
  for dtype in f16 f32; do
    "$BIN/dinomaly-extract" -q --dataset "$train_root" --layout "$layout" --split train \
      "${ENCODER[@]}" --resize "$size" --crop "$size" --dtype "$dtype" -o "$out/train-$dtype.safetensors"
    "$BIN/dinomaly-train" -q "$out/train-$dtype.safetensors" --mode unified --iterations "$ITERATIONS" \
      --warmup 20 --batch 8 --seed 1 -o "$out/model-$dtype.safetensors"
    rm -rf "$out/maps-$dtype"
    "$BIN/dinomaly-score" -q -c "$out/model-$dtype.safetensors" "${SCORE_W[@]}" \
      --dataset "$test_root" --layout "$layout" --split test --maps-dir "$out/maps-$dtype" >"$out/scores-$dtype.jsonl"
    "$BIN/dinomaly-metrics" -q -i "$out/scores-$dtype.jsonl" "$@" --format markdown >"$out/metrics-$dtype.md"
  done
  echo "== $name ($size px, $ITERATIONS iterations at batch 8, f32 store as the reference)"
  "$DEMO_DATA" compare "$out/scores-f32.jsonl" "$out/scores-f16.jsonl"
  echo "-- metrics, f32 store:"; cat "$out/metrics-f32.md"
  echo "-- metrics, f16 store:"; cat "$out/metrics-f16.md"
}

for name in $DATASETS; do
  case $name in
    textures)
      wheel=$(compgen -G "$WHEELS/scikit_image-0.26.0-*.whl" | head -n 1) || true
      [[ -n $wheel ]] || die "no scikit-image 0.26.0 wheel in $WHEELS (make demo fetches it)"
      "$DEMO_DATA" textures --wheel "$wheel" --out "$OUT/data/textures" --train 100 --test-good 12 --test-defect 8 >/dev/null
      run_one textures mvtec 126 "$OUT/data/textures" "$OUT/data/textures" --resize 126 --crop 126
      ;;
    elpv)
      wheel=$WHEELS/elpv_dataset-1.0.0.post1-py3-none-any.whl
      [[ -f $wheel ]] || die "no $wheel (make demo fetches it)"
      "$DEMO_DATA" elpv --wheel "$wheel" --out "$OUT/data/elpv" --train 150 --test-good 30 --test-defect 30 >/dev/null
      run_one elpv folder 168 "$OUT/data/elpv/train" "$OUT/data/elpv/test" --image-only
      ;;
    *) die "unknown data set $name (textures, elpv)" ;;
  esac
done
