"""The new merge methods on the bundled tiny world: the three experts merged by each method at its
default settings and over a small sweep, next to task arithmetic and TIES, scored on tiny_add,
tiny_reverse and tiny_sort (200 held-out examples each, exact match).

    python bench/new_methods_tiny.py            # writes bench/_work/new_methods_tiny.{yaml,md}
    python bench/new_methods_tiny.py --write-calibration   # rewrites models/tiny/calibration.jsonl

RegMean and Fisher are calibrated on models/tiny/calibration.jsonl (64 validation examples per
skill, never used for testing). The sweep's best is picked on the same test examples it reports, so it
is an optimistic number: the default-settings row is the honest one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphmerge.runner import run_graph  # noqa: E402

EXPERTS = ["add", "reverse", "sort"]
TASKS = ["tiny_add", "tiny_reverse", "tiny_sort"]
# method -> [(label, params)]; the first entry is the default setting.
SWEEPS: dict[str, list[tuple[str, dict]]] = {
    "task_arithmetic": [("λ=1.0", {"lambda": 1.0}), ("λ=0.3", {"lambda": 0.3}), ("λ=0.5", {"lambda": 0.5})],
    "ties": [
        ("d=0.5 λ=1.0", {"lambda": 1.0}),
        ("d=0.5 λ=0.7", {"lambda": 0.7}),
        ("d=0.5 λ=0.5", {"lambda": 0.5}),
    ],
    "tsv_m": [
        ("k=1/T λ=1.0", {}),
        ("λ=0.7", {"lambda": 0.7}),
        ("λ=0.5", {"lambda": 0.5}),
        ("λ=0.3", {"lambda": 0.3}),
    ],
    "iso_c": [
        ("λ=1.0", {}),
        ("λ=0.7", {"lambda": 0.7}),
        ("λ=0.5", {"lambda": 0.5}),
        ("λ=0.3", {"lambda": 0.3}),
    ],
    "iso_cts": [
        ("cf=0.8 λ=1.0", {}),
        ("cf=0.8 λ=0.5", {"lambda": 0.5}),
        ("cf=0.8 λ=0.3", {"lambda": 0.3}),
        ("cf=0.5 λ=0.5", {"lambda": 0.5, "common_fraction": 0.5}),
    ],
    "wudi": [
        ("300 steps lr=1e-5 λ=1.0", {}),
        ("lr=1e-3 λ=1.0", {"lr": 1e-3}),
        ("lr=1e-3 λ=0.5", {"lr": 1e-3, "lambda": 0.5}),
        ("lr=1e-4 λ=0.5", {"lr": 1e-4, "lambda": 0.5}),
    ],
    "regmean": [
        ("α=0.9", {}),
        ("α=1.0", {"alpha": 1.0}),
        ("α=0.5", {"alpha": 0.5}),
        ("α=0.1", {"alpha": 0.1}),
    ],
    "fisher": [
        ("floor=1e-6", {}),
        ("floor=1e-4", {"fisher_floor": 1e-4}),
        ("floor=1e-9", {"fisher_floor": 1e-9}),
    ],
}
STATS = {"regmean": "grams", "fisher": "fishers"}


def merge_node(method: str, params: dict) -> dict:
    node: dict = {"op": "merge", "method": method, "params": params}
    if method in ("task_arithmetic", "ties"):
        density = {"density": 0.5} if method == "ties" else {}
        node["models"] = {e: {"weight": 1.0, **density} for e in EXPERTS}
    else:
        node["models"] = {e: None for e in EXPERTS}
    if method not in STATS:
        node["base"] = "base"
    else:
        node["statistics"] = STATS[method]
    return node


def build_graph() -> dict:
    tiny = ROOT / "models" / "tiny"
    calibration = {"file": str(tiny / "calibration.jsonl"), "max_tokens": 4096}
    nodes: dict = {m: {"op": "load", "path": str(tiny / m)} for m in ["base", *EXPERTS]}
    nodes["grams"] = {"op": "statistics", "kind": "gram", "models": EXPERTS, "calibration": calibration}
    nodes["fishers"] = {"op": "statistics", "kind": "fisher", "models": EXPERTS, "calibration": calibration}
    for method, sweep in SWEEPS.items():
        for i, (_, params) in enumerate(sweep):
            name = f"{method}_{i}"
            nodes[name] = merge_node(method, params)
            nodes[f"eval_{name}"] = {
                "op": "evaluate",
                "input": name,
                "tasks": TASKS,
                "include_path": [str(ROOT / "graphs" / "tasks")],
                "limit": 200,
            }
    return {"nodes": nodes}


def write_calibration(per_skill: int = 64) -> None:
    """models/tiny/calibration.jsonl: the first validation examples of train.py's split, solved."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_train", ROOT / "models" / "tiny" / "train.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules["tiny_train"] = train
    spec.loader.exec_module(train)
    splits = train.make_splits()
    with open(ROOT / "models" / "tiny" / "calibration.jsonl", "w") as out:
        for skill in ("add", "reverse", "sort"):
            for x in splits.val[skill][:per_skill]:
                text = train.prompt_of(skill, x) + train.solve(skill, x) + "."
                out.write(json.dumps({"skill": skill, "text": text}) + "\n")


def main() -> None:
    if "--write-calibration" in sys.argv:
        write_calibration()
        return
    work = ROOT / "bench" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "new_methods_tiny.yaml"
    path.write_text(yaml.safe_dump(build_graph(), sort_keys=False, allow_unicode=True))
    start = time.perf_counter()
    result = run_graph(path, cache_dir=work / "cache", progress=False)
    seconds = time.perf_counter() - start
    lines = ["| method | setting | " + " | ".join(TASKS) + " | mean |", "| --- | --- |" + " ---: |" * 4]
    raw = {}
    for method, sweep in SWEEPS.items():
        scored = []
        for i, (label, _) in enumerate(sweep):
            scores = result.values[f"eval_{method}_{i}"]["scores"]
            scored.append((sum(scores.values()) / len(scores), label, scores))
            raw[f"{method} {label}"] = scores
        default = scored[0]
        best = max(scored, key=lambda s: s[0])
        for tag, (mean, label, scores) in (("default", default), ("best of sweep", best)):
            cells = " | ".join(f"{scores[t]:.3f}" for t in TASKS)
            lines.append(f"| {method} | {tag}: {label} | {cells} | {mean:.3f} |")
    table = "\n".join(lines)
    stats = result.summary()["statistics"]
    footer = f"\n\n{seconds:.0f} s; statistics {stats}; all settings: {json.dumps(raw)}\n"
    (work / "new_methods_tiny.md").write_text(table + footer)
    print(table + footer)


if __name__ == "__main__":
    main()
