"""Benchmark: align a 150k-token vocabulary across 3 models and remap their embedding matrices.

    python bench/align_vocab.py [--vocab 150000] [--hidden 1024] [--models 3] [--dtype bfloat16]

Each model shares most tokens with the others and has `--unique` tokens of its own, so the union is
larger than any single vocabulary and every fill path (own row, single holder, base row, mean) runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from graphmerge.io.vocab import build_vocab_alignment, remap_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--unique", type=int, default=5_000, help="tokens only one model has")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--fill", default="only", choices=["only", "base", "mean", "zero"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)

    vocabs = {}
    for k in range(args.models):
        shared = [f"tok{i}" for i in range(args.vocab - args.unique)]
        own = [f"m{k}_tok{i}" for i in range(args.unique)]
        toks = shared + own
        # Shuffle ids per model so that the index maps are not the identity.
        perm = torch.randperm(len(toks), generator=torch.Generator().manual_seed(k)).tolist()
        vocabs[f"m{k}"] = {t: p for t, p in zip(toks, perm)}
    rows = [torch.randn(args.vocab, args.hidden).to(dtype) for _ in range(args.models)]

    t0 = time.perf_counter()
    al = build_vocab_alignment(vocabs, source="union", base="m0", pad_to_multiple=64)
    t1 = time.perf_counter()
    for t in range(args.models):
        out = remap_rows(rows, al, t, args.fill)
        assert out.shape == (al.size, args.hidden)
    t2 = time.perf_counter()
    print(
        f"vocab {args.vocab} x {args.models} models -> union {al.size} rows, hidden {args.hidden}, {args.dtype}: "
        f"build_vocab_alignment {t1 - t0:.2f}s, remap_rows for all {args.models} models {t2 - t1:.2f}s "
        f"({(t2 - t1) / args.models:.2f}s per model)"
    )


if __name__ == "__main__":
    main()
