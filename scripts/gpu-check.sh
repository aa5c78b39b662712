#!/usr/bin/env bash
# The GPU check of issue 7, for a machine that has PyTorch 2.11.0 with CUDA
# but no Rust toolchain and no package registry. It builds nothing there:
# it runs the binaries built here (`make gpu-bundle` puts them, a few real
# ELPV images and nothing else into the ignored folder .gpu/) against that
# machine's own torch/lib, and writes one table.
#
#   here:   make gpu-bundle
#   there:  bash scripts/gpu-check.sh [OUT_DIR]      (default $OUT, else gpu-check-out)
#
# What it does, in order (each step's command is echoed to stderr):
#  1. checks that CUDA is really used: the tools must say "on cuda:0" and
#     nvidia-smi must see their memory;
#  2. seeded random ViT-B/14-reg4 weights (no hub there), a feature store of
#     the training images on the GPU, a short training run on the GPU;
#  3. the same test images scored on the CPU and on the GPU: fp32 maps and
#     scores compared (max relative difference, must be <= 1e-4), bf16
#     against fp32 (max map difference, Spearman rank correlation of scores);
#  4. scoring images/s at ViT-B 392 (fp32 and bf16, batch 32 and 64) over
#     the test images repeated to GPU_CHECK_IMAGES inputs, decoding included,
#     start-up counted and also taken out (a run over no image, timed apart);
#  5. training iterations/s from the feature store (fp32, bf16), from the
#     run's own --log (the first iteration and start-up left out), and the
#     peak GPU memory of every step;
#  6. when TensorRT's trtexec is there (PATH, /usr/src/tensorrt/bin or
#     TRTEXEC=FILE) and the device is CUDA: the --precision fp16 export of
#     dinomaly-export built into an engine (dynamic batch), its maps and
#     scores on the same crops against the CPU fp32 run, and its images/s
#     at the batches of step 4; otherwise the table says TensorRT was
#     absent or skipped (not a failure).
# Exit status: 0 when every comparison is within its tolerance, 1 when one
# is not, 2 when something fails to run.
#
# Environment:
#   GPU_CHECK_DEVICE=cuda   the device under test (cpu runs the same steps on
#                           the CPU: what tests/gpu_check.rs does with QUICK)
#   GPU_CHECK_QUICK=1       ViT-S at 224, few images and iterations (a dry run)
#   GPU_CHECK_IMAGES=2048   inputs per throughput run
#   GPU_CHECK_ITERS=400     iterations per timed training run
#   GPU_BUNDLE=.gpu         where the binaries (bin/) and images (data/) are
#   LIBTORCH_LIB=DIR        libtorch's lib folder (default: python3's torch/lib)
#   PYTHON=python3          finds torch/lib when LIBTORCH_LIB is not given
#   TRTEXEC=FILE            TensorRT's trtexec (default: PATH, /usr/src/tensorrt/bin)
#   GPU_CHECK_TRT_IMAGES=32 test images compared through TensorRT
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${GPU_BUNDLE:-.gpu}
BIN=$BUNDLE/bin
DATA=$BUNDLE/data
OUTDIR=${1:-${OUT:-gpu-check-out}}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
QUICK=${GPU_CHECK_QUICK:-0}
if [[ $QUICK == 1 ]]; then
  ARCH=dinov2_vits14_reg4 NAME=random-vits14-reg4 RESIZE=224 CROP=224
  IMAGES=${GPU_CHECK_IMAGES:-24} ITERS=${GPU_CHECK_ITERS:-6} BATCHES=(4 8) TRAIN_BATCH=4
else
  ARCH=dinov2_vitb14_reg4 NAME=random-vitb14-reg4 RESIZE=448 CROP=392
  IMAGES=${GPU_CHECK_IMAGES:-2048} ITERS=${GPU_CHECK_ITERS:-400} BATCHES=(32 64) TRAIN_BATCH=16
fi

die() { echo "gpu-check: $*" >&2; exit 2; }
say() { echo "gpu-check [$(date +%H:%M:%S)]: $*" >&2; }
now() { date +%s.%N; }
# Seconds between two `now` stamps, 3 decimals.
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# a / b with three significant digits (whole numbers from 100 up), so that a
# slow rate on a slow CPU still reads as a number, not 0.0; n/a when b <= 0
# (a difference of timings that the noise swallowed).
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) { r = a / b; if (r >= 100) printf "%.0f", r; else printf "%.3g", r } else print "n/a" }'
}

