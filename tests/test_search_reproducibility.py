"""A real search (LFS on the tiny models: merges, lm-eval, SMAC) gives the same trials and the same best
model in two fresh processes that differ in torch/OpenMP thread count (tensor work and evaluation) and hash
seed, each with its own empty cache. The analytic-objective version of this guarantee, with resume and
parallel workers, is tests/test_search_determinism.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
N_TRIALS = 24  # past the initial design (6 configurations) into SMAC's model-based proposals

GRAPH = f"""\
vars:
  threads: 1
  out: out
nodes:
  base: {{op: load, path: {REPO / "models/tiny/base"}}}
  add: {{op: load, path: {REPO / "models/tiny/add"}}}
  reverse: {{op: load, path: {REPO / "models/tiny/reverse"}}}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [add, reverse]
    settings: {{layer_granularity: 2, methods: [linear, task_arithmetic, ties]}}
    objectives:
      - {{task: tiny_add_val, metric: exact_match}}
      - {{task: tiny_reverse_val, metric: exact_match}}
    include_path: [{REPO / "graphs/tasks"}]
    evaluation: {{threads: ${{threads}}}}
    smac: {{facade: multi_fidelity, n_trials: {N_TRIALS}, min_budget: 10, max_budget: 40, eta: 2, seed: 3}}
    out: ${{out}}
  best: {{op: save, input: search.best, path: ${{out}}/best_model}}
"""

# What a trial is and what it scored; times, and the work a trial happened to find cached, may differ.
KEPT = ("trial", "config", "budget", "limit", "scores", "score", "infeasible", "examples", "examples_total")


def _start(folder: Path, threads: int, hash_seed: int) -> subprocess.Popen:
    folder.mkdir()
    (folder / "graph.yaml").write_text(GRAPH)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": str(hash_seed)}
    env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    cmd = [sys.executable, "-m", "graphmerge.cli", "run", "graph.yaml", "--json", "--no-progress"]
    cmd += ["--set", f"threads={threads}", "--cache-dir", str(folder / "cache")]
    return subprocess.Popen(
        cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _trials(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "out" / "trials.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in KEPT} | {"scored": r["extra"].get("examples_scored")} for r in rows]


def _weights(folder: Path) -> str:
    files = sorted((folder / "out" / "best_model").glob("*.safetensors"))
    assert files
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


@pytest.mark.slow
def test_same_trials_and_best_model_with_one_or_two_threads(tmp_path):
    # Both at once: the second process is not helped by anything the first one left behind.
    one, two = _start(tmp_path / "one", 1, 11), _start(tmp_path / "two", 2, 22)
    a, b = _finish(one), _finish(two)
    trials = _trials(tmp_path / "one")
    assert len(trials) == N_TRIALS and {t["limit"] for t in trials} == {10, 20, 40}
    assert trials == _trials(tmp_path / "two")
    assert a["best"] == b["best"] and a["examples"]["total"] == b["examples"]["total"] > 0
    assert _weights(tmp_path / "one") == _weights(tmp_path / "two")
    # With empty caches the examples lm-eval ran are the examples the search counted.
    assert a["examples"]["run"] == a["examples"]["total"]
