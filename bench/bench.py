"""`make bench`: our tools against the references, same work, one run.

    PYTHON=/work/main/.venv-ref/bin/python bench/run.sh      (what make bench runs)
    python bench/bench.py [--dir DIR] [--results bench/results.md] [--metrics] [--rounds N] ...

Runs on this machine, in one process that holds the reference models and
starts our binaries as child processes, alternating ours and theirs (A B A B,
--rounds rounds) and taking medians, because the machine may be shared:

1. Encoder forward, blocks 0..9 (target layers 2..9), batch 8 at 392x392,
   ViT-B/14 and ViT-S/14 with 4 registers: examples/bench_encoder (the
   encoder forward alone on a pre-made normalised batch) against timm 1.0.31's
   `vit_{base,small}_patch14_reg4_dinov2` running the same blocks on the same
   tensor, with anomalib's pos-embed resize (exact size, no antialias).
   Outputs of the eight target layers compared.
2. Scoring, 16 real images (1024x1024 PNG tiled from scikit-image's CC0
   textures), batch 1 and 8: `dinomaly-score --kind anomalib` on an anomalib
   state dict against anomalib 2.7.0's DinomalyModel eval forward with
   anomalib's own reading (read_image) and pre-processor (Resize 448,
   CenterCrop 392, Normalize). Decoding is included on both sides; ours is
   the whole process wall time (start-up and checkpoint loading included),
   theirs the loop only (model construction excluded). Scores and maps
   compared. With batch 8, ours also runs once per round with --precision
   bf16, against anomalib fp32 (information: not the same precision) and
   against anomalib under torch.autocast(cpu, bfloat16).
3. Training, ViT-B at 392, batch 16: `dinomaly-train --variant anomalib` on a
   feature store of the same 16 images (made once by dinomaly-extract with
   the same encoder) against anomalib's training step (encoder forward +
   bottleneck/decoder forward and backward + clip + StableAdamW + schedule,
   written out as the plain loop Lightning runs, so no Lightning overhead is
   counted against it), and against the same step with the encoder features
   cached (its decoder-only part). Our per-iteration times are the gaps
   between successive lines of the --log file as they appear, at the steady
   state (the first 1 + --train-warmup iterations, start-up and the
   allocator's heap growing to its working size, are left out); theirs are
   timed steps after untimed warm-up steps (one decoder-only, one full).
   With the store, ours also runs with --precision bf16 against anomalib's
   step with its forward under torch.autocast(cpu, bfloat16).
4. The reference given our process settings (--only ...,tuned): anomalib's
   ViT-B scoring (batch 8) and full training step in a child process with
   glibc's malloc told to keep freed memory and MKL's AVX-512 kernels
   (LD_PRELOAD of bench/mkl_intel_answer.c), the two settings our tools
   make for themselves (src/alloc.rs, src/mkl_kernels.rs).
5. Metrics (--metrics): bench/metrics.sh, run after the rest with this
   interpreter; its figures go into the table and its output is quoted.

All reference weights are random (timm/anomalib offline construction with
pretrained=False, LayerScale gammas and decoder weights moved to realistic
scales) and shared with our side through safetensors files. Torch uses 2
threads on both sides (torch.set_num_threads(2); OMP_NUM_THREADS=2 for ours,
and the encoder example reports libtorch's thread count).
"""

import argparse
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

THREADS = 2
TRAIN_WARMUP = 2  # set from --train-warmup
SIZES = {"b": "vit_base_patch14_reg4_dinov2", "s": "vit_small_patch14_reg4_dinov2"}
LABEL = {"b": "ViT-B/14", "s": "ViT-S/14"}
N_IMAGES = 16
IMAGE_SIDE = 1024
ROOT = Path(__file__).resolve().parent.parent


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- set-up


def make_images(d):
    """16 RGB 1024x1024 PNGs tiled from scikit-image's CC0 textures (brick,
    grass, gravel), each with its own tint, flips and offset."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(20250611)
    textures = [data.brick(), data.grass(), data.gravel()]
    paths = []
    (d / "images").mkdir(parents=True, exist_ok=True)
    for i in range(N_IMAGES):
        tex = textures[i % len(textures)].astype(np.float32)
        big = np.block([[tex, tex[:, ::-1]], [tex[::-1], tex[::-1, ::-1]]])
        big = np.pad(big, ((0, 512), (0, 512)), mode="wrap")
        oy, ox = rng.integers(0, 512, 2)
        big = big[oy : oy + IMAGE_SIDE, ox : ox + IMAGE_SIDE]
        tint = rng.uniform(0.6, 1.1, 3)
        rgb = np.clip(big[..., None] * tint + rng.normal(0, 3, (IMAGE_SIDE, IMAGE_SIDE, 3)), 0, 255)
        p = d / "images" / f"tex_{i:02d}.png"
        Image.fromarray(rgb.astype(np.uint8), "RGB").save(p)
        paths.append(str(p))
    (d / "images.txt").write_text("\n".join(paths) + "\n")
    return paths


def offline_models():
    """Makes timm.create_model build random weights (no hub access), as
    anomalib's Dinomaly would otherwise download them at construction."""
    import timm

    create = timm.create_model

    def offline(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm.create_model = offline


def build_model(size, seed):
    """anomalib's DinomalyModel with random weights at realistic scales:
    encoder LayerScale gammas in [0.05, 0.3] (timm's random init leaves them
    at 1e-5, which would make the deep blocks vanish), trainable part with
    anomalib's initialisation plus a perturbation (so the linear attention is
    not uniform)."""
    from anomalib.models.image.dinomaly.lightning_model import Dinomaly
    from anomalib.models.image.dinomaly.torch_model import DinomalyModel

    torch.manual_seed(seed)
    model = DinomalyModel(encoder_name=SIZES[size])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.encoder.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.25 + 0.05)
        trainable = torch.nn.ModuleList([model.bottleneck, model.decoder])
        Dinomaly._initialize_trainable_modules(trainable)
        for m in trainable.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.add_(torch.randn(m.weight.shape, generator=gen) * 0.02)
    return model.eval()


