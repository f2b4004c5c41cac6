"""A layer-wise fusion search (LFS) under a cache budget: where trial time goes, how much disk the
cache uses, and what the cache buys against running with it disabled.

    python bench/search_cache.py                                  # 100 trials, small CPU models
    python bench/search_cache.py --hidden 2048 --layers 16 --device cuda   # ~1B, on a GPU

It makes a random Llama-shaped base and two random fine-tunes (base + noise; the tokenizer comes
from models/tiny/base), then runs the same seeded 100-trial LFS search (linear / task_arithmetic /
ties per group of two layers, separately for attention and MLP) with the bundled `tiny_add` task,
a few examples per trial, in three cache set-ups, each in a fresh process and a fresh cache:

  reused    disk budget 3x one model, persist a trial's tensors only once a second trial needs them
  all       disk budget 3x one model, persist every tensor a trial computes
  disabled  no tensor on disk and no memory tier (scores are still cached)

A watcher thread samples the size of the cache's blob folder every 20 ms (temp files included)
and the number of finished trials, so "never above the budget" is measured from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))

SETUPS = {
    "reused": "{{max_size: {budget}, search_persist: reused}}",
    "all": "{{max_size: {budget}, search_persist: all}}",
    "disabled": "{{max_size: 0, memory: 0}}",
}

GRAPH = """cache: {cache}
nodes:
  base: {{op: load, path: {work}/base}}
  a: {{op: load, path: {work}/a}}
  b: {{op: load, path: {work}/b}}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [a, b]
    settings: {{layer_granularity: 2, methods: [linear, task_arithmetic, ties]}}
    objectives: [{{task: tiny_add, metric: exact_match}}]
    include_path: [{tasks}]
    smac: {{facade: hpo, n_trials: {trials}, max_budget: {limit}, seed: 0}}
    out: {out}
"""


def make_models(work: Path, hidden: int, layers: int) -> int:
    """base, a, b under `work` (float32); returns one model's bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = REPO / "models" / "tiny" / "base"
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    marker = work / f"models-{hidden}-{layers}.done"
    if not marker.exists():
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=hidden * 11 // 4,
            num_hidden_layers=layers,
            num_attention_heads=max(1, hidden // 64),
            num_key_value_heads=max(1, hidden // 64),
            max_position_embeddings=128,
            tie_word_embeddings=False,
        )
        base = LlamaForCausalLM(cfg)
        for name, noise in (("base", 0.0), ("a", 0.01), ("b", 0.01)):
            model = LlamaForCausalLM(cfg)
            model.load_state_dict(base.state_dict())
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * noise)
            shutil.rmtree(work / name, ignore_errors=True)
            model.save_pretrained(work / name)
            for f in tiny.iterdir():
                if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
                    shutil.copy2(f, work / name / f.name)
        marker.write_text("ok")
    return sum(f.stat().st_size for f in (work / "base").glob("*.safetensors"))


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if b'"extra"' in line)  # trial records, not the header
    except FileNotFoundError:
        return 0


def run_setup(name: str, args: argparse.Namespace, budget: int) -> dict:
    run_dir = args.work / f"run-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    graph = run_dir / "search.yaml"
    graph.write_text(
        GRAPH.format(
            cache=SETUPS[name].format(budget=budget),
            work=args.work,
            tasks=REPO / "graphs" / "tasks",
            trials=args.trials,
            limit=args.limit,
            out=run_dir / "out",
        )
    )
    blobs = run_dir / "cache" / "blobs"
    trials_log = run_dir / "out" / "trial_log.jsonl"  # appended as each trial finishes
    samples: dict[int, int] = {}
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            used = _dir_bytes(blobs)
            n = _count_lines(trials_log)
            peak[0] = max(peak[0], used)
            tens = n // 10 * 10
            if tens and tens not in samples:
                samples[tens] = used
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cmd = [
        sys.executable,
        "-m",
        "graphmerge.cli",
        "run",
        str(graph),
        "--cache-dir",
        str(run_dir / "cache"),
        "--device",
        args.device,
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: graphmerge failed:\n{proc.stderr[-3000:]}")
    samples[args.trials] = _dir_bytes(blobs)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in trials_log.read_text().splitlines() if line.strip()]
    trials = [r for r in records if "extra" in r and "tensor_s" in r["extra"]]
    tensor = [r["extra"]["tensor_s"] for r in trials]
    evaluation = [r["extra"]["evaluation_s"] for r in trials]
    cost = [r["time_s"] for r in trials]
    return {
        "setup": name,
        "wall_s": wall,
        "trials": len(trials),
        "trials_per_min": 60 * len(trials) / wall,
        "tensor_s": statistics.mean(tensor),
        "evaluation_s": statistics.mean(evaluation),
        "other_in_trial_s": statistics.mean(
            c - t - e for c, t, e in zip(cost, tensor, evaluation, strict=True)
        ),
        "outside_trials_s": (wall - sum(cost)) / max(len(trials), 1),
        "executed": sum(r["extra"].get("executed", 0) for r in trials),
        "cached": sum(r["extra"].get("cached", 0) for r in trials),
        "disk_every_10": dict(sorted(samples.items())),
        "disk_peak": peak[0],
        # The cache's own accounting (blobs + the one being written): exact, where the watcher's
        # folder walk can count a blob evicted mid-walk together with the one written after it.
        "disk_peak_exact": summary.get("cache", {}).get("peak_disk_bytes", 0),
        "evictions": summary.get("cache", {}).get("evictions", 0),
        "best": summary.get("best", {}).get("score"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--limit", type=int, default=8, help="evaluation examples per trial")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--setups", default="reused,all,disabled")
    ap.add_argument("--work", type=Path, default=ROOT / "_work" / "search")
    args = ap.parse_args()
    args.work = args.work.absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    model_bytes = make_models(args.work, args.hidden, args.layers)
    budget = 3 * model_bytes
    load = os.getloadavg()
    print(
        f"models: hidden {args.hidden}, {args.layers} layers, {model_bytes / 1e6:.1f} MB each (float32); "
        f"cache budget 3x = {budget / 1e6:.1f} MB; {args.trials} trials, {args.limit} examples each; "
        f"device {args.device}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    results = [run_setup(name, args, budget) for name in args.setups.split(",")]
    print(
        "\n| setup | trials/min | tensor s/trial | evaluation s/trial | other s/trial | tasks executed | tasks cached | peak disk MB | best |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        other = r["other_in_trial_s"] + r["outside_trials_s"]
        print(
            f"| {r['setup']} | {r['trials_per_min']:.1f} | {r['tensor_s']:.3f} | {r['evaluation_s']:.3f} | "
            f"{other:.3f} | {r['executed']} | {r['cached']} | {r['disk_peak'] / 1e6:.1f} | {r['best']} |"
        )
    print("\ncache disk use (MB) after every 10 trials:")
    for r in results:
        row = ", ".join(f"{k}: {v / 1e6:.1f}" for k, v in r["disk_every_10"].items())
        verdict = "never above the budget" if r["disk_peak_exact"] <= budget else "ABOVE THE BUDGET"
        print(
            f"- {r['setup']}: {row} (peak: sampled {r['disk_peak'] / 1e6:.1f}, by the cache's accounting "
            f"{r['disk_peak_exact'] / 1e6:.1f}, {verdict}; {r['evictions']} evictions)"
        )
    by = {r["setup"]: r for r in results}
    if "disabled" in by:
        for name in ("reused", "all"):
            if name in by:
                ratio = by[name]["trials_per_min"] / by["disabled"]["trials_per_min"]
                print(f"throughput {name} / disabled: {ratio:.2f}x")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
