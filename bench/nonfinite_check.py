"""Benchmark: what the NaN/Inf checks add to a merge, per tensor.

    python bench/nonfinite_check.py [--size 4096] [--models 3] [--method ties] [--repeat 5]

Times, on one (size x size) tensor per model: the merge op as `save` runs it (the method plus the
output check), the method alone, the output check alone, and the source check on one bfloat16 input
(what `read` adds). Prints each as a ratio of the merge op, so runs on a busy machine compare.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from graphmerge.methods import MergeInputs, get_method
from graphmerge.nodes.merge import merge_tensor
from graphmerge.nonfinite import all_finite


def best_of(repeat: int, fn) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--method", default="ties")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(args.size, args.size, generator=g).to(torch.bfloat16)
    models = [
        (base.float() + 0.01 * torch.randn(base.shape, generator=g)).to(torch.bfloat16)
        for _ in range(args.models)
    ]
    m = get_method(args.method)
    given = {k: v for k, v in {"weight": 1.0, "density": 0.5}.items() if k in m.model_params}
    model_params, params = m.resolve([(str(i), given) for i in range(len(models))], {})
    has_base = m.base != "none"
    inputs = ([base] if has_base else []) + models
    as_float = [t.float() for t in inputs]

    def op() -> torch.Tensor:
        return merge_tensor(
            *inputs,
            method=m.name,
            method_version=m.version,
            model_params=model_params,
            params=params,
            has_base=has_base,
            seed=0,
            out_dtype="bfloat16",
        )

    def method_alone() -> torch.Tensor:
        b = as_float[0] if has_base else None
        x = MergeInputs(as_float[1:] if has_base else as_float, b, model_params, params)
        return m(x).to(torch.bfloat16)

    out = op()
    t_op = best_of(args.repeat, op)
    t_method = best_of(args.repeat, method_alone)
    t_out = best_of(args.repeat, lambda: all_finite(out))
    t_src = best_of(args.repeat, lambda: all_finite(models[0]))
    t_elementwise = best_of(args.repeat, lambda: bool(torch.isfinite(out).all()))
    print(
        f"{args.method}, {args.models} models, {args.size}x{args.size} bfloat16, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"merge op (method + output check): {t_op * 1e3:8.1f} ms  1.000")
    print(f"method alone:                     {t_method * 1e3:8.1f} ms  {t_method / t_op:.3f}")
    print(f"output check (sum):               {t_out * 1e3:8.1f} ms  {t_out / t_op:.3f}")
    print(f"source check per input (read):    {t_src * 1e3:8.1f} ms  {t_src / t_op:.3f}")
    print(f"elementwise isfinite().all():     {t_elementwise * 1e3:8.1f} ms  {t_elementwise / t_op:.3f}")


if __name__ == "__main__":
    main()
