"""The exported model (dinomaly-export) in runtimes not written here:
onnxruntime CPU and OpenVINO CPU, against dinomaly-score on the same images.

Run by scripts/onnx-check.sh, which prepares the checkpoint, the images, the
reference scores and maps (dinomaly-score --maps-dir) and the exported
models; this file only feeds and compares them, and times them side by side.

Feeding: every image is pre-processed as a deployment would, from the
model's own metadata (metadata_props: resize, crop, mean, std): Pillow's
bilinear resize to `resize` (the PIL path of dinomaly-score, which
reproduces Pillow bit for bit; tests/preprocess.rs), centre crop with
torchvision's int(round((H - h) / 2)) offsets, /255, (x - mean) / std, NCHW
float32. So the map difference below covers the whole path a user takes, not
only the graph.

Parity (per runtime and export precision, over all images):
  map_abs    max |a - b| over all map pixels (a: dinomaly-score's .npy)
  map_rel    the same divided by the image's own max |a|, worst image
  score_abs  max |a - b| over the image scores
  score_rel  max |a - b| / |a|
  spearman, kendall   rank agreement of the scores (tau-b, average ranks)
The bounds each row must meet are in BOUNDS; a row over its bound makes the
exit status 1. OpenVINO's default precision on this CPU is reported too but
not held to a bound: it is OpenVINO's choice (bf16 where the CPU has
AVX512_BF16 or AMX), not the exported model's.

Speed (images/s, batch 1 and 8, the same N images): dinomaly-score is timed
from the stamps of its output lines (it flushes each line as its image is
scored), on the list repeated 1 + R times: the first pass is warm-up, each
later pass is one repeat. The ONNX runtimes run the same pre-processed
tensors: one warm-up pass, then R timed passes (pre-processing not timed:
dinomaly-score decodes in a thread beside the model anyway). Median of the
repeats. Every runtime gets the same number of threads.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import openvino as ov
from PIL import Image

# name: (map_rel, score_rel, min rank correlation), checked for rows whose
# precision key matches. fp32: the issue's 1e-4 (issue 15, "maps <= 1e-4
# relative, scores <= 1e-4"). fp16 export: 10-bit mantissa, about 5e-4 per
# rounding, through 12 encoder blocks and the decoder; the bound is 2 % of
# the map's peak and 1 % of a score, and the order of the scores must
# survive (Spearman >= 0.99).
BOUNDS = {
    "fp32": (1e-4, 1e-4, 0.999),
    "fp16": (2e-2, 1e-2, 0.99),
}


def side_pair(value):
    """(height, width) from the metadata's JSON: a number or [h, w]."""
    v = json.loads(value) if isinstance(value, str) else value
    if isinstance(v, (int, float)):
        return int(v), int(v)
    if isinstance(v, list) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f"cannot read a size from {value!r}")


class Feed:
    """Pre-processing from the model's metadata_props."""

    def __init__(self, meta):
        for key in ("resize", "crop", "mean", "std", "input_kind"):
            if key not in meta:
                raise SystemExit(f"onnx_check: the model's metadata has no {key!r} (keys: {sorted(meta)})")
        self.resize = side_pair(meta["resize"])
        self.crop = side_pair(meta["crop"])
        self.mean = np.array(json.loads(meta["mean"]), np.float32).reshape(3, 1, 1)
        self.std = np.array(json.loads(meta["std"]), np.float32).reshape(3, 1, 1)
        self.uint8 = meta["input_kind"] == "uint8"

    def __call__(self, path):
        (rh, rw), (ch, cw) = self.resize, self.crop
        img = Image.open(path).convert("RGB").resize((rw, rh), Image.BILINEAR)
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        x = np.asarray(img, np.uint8)[top : top + ch, left : left + cw].transpose(2, 0, 1)
        if self.uint8:
            return np.ascontiguousarray(x)
        return (x.astype(np.float32) / np.float32(255.0) - self.mean) / self.std


