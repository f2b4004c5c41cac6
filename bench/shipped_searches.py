"""Wall time of every shipped search graph with its default settings, one after another.

    python bench/shipped_searches.py --work /tmp/shipped            # all of graphs/*search.yaml
    python bench/shipped_searches.py --work /tmp/shipped --only dis_search tiny_deep_prune_search

Each search runs as `graphmerge run GRAPH --set out=WORK/NAME --json` in a fresh process with its own
empty cache (`--cache-dir WORK/NAME-cache`), the machine's default threads, so the time is what a user
who runs the shipped graph as-is waits. Prints a Markdown table with the load average around each run:
the machine is shared, so a time is only meaningful next to its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(graph: Path, work: Path) -> dict:
    name = graph.stem
    out, cache = work / name, work / f"{name}-cache"
    for folder in (out, cache):
        shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "graphmerge.cli", "run", str(graph), "--set", f"out={out}"]
    cmd += ["--cache-dir", str(cache), "--json", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # the search's fields are top-level
    return {
        "graph": f"graphs/{graph.name}",
        "wall_s": wall,
        "trials": summary.get("trials"),
        "load": (load_before, os.getloadavg()[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--only", nargs="*", help="graph names (file stems) to run; default: every *search.yaml")
    args = ap.parse_args()
    graphs = sorted((REPO / "graphs").glob("*search.yaml"))
    if args.only:
        graphs = [g for g in graphs if g.stem in args.only]
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs")
    print("| graph | trials | wall s | load average before → after |")
    print("| --- | ---: | ---: | --- |")
    for graph in graphs:
        r = run(graph, args.work)
        print(
            f"| `{r['graph']}` | {r['trials'] if r['trials'] is not None else '—'} | {r['wall_s']:.0f} "
            f"| {r['load'][0]:.2f} → {r['load'][1]:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
