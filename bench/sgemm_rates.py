"""The fp32 matrix-product rates of the ViT-B layer shapes (batch 8 at 392:
6312 tokens) in the kernels a Python user of this machine has: torch's MKL
(as anomalib runs it), OpenBLAS (numpy's) and oneDNN (torch's mkldnn_linear).
Run once as is and once with MKL's AVX-512 kernels, to compare with
bench/fma_peak.c (bench/notes.md):

    python bench/sgemm_rates.py
    cc -shared -fPIC -O2 bench/mkl_intel_answer.c -o /tmp/libmkl_intel_answer.so
    LD_PRELOAD=/tmp/libmkl_intel_answer.so python bench/sgemm_rates.py
"""

import time

import numpy as np
import torch

torch.set_num_threads(2)
SHAPES = [  # (rows, in, out): MLP fc1, fc2, qkv, proj
    (6312, 768, 3072), (6312, 3072, 768), (6312, 768, 2304), (6312, 768, 768)]


def gflops(f, flop, reps=6):
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return flop * reps / (time.perf_counter() - t) / 1e9


print("rows in out: torch/MKL forward, grad of weight, grad of input | numpy/OpenBLAS | oneDNN (GFLOP/s)")
for m, k, n in SHAPES:
    flop = 2 * m * k * n
    x, w, b, g = torch.randn(m, k), torch.randn(n, k), torch.randn(n), torch.randn(m, n)
    mkl = [gflops(lambda: torch.nn.functional.linear(x, w, b), flop), gflops(lambda: g.t() @ x, flop),
           gflops(lambda: g @ w, flop)]
    xn, wn = x.numpy(), np.ascontiguousarray(w.numpy().T)
    blas = gflops(lambda: xn @ wn, flop)
    xm, wm, bm = x.to_mkldnn(), w.to_mkldnn(), b.to_mkldnn()
    dnn = gflops(lambda: torch._C._nn.mkldnn_linear(xm, wm, bm), flop)
    print(f"{m} {k} {n}: {mkl[0]:.0f} {mkl[1]:.0f} {mkl[2]:.0f} | {blas:.0f} | {dnn:.0f}", flush=True)
