"""Reference side of bench/metrics.sh (run through it, not alone).

    python bench/metrics_ref.py gen DIR [--mask-side 1024]
        Writes an MVTec-sized synthetic test set into DIR: 1,725 float32
        256x256 maps (.npy) over 15 classes with MVTec's per-class image
        counts, PNG masks with elliptic blobs for the 1,258 anomalous
        images, and records.jsonl as dinomaly-score writes it.

    python bench/metrics_ref.py run DIR OUT.json
        Loads the same files once, then times
        - the official evaluation, re-implemented from its description
          (spec section 7): scikit-learn roc_auc_score /
          average_precision_score / precision_recall_curve F1max per class,
          and the 200-threshold AUPRO loop with skimage.measure.label and
          regionprops per image and threshold, as the official code runs it;
        - anomalib 2.7.0's metrics (AUROC, AUPR, F1Max, AUPRO; the
          torchmetrics-based classes) on the same arrays;
        and prints the times; OUT.json gets the official values per class.
GT follows the official pipeline: PIL bilinear Resize((448, 448)),
CenterCrop(392), ToTensor, nearest to 256, > 0.
"""

import json
import os
import sys
import time

import numpy as np

CLASSES = [  # name, test images, anomalous images (MVTec AD)
    ("carpet", 117, 89), ("grid", 78, 57), ("leather", 124, 92), ("tile", 117, 84),
    ("wood", 79, 60), ("bottle", 83, 63), ("cable", 150, 92), ("capsule", 132, 109),
    ("hazelnut", 110, 70), ("metal_nut", 115, 93), ("pill", 167, 141), ("screw", 160, 119),
    ("toothbrush", 42, 30), ("transistor", 100, 40), ("zipper", 151, 119),
]
MAP = 256


def gen(root, mask_side):
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(7)
    os.makedirs(f"{root}/maps", exist_ok=True)
    os.makedirs(f"{root}/masks", exist_ok=True)
    lines = []
    for cls, n, n_bad in CLASSES:
        for i in range(n):
            bad = i >= n - n_bad
            mask = Image.new("L", (mask_side, mask_side), 0)
            if bad:
                d = ImageDraw.Draw(mask)
                for _ in range(rng.integers(1, 4)):
                    cx, cy = rng.uniform(0.1, 0.9, 2) * mask_side
                    rx, ry = rng.uniform(0.01, 0.12, 2) * mask_side
                    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
            small = np.asarray(mask.resize((MAP, MAP), Image.BILINEAR), np.float32) / 255
            noise = torch.from_numpy(rng.normal(0, 1, (1, 1, 16, 16)).astype(np.float32))
            base = F.interpolate(noise, size=MAP, mode="bilinear", align_corners=False)[0, 0].numpy()
            amap = (0.2 + 0.03 * base + 0.08 * small * rng.uniform(0.3, 1.5)
                    + rng.normal(0, 0.01, (MAP, MAP))).astype(np.float32)
            stem = f"{cls}_{i:03d}"
            np.save(f"{root}/maps/{stem}.npy", amap)
            rec = {"image": f"{root}/images/{stem}.png", "class": cls, "label": int(bad),
                   "mask": None, "map": f"{root}/maps/{stem}.npy"}
            if bad:
                mask.save(f"{root}/masks/{stem}.png")
                rec["mask"] = f"{root}/masks/{stem}.png"
            top = np.sort(amap.ravel())[::-1][: int(MAP * MAP * 0.01)]
            rec["score"] = float(np.float32(top.mean()))
            lines.append(json.dumps(rec))
    with open(f"{root}/records.jsonl", "w") as f:
        f.write("\n".join(lines) + "\n")