def model_metadata(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


class OrtRuntime:
    """onnxruntime's CPU execution provider."""

    def __init__(self, path, threads, optimize=True, profile_prefix=None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.note = f"graph optimisations {'all' if optimize else 'off'}"

    def __call__(self, x):
        anomaly_map, score = self.session.run(["anomaly_map", "score"], {"image": x})
        return anomaly_map, score


class OvRuntime:
    """OpenVINO's CPU plugin; precision None keeps OpenVINO's default."""

    def __init__(self, core, path, threads, precision=None, perf_counts=False):
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if perf_counts:
            config["PERF_COUNT"] = True
        self.compiled = core.compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.map_port = self.compiled.output("anomaly_map")
        self.score_port = self.compiled.output("score")
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        # An openvino Type ("f32", "bf16", "f16") or, in some versions, a string.
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.note = f"inference precision {self.precision}"

    def __call__(self, x):
        result = self.request.infer({"image": x})
        return np.array(result[self.map_port], copy=True), np.array(result[self.score_port], copy=True)


def ranks(x):
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        tied = x == v
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def kendall(a, b):
    """Kendall's tau-b."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    n0 = concordant + discordant
    return float((concordant - discordant) / np.sqrt((n0 + ties_a) * (n0 + ties_b)))


def run_all(runtime, tensors, batch):
    """Maps and scores of all tensors, fed `batch` at a time."""
    maps, scores = [], []
    for start in range(0, len(tensors), batch):
        m, s = runtime(np.stack(tensors[start : start + batch]))
        maps.extend(m)
        scores.extend(np.asarray(s).reshape(-1))
    return maps, np.array(scores, np.float64)


def compare(ref_maps, ref_scores, maps, scores):
    map_abs = map_rel = 0.0
    for a, b in zip(ref_maps, maps):
        if a.shape != b.shape:
            raise SystemExit(f"onnx_check: map shapes differ: dinomaly-score {a.shape}, exported {b.shape}")
        d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        map_abs = max(map_abs, d)
        map_rel = max(map_rel, d / float(np.abs(a).max()))
    diff = np.abs(ref_scores - scores)
    return {
        "map_abs": map_abs,
        "map_rel": map_rel,
        "score_abs": float(diff.max()),
        "score_rel": float((diff / np.abs(ref_scores)).max()),
        "score_spread_rel": float(diff.max() / (ref_scores.max() - ref_scores.min())),
        "spearman": spearman(ref_scores, scores),
        "kendall": kendall(ref_scores, scores),
    }


def time_runtime(runtime, tensors, batch, repeats):
    """Images/s of each timed pass (one untimed warm-up pass first)."""
    batches = [np.stack(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]
    rates = []
    for rep in range(repeats + 1):
        start = time.perf_counter()
        for x in batches:
            runtime(x)
        elapsed = time.perf_counter() - start
        if rep > 0:
            rates.append(len(tensors) / elapsed)
    return rates


def time_score(args, images, batch, repeats, precision):
    """Images/s of dinomaly-score per pass, from its output lines' stamps."""
    n = len(images)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for _ in range(repeats + 1):
            for image in images:
                f.write(image + "\n")
        listing = f.name
    cmd = [args.score_bin, "-q", "-c", args.ckpt, "-i", listing, "--device", "cpu", "--batch", str(batch)]
    cmd += ["--precision", precision] + (["--weights", args.weights] if args.weights else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    stamps = []
    try:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env) as proc:
            for _ in proc.stdout:
                stamps.append(time.perf_counter())
            if proc.wait() != 0:
                raise SystemExit(f"onnx_check: {' '.join(cmd)} failed (exit {proc.returncode})")
    finally:
        os.unlink(listing)
    if len(stamps) != n * (repeats + 1):
        raise SystemExit(f"onnx_check: dinomaly-score wrote {len(stamps)} lines for {n * (repeats + 1)} inputs")
    return [n / (stamps[(r + 1) * n - 1] - stamps[r * n - 1]) for r in range(1, repeats + 1)]


def cpu_description():
    model = ""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"]
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags]
    return model or platform.processor(), present, absent


def ort_profile_summary(path, threads, tensors, batch, out_dir):
    """onnxruntime's own profile of one batch: time per operator type."""
    runtime = OrtRuntime(path, threads, profile_prefix=os.path.join(out_dir, "ort-profile"))
    x = np.stack(tensors[:batch])
    runtime(x)
    runtime(x)
    trace = runtime.session.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("name") == "model_run"]
    by_op = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0) + e["dur"]
    # Both runs are in the trace: halve to one batch.
    total = sum(by_op.values())
    rows = sorted(by_op.items(), key=lambda kv: -kv[1])
    return trace, runs[-1]["dur"] / 1e6 if runs else float("nan"), [(op, us / 2e6, us / total) for op, us in rows]


