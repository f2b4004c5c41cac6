"""The README's tiny-deep results table: the four shipped tiny-deep searches, default settings, empty caches.

    python bench/tiny_deep_results.py --work /tmp/tiny_deep_results             # run, then the table
    python bench/tiny_deep_results.py --work /tmp/tiny_deep_results --table     # table of finished runs
    python bench/tiny_deep_results.py --work W --runs lfs:0,1,2 dis:0 --jobs 2  # a subset, 2 at a time

Each run is `graphmerge run graphs/tiny_deep_NAME_search.yaml --set seed=S --json` with its own empty cache
and one torch thread (bench/search_results.py's `run_one`); the load average when it started and ended is
recorded next to its wall time. The table checks the issue's targets: LFS beats every source by >= 0.1
(summed validation score), DIS beats every source, pruning 25% of the layers keeps >= 90% of the base's
score, and the LFS-MO front has >= 3 members that beat every source on some objective.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_results import load, run_one  # noqa: E402

SKILLS = ("add", "reverse", "sort", "shift")
VAL = tuple(f"tiny_deep_{s}_val" for s in SKILLS)
TEST = tuple(f"tiny_deep_{s}" for s in SKILLS)
DEFAULT_RUNS = ("lfs:0,1,2", "dis:0,1,2", "prune:0", "lfs_mo:0")


def graph(name: str) -> str:
    return f"tiny_deep_{name}_search"


def timed_run(work: Path, name: str, seed: int) -> None:
    folder = work / f"{graph(name)}-s{seed}"
    if (folder / "result.json").exists():
        return
    before = os.getloadavg()[0]
    run_one(work, graph(name), seed)
    result = json.loads((folder / "result.json").read_text())
    result["load"] = [before, os.getloadavg()[0]]
    (folder / "result.json").write_text(json.dumps(result))


def _sum(scores: dict, tasks: tuple[str, ...]) -> float:
    return sum(scores[t] for t in tasks)


def _cells(scores: dict, tasks: tuple[str, ...]) -> list[str]:
    return [f"{scores[t]:.3f}" for t in tasks] + [f"**{_sum(scores, tasks):.3f}**"]


def _note(r: dict) -> str:
    load = f" (load {r['load'][0]:.1f}→{r['load'][1]:.1f})" if "load" in r else ""
    return f"{r['trials']} trials, {r['wall_s']:.0f} s{load}"


def table(work: Path, runs: list[tuple[str, int]]) -> str:
    head = ["model", *(f"val {s}" for s in SKILLS), "val sum", "held-out sum", "vs best source (val)", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" + " ---: |" * (len(head) - 2) + " --- |"]
    results = {(n, s): r for n, s in runs if (r := load(work, graph(n), s)) is not None}
    ref = next((r for (n, _), r in results.items() if n != "prune"), None)
    best_source = 0.0
    if ref is not None:
        for key, r in ref["sources"].items():
            val = _sum(r["scores"], VAL)
            best_source = max(best_source, val)
            test = _sum(ref["held_out"]["sources"][key]["scores"], TEST)
            label = "base" if key == "base" else f"{key} expert"
            lines.append(
                f"| {label} | " + " | ".join(_cells(r["scores"], VAL)) + f" | {test:.3f} | | source |"
            )
    for (name, seed), r in results.items():
        label = f"{name.upper().replace('_', '-')} seed {seed}"
        if r.get("pareto"):
            # Two readings of "dominates every source on some objective": (a) beats the best source of
            # that objective (every source at once), (b) beats each source on at least one objective
            # (no source dominates it).
            sources = list(ref["sources"].values()) if ref else []
            top = {t: max(s["scores"][t] for s in sources) for t in VAL}
            n_a = n_b = 0
            for p in r["pareto"]:
                sc = p["scores"]
                wins = [t.removeprefix("tiny_deep_").removesuffix("_val") for t in VAL if sc[t] > top[t]]
                undominated = all(any(sc[t] > s["scores"][t] for t in VAL) for s in sources)
                n_a += bool(wins)
                n_b += undominated
                test = _sum(r["held_out"]["pareto"][p["name"]]["scores"], TEST)
                verdict = f"(a) {', '.join(wins) or '-'}; (b) {'yes' if undominated else 'no'}"
                lines.append(
                    f"| {label} {p['name']} (#{p['trial']}) | "
                    + " | ".join(_cells(sc, VAL))
                    + f" | {test:.3f} | {verdict} | {_note(r)} |"
                )
            lines.append(
                f"| *{label}: {len(r['pareto'])} front members; (a) {n_a} beat the best source on some "
                f"objective; (b) {n_b} beat each source on some objective* | | | | | | | | |"
            )
            continue
        best, test = r["best"], _sum(r["held_out"]["best"]["scores"], TEST)
        if "unpruned" in r:
            base_val = _sum(r["sources"]["base"]["scores"], VAL)
            versus = f"keeps {_sum(best['scores'], VAL) / base_val:.1%} of the base"
            base_test = _sum(r["held_out"]["sources"]["base"]["scores"], TEST)
            test_note = f"{test:.3f} ({test / base_test:.1%} of the base)"
        else:
            versus = f"{_sum(best['scores'], VAL) - best_source:+.3f}"
            test_note = f"{test:.3f}"
        lines.append(
            f"| {label} (best: trial #{best['trial']}) | "
            + " | ".join(_cells(best["scores"], VAL))
            + f" | {test_note} | {versus} | {_note(r)} |"
        )
    return "\n".join(lines)


def parse_runs(specs: list[str]) -> list[tuple[str, int]]:
    out = []
    for spec in specs:
        name, seeds = spec.split(":")
        out += [(name, int(s)) for s in seeds.split(",")]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument(
        "--runs", nargs="*", default=list(DEFAULT_RUNS), help="NAME:SEED,SEED ... (lfs, lfs_mo, dis, prune)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="searches run at the same time")
    ap.add_argument("--table", action="store_true", help="only print the table of finished runs")
    args = ap.parse_args()
    runs = parse_runs(args.runs)
    if not args.table:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda ns: timed_run(args.work, *ns), runs))
    print(table(args.work, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