def load(root):
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms

    gt_t = transforms.Compose([transforms.Resize((448, 448)), transforms.CenterCrop(392),
                               transforms.ToTensor()])
    data = {}
    for line in open(f"{root}/records.jsonl"):
        r = json.loads(line)
        d = data.setdefault(r["class"], {"maps": [], "gts": [], "labels": [], "scores": []})
        d["maps"].append(np.load(r["map"]))
        if r["mask"]:
            g = gt_t(Image.open(r["mask"]))
            g = F.interpolate(g[None], size=MAP, mode="nearest")[0, 0] > 0
            d["gts"].append(g.numpy())
        else:
            d["gts"].append(np.zeros((MAP, MAP), bool))
        d["labels"].append(r["label"])
        d["scores"].append(np.float32(r["score"]))
    for d in data.values():
        d["maps"] = np.stack(d["maps"])
        d["gts"] = np.stack(d["gts"])
        d["labels"] = np.array(d["labels"])
        d["scores"] = np.array(d["scores"], np.float32)
    return data


def f1max(y, s):
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(y, s)
    return float((2 * p * r / (p + r + 1e-7))[:-1].max())


def official_pro(masks, amaps, num_th=200):
    """The official AUPRO loop, written from its description: region
    labelling inside the threshold loop, as the official code does it."""
    from skimage import measure
    from sklearn.metrics import auc

    lo, hi = amaps.min(), amaps.max()
    delta = (hi - lo) / num_th
    fprs, pros = [], []
    inverse = ~masks
    for th in np.arange(lo, hi, delta):
        binary = amaps > th
        ratios = []
        for b, m in zip(binary, masks):
            for region in measure.regionprops(measure.label(m)):
                ys, xs = region.coords[:, 0], region.coords[:, 1]
                ratios.append(b[ys, xs].sum() / region.area)
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(ratios))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < 0.3
    f = fprs[keep]
    return float(auc(f / f.max(), pros[keep]))


def official(data):
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = {}
    for cls, d in data.items():
        y, s = d["labels"], d["scores"]
        gt, pm = d["gts"], d["maps"]
        aupro = official_pro(gt, pm)
        gt, pm = gt.ravel(), pm.ravel()
        out[cls] = {
            "i_auroc": roc_auc_score(y, s), "i_ap": average_precision_score(y, s),
            "i_f1max": f1max(y, s),
            "p_auroc": roc_auc_score(gt, pm), "p_ap": average_precision_score(gt, pm),
            "p_f1max": f1max(gt, pm), "aupro": aupro,
        }
    return out


def anomalib_metrics(data):
    import torch
    from anomalib.metrics.aupr import _AUPR
    from anomalib.metrics.aupro import _AUPRO
    from anomalib.metrics.auroc import _AUROC
    from anomalib.metrics.f1_score import _F1Max

    out = {}
    for cls, d in data.items():
        y = torch.from_numpy(d["labels"])
        s = torch.from_numpy(d["scores"])
        gt = torch.from_numpy(d["gts"])
        pm = torch.from_numpy(d["maps"])
        res = {}
        for name, metric, p, t in [
            ("i_auroc", _AUROC(), s, y), ("i_ap", _AUPR(), s, y), ("i_f1max", _F1Max(), s, y),
            ("p_auroc", _AUROC(), pm.ravel(), gt.ravel().int()),
            ("p_ap", _AUPR(), pm.ravel(), gt.ravel().int()),
            ("p_f1max", _F1Max(), pm.ravel(), gt.ravel().int()),
            ("aupro", _AUPRO(fpr_limit=0.3), pm, gt.float()),
        ]:
            metric.update(p, t)
            res[name] = float(metric.compute())
        out[cls] = res
    return out


def run(root, out_path):
    torch_threads = os.environ.get("BENCH_TORCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    t0 = time.perf_counter()
    data = load(root)
    t1 = time.perf_counter()
    off = official(data)
    t2 = time.perf_counter()
    ano = anomalib_metrics(data)
    t3 = time.perf_counter()
    print(f"ref_load_s {t1 - t0:.2f}")
    print(f"official_compute_s {t2 - t1:.2f}")
    print(f"anomalib_compute_s {t3 - t2:.2f}")
    with open(out_path, "w") as f:
        json.dump({"official": off, "anomalib": ano}, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        side = int(sys.argv[sys.argv.index("--mask-side") + 1]) if "--mask-side" in sys.argv else 1024
        gen(sys.argv[2], side)
    elif sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"usage: {sys.argv[0]} gen DIR [--mask-side N] | run DIR OUT.json")