def ov_profile_summary(core, path, threads, tensors, batch, precision):
    """OpenVINO's per-node counters of one batch: time per kernel (exec type)."""
    runtime = OvRuntime(core, path, threads, precision=precision, perf_counts=True)
    x = np.stack(tensors[:batch])
    runtime(x)
    runtime(x)
    by_kernel = {}
    for info in runtime.request.profiling_info:
        us = info.real_time.total_seconds() * 1e6
        key = f"{info.node_type} [{info.exec_type}]"
        by_kernel[key] = by_kernel.get(key, 0) + us
    total = sum(by_kernel.values())
    rows = sorted(by_kernel.items(), key=lambda kv: -kv[1])
    return runtime.precision, [(k, us / 1e6, us / total) for k, us in rows]


def fmt(x, digits=2):
    return f"{x:.{digits}e}" if isinstance(x, float) else str(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="dinomaly-score output (JSON lines with score and map)")
    p.add_argument("--model", action="append", required=True, metavar="PRECISION=FILE.onnx")
    p.add_argument("--score-bin", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--weights", default="")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--speed-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--parity-batch", type=int, default=8)
    p.add_argument("--explain", action="store_true", help="profile ORT and OpenVINO at the largest batch")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]

    models = dict(m.split("=", 1) for m in args.model)
    if "fp32" not in models:
        raise SystemExit("onnx_check: --model fp32=FILE is required (the speed runs use it)")
    with open(args.reference) as f:
        reference = [json.loads(line) for line in f if line.strip()]
    images = [r["image"] for r in reference]
    ref_scores = np.array([r["score"] for r in reference], np.float64)
    ref_maps = [np.load(r["map"]) for r in reference]

    meta = model_metadata(models["fp32"])
    feed = Feed(meta)
    say(f"pre-processing {len(images)} images from the metadata: resize {feed.resize}, crop {feed.crop}")
    tensors = [feed(path) for path in images]

    core = ov.Core()
    rows, failed = [], []
    for precision, path in models.items():
        runtimes = [
            ("onnxruntime CPU", OrtRuntime(path, args.threads), True),
            ("OpenVINO CPU", OvRuntime(core, path, args.threads, precision="f32"), True),
            ("OpenVINO CPU", OvRuntime(core, path, args.threads), False),
        ]
        for name, runtime, gated in runtimes:
            if not gated and runtime.precision == "f32":
                continue  # the default is f32 on this CPU: the row above
            say(f"parity: {name}, {precision} export ({runtime.note})")
            maps, scores = run_all(runtime, tensors, args.parity_batch)
            c = compare(ref_maps, ref_scores, maps, scores)
            bound = BOUNDS.get(precision) if gated else None
            ok = None
            if bound:
                ok = c["map_rel"] <= bound[0] and c["score_rel"] <= bound[1] and c["spearman"] >= bound[2]
                if not ok:
                    failed.append(f"{name} {precision}")
            rows.append({"runtime": name, "export": precision, "note": runtime.note, **c, "bound": bound, "ok": ok})

    speed = []
    n = min(args.speed_images, len(images))
    speed_images, speed_tensors = images[:n], tensors[:n]
    for batch in batches:
        # The diagnostic rows (libtorch's bf16, onnxruntime without its graph
        # optimisations) only at the largest batch, to keep the run short.
        full = batch == max(batches)
        for precision in ["fp32", "bf16"] if full else ["fp32"]:
            say(f"speed: dinomaly-score --precision {precision}, batch {batch}")
            rates = time_score(args, speed_images, batch, args.repeats, precision)
            speed.append(("dinomaly-score (libtorch)", f"--precision {precision}", batch, rates))
        # onnxruntime with its graph optimisations off and OpenVINO at f32
        # and at its own default tell where a difference comes from.
        candidates = [
            ("onnxruntime CPU", lambda: OrtRuntime(models["fp32"], args.threads)),
            ("onnxruntime CPU", lambda: OrtRuntime(models["fp32"], args.threads, optimize=False)),
            ("OpenVINO CPU", lambda: OvRuntime(core, models["fp32"], args.threads, precision="f32")),
            ("OpenVINO CPU (default)", lambda: OvRuntime(core, models["fp32"], args.threads)),
        ]
        if not full:
            del candidates[1]
        for name, make in candidates:
            runtime = make()
            if name.endswith("(default)"):
                if runtime.precision == "f32":
                    continue  # the row above
                name = "OpenVINO CPU"
            say(f"speed: {name} fp32 export ({runtime.note}), batch {batch}")
            speed.append((name, f"fp32 export, {runtime.note}", batch, time_runtime(runtime, speed_tensors, batch, args.repeats)))

    explain = None
    if args.explain:
        b = max(batches)
        say(f"profiles at batch {b}")
        trace, run_s, ort_ops = ort_profile_summary(models["fp32"], args.threads, speed_tensors, b, args.out)
        ov_f32 = ov_profile_summary(core, models["fp32"], args.threads, speed_tensors, b, "f32")
        ov_default = ov_profile_summary(core, models["fp32"], args.threads, speed_tensors, b, None)
        explain = {"batch": b, "ort": ort_ops, "ort_trace": trace, "ov_f32": ov_f32, "ov_default": ov_default}

    cpu, present, absent = cpu_description()
    lines = []
    w = lines.append
    w(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; flags present: {' '.join(present) or 'none'}; absent: {' '.join(absent) or 'none'}")
    w(f"Threads: {args.threads} for every runtime (OMP_NUM_THREADS for dinomaly-score, intra_op_num_threads, INFERENCE_NUM_THREADS).")
    w(f"onnxruntime {ort.__version__}, OpenVINO {ov.get_version()}, numpy {np.__version__}; model: backbone {meta.get('backbone')}, crop {meta.get('crop')}, map size {meta.get('map_size')}.")
    w("")
    w(f"Parity against dinomaly-score on {len(images)} images (exported models fed at batch {args.parity_batch}, dynamic batch axis):")
    w("")
    w("| runtime | export | setting | max map diff | max map diff / map max | max score diff | max score diff / score | Spearman | Kendall | bound (map rel, score rel, Spearman) |")
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        bound = "not held to one" if r["bound"] is None else f"{r['bound'][0]:g}, {r['bound'][1]:g}, {r['bound'][2]:g}: {'ok' if r['ok'] else 'FAILED'}"
        w(f"| {r['runtime']} | {r['export']} | {r['note']} | {fmt(r['map_abs'])} | {fmt(r['map_rel'])} | {fmt(r['score_abs'])} | {fmt(r['score_rel'])} | {r['spearman']:.4f} | {r['kendall']:.4f} | {bound} |")
    w("")
    w(f"Speed: images/s on the same {n} images, median of {args.repeats} passes after one warm-up pass (min-max in brackets):")
    w("")
    w("| runtime | setting | batch | images/s |")
    w("|---|---|---:|---:|")
    for name, setting, batch, rates in speed:
        w(f"| {name} | {setting} | {batch} | {statistics.median(rates):.3g} ({min(rates):.3g}-{max(rates):.3g}) |")
    if explain:
        w("")
        w(f"Where the time goes, one batch of {explain['batch']} (share of the summed kernel times):")
        w("")
        w("| runtime | operator / kernel | s | share |")
        w("|---|---|---:|---:|")
        for op, s, share in explain["ort"][:6]:
            w(f"| onnxruntime | {op} | {s:.3f} | {share:.1%} |")
        for label, (precision, kernels) in [("OpenVINO f32", explain["ov_f32"]), ("OpenVINO default", explain["ov_default"])]:
            for k, s, share in kernels[:6]:
                w(f"| {label} ({precision}) | {k} | {s:.3f} | {share:.1%} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "onnx-check.json"), "w") as f:
        json.dump({"parity": rows, "speed": [list(s) for s in speed], "cpu": cpu, "flags": present}, f, indent=1)
    sys.stdout.write(text)
    if failed:
        say("parity FAILED: " + ", ".join(failed))
        return 1
    return 0


def say(message):
    print(f"onnx-check [{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