def save_safetensors(tensors, path):
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def pre_processor():
    from anomalib.models.image.dinomaly.lightning_model import Dinomaly

    return Dinomaly.configure_pre_processor().transform


def read_batch(paths, transform):
    from anomalib.data.utils.image import read_image

    return transform(torch.stack([read_image(p, as_tensor=True) for p in paths]))


# ---------------------------------------------------------------- running ours


def bin_path(name, example=False):
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    p = target / "release" / ("examples" if example else "") / name
    if not p.exists():
        sys.exit(f"bench: {p} missing; run cargo build --release --examples")
    return str(p)


def ours_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(THREADS)
    env.pop("MKL_NUM_THREADS", None)
    env["RAYON_NUM_THREADS"] = str(THREADS)
    return env


def children_cpu():
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_ours(cmd):
    """Runs one of our binaries; returns (wall s, CPU s, stdout)."""
    t0, c0 = time.perf_counter(), children_cpu()
    out = subprocess.run(cmd, env=ours_env(), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{out.stderr}")
    return time.perf_counter() - t0, children_cpu() - c0, out.stdout


class Clock:
    """Wall and CPU (this process, all threads) seconds of a block."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


# ---------------------------------------------------------------- 1. encoder


def ref_encoder(model, images, layers):
    """timm's ViT forward through blocks 0..max(layers), as forward_intermediates
    with stop_early runs it (anomalib's TimmFeatureExtractor runs all blocks)."""
    vit = model.encoder.feature_extractor
    with torch.inference_mode():
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        outs = {}
        for i, blk in enumerate(vit.blocks[: max(layers) + 1]):
            x = blk(x)
            if i in layers:
                outs[i] = x
    return outs


def bench_encoder(d, size, model, batch, rounds, repeats):
    from safetensors.torch import load_file

    layers = list(model.target_layers)
    weights = d / size / "encoder.safetensors"
    out_file = d / size / "encoder_ours.safetensors"
    r = {"ours_s": [], "ours_cpu": [], "ref_s": [], "ref_cpu": []}
    ref_encoder(model, batch, layers)  # warm-up (ours warms up inside each run)
    for k in range(rounds):
        _, _, stdout = run_ours([bin_path("bench_encoder", True), str(weights), str(d / "batch8.safetensors"),
                                 str(out_file), str(repeats), "exact"])
        rep = json.loads(stdout)
        r["threads_ours"] = rep["threads"]
        r["ours_s"] += rep["seconds"]
        r["ours_cpu"] += rep["cpu_seconds"]
        for _ in range(repeats):
            with Clock() as c:
                ref = ref_encoder(model, batch, layers)
            r["ref_s"].append(c.wall)
            r["ref_cpu"].append(c.cpu)
        log(f"encoder {size} round {k + 1}: ours {fmt_list(rep['seconds'])} s, timm {fmt_list(r['ref_s'][-repeats:])} s")
    mine = load_file(str(out_file))
    r["max_rel_diff"] = max(float((mine[f"layer.{i}"] - ref[i]).abs().max() / ref[i].abs().max()) for i in layers)
    r["images"] = batch.shape[0]
    return r


# ---------------------------------------------------------------- 2. scoring


def ref_score(model, transform, paths, batch, bf16=False):
    """anomalib's scoring loop; bf16: under torch.autocast(cpu, bfloat16),
    what a user of anomalib on a CPU with bf16 would run."""
    scores, maps = [], []
    with Clock() as c, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(paths), batch):
            out = model(read_batch(paths[i : i + batch], transform))
            scores += out.pred_score.tolist()
            maps.append(out.anomaly_map[:, 0])
    return c, scores, torch.cat(maps)


def bench_score(d, size, model, transform, paths, batch, rounds, bf16=False):
    if bf16:
        # Untimed, as the fp32 model is warm: oneDNN builds its bf16 kernels
        # on first use.
        ref_score(model, transform, paths[:batch], batch, bf16=True)
    ckpt = d / size / "anomalib.safetensors"
    maps_dir = d / size / f"maps_b{batch}"
    r = {"ours_s": [], "ours_cpu": [], "ref_s": [], "ref_cpu": [], "images": len(paths)}
    for k in range(rounds):
        cmd = [bin_path("dinomaly-score"), "-c", str(ckpt), "--kind", "anomalib", "-i", str(d / "images.txt"),
               "--batch", str(batch), "--device", "cpu", "--quiet"]
        if k == rounds - 1:
            # Maps in the last round only (16 float32 .npy files, a few ms).
            maps_dir.mkdir(exist_ok=True)
            cmd += ["--maps-dir", str(maps_dir)]
        wall, cpu, stdout = run_ours(cmd)
        r["ours_s"].append(wall)
        r["ours_cpu"].append(cpu)
        r.setdefault("startup_s", []).append(startup_seconds(d, size))
        if bf16:
            # Not the same work: ours in bfloat16 (this CPU has AVX512-BF16), for information.
            wall16, cpu16, stdout16 = run_ours(cmd[: cmd.index("--quiet") + 1] + ["--precision", "bf16"])
            r.setdefault("ours_bf16_s", []).append(wall16)
            r.setdefault("ours_bf16_cpu", []).append(cpu16)
            c16, ref16_scores, _ = ref_score(model, transform, paths, batch, bf16=True)
            r.setdefault("ref_bf16_s", []).append(c16.wall)
            r.setdefault("ref_bf16_cpu", []).append(c16.cpu)
        c, ref_scores, ref_maps = ref_score(model, transform, paths, batch)
        r["ref_s"].append(c.wall)
        r["ref_cpu"].append(c.cpu)
        log(f"score {size} batch {batch} round {k + 1}: ours {wall:.2f} s, anomalib {c.wall:.2f} s")
    lines = [json.loads(line) for line in stdout.splitlines()]
    mine = np.array([line["score"] for line in lines])
    ref = np.array(ref_scores)
    my_maps = np.stack([np.load(line["map"]) for line in lines])
    ref_maps = ref_maps.numpy()
    r["score_max_rel_diff"] = float(np.max(np.abs(mine - ref) / np.abs(ref)))
    r["map_shape"] = list(my_maps.shape[1:])
    r["map_max_abs_diff"] = float(np.max(np.abs(my_maps - ref_maps))) if my_maps.shape == ref_maps.shape else None
    r["score_range"] = [float(ref.min()), float(ref.max())]
    if bf16:
        from scipy.stats import spearmanr

        mine16 = np.array([json.loads(line)["score"] for line in stdout16.splitlines()])
        r["bf16_score_max_rel_diff"] = float(np.max(np.abs(mine16 - ref) / np.abs(ref)))
        r["bf16_rank_corr"] = float(spearmanr(mine16, ref).statistic)
        ref16 = np.array(ref16_scores)
        r["ref_bf16_score_max_rel_diff"] = float(np.max(np.abs(ref16 - ref) / np.abs(ref)))
        r["ref_bf16_rank_corr"] = float(spearmanr(ref16, ref).statistic)
    return r


def startup_seconds(d, size):
    """Our scoring start-up alone: checkpoint read and model built, no image."""
    empty = d / "empty.txt"
    empty.write_text("")
    wall, _, _ = run_ours([bin_path("dinomaly-score"), "-c", str(d / size / "anomalib.safetensors"),
                           "--kind", "anomalib", "-i", str(empty), "--device", "cpu", "--quiet"])
    return wall


# ---------------------------------------------------------------- 3. training


class RefTrainer:
    """anomalib's training step as Lightning runs it: forward with
    global_step, backward, gradient-norm clip 0.1, StableAdamW step,
    zero_grad, schedule step (per iteration, as the official code)."""

    def __init__(self, model):
        from anomalib.models.image.dinomaly.components.optimizer import StableAdamW, WarmCosineScheduler
        from anomalib.models.image.dinomaly.lightning_model import TRAINING_CONFIG

        self.model = model
        self.trainable = torch.nn.ModuleList([model.bottleneck, model.decoder])
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.trainable.parameters():
            p.requires_grad_(True)
        self.opt = StableAdamW([{"params": self.trainable.parameters()}], **TRAINING_CONFIG["optimizer"])
        self.sched = WarmCosineScheduler(self.opt, **TRAINING_CONFIG["scheduler"])
        self.step_no = 0

    def step(self, x, bf16=False):
        """bf16: the forward under torch.autocast(cpu, bfloat16), backward and
        optimizer outside it, as Lightning's precision="bf16-mixed"."""
        self.model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = self.model(x, global_step=self.step_no)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), 0.1)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step_no += 1
        return float(loss.detach())


