"""Do two source trees run the same search? Each shipped search graph, shortened to N trials, in both
trees, each with its own empty cache; then their trial tables and best recipes are compared.

    python bench/same_trials.py --other OLD_SRC --work /tmp/same-trials              # dis, lfs, prune
    python bench/same_trials.py --other OLD_SRC --work /tmp/same-trials --trials 40 --only lfs_search

A trial row is (number, configuration, budget, scores); recipes are compared without their `path:`
lines, which name each tree's own model folders. Used to check that moving search spaces off
ConfigSpace changed no trial (README, "Search spaces").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(src: Path, graph: str, work: Path, trials: int) -> Path:
    out, cache = work / graph, work / f"{graph}-cache"
    for folder in (out, cache):
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "run", f"{graph}.yaml", "--no-progress", "--cache-dir",
         str(cache), "--set", f"n_trials={trials}", "--set", f"out={out}"],
        cwd=src / "graphs",
        env={**os.environ, "PYTHONPATH": str(src)},
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


def trial_rows(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return [(r["trial"], json.dumps(r["config"], sort_keys=True), r["budget"], r["scores"]) for r in rows]


def recipe(out: Path) -> list[str]:
    return [line for line in (out / "best_recipe.yaml").read_text().splitlines() if "path:" not in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--other", type=Path, required=True, help="the other graphmerge source tree")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--only", nargs="*", default=["dis_search", "lfs_search", "prune_search"])
    args = ap.parse_args()
    print(
        f"| graph ({args.trials} trials) | trials (config, budget, scores) | best recipe |\n| --- | --- | --- |"
    )
    for graph in args.only:
        this = run(REPO, graph, args.work / "this", args.trials)
        other = run(args.other.resolve(), graph, args.work / "other", args.trials)
        a, b = trial_rows(this), trial_rows(other)
        same = sum(x == y for x, y in zip(a, b))
        rows = f"{same} of {max(len(a), len(b))} identical"
        best = "identical (but the model paths)" if recipe(this) == recipe(other) else "differs"
        print(f"| `graphs/{graph}.yaml` | {rows} | {best} |")


if __name__ == "__main__":
    main()
