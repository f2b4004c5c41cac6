"""The README's search results table: every shipped search graph, 3 SMAC seeds, search and held-out scores.

    python bench/search_results.py --work /tmp/search_results            # run all 12 searches, then the table
    python bench/search_results.py --work /tmp/search_results --table    # the table from finished runs only

Each run is `graphmerge run graphs/NAME.yaml --set seed=S --json` with its own empty cache (one torch thread),
so the wall times are those of a cold run. The searches select on the validation tasks (`tiny_*_val`) and
score the best model and the sources on the held-out test tasks (`tiny_add`, `tiny_reverse`).
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
GRAPHS = ("lfs_search", "lfs_mo_search", "dis_search", "prune_search")
SEEDS = (0, 1, 2)
VAL = ("tiny_add_val", "tiny_reverse_val")
TEST = ("tiny_add", "tiny_reverse")


def run_one(work: Path, graph: str, seed: int) -> None:
    folder = work / f"{graph}-s{seed}"
    if (folder / "result.json").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "graphmerge.cli", "run", str(REPO / "graphs" / f"{graph}.yaml"), "--json"]
    cmd += ["--set", f"seed={seed}", "--set", f"out={folder / 'out'}", "--cache-dir", str(folder / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (folder / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{graph} seed {seed} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    (folder / "result.json").write_text(json.dumps(result))
    shutil.rmtree(folder / "cache", ignore_errors=True)


def load(work: Path, graph: str, seed: int) -> dict | None:
    path = work / f"{graph}-s{seed}" / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def _row(name: str, val: dict | None, test: dict | None, note: str = "") -> str:
    def cells(scores: dict | None, tasks) -> list[str]:
        if scores is None:
            return [""] * 3
        return [f"{scores[t]:.3f}" for t in tasks] + [f"**{sum(scores[t] for t in tasks):.3f}**"]

    return "| " + " | ".join([name, *cells(val, VAL), *cells(test, TEST), note]) + " |"


def table(work: Path) -> str:
    lines = [
        "| model | search: add | search: reverse | search: sum | held-out: add | held-out: reverse "
        "| held-out: sum | trials, wall time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    ref = next((r for g in GRAPHS for s in SEEDS if (r := load(work, g, s)) and "base" in r["sources"]), None)
    if ref is not None:
        names = {"base": "base", "add": "add expert", "reverse": "reverse expert"}
        for key, label in names.items():
            lines.append(
                _row(
                    label, ref["sources"][key]["scores"], ref["held_out"]["sources"][key]["scores"], "source"
                )
            )
    for graph in GRAPHS:
        sums = []
        for seed in SEEDS:
            r = load(work, graph, seed)
            if r is None:
                continue
            note = f"{r['trials']} trials, {r['wall_s']:.0f} s"
            label = f"{graph.replace('_search', '').replace('_', '-').upper()} seed {seed}"
            if r.get("pareto"):
                for p in r["pareto"]:
                    test = r["held_out"]["pareto"][p["name"]]["scores"]
                    lines.append(_row(f"{label} {p['name']} (#{p['trial']})", p["scores"], test, note))
                    note = ""
            else:
                best = r["best"]
                extra = ""
                if "unpruned" in r:
                    extra = f"; keeps {r['unpruned']['score_kept']:.0%} of the add expert's search score"
                test = r["held_out"]["best"]["scores"]
                lines.append(
                    _row(f"{label} (best: trial #{best['trial']})", best["scores"], test, note + extra)
                )
                sums.append((sum(best["scores"][t] for t in VAL), sum(test[t] for t in TEST)))
        if len(sums) > 1:
            val, test = (sum(x) / len(sums) for x in zip(*sums))
            name = graph.replace("_search", "").replace("_", "-").upper()
            lines.append(f"| *{name}: mean of {len(sums)} seeds* | | | *{val:.3f}* | | | *{test:.3f}* | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--table", action="store_true", help="only print the table of finished runs")
    args = ap.parse_args()
    if not args.table:
        for graph in GRAPHS:
            for seed in SEEDS:
                run_one(args.work, graph, seed)
    print(table(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