def proc_cpu(pid):
    """User + system CPU seconds of a running process (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ours_train(d, iterations, extra=(), warmup=None):
    """Runs dinomaly-train and returns the wall and CPU seconds of each
    iteration after the first 1 + warmup (the gaps between --log lines as
    they appear in the log's temporary file; the first iteration includes
    start-up, and in the next ones the allocator's heap still grows to its
    working size, page by page) and the logged losses."""
    warmup = TRAIN_WARMUP if warmup is None else warmup
    out = d / "b" / "train"
    out.mkdir(exist_ok=True)
    log_file = out / "train_log.jsonl"
    for stale in [log_file, *out.glob(".train_log.jsonl.*.partial")]:
        stale.unlink(missing_ok=True)
    cmd = [bin_path("dinomaly-train"), str(d / "b" / "train.store"), "-o", str(out / "ours.safetensors"),
           "--iterations", str(iterations), "--batch", "16", "--variant", "anomalib", "--eps", "1e-8",
           "--dropout", "0.2", "--log", str(log_file), "--device", "cpu", "--quiet", *extra]
    if "--images" in extra:
        # From the images: the store argument gives way to the sample inputs.
        cmd.remove(str(d / "b" / "train.store"))
    proc = subprocess.Popen(cmd, env=ours_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, stamps, cpus = 0, [], []
    while True:
        running = proc.poll() is None
        partial = glob.glob(str(out / ".train_log.jsonl.*.partial"))
        if partial and running:
            try:
                with open(partial[0]) as f:
                    n = f.read().count("\n")
            except FileNotFoundError:
                n = seen
            if n > seen:
                now, cpu = time.perf_counter(), proc_cpu(proc.pid)
                stamps += [now] * (n - seen)
                cpus += [cpu] * (n - seen)
                seen = n
        if not running:
            break
        time.sleep(0.01)
    if proc.returncode != 0:
        sys.exit(f"bench: dinomaly-train failed: {proc.stderr.read()}")
    losses = [json.loads(line)["loss"] for line in log_file.read_text().splitlines()]
    if len(stamps) != iterations:
        sys.exit(f"bench: saw {len(stamps)} of {iterations} log lines appear (polling too slow?)")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    cpu_gaps = [b - a for a, b in zip(cpus, cpus[1:])][warmup:] if None not in cpus else []
    if not gaps:
        sys.exit(f"bench: {iterations} iterations leave no timed one after {1 + warmup} warm-up iterations")
    return gaps, cpu_gaps, losses


def bench_train(d, model, x16, rounds, iterations, ref_full, ref_dec, bf16=True):
    trainer = RefTrainer(model)
    enc = model.encoder
    r = {k: [] for k in ("ours_s", "ours_cpu", "full_s", "full_cpu", "dec_s", "dec_cpu")}
    # Warm-up, untimed: the encoder forward whose features the decoder-only
    # steps reuse, then one decoder-only step (backward and optimizer).
    with Clock() as c, torch.no_grad():
        feats = enc(x16)
    r["ref_encoder_fwd_s"] = c.wall

    def cached(on):
        # Decoder-only: the encoder hands back the cached features of x16.
        if on:
            enc.forward = lambda _x: feats
        else:
            del enc.forward

    cached(True)
    with Clock() as c:
        r["ref_first_loss"] = trainer.step(x16)  # global_step 0, as ours' first logged loss
    cached(False)
    r["ref_warmup_s"] = c.wall
    trainer.step(x16)  # untimed: the first full step (the encoder's first training-mode pass)
    if bf16:
        trainer.step(x16, bf16=True)  # untimed warm-up of the bf16 kernels
    for k in range(rounds):
        gaps, cpu_gaps, losses = ours_train(d, iterations)
        r["ours_s"] += gaps
        r["ours_cpu"] += cpu_gaps
        r.setdefault("ours_first_loss", losses[0])
        for _ in range(ref_full):
            with Clock() as c:
                trainer.step(x16)
            r["full_s"].append(c.wall)
            r["full_cpu"].append(c.cpu)
        cached(True)
        for _ in range(ref_dec):
            with Clock() as c:
                trainer.step(x16)
            r["dec_s"].append(c.wall)
            r["dec_cpu"].append(c.cpu)
        cached(False)
        log(f"train round {k + 1}: ours {fmt_list(gaps)} s/it, anomalib full {fmt_list(r['full_s'][-ref_full:])} s, "
            f"decoder-only {fmt_list(r['dec_s'][-ref_dec:])} s")
        if bf16:
            # Information only: ours in bf16 mixed precision (not the same work
            # as fp32), and ours from the images (the encoder runs every step).
            gaps16, cpu16, _ = ours_train(d, iterations, ("--precision", "bf16"))
            r.setdefault("ours_bf16_s", []).extend(gaps16)
            r.setdefault("ours_bf16_cpu", []).extend(cpu16)
            for _ in range(ref_full):
                with Clock() as c:
                    trainer.step(x16, bf16=True)
                r.setdefault("full_bf16_s", []).append(c.wall)
                r.setdefault("full_bf16_cpu", []).append(c.cpu)
            gaps_img, cpu_img, _ = ours_train(d, iterations, ("--images", "-i", str(d / "images.txt"), *encoder_flags_b(d)))
            r.setdefault("ours_images_s", []).extend(gaps_img)
            r.setdefault("ours_images_cpu", []).extend(cpu_img)
            log(f"train round {k + 1}: ours bf16 {fmt_list(gaps16)} s/it, anomalib bf16 autocast "
                f"{fmt_list(r['full_bf16_s'][-ref_full:])} s, ours from images {fmt_list(gaps_img)} s/it")
    return r


# ------------------------------------- 5. the reference with our process settings


def tuned_child(d, rounds):
    """Runs in the child process of tuned_reference: anomalib's ViT-B scoring
    (batch 8, the 16 images) and full training step, fp32, as in sections 2
    and 3, after untimed warm-ups (one scoring, 1 + TRAIN_WARMUP training
    steps). Prints one JSON line."""
    torch.set_num_threads(THREADS)
    offline_models()
    import ctypes

    answer = ctypes.CDLL(None).mkl_serv_intel_cpu_true()  # the preloaded shim's
    paths = (d / "images.txt").read_text().split()
    transform = pre_processor()
    model = build_model("b", seed=7)
    ref_score(model, transform, paths[:8], 8)
    r = {"score_s": [], "score_cpu": [], "full_s": [], "full_cpu": [], "mkl_answer": answer,
         "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")}}
    for _ in range(rounds):
        c, _, _ = ref_score(model, transform, paths, 8)
        r["score_s"].append(c.wall)
        r["score_cpu"].append(c.cpu)
    trainer = RefTrainer(model)
    x16 = read_batch(paths, transform)
    # Untimed, as many as ours leaves out: with the malloc settings, this
    # process's heap also grows to its working size over the first steps.
    for _ in range(1 + TRAIN_WARMUP):
        trainer.step(x16)
    for _ in range(rounds):
        with Clock() as c:
            trainer.step(x16)
        r["full_s"].append(c.wall)
        r["full_cpu"].append(c.cpu)
    print(json.dumps(r))


def tuned_reference(d, rounds):
    """anomalib given the process settings our tools make for themselves:
    glibc's malloc keeps freed buffers (its environment variables, the same
    values as src/alloc.rs) and MKL runs its AVX-512 kernels (an LD_PRELOADed
    answer to its vendor question, bench/mkl_intel_answer.c). Both must be in
    place before torch loads, hence a child process."""
    shim = d / "libmkl_intel_answer.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(ROOT / "bench" / "mkl_intel_answer.c")],
                   check=True)
    env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**31 - 1), LD_PRELOAD=str(shim))
    out = subprocess.run([sys.executable, __file__, "--dir", str(d), "--tuned-child", str(rounds),
                          "--train-warmup", str(TRAIN_WARMUP)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: the reference run with our process settings failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"anomalib with our process settings: scoring {fmt_list(r['score_s'])} s, full step {fmt_list(r['full_s'])} s")
    return r


def encoder_flags_b(d):
    """Our encoder flags for the ViT-B side, as anomalib pre-processes."""
    return ["--backbone", "bench-vitb", "--weights", str(d / "b" / "encoder.safetensors"),
            "--pos-interp", "exact", "--preprocess", "tensor"]


def extract_store(d):
    """Our feature store of the 16 images (fp16, the default), made once."""
    store = d / "b" / "train.store"
    store.unlink(missing_ok=True)
    wall, _, _ = run_ours([bin_path("dinomaly-extract"), "-i", str(d / "images.txt"), "-o", str(store),
                           *encoder_flags_b(d), "--batch", "8", "--device", "cpu", "--quiet"])
    return wall


# ---------------------------------------------------------------- 4. metrics


def run_metrics():
    """bench/metrics.sh with this interpreter; its output, echoed."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "metrics.sh")], env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"bench: bench/metrics.sh failed:\n{proc.stderr}")
    return proc.stdout


