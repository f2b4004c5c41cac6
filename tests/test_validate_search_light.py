"""`validate` of a search graph plans the strategy's default, initial and sampled configurations from
graphmerge's own search space: none of the shipped search graphs imports ConfigSpace (nor scipy, which
its import costs), SMAC, Dask, lm-eval or matplotlib, and none imports torch or transformers: a search
whose methods need calibration statistics checks its calibration data without tokenizing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEARCH_GRAPHS = sorted(p for p in (REPO / "graphs").glob("*.yaml") if "search" in p.name)
NOT_FOR_VALIDATE = (
    "ConfigSpace", "smac", "scipy", "dask", "distributed", "lm_eval", "matplotlib", "torch", "transformers"
)

# Validates each graph in turn in one fresh interpreter and records, after each, what is loaded.
_PROBE = """
import json, sys
from graphmerge.cli import main
out = []
for graph in sys.argv[2:]:
    try:
        code = main(["validate", graph])
    except SystemExit as exc:
        code = exc.code
    out.append({"graph": graph, "code": code, "modules": sorted(sys.modules)})
with open(sys.argv[1], "w") as fh:
    json.dump(out, fh)
"""


def test_shipped_search_graphs_are_many():
    names = {p.name for p in SEARCH_GRAPHS}
    assert {"dis_search.yaml", "lfs_search.yaml", "prune_search.yaml", "tiny_deep_dis_search.yaml"} <= names


def test_validate_of_every_shipped_search_imports_no_configspace_smac_or_scipy(tmp_path):
    report = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), *map(str, SEARCH_GRAPHS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(report.read_text())
    assert [r["code"] for r in runs] == [0] * len(SEARCH_GRAPHS), proc.stderr
    loaded_before: set[str] = set()
    for run in runs:
        new = set(run["modules"]) - loaded_before
        heavy = sorted({m.split(".")[0] for m in new} & set(NOT_FOR_VALIDATE))
        assert heavy == [], f"validate {Path(run['graph']).name} imported {heavy}"
        loaded_before |= new
    # The probe is real: the searches' strategies and spaces were loaded and sampled.
    assert {"graphmerge.strategies.dis", "graphmerge.search.sampling"} <= loaded_before
