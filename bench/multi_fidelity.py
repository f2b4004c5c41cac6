"""Multi-fidelity against full fidelity at equal evaluation examples, on any world's search graph.

    python bench/multi_fidelity.py --graph graphs/lfs_search.yaml --work /tmp/mf            # seeds 0 1 2
    python bench/multi_fidelity.py --graph graphs/lfs_search.yaml --work /tmp/mf --table    # finished runs only

Per seed, two searches of the graph's `optimize` node, each with its own empty cache (one torch thread):
  * full fidelity (FF): `facade: hpo`, every trial at the graph's `max_budget`, `--ff-trials` trials;
  * multi-fidelity (MF): the graph's own `smac` settings (Hyperband over min_budget..max_budget), stopped by
    `max_examples` = `--fraction` of the examples the FF search spent (its n_trials dropped).
Examples are counted as the search counts them (graphmerge/search/examples.py: per configuration and task,
only examples not scored before; the same in every process), recomputed here from `trials.jsonl`.
Scores compared are search scores at the top budget (the FF budget), so they are on the same examples.
The table: each search's best, the examples MF needed to first match FF's best (if it did), and FF's best
after the examples MF was given (the two at equal examples).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from graphmerge.search import Objective, TrialRecord  # noqa: E402
from graphmerge.search.examples import ExampleLedger, examples_to_reach  # noqa: E402

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_TOKEN = re.compile(r"__GMREF_([A-Za-z0-9_.]+)__")


def read_graph(path: Path) -> dict:
    """A graph file as data; `${name}` references (not YAML inside flow mappings) kept as tokens."""
    return yaml.safe_load(_REF.sub(lambda m: f"__GMREF_{m.group(1)}__", path.read_text()))


def graph_text(graph: dict) -> str:
    """Block-style YAML, where `${name}` is plain text again."""
    return _TOKEN.sub(lambda m: "${" + m.group(1) + "}", yaml.safe_dump(graph, sort_keys=False))


def _search_node(graph: dict) -> str:
    names = [
        n for n, spec in graph["nodes"].items() if isinstance(spec, dict) and spec.get("op") == "optimize"
    ]
    if len(names) != 1:
        raise SystemExit(f"the graph must have exactly one optimize node, found {names}")
    return names[0]


def _absolute(value, graph_dir: Path):
    """A relative path (as the graph writes it) made absolute, so the graph can be written elsewhere."""
    if (
        isinstance(value, str)
        and not os.path.isabs(value)
        and "__GMREF_" not in value
        and (graph_dir / value).exists()
    ):
        return str((graph_dir / value).resolve())
    return value


def variant(graph_file: Path, kind: str, ff_trials: int, max_examples: int | None) -> dict:
    """The graph with its search's stopping rule (and, for FF, facade) replaced; paths made absolute."""
    graph = read_graph(graph_file)
    here = graph_file.resolve().parent
    graph["vars"] = {k: _absolute(v, here) for k, v in (graph.get("vars") or {}).items()}
    name = _search_node(graph)
    node = graph["nodes"][name]
    node["include_path"] = [_absolute(p, here) for p in node.get("include_path", [])]
    for spec in graph["nodes"].values():
        if isinstance(spec, dict) and spec.get("op") == "load":
            spec["path"] = _absolute(spec["path"], here)
    smac = dict(node["smac"])
    smac.pop("n_trials", None)
    smac.pop("max_examples", None)
    if kind == "ff":
        smac = {
            "facade": "hpo",
            "max_budget": smac["max_budget"],
            "seed": smac.get("seed", 0),
            "n_trials": ff_trials,
        }
    else:
        smac["max_examples"] = max_examples
    node["smac"] = smac
    return graph