def parse_metrics(text):
    import re

    def num(pattern):
        return re.search(pattern, text).groups()

    (ours,) = num(r"ours \(read maps\+masks, all metrics\): ([\d.]+) s")
    off = num(r"official: load ([\d.]+) s \+ metrics ([\d.]+) s")
    ano = num(r"anomalib: load ([\d.]+) s \+ metrics ([\d.]+) s")
    (diff,) = num(r"max \|ours - official\| over 7 metrics x 15 classes: (\S+)")
    (diff_a,) = num(r"max \|ours exact AUPRO - anomalib AUPRO\|: (\S+)")
    return {"ours_s": float(ours), "official_s": float(off[0]) + float(off[1]),
            "anomalib_s": float(ano[0]) + float(ano[1]), "diff": diff, "diff_anomalib": diff_a}


# ---------------------------------------------------------------- report


def fmt_list(xs, digits=2):
    return ", ".join(f"{x:.{digits}f}" for x in xs)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rows_of(res, sizes):
    """(work, ours, reference, speed-up of medians, speed-up of bests,
    speed-up of median CPU times, outputs) per row; speed-up = reference
    time / our time."""
    rows = []

    def x(ref, ours):
        return f"{ref / ours:.2f}x"

    for size in sizes:
        e = res.get(f"encoder_{size}")
        if e:
            n = e["images"]
            rows.append((f"Encoder forward {LABEL[size]}, blocks 0..9, batch 8 at 392 (img/s)",
                         f"{n / med(e['ours_s']):.2f}", f"{n / med(e['ref_s']):.2f} timm",
                         x(med(e["ref_s"]), med(e["ours_s"])), x(min(e["ref_s"]), min(e["ours_s"])),
                         x(med(e["ref_cpu"]), med(e["ours_cpu"])),
                         f"target layers: max rel diff {e['max_rel_diff']:.1e}"))
    for size in sizes:
        for b in (1, 8):
            s = res.get(f"score_{size}_b{b}")
            if not s:
                continue
            n = s["images"]
            md = s["map_max_abs_diff"]
            warm = [o - u for o, u in zip(s["ours_s"], s["startup_s"])]
            rows.append((f"Scoring {LABEL[size]}, {n} images, batch {b} (img/s; in brackets without our "
                         "start-up)", f"{n / med(s['ours_s']):.3f} ({n / med(warm):.3f})",
                         f"{n / med(s['ref_s']):.3f} anomalib",
                         f"{x(med(s['ref_s']), med(s['ours_s']))} ({x(med(s['ref_s']), med(warm))})",
                         f"{x(min(s['ref_s']), min(s['ours_s']))} ({x(min(s['ref_s']), min(warm))})",
                         x(med(s["ref_cpu"]), med(s["ours_cpu"])),
                         f"scores: max rel diff {s['score_max_rel_diff']:.1e}; maps: max abs diff "
                         + (f"{md:.1e}" if md is not None else "n/a (shapes differ)")))
            if "ours_bf16_s" in s:
                rows.append((f"Scoring {LABEL[size]}, batch {b}, ours with --precision bf16 (information "
                             "only, not the same precision) (img/s)", f"{n / med(s['ours_bf16_s']):.3f}",
                             f"{n / med(s['ref_s']):.3f} anomalib fp32",
                             x(med(s["ref_s"]), med(s["ours_bf16_s"])), x(min(s["ref_s"]), min(s["ours_bf16_s"])),
                             x(med(s["ref_cpu"]), med(s["ours_bf16_cpu"])),
                             f"scores vs fp32 anomalib: max rel diff {s['bf16_score_max_rel_diff']:.1e}, "
                             f"Spearman {s['bf16_rank_corr']:.4f}"))
            if "ref_bf16_s" in s:
                rows.append((f"Scoring {LABEL[size]}, batch {b}, bf16 on both sides: ours --precision bf16 vs "
                             "anomalib under torch.autocast(cpu, bfloat16) (img/s)", f"{n / med(s['ours_bf16_s']):.3f}",
                             f"{n / med(s['ref_bf16_s']):.3f} anomalib bf16",
                             x(med(s["ref_bf16_s"]), med(s["ours_bf16_s"])),
                             x(min(s["ref_bf16_s"]), min(s["ours_bf16_s"])),
                             x(med(s["ref_bf16_cpu"]), med(s["ours_bf16_cpu"])),
                             f"anomalib bf16 scores vs its fp32: max rel diff {s['ref_bf16_score_max_rel_diff']:.1e}, "
                             f"Spearman {s['ref_bf16_rank_corr']:.4f}"))
    t = res.get("train")
    if t:
        def train_row(work, ours_key, ref_key, ref_name, note):
            ours, ref = t[ours_key], t[ref_key]
            cpu_key = ours_key.replace("_s", "_cpu")
            ref_cpu = ref_key.replace("_s", "_cpu")
            rows.append((f"Training ViT-B/14, batch 16: {work} (s/it)", f"{med(ours):.2f}",
                         f"{med(ref):.2f} {ref_name}", x(med(ref), med(ours)), x(min(ref), min(ours)),
                         x(med(t[ref_cpu]), med(t[cpu_key])), note))

        train_row("ours from the feature store vs anomalib's full step", "ours_s", "full_s", "anomalib",
                  f"first loss: ours {t['ours_first_loss']:.4f}, anomalib {t['ref_first_loss']:.4f} (own inits)")
        train_row("ours vs anomalib's step on cached encoder features", "ours_s", "dec_s", "anomalib",
                  "same work: bottleneck + decoder fwd/bwd + optimizer")
        if t.get("ours_bf16_s"):
            train_row("ours from the store with --precision bf16 (information only, not the same precision) vs "
                      "anomalib's full step fp32", "ours_bf16_s", "full_s", "anomalib",
                      "bf16 matmuls, fp32 weights/optimizer/loss")
        if t.get("full_bf16_s"):
            train_row("bf16 on both sides: ours from the store with --precision bf16 vs anomalib's full step with "
                      "its forward under torch.autocast(cpu, bfloat16) (as Lightning's bf16-mixed)",
                      "ours_bf16_s", "full_bf16_s", "anomalib bf16", "the same precision recipe on both sides")
        if t.get("ours_images_s"):
            train_row("ours from the images (--images, encoder every step) vs anomalib's full step",
                      "ours_images_s", "full_s", "anomalib",
                      "same work as anomalib's step (decoding included on our side)")
    tr = res.get("tuned_ref")
    if tr:
        sb8 = res.get("score_b_b8")
        if sb8:
            n = sb8["images"]
            rows.append((f"Scoring ViT-B/14, {n} images, batch 8, against anomalib given our process settings "
                         "(malloc env + MKL's AVX-512 kernels) (img/s)", f"{n / med(sb8['ours_s']):.3f}",
                         f"{n / med(tr['score_s']):.3f} anomalib tuned", x(med(tr["score_s"]), med(sb8["ours_s"])),
                         x(min(tr["score_s"]), min(sb8["ours_s"])), x(med(tr["score_cpu"]), med(sb8["ours_cpu"])),
                         "the work ours does not do, alone"))
        if t:
            rows.append(("Training ViT-B/14, batch 16: ours from the store vs anomalib's full step given our process "
                         "settings (s/it)", f"{med(t['ours_s']):.2f}", f"{med(tr['full_s']):.2f} anomalib tuned",
                         x(med(tr["full_s"]), med(t["ours_s"])), x(min(tr["full_s"]), min(t["ours_s"])),
                         x(med(tr["full_cpu"]), med(t["ours_cpu"])), "the work ours does not do, alone"))
    m = res.get("metrics")
    if m:
        rows.append(("Metrics, MVTec-sized set (1,725 maps, 15 classes), all seven (s)", f"{m['ours_s']:.2f}",
                     f"{m['official_s']:.1f} official eval", x(m["official_s"], m["ours_s"]), "", "",
                     f"max abs diff vs official {m['diff']}"))
        rows.append(("Metrics, same set (s)", f"{m['ours_s']:.2f}", f"{m['anomalib_s']:.1f} anomalib",
                     x(m["anomalib_s"], m["ours_s"]), "", "", f"exact AUPRO vs anomalib: max abs diff {m['diff_anomalib']}"))
    return rows


