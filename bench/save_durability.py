"""Benchmark: what fsync (every file, the folder, the parent) and the output lock add to `save`.

    python bench/save_durability.py [--mb 400] [--shard 100MB] [--work 0] [--repeat 3] [--dir DIR]

Writes a synthetic bfloat16 model of about --mb megabytes with write_hf_model, replacing the previous
output each time, with durability as shipped and with os.fsync stubbed out; prints the ratio.
`--work N` spends N float32 elementwise passes on each 4 MiB tensor before handing it over, standing
in for the merge that computes it (while the kernel writes finished shards back on its own).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import graphmerge.io.save as save


def tensors(mb: int, work: int):
    per = 4 * 2**20  # 4 MiB bf16 tensors
    for i in range(max(1, mb * 2**20 // per)):
        t = torch.full((per // 2,), float(i), dtype=torch.float32)
        for _ in range(work):
            t.mul_(1.0001).add_(1e-6)
        yield f"model.layers.{i}.mlp.weight", t.to(torch.bfloat16)


def timed(out: Path, mb: int, shard: str, repeat: int, work: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        save.write_hf_model(out, {"model_type": "llama"}, tensors(mb, work), max_shard_size=shard)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=400)
    ap.add_argument("--shard", default="100MB")
    ap.add_argument("--work", type=int, default=0, help="elementwise passes per tensor (compute)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()
    real_fsync = save.os.fsync
    modes = {"page cache only (fsync stubbed out)": lambda fd: None, "as shipped (fsync)": real_fsync}
    times = dict.fromkeys(modes, float("inf"))
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        out = Path(d) / "out"
        for _ in range(args.repeat):  # modes interleaved, best of each: dirty pages left by one
            for name, fsync in modes.items():  # run weigh on both modes alike
                save.os.fsync = fsync
                try:
                    times[name] = min(times[name], timed(out, args.mb, args.shard, 1, args.work))
                finally:
                    save.os.fsync = real_fsync
            os.sync()
    base = times["page cache only (fsync stubbed out)"]
    print(f"{args.mb} MB in {args.shard} shards, work {args.work}, load {os.getloadavg()[0]:.2f}")
    for name, t in times.items():
        print(f"{name:36s} {t:6.2f} s  {t / base:.2f}")


if __name__ == "__main__":
    main()
