"""Start-up and small-merge wall times of the CLI, each command a fresh process.

    python bench/startup.py                      # this checkout
    python bench/startup.py --compare OTHER_SRC  # also another source tree, interleaved run by run

Prints the median and minimum wall time of each command over --repeat runs, with the load average
(the machine may be shared: compare trees measured in the same run, not numbers from different days).
`run ties` is graphs/ties.yaml on the bundled tiny models with an empty cache and a new output folder
each time; `run ties (cached)` repeats it with the cache filled (nothing to compute, output up to date).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _commands(src: Path, work: Path) -> list[tuple[str, list[str], bool]]:
    """(label, CLI arguments, whether the cache is emptied before each run)."""
    ties = ["run", str(src / "graphs/ties.yaml"), "--no-progress", "--set", f"out={work / 'ties'}"]
    return [
        ("--help", ["--help"], False),
        ("validate dis_search.yaml", ["validate", str(src / "graphs/dis_search.yaml")], False),
        ("nodes", ["nodes"], False),
        ("run ties.yaml (empty cache)", ties, True),
        ("run ties.yaml (cached)", ties, False),
    ]


def _time_once(src: Path, work: Path, argv: list[str], fresh_cache: bool) -> float:
    cache = work / "cache"
    if fresh_cache:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / "ties", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src), "GRAPHMERGE_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *argv],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compare", type=Path, default=None, help="another graphmerge source tree")
    args = ap.parse_args()
    trees = {"this": REPO} | ({"other": args.compare.resolve()} if args.compare else {})
    times: dict[tuple[str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        works = {name: Path(tmp) / name for name in trees}
        for w in works.values():
            w.mkdir()
        labels = [label for label, _, _ in _commands(REPO, Path(tmp))]
        for _ in range(args.repeat):
            for i, label in enumerate(labels):
                for name, src in trees.items():  # interleaved: both trees see the same load
                    _, argv, fresh = _commands(src, works[name])[i]
                    times.setdefault((label, name), []).append(_time_once(src, works[name], argv, fresh))
            loads.append(os.getloadavg()[0])
    print(
        f"{len(os.sched_getaffinity(0))} CPUs; 1-minute load average during the run: "
        f"{min(loads):.1f}..{max(loads):.1f}; {args.repeat} runs each, wall seconds median (min)"
    )
    header = "| command | " + " | ".join(trees) + (" | ratio this/other |" if len(trees) > 1 else " |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for label in labels:
        cells = []
        for name in trees:
            t = times[(label, name)]
            cells.append(f"{statistics.median(t):.2f} ({min(t):.2f})")
        ratio = ""
        if len(trees) > 1:
            r = statistics.median(times[(label, "this")]) / statistics.median(times[(label, "other")])
            ratio = f" | {r:.2f}"
        print(f"| `{label}` | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()
