#!/usr/bin/env bash
# Live-input latency of dinomaly-score: the time from an input line arriving on its
# stdin (a pipe) to its result line on stdout, at the official input size (resize 448,
# crop 392), for ViT-S/14-reg4 and ViT-B/14-reg4 at --batch 1 and --batch 8 (the default
# --batch-wait, 50 ms, applies to the lone lines of batch 8). The README's figures.
#
#   bash scripts/latency.sh [OUT]        (default target/latency)
#
# One line is written, its result awaited, then the next line (a camera's image every few
# seconds); the first line's latency (the model's first run) is reported apart, the others
# as median and maximum. The encoders are demo-data's seeded random weights (`demo-data
# weights --random`; speed does not depend on the values) and the model is trained for 2
# iterations on the test fixtures' images only to have a checkpoint. Needs the release
# binaries and demo-data (cargo build --release --locked --bins --example demo-data).
# LINES=N lines per run (default 6); the CPU model and its avx512_bf16/amx flags are
# printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/latency}
BIN=${DINOMALY_BIN:-target/release}
DEMO_DATA=${DEMO_DATA:-$BIN/examples/demo-data}
LINES=${LINES:-6}
die() { printf 'latency: %s\n' "$*" >&2; exit 2; }
for b in dinomaly-extract dinomaly-train dinomaly-score; do
  [[ -x $BIN/$b ]] || die "no $BIN/$b (cargo build --release --locked --bins --example demo-data)"
done
[[ -x $DEMO_DATA ]] || die "no $DEMO_DATA"
mkdir -p "$OUT"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512_bf16|amx_bf16|amx_tile)$' | tr '\n' ' ' || true)
echo "cpu: $cpu, $(nproc) cores; flags: ${flags:-no avx512_bf16/amx}; load: $(cut -d' ' -f1-3 /proc/loadavg)"

images=(tests/fixtures/preprocess/{chelsea.png,gravel_l.png,coffee_420.jpg,coffee_444.jpg,textures.png,mode_rgb.bmp})
printf '%s\n' "${images[@]}" >"$OUT/train.txt"

for size in s b; do
  line=$(DINOMALY_OFFLINE=1 "$DEMO_DATA" weights --random --backbone "dinov2_vit${size}14_reg4" --random-dir "$OUT/weights")
  weights=${line#* }
  ckpt=$OUT/vit$size.safetensors
  if [[ ! -f $ckpt ]]; then
    "$BIN/dinomaly-extract" -q --backbone "random-vit${size}14-reg4" --weights "$weights" -i "$OUT/train.txt" \
      -o "$OUT/vit$size.store.safetensors"
    "$BIN/dinomaly-train" -q "$OUT/vit$size.store.safetensors" -o "$ckpt" --iterations 2 --warmup 1 --batch 2
    rm -f "$OUT/vit$size.store.safetensors"
  fi
  for batch in 1 8; do
    coproc SCORE { "$BIN/dinomaly-score" -q -c "$ckpt" --weights "$weights" --batch "$batch"; }
    times=()
    for ((i = 0; i < LINES; i++)); do
      start=$EPOCHREALTIME
      printf '%s\n' "${images[i % ${#images[@]}]}" >&"${SCORE[1]}"
      IFS= read -r result <&"${SCORE[0]}" || die "no result line (vit$size, batch $batch)"
      end=$EPOCHREALTIME
      [[ $result == *'"score"'* ]] || die "not a score: $result"
      times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", (b - a) * 1000 }')")
    done
    exec {SCORE[1]}>&-
    wait "$SCORE_PID" || die "dinomaly-score failed (vit$size, batch $batch)"
    rest=$(printf '%s\n' "${times[@]:1}" | sort -n)
    median=$(awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$rest")
    echo "ViT-$(tr a-z A-Z <<<"$size")/14-reg4 --batch $batch: first line ${times[0]} ms; next $((LINES - 1)) lines median $median ms, max $(tail -1 <<<"$rest") ms"
  done
done