for b in dinomaly-extract dinomaly-train dinomaly-score demo-data; do
  [[ -x $BIN/$b ]] || die "no $BIN/$b: run 'make gpu-bundle' on the build machine and carry $BUNDLE"
done
[[ -d $DATA/train && -d $DATA/test ]] || die "no images in $DATA (make gpu-bundle writes them)"
if [[ -z ${LIBTORCH_LIB:-} ]]; then
  LIBTORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) ||
    LIBTORCH_LIB=""
fi
if [[ -n $LIBTORCH_LIB ]]; then
  # Before the binaries' own runpath (the build machine's libtorch, absent there).
  export LD_LIBRARY_PATH=$LIBTORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

mkdir -p "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"; [[ -n ${SMI_PID:-} ]] && kill "$SMI_PID" 2>/dev/null || true' EXIT
LOG=$OUTDIR/gpu-check.log
: >"$LOG"

# --- GPU memory: nvidia-smi polled in the background ----------------------
HAVE_SMI=0
if [[ $DEVICE == cuda* ]] && command -v nvidia-smi >/dev/null; then
  HAVE_SMI=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUTDIR/gpu.txt" 2>&1 || true
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$WORK/mem.log" 2>/dev/null &
  SMI_PID=$!
  sleep 1
fi
mem_mark() { [[ $HAVE_SMI == 1 ]] && wc -l <"$WORK/mem.log" || echo 0; }
# Peak MiB used on the GPU between two marks, minus the idle level before.
mem_peak() {
  [[ $HAVE_SMI == 1 ]] || { echo "n/a"; return; }
  sleep 0.3
  awk -v a="$1" -v b="$(mem_mark)" 'NR == 1 { base = $1 } NR > a && NR <= b && $1 > max { max = $1 } END { printf "%d", max - base }' "$WORK/mem.log"
}

# run NAME CMD...: runs a tool, stderr to the log, fails loudly.
run() {
  local name=$1
  shift
  echo "+ $*" >>"$LOG"
  "$@" 2>>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; die "$name failed (see above)"; }
  cat "$WORK/$name.err" >>"$LOG"
}
# Every tool announces its device on stderr; on a GPU run it must be CUDA.
check_device() {
  local name=$1
  if [[ $DEVICE == cuda* ]] && ! grep -q "cuda:0" "$WORK/$name.err"; then
    cat "$WORK/$name.err" >&2
    die "$name did not run on CUDA (is libtorch_cuda.so in $LIBTORCH_LIB?)"
  fi
}

