"""Start-up and small-merge wall times of the CLI, each command a fresh process.

    python bench/startup.py                      # this checkout
    python bench/startup.py --compare OTHER_SRC  # also another source tree, interleaved run by run
    python bench/startup.py --searches           # `validate` of every shipped search graph instead

Prints the median and minimum wall time of each command over --repeat runs, its median CPU time
(user + system, of the process and its children), and the load average. On a shared machine wall
time grows with the load while CPU time mostly does not: compare trees measured in the same run.
`run ties` is graphs/ties.yaml on the bundled tiny models with an empty cache and a new output folder
each time; `run ties (cached)` repeats it with the cache filled (nothing to compute, output up to date).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _commands(src: Path, work: Path, searches: bool = False) -> list[tuple[str, list[str], bool]]:
    """(label, CLI arguments, whether the cache is emptied before each run)."""
    if searches:  # the graphs of this checkout, looked up in each tree
        names = sorted(p.name for p in (REPO / "graphs").glob("*search*.yaml"))
        return [(f"validate {n}", ["validate", str(src / "graphs" / n)], False) for n in names]
    ties = ["run", str(src / "graphs/ties.yaml"), "--no-progress", "--set", f"out={work / 'ties'}"]
    return [
        ("--help", ["--help"], False),
        ("validate ties.yaml", ["validate", str(src / "graphs/ties.yaml")], False),
        ("validate dis_search.yaml", ["validate", str(src / "graphs/dis_search.yaml")], False),
        ("nodes", ["nodes"], False),
        ("run ties.yaml (empty cache)", ties, True),
        ("run ties.yaml (cached)", ties, False),
    ]


def _time_once(src: Path, work: Path, argv: list[str], fresh_cache: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh CLI process."""
    cache = work / "cache"
    if fresh_cache:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / "ties", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src), "GRAPHMERGE_CACHE": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *argv],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compare", type=Path, default=None, help="another graphmerge source tree")
    ap.add_argument("--searches", action="store_true", help="time `validate` of every shipped search graph")
    args = ap.parse_args()
    trees = {"this": REPO} | ({"other": args.compare.resolve()} if args.compare else {})
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        works = {name: Path(tmp) / name for name in trees}
        for w in works.values():
            w.mkdir()
        labels = [label for label, _, _ in _commands(REPO, Path(tmp), args.searches)]
        for _ in range(args.repeat):
            for i, label in enumerate(labels):
                for name, src in trees.items():  # interleaved: both trees see the same load
                    _, argv, fresh = _commands(src, works[name], args.searches)[i]
                    wall, used = _time_once(src, works[name], argv, fresh)
                    times.setdefault((label, name), []).append(wall)
                    cpu.setdefault((label, name), []).append(used)
            loads.append(os.getloadavg()[0])
    print(
        f"{len(os.sched_getaffinity(0))} CPUs; 1-minute load average during the run: "
        f"{min(loads):.1f}..{max(loads):.1f}; {args.repeat} runs each; seconds"
    )
    cols = [f"{name}: wall median (min) | {name}: CPU" for name in trees]
    if len(trees) > 1:
        cols.append("wall ratio this/other | CPU ratio this/other")
    header = "| command | " + " | ".join(cols) + " |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    med = statistics.median
    for label in labels:
        cells = [
            f"{med(times[(label, n)]):.2f} ({min(times[(label, n)]):.2f}) | {med(cpu[(label, n)]):.2f}"
            for n in trees
        ]
        if len(trees) > 1:
            wall_r = med(times[(label, "this")]) / med(times[(label, "other")])
            cpu_r = med(cpu[(label, "this")]) / med(cpu[(label, "other")])
            cells.append(f"{wall_r:.2f} | {cpu_r:.2f}")
        print(f"| `{label}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