def table(rows):
    head = ("| work | ours | reference | speed-up (medians) | speed-up (bests) | speed-up (CPU time) | outputs compared |\n"
            "|---|---:|---:|---:|---:|---:|---|\n")
    return head + "".join(f"| {w} | {o} | {r} | **{a}** | {b} | {c} | {note} |\n" for w, o, r, a, b, c, note in rows)


def rounded(x):
    """x with floats to 4 significant digits, for the record."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def write_results(res, args, elapsed, metrics_text, tbl):
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.machine()
    threads_ours = next((res[k]["threads_ours"] for k in res if k.startswith("encoder_")), "?")
    startup = ", ".join(f"{LABEL[k.split('_')[1]]} batch {k.split('_b')[-1]}: {fmt_list(v['startup_s'], 1)} s"
                        for k, v in res.items() if k.startswith("score_"))
    md = [
        "# Benchmarks: dinomaly against the references on this machine",
        "",
        f"Date: {datetime.date.today().isoformat()}. Command: `make bench` (bench/run.sh; "
        f"BENCH_METRICS={'1' if metrics_text else '0'}), which ran `bench/bench.py {' '.join(sys.argv[1:])}`. "
        f"Wall time of the whole run: {elapsed / 60:.1f} min.",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), CPU only, fp32 unless a row says bf16. Reference side: torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads (torch.set_num_threads), anomalib 2.7.0, timm 1.0.31. Ours: "
        f"libtorch 2.11.0 with {threads_ours} threads (OMP_NUM_THREADS=2, RAYON_NUM_THREADS=2; the count is "
        "reported by libtorch in examples/bench_encoder).",
        "",
        "**The machine is shared** with other jobs (compiles, tests, demos): ours and the reference "
        f"alternate (A B A B, {args.rounds} rounds) and the figures are medians of the timed runs. "
        "Speed-up = reference time / our time for the same work; > 1 means ours is faster. Other jobs only "
        "ever add time, so when the median and the best-run (fastest run of each side) speed-ups disagree, "
        "a job of someone else hit one side and the best-run figure is the better estimate. The CPU-time "
        "column (user + system seconds of the process, all threads) is less sensitive to other jobs than "
        "wall time, but OpenMP spin-waiting inflates it under contention. Weights are random (timm/anomalib "
        "built offline with pretrained=False; LayerScale gammas and decoder weights moved to realistic "
        "scales) and the same files are read on both sides.",
        "",
        tbl,
        "Targets (issue 7, 2 CPU cores): scoring >= 1.5x anomalib, training iteration >= 2x anomalib's "
        "step, encoder forward not slower (>= 1x), metrics >= 20x the official evaluation.",
        "",
        "How each row is measured:",
        "",
        "- Encoder: `examples/bench_encoder` (the encoder forward alone on a pre-made normalised batch of 8 "
        "real images, after one warm-up forward, no decoding) against timm's ViT running the same blocks "
        "0..9 on the same tensor under torch.inference_mode, with anomalib's pos-embed resize (exact size, "
        "no antialias) on both. Diff: max |ours - timm| / max |timm| over the eight target layers.",
        "- Scoring: 16 RGB 1024x1024 PNGs tiled from scikit-image's CC0 textures (brick, grass, gravel). "
        "Decoding and pre-processing are included on both sides. Ours: the whole `dinomaly-score --kind "
        "anomalib` process on an anomalib state dict, start-up (checkpoint read, model built) included; in "
        "brackets the same minus our start-up, measured right after each run with an empty input "
        f"({startup or 'n/a'}). Anomalib: its read_image + its pre-processor (Resize 448, CenterCrop 392, "
        "Normalize) + DinomalyModel eval forward, model construction excluded, model already warm. Note that anomalib's encoder runs all 12 ViT blocks "
        "(forward_intermediates without stop_early) where ours stops after block 9. Scores: max |ours - "
        "anomalib| / |anomalib|; maps: anomalib's raw `anomaly_map` (392x392) against our --maps-dir .npy.",
        "- Training: ours = `dinomaly-train --variant anomalib --eps 1e-8 --dropout 0.2 --batch 16` from a "
        "feature store of the same 16 images (fp16, the default; made once by dinomaly-extract with the "
        f"same encoder weights in {res.get('extract_s') or float('nan'):.1f} s), per-iteration time = gap "
        "between successive --log lines as they appear, the first iterations left out (start-up, then the "
        f"allocator's heap growing to its working size: {1 + args.train_warmup} of {args.train_iterations} per run). "
        "Anomalib: DinomalyModel.forward(x, global_step) + backward + clip_grad_norm_(0.1) + StableAdamW + "
        "WarmCosineScheduler as a plain loop (no Lightning overhead counted against it), after an untimed "
        "warm-up (an encoder forward of the batch, one decoder-only step and one full step); the second training row is the same step with the encoder returning cached "
        "features, i.e. anomalib's decoder-only part. First losses differ because each side starts from "
        "its own random decoder init; step parity is tested in tests/model.rs against anomalib fixtures.",
        "- Process settings: our tools keep freed allocator memory for reuse (src/alloc.rs) and let the MKL "
        "inside libtorch run its AVX-512 sgemm kernels on this AMD CPU (src/mkl_kernels.rs; MKL picks its "
        "AVX2 'zen' kernels here otherwise); the reference in the rows above runs as shipped. The rows "
        "'given our process settings' run anomalib in a child process with the same two settings "
        "(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_, LD_PRELOAD of bench/mkl_intel_answer.c), after "
        f"untimed warm-ups (one scoring run, {1 + args.train_warmup} training steps, as many as ours leaves out), "
        "so that they show what is left: the work ours does not do.",
        "- bf16 on both sides: ours with --precision bf16 (bf16 matrix products, LayerNorm, softmax, "
        "residual stream and loss in fp32) against anomalib under torch.autocast(\"cpu\", torch.bfloat16) "
        "(scoring: the whole forward; training: the forward, backward and optimizer outside it, as "
        "Lightning's precision=\"bf16-mixed\"), each after an untimed warm-up.",
    ]
    if metrics_text:
        md += ["- Metrics: bench/metrics.sh (median of three runs of ours; official = its evaluation "
               "re-implemented with scikit-learn/scikit-image, load included). Its output:", "", "```",
               metrics_text.strip(), "```"]
    notes = ROOT / "bench" / "notes.md"
    if notes.exists():
        md += ["", notes.read_text().strip()]
    md += ["", "Raw timings (seconds, every timed run in order):", "", "```json",
           json.dumps(rounded(res), indent=None).replace("}, ", "},\n "), "```", ""]
    Path(args.results).write_text("\n".join(md))
    log(f"wrote {args.results}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/dinomaly-bench", help="work folder (images, weights, outputs)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--rounds", type=int, default=2, help="A B rounds per measurement")
    ap.add_argument("--sizes", default="b,s", help="encoder sizes: b, s or b,s")
    ap.add_argument("--score-sizes", default="b,s", help="sizes for the scoring rows")
    ap.add_argument("--encoder-repeats", type=int, default=2, help="timed forwards per run and side")
    ap.add_argument("--train-iterations", type=int, default=5, help="iterations per dinomaly-train run")
    ap.add_argument("--train-warmup", type=int, default=2,
                    help="untimed iterations of each dinomaly-train run after the first")
    ap.add_argument("--ref-full-steps", type=int, default=1, help="anomalib full steps per round")
    ap.add_argument("--ref-dec-steps", type=int, default=1, help="anomalib decoder-only steps per round")
    ap.add_argument("--only", default="encoder,score,train,tuned",
                    help="comma list of encoder,score,train,tuned (tuned: anomalib with our process settings)")
    ap.add_argument("--tuned-child", type=int, metavar="ROUNDS", help=argparse.SUPPRESS)
    ap.add_argument("--metrics", action="store_true", help="also run bench/metrics.sh")
    ap.add_argument("--no-bf16", action="store_true", help="skip the informational bf16 scoring runs")
    args = ap.parse_args()
    global TRAIN_WARMUP
    TRAIN_WARMUP = args.train_warmup
    if args.tuned_child:
        return tuned_child(Path(args.dir), args.tuned_child)
    args.sizes = args.sizes.split(",")
    score_sizes = [s for s in args.score_sizes.split(",") if s]
    only = set(args.only.split(","))
    started = time.time()
    torch.set_num_threads(THREADS)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)

    offline_models()
    paths = make_images(d) if not (d / "images.txt").exists() else (d / "images.txt").read_text().split()
    transform = pre_processor()
    batch8 = read_batch(paths[:8], transform)
    save_safetensors({"images": batch8}, d / "batch8.safetensors")
    needed = set(args.sizes) | set(score_sizes) | ({"b"} if "train" in only else set())
    models = {}
    for size in sorted(needed):
        (d / size).mkdir(exist_ok=True)
        model = build_model(size, seed=7 if size == "b" else 8)
        save_safetensors(model.state_dict(), d / size / "anomalib.safetensors")
        save_safetensors(model.encoder.feature_extractor.state_dict(), d / size / "encoder.safetensors")
        models[size] = model
        log(f"built {SIZES[size]} (random weights) and wrote its files")

    res = {}
    if "encoder" in only:
        for size in args.sizes:
            res[f"encoder_{size}"] = bench_encoder(d, size, models[size], batch8, args.rounds, args.encoder_repeats)
    if "score" in only:
        for size in score_sizes:
            for b in (1, 8):
                res[f"score_{size}_b{b}"] = bench_score(d, size, models[size], transform, paths, b, args.rounds,
                                                        bf16=(b == 8 and not args.no_bf16))
    if "train" in only:
        res["extract_s"] = extract_store(d)
        x16 = read_batch(paths, transform)
        res["train"] = bench_train(d, models["b"], x16, args.rounds, args.train_iterations,
                                   args.ref_full_steps, args.ref_dec_steps)
    if "tuned" in only:
        res["tuned_ref"] = tuned_reference(d, args.rounds)
    metrics_text = ""
    if args.metrics:
        del models
        metrics_text = run_metrics()
        res["metrics"] = parse_metrics(metrics_text)
    (d / "raw.json").write_text(json.dumps(res, indent=1))
    tbl = table(rows_of(res, sorted(set(args.sizes) | set(score_sizes))))
    print(tbl)
    write_results(res, args, time.time() - started, metrics_text, tbl)


if __name__ == "__main__":
    main()