def run(folder: Path, graph: dict, seed: int) -> dict:
    """`graphmerge run` of the graph (own empty cache, one thread); result.json holds its --json."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "graph.yaml").write_text(graph_text(graph))
    cmd = [sys.executable, "-m", "graphmerge.cli", "run", str(folder / "graph.yaml"), "--json"]
    cmd += ["--set", f"out={folder / 'out'}", "--cache-dir", str(folder / "cache")]
    if "seed" in (graph.get("vars") or {}):
        cmd += ["--set", f"seed={seed}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=folder)
    (folder / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{folder.name} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    done.write_text(json.dumps(result))
    shutil.rmtree(folder / "cache", ignore_errors=True)
    return result


def trajectory(folder: Path, objectives: list[str]) -> list[TrialRecord]:
    """The search's trials with examples counted by the search's own ledger (also for logs without them)."""
    ledger = ExampleLedger([Objective(name=o) for o in objectives])
    rows = [json.loads(line) for line in (folder / "out" / "trials.jsonl").read_text().splitlines()]
    return [ledger.charge(TrialRecord.from_json({**r, "order": r["trial"] - 1})) for r in rows]


def best_at(records: list[TrialRecord], budget: int, examples: int | None = None) -> float | None:
    pool = [
        r.score
        for r in records
        if r.limit == budget and not r.infeasible and (examples is None or r.examples_total <= examples)
    ]
    return max(pool, default=None)


def compare(work: Path, graph_file: Path, seed: int, ff_trials: int, fraction: float, run_missing: bool):
    graph = read_graph(graph_file)
    node = graph["nodes"][_search_node(graph)]
    objectives = [o["task"] for o in node["objectives"]]
    top = int(node["smac"]["max_budget"])
    ff_dir, mf_dir = work / f"ff-s{seed}", work / f"mf-s{seed}"
    if run_missing:
        run(ff_dir, variant(graph_file, "ff", ff_trials, None), seed)
    if not (ff_dir / "result.json").exists():
        return None
    ff = trajectory(ff_dir, objectives)
    ff_examples = ff[-1].examples_total
    budget = int(round(fraction * ff_examples))
    if run_missing:
        run(mf_dir, variant(graph_file, "mf", ff_trials, budget), seed)
    if not (mf_dir / "result.json").exists():
        return None
    mf = trajectory(mf_dir, objectives)
    ff_best = best_at(ff, top)
    mf_best = best_at(mf, top)
    wall = {
        k: json.loads((d / "result.json").read_text())["wall_s"] for k, d in (("ff", ff_dir), ("mf", mf_dir))
    }
    reach = examples_to_reach(mf, ff_best, top) if ff_best is not None else None
    return {
        "seed": seed,
        "ff_trials": len(ff),
        "ff_examples": ff_examples,
        "ff_best": ff_best,
        "ff_best_at_mf_examples": best_at(ff, top, mf[-1].examples_total),
        "mf_trials": len(mf),
        "mf_max_examples": budget,
        "mf_examples": mf[-1].examples_total,
        "mf_best": mf_best,
        "mf_examples_to_ff_best": reach,
        # Best so far at the top budget after each share of FF's examples: the two searches at equal cost.
        "curve": {
            f"{share:.0%}": [
                best_at(ff, top, int(share * ff_examples)),
                # MF stopped at its share: past it there is nothing to compare.
                best_at(mf, top, int(share * ff_examples))
                if share * ff_examples <= mf[-1].examples_total
                else None,
            ]
            for share in SHARES
        },
        "wall_s": wall,
    }


SHARES = (0.1, 0.2, 0.4, 1.0)


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def table(rows: list[dict]) -> str:
    out = [
        "| seed | FF: trials, examples | FF best | MF: trials, examples (limit) | MF best "
        "| MF examples to FF's best (share of FF's) | FF best at MF's examples | wall s FF / MF |",
        "| ---: | --- | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        reach = r["mf_examples_to_ff_best"]
        share = "not reached" if reach is None else f"{reach} ({reach / r['ff_examples']:.0%})"
        out.append(
            f"| {r['seed']} | {r['ff_trials']}, {r['ff_examples']} | {_fmt(r['ff_best'])} "
            f"| {r['mf_trials']}, {r['mf_examples']} ({r['mf_max_examples']}) | {_fmt(r['mf_best'])} | {share} "
            f"| {_fmt(r['ff_best_at_mf_examples'])} | {r['wall_s']['ff']:.0f} / {r['wall_s']['mf']:.0f} |"
        )
    if not rows:
        return "\n".join(out)
    out += [
        "",
        "| seed | " + " | ".join(f"FF / MF best after {k} of FF's examples" for k in rows[0]["curve"]) + " |",
        "| ---: |" + " ---: |" * len(rows[0]["curve"]),
    ]
    for r in rows:
        cells = [f"{_fmt(ff)} / {_fmt(mf)}" for ff, mf in r["curve"].values()]
        out.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", type=Path, default=REPO / "graphs" / "lfs_search.yaml")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ff-trials", type=int, default=100, help="trials of the full-fidelity search")
    ap.add_argument("--fraction", type=float, default=0.4, help="MF's examples as a share of FF's")
    ap.add_argument("--table", action="store_true", help="only tabulate finished runs")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        row = compare(args.work, args.graph, seed, args.ff_trials, args.fraction, not args.table)
        if row is not None:
            rows.append(row)
    (args.work / "summary.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
