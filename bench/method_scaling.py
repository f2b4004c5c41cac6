"""How the cost of the SVD- and optimisation-based methods grows with the matrix size: seconds per
n x n matrix (3 task vectors) for n = 128 .. 1024, and the fitted exponent (seconds ~ n^p), with
task arithmetic and TIES as references measured in the same run.

    OMP_NUM_THREADS=1 python bench/method_scaling.py [--device cuda] [--sizes 128,256,512,1024]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphmerge.methods import MergeInputs, get_method  # noqa: E402

METHODS = ["task_arithmetic", "ties", "tsv_m", "iso_c", "iso_cts", "wudi", "regmean", "fisher"]


def one_call(name: str, n: int, device: str) -> float:
    m = get_method(name)
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, n, generator=g).to(device)
    models = [base + 0.01 * torch.randn(n, n, generator=g).to(device) for _ in range(3)]
    given = {k: v for k, v in {"weight": 1.0, "density": 0.5}.items() if k in m.model_params}
    mp, gp = m.resolve([(str(i), given) for i in range(3)], {})
    stats = []
    if m.statistics == "gram":
        xs = [torch.randn(2 * n, n, generator=g).to(device) for _ in range(3)]
        stats = [x.T @ x / len(x) for x in xs]
    elif m.statistics == "fisher":
        stats = [torch.rand(n, n, generator=g).to(device) for _ in range(3)]
    inputs = MergeInputs(models, None if m.base == "none" else base, mp, gp, None, stats)
    best = math.inf
    for _ in range(2):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m(inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="128,256,512,1024")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| method | " + " | ".join(f"n={n} s" for n in sizes) + " | exponent p (s ~ n^p, fitted from the 2nd size on) |")
    print("| --- |" + " ---: |" * (len(sizes) + 1))
    for name in args.methods.split(","):
        secs = [one_call(name, n, args.device) for n in sizes]
        lo = 1 if len(sizes) > 2 else 0  # the smallest size is dominated by per-call overhead
        p = math.log(secs[-1] / secs[lo]) / math.log(sizes[-1] / sizes[lo])
        print(f"| {name} | " + " | ".join(f"{s:.4f}" for s in secs) + f" | {p:.2f} |", flush=True)


if __name__ == "__main__":
    main()
