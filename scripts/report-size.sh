#!/usr/bin/env bash
# The size and write time of `dinomaly-metrics --html` on a Real-IAD-sized
# run: 30 classes, 50,000 scored lines (README, "The report"). The input is
# synthetic: per class ~1,667 lines (one in five defective) with scores from
# two overlapping normal distributions, 512x512 photos, 256x256 maps and
# masks, the official geometry (resize 448, crop 392) on the lines. Only the
# images a report shows (the --worst highest-scored good and lowest-scored
# defective of each class) have files: the others are never opened, which
# is what the figures measure. Image-level metrics (--image-only): pixel
# metrics would read all 50,000 maps, the evaluation's cost, not the
# report's.
#
#   bash scripts/report-size.sh [OUT]     (default OUT: target/report-size)
#
# Environment: DINOMALY_BIN (default target/release), PYTHON (python3, the
# standard library only), WORST (default 4), CLASSES (30), LINES (50000).
# Prints the figures; the report is OUT/report/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DINOMALY_BIN:-target/release}
OUT=${1:-target/report-size}
PYTHON=${PYTHON:-python3}
WORST=${WORST:-4}
CLASSES=${CLASSES:-30}
LINES=${LINES:-50000}
[[ -x $BIN/dinomaly-metrics ]] || { echo "report-size: $BIN/dinomaly-metrics is missing (cargo build --release)" >&2; exit 2; }

rm -rf "$OUT"
mkdir -p "$OUT/input"
"$PYTHON" - "$OUT/input" "$CLASSES" "$LINES" "$WORST" <<'EOF'
import json, os, random, shutil, struct, sys, zlib

out, classes, lines, worst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(1)

def png(path, width, height, channels, pixel):
    """A PNG (8-bit grey or RGB) from pixel(x, y) -> bytes."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for x in range(width):
            raw += pixel(x, y)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    colour = 2 if channels == 3 else 0
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b""))

def npy(path, rows, cols, value):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    data = struct.pack("<%df" % (rows * cols), *(value(r, c) for r in range(rows) for c in range(cols)))
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)

records = []
for k in range(classes):
    name = "class%02d" % k
    n = lines // classes + (1 if k < lines % classes else 0)
    for i in range(n):
        anomalous = i % 5 == 0
        score = rng.gauss(0.30 if anomalous else 0.20, 0.04)
        base = os.path.join(out, name, "%05d" % i)
        records.append({"image": base + ".png", "class": name, "label": int(anomalous),
                        "mask": base + "_mask.png" if anomalous else None, "map": base + ".npy",
                        "map_geometry": {"resize": [448, 448], "crop": [392, 392]}, "score": score})
# Files for the cases a report shows, as dinomaly-metrics picks them.
by_class = {}
for r in records:
    by_class.setdefault(r["class"], []).append(r)
needed = []
for rs in by_class.values():
    good = sorted((r for r in rs if not r["label"]), key=lambda r: -r["score"])[:worst]
    bad = sorted((r for r in rs if r["label"]), key=lambda r: r["score"])[:worst]
    needed += good + bad
# A few distinct files, copied: decoding a copy costs what decoding the
# original does, and pure Python draws slowly.
proto = os.path.join(out, "proto")
os.makedirs(proto, exist_ok=True)
photos = []
for j in range(8):
    photos.append(os.path.join(proto, "photo%d.png" % j))
    tone = j * 29
    png(photos[-1], 512, 512, 3, lambda x, y: bytes(((x ^ y) & 255, (tone + x // 4) & 255, (y * 3 + tone) & 255)))
png(os.path.join(proto, "mask.png"), 512, 512, 1, lambda x, y: b"\xff" if (x - 256) ** 2 + (y - 256) ** 2 < 1600 else b"\x00")
for label in (0, 1):
    npy(os.path.join(proto, "map%d.npy" % label), 256, 256,
        lambda a, b: 0.1 + 0.5 * ((a - 128) ** 2 + (b - 128) ** 2 < 400) * label + 0.001 * (a % 7))
for j, r in enumerate(needed):
    os.makedirs(os.path.dirname(r["image"]), exist_ok=True)
    shutil.copyfile(photos[j % len(photos)], r["image"])
    shutil.copyfile(os.path.join(proto, "map%d.npy" % r["label"]), r["map"])
    if r["label"]:
        shutil.copyfile(os.path.join(proto, "mask.png"), r["mask"])
with open(os.path.join(out, "scores.jsonl"), "w") as f:
    for r in records:
        f.write(json.dumps(r) + "\n")
print("input: %d lines in %d classes, files for %d shown cases" % (len(records), classes, len(needed)), file=sys.stderr)
EOF

seconds() { date +%s.%N; }
t0=$(seconds)
"$BIN/dinomaly-metrics" -i "$OUT/input/scores.jsonl" --image-only >"$OUT/metrics.json" 2>/dev/null
t1=$(seconds)
"$BIN/dinomaly-metrics" -i "$OUT/input/scores.jsonl" --image-only --html "$OUT/report" --worst "$WORST" \
  >/dev/null 2>"$OUT/stderr.txt"
t2=$(seconds)
grep "report written" "$OUT/stderr.txt"
page=$(stat -c %s "$OUT/report/index.html")
folder=$(du -sb "$OUT/report" | cut -f1)
files=$(find "$OUT/report" -type f | wc -l)
printf 'lines %s, classes %s, --worst %s\n' "$LINES" "$CLASSES" "$WORST"
printf 'index.html %.0f kB; folder %.1f MB in %s files\n' "$(echo "$page / 1000" | bc -l)" "$(echo "$folder / 1000000" | bc -l)" "$files"
printf 'dinomaly-metrics --image-only: %.2f s without --html, %.2f s with it\n' "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t1" | bc -l)"
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -n $browser ]]; then
  profile=$(mktemp -d)
  t3=$(seconds)
  "$browser" --headless --disable-gpu --no-sandbox --disable-dev-shm-usage --user-data-dir="$profile" --dump-dom \
    "file://$(realpath "$OUT/report/index.html")" >"$OUT/dom.html" 2>/dev/null
  t4=$(seconds)
  rm -rf "$profile"
  broken=$(grep -o 'data-images-broken="[0-9]*"' "$OUT/dom.html" | head -1)
  printf 'headless chromium: page and all images loaded in %.2f s (%s)\n' "$(echo "$t4 - $t3" | bc -l)" "$broken"
fi