# --- 1. weights and image lists --------------------------------------------
say "device $DEVICE, libtorch from ${LIBTORCH_LIB:-the runpath of the binaries}, $ARCH at $CROP"
line=$("$BIN/demo-data" weights --backbone "$ARCH" --random --random-dir "$WORK/weights" --seed 0)
WEIGHTS=${line#* }
[[ -f $WEIGHTS ]] || die "demo-data did not write weights ($line)"
ENCODER=(--backbone "$NAME" --weights "$WEIGHTS" --resize "$RESIZE" --crop "$CROP")
find "$DATA/train" -type f -name '*.png' | sort >"$WORK/train.txt"
find "$DATA/test" -type f -name '*.png' | sort >"$WORK/test.txt"
[[ -s $WORK/train.txt && -s $WORK/test.txt ]] || die "no PNG images under $DATA"
# The throughput list: the test images repeated (decoding is done every time).
awk -v n="$IMAGES" '{ a[NR] = $0 } END { for (i = 0; i < n; i++) print a[i % NR + 1] }' "$WORK/test.txt" >"$WORK/many.txt"
: >"$WORK/none.txt"

# --- 2. feature store and a trained model on the device ---------------------
m=$(mem_mark); t0=$(now)
run extract "$BIN/dinomaly-extract" -i "$WORK/train.txt" "${ENCODER[@]}" --device "$DEVICE" --batch 32 -o "$WORK/train.store"
t1=$(now); check_device extract
N_TRAIN=$(wc -l <"$WORK/train.txt")
EXTRACT_S=$(span "$t0" "$t1") EXTRACT_MEM=$(mem_peak "$m")
say "extract: $N_TRAIN images in $EXTRACT_S s"

# train_run NAME PRECISION ITERATIONS: a run with its --log in $WORK/NAME.log
train_run() {
  local name=$1 precision=$2 iters=$3
  run "$name" "$BIN/dinomaly-train" "$WORK/train.store" --iterations "$iters" --warmup 10 --batch "$TRAIN_BATCH" \
    --device "$DEVICE" --precision "$precision" -q --log "$WORK/$name.log" -o "$WORK/$name.safetensors"
}
# The rate comes from the run's own log: elapsed_s is taken inside the
# process, so start-up and the first iteration (allocations, kernel choice)
# are left out by a difference of two stamps of one clock, and the result
# cannot come out as noise, however fast or slow the machine. (Two runs of
# 1 and N iterations timed from outside were subtracted before; on a fast
# CPU the difference drowned in start-up noise and read n/a.)
declare -A TRAIN_ITS TRAIN_MEM
for p in fp32 bf16; do
  m=$(mem_mark)
  train_run "train-$p" "$p" "$((ITERS + 1))"
  TRAIN_MEM[$p]=$(mem_peak "$m")
  TRAIN_ITS[$p]=$(awk -v n="$ITERS" 'match($0, /"elapsed_s":[0-9.eE+-]+/) { t[c++] = substr($0, RSTART + 12, RLENGTH - 12) + 0 }
    END { if (c != n + 1) { print "n/a"; exit } d = t[c - 1] - t[0]; if (d <= 0) { print "n/a"; exit } r = n / d; if (r >= 100) printf "%.0f", r; else printf "%.3g", r }' "$WORK/train-$p.log")
  say "train $p: ${TRAIN_ITS[$p]} it/s (batch $TRAIN_BATCH, the last $ITERS of $((ITERS + 1)) iterations, from the run's log)"
done
CKPT=$WORK/train-fp32.safetensors

# --- 3. CPU against the device on the same images --------------------------
score() {
  local name=$1 device=$2 precision=$3 batch=$4 list=$5
  shift 5
  run "$name" "$BIN/dinomaly-score" -c "$CKPT" --weights "$WEIGHTS" -i "$list" --device "$device" \
    --precision "$precision" --batch "$batch" "$@"
}
mkdir -p "$WORK/maps-cpu" "$WORK/maps-dev" "$WORK/maps-bf16"
score score-cpu cpu fp32 8 "$WORK/test.txt" --maps-dir "$WORK/maps-cpu" >"$WORK/cpu.jsonl"
score score-dev "$DEVICE" fp32 32 "$WORK/test.txt" --maps-dir "$WORK/maps-dev" >"$WORK/dev.jsonl"
check_device score-dev
score score-bf16 "$DEVICE" bf16 32 "$WORK/test.txt" --maps-dir "$WORK/maps-bf16" >"$WORK/bf16.jsonl"
"$BIN/demo-data" compare "$WORK/cpu.jsonl" "$WORK/dev.jsonl" >"$WORK/fp32.txt"
"$BIN/demo-data" compare "$WORK/cpu.jsonl" "$WORK/bf16.jsonl" >"$WORK/bf16.txt"
{ sed 's/^/fp32_/' "$WORK/fp32.txt"; sed 's/^/bf16_/' "$WORK/bf16.txt"; } >"$WORK/compare.txt"
val() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/compare.txt"; }
say "compared: $(tr '\n' ' ' <"$WORK/compare.txt")"
STATUS=0
awk -v x="$(val fp32_map_rel)" 'BEGIN { exit !(x <= 1e-4) }' || { say "fp32 maps differ by more than 1e-4 relative"; STATUS=1; }
awk -v x="$(val fp32_score_rel)" 'BEGIN { exit !(x <= 1e-4) }' || { say "fp32 scores differ by more than 1e-4 relative"; STATUS=1; }

# --- 4. scoring throughput ----------------------------------------------------
declare -A SCORE_RATE SCORE_RATE_NET SCORE_MEM
for p in fp32 bf16; do
  a=$(now)
  score "start-$p" "$DEVICE" "$p" 1 "$WORK/none.txt" >/dev/null
  b=$(now)
  START=$(span "$a" "$b")
  for batch in "${BATCHES[@]}"; do
    m=$(mem_mark)
    a=$(now)
    score "rate-$p-$batch" "$DEVICE" "$p" "$batch" "$WORK/many.txt" >"$WORK/rate.jsonl"
    b=$(now)
    SCORE_MEM[$p-$batch]=$(mem_peak "$m")
    [[ $(wc -l <"$WORK/rate.jsonl") == "$IMAGES" ]] || die "scoring $p batch $batch wrote $(wc -l <"$WORK/rate.jsonl") lines for $IMAGES inputs"
    WALL=$(span "$a" "$b")
    SCORE_RATE[$p-$batch]=$(ratio "$IMAGES" "$WALL")
    SCORE_RATE_NET[$p-$batch]=$(ratio "$IMAGES" "$(awk -v w="$WALL" -v s="$START" 'BEGIN { print w - s }')")
    say "score $p batch $batch: ${SCORE_RATE[$p-$batch]} img/s (${SCORE_RATE_NET[$p-$batch]} without the ${START} s start-up)"
  done
done

# --- 5. TensorRT, when present ------------------------------------------------
# The fp16 export (dinomaly-export --precision fp16) built into an engine by
# trtexec with a dynamic batch, fed the very crops dinomaly-score's model
# sees (demo-data crops: its own pre-processing, written raw), its maps and
# scores compared with the CPU fp32 run of step 3 on the first TRT_IMAGES
# test images, then its throughput at the batch sizes of step 4 (trtexec's
# own timing: GPU compute and transfers, no decoding). No TensorRT, or a
# CPU run: the step says so and is skipped; that is not a failure.
TRTEXEC=${TRTEXEC:-$(command -v trtexec || true)}
if [[ -z $TRTEXEC && -x /usr/src/tensorrt/bin/trtexec ]]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec; fi
TRT_NOTE="" TRT_MAP_REL="" TRT_SPEARMAN="" TRT_SCORE_REL=""
declare -A TRT_RATE
if [[ $DEVICE != cuda* ]]; then
  TRT_NOTE="skipped: device $DEVICE (TensorRT runs on NVIDIA GPUs)"
elif [[ -z $TRTEXEC ]]; then
  if "$PYTHON" -c 'import tensorrt' 2>/dev/null; then
    TRT_NOTE="skipped: the tensorrt Python package imports but there is no trtexec (set TRTEXEC=/path/to/trtexec)"
  else
    TRT_NOTE="absent (no trtexec on PATH or in /usr/src/tensorrt/bin, no tensorrt Python package): skipped"
  fi
elif [[ ! -x $BIN/dinomaly-export ]]; then
  TRT_NOTE="skipped: no $BIN/dinomaly-export in the bundle (make gpu-bundle copies it)"
else
  TRT_IMAGES=${GPU_CHECK_TRT_IMAGES:-32}
  head -n "$TRT_IMAGES" "$WORK/test.txt" >"$WORK/trt.txt"
  head -n "$TRT_IMAGES" "$WORK/cpu.jsonl" >"$WORK/trt-ref.jsonl"
  N_TRT=$(wc -l <"$WORK/trt.txt")
  run trt-export "$BIN/dinomaly-export" -c "$CKPT" --weights "$WEIGHTS" --precision fp16 -o "$WORK/model-fp16.onnx" >/dev/null
  run trt-crops "$BIN/demo-data" crops -i "$WORK/trt.txt" --resize "$RESIZE" --crop "$CROP" -o "$WORK/crops.bin"
  IMG=3x${CROP}x${CROP} MAXB=$N_TRT
  for batch in "${BATCHES[@]}"; do ((batch > MAXB)) && MAXB=$batch; done
  say "TensorRT: building an fp16 engine with $TRTEXEC (batch 1..$MAXB)"
  run trt-build "$TRTEXEC" --onnx="$WORK/model-fp16.onnx" --fp16 --minShapes=image:1x$IMG \
    --optShapes=image:${BATCHES[0]}x$IMG --maxShapes=image:${MAXB}x$IMG --saveEngine="$WORK/model.plan" >"$WORK/trt-build.out"
  run trt-run "$TRTEXEC" --loadEngine="$WORK/model.plan" --shapes=image:${N_TRT}x$IMG --loadInputs=image:"$WORK/crops.bin" \
    --exportOutput="$WORK/trt-out.json" --iterations=1 --warmUp=0 --duration=0 >"$WORK/trt-run.out"
  "$BIN/demo-data" compare --trtexec "$WORK/trt-ref.jsonl" "$WORK/trt-out.json" >"$WORK/trt-compare.txt"
  trt_val() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/trt-compare.txt"; }
  TRT_MAP_REL=$(trt_val map_rel) TRT_SCORE_REL=$(trt_val score_rel) TRT_SPEARMAN=$(trt_val spearman)
  say "TensorRT fp16 against the CPU fp32: $(tr '\n' ' ' <"$WORK/trt-compare.txt")"
  # The fp16 bounds of scripts/onnx_check.py: 2 % of the map's peak, the
  # order of the scores kept.
  awk -v x="$TRT_MAP_REL" -v r="$TRT_SPEARMAN" 'BEGIN { exit !(x <= 2e-2 && r >= 0.99) }' ||
    { say "TensorRT fp16 maps or score order out of bounds (map_rel <= 2e-2, Spearman >= 0.99)"; STATUS=1; }
  for batch in "${BATCHES[@]}"; do
    run "trt-rate-$batch" "$TRTEXEC" --loadEngine="$WORK/model.plan" --shapes=image:${batch}x$IMG \
      --warmUp=1000 --duration=10 >"$WORK/trt-rate-$batch.out"
    qps=$(awk '/Throughput:/ { for (i = 1; i <= NF; i++) if ($i == "Throughput:") print $(i + 1) }' "$WORK/trt-rate-$batch.out" | tail -n 1)
    TRT_RATE[$batch]=$(awk -v q="$qps" -v b="$batch" 'BEGIN { if (q > 0) printf "%.0f", q * b; else print "n/a" }')
    say "TensorRT fp16 batch $batch: ${TRT_RATE[$batch]} img/s (trtexec: $qps batches/s)"
  done
fi
if [[ -n $TRT_NOTE ]]; then say "TensorRT: $TRT_NOTE"; fi

# --- 6. the table ---------------------------------------------------------------
TABLE=$OUTDIR/gpu-check.md
{
  echo "# GPU check ($(date -u +%Y-%m-%d), scripts/gpu-check.sh)"
  echo
  echo "Device: $DEVICE$( [[ -s $OUTDIR/gpu.txt ]] && echo " ($(head -n 1 "$OUTDIR/gpu.txt"))"); libtorch from ${LIBTORCH_LIB:-runpath}."
  echo "Model: $ARCH, seeded random weights, resize $RESIZE crop $CROP; $N_TRAIN training and $(wc -l <"$WORK/test.txt") test images (ELPV solar cells)."
  echo
  echo "| what | value |"
  echo "|---|---:|"
  echo "| fp32 maps, device vs CPU: max abs diff / max abs map | $(val fp32_map_rel) |"
  echo "| fp32 scores, device vs CPU: max relative diff | $(val fp32_score_rel) |"
  echo "| bf16 maps vs fp32 CPU: max abs diff | $(val bf16_map_abs) |"
  echo "| bf16 scores vs fp32 CPU: max relative diff | $(val bf16_score_rel) |"
  echo "| bf16 scores vs fp32 CPU: Spearman rank correlation | $(val bf16_spearman) |"
  for p in fp32 bf16; do
    for batch in "${BATCHES[@]}"; do
      echo "| scoring $p, batch $batch, $IMAGES images (img/s; without start-up) | ${SCORE_RATE[$p-$batch]} (${SCORE_RATE_NET[$p-$batch]}) |"
    done
  done
  for p in fp32 bf16; do
    echo "| training from the store $p, batch $TRAIN_BATCH (it/s, first iteration left out) | ${TRAIN_ITS[$p]} |"
  done
  if [[ -n $TRT_NOTE ]]; then
    echo "| TensorRT (fp16 export, trtexec) | $TRT_NOTE |"
  else
    echo "| TensorRT fp16 engine maps vs fp32 CPU, $N_TRT images: max abs diff / max abs map | $TRT_MAP_REL |"
    echo "| TensorRT fp16 engine scores vs fp32 CPU: max relative diff | $TRT_SCORE_REL |"
    echo "| TensorRT fp16 engine scores vs fp32 CPU: Spearman rank correlation | $TRT_SPEARMAN |"
    for batch in "${BATCHES[@]}"; do
      echo "| TensorRT fp16 engine, batch $batch (img/s, trtexec: model only, no decoding) | ${TRT_RATE[$batch]} |"
    done
  fi
  echo "| extract: $N_TRAIN images (s, start-up included) | $EXTRACT_S |"
  echo "| peak GPU memory above idle, MiB: extract / train fp32 / train bf16 | $EXTRACT_MEM / ${TRAIN_MEM[fp32]} / ${TRAIN_MEM[bf16]} |"
  for p in fp32 bf16; do
    for batch in "${BATCHES[@]}"; do
      echo "| peak GPU memory above idle, scoring $p batch $batch (MiB) | ${SCORE_MEM[$p-$batch]} |"
    done
  done
} >"$TABLE"
cat "$TABLE"
exit "$STATUS"
