"""The bundled tiny-deep world (models/tiny-deep): plain HF folders that load offline, experts that differ
from the base only in their band of layers, held-out task data that regenerates byte for byte and is never
trained on, deterministic training, and the documented scores (models/tiny-deep/scores.json, the table of
docs/tiny_deep.md) reproduced through lm-eval."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEEP = REPO / "models" / "tiny-deep"
DATA = REPO / "graphs" / "tasks" / "tiny_deep" / "data"
FOLDERS = ("base", "add", "reverse", "sort")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"tiny_deep_{name}", DEEP / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    sys.path.insert(0, str(DEEP))  # report.py imports train.py
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(DEEP))
    return mod


def test_folders_are_plain_hf_deep_and_small():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    total = 0
    for name in FOLDERS:
        model = AutoModelForCausalLM.from_pretrained(DEEP / name)
        assert model.config.model_type == "llama" and model.config.num_hidden_layers >= 12
        total += (DEEP / name / "model.safetensors").stat().st_size
    assert total < 16e6
    tok = AutoTokenizer.from_pretrained(DEEP / "base")
    assert tok.decode(tok("abz=bca.")["input_ids"]) == "abz=bca."


def test_experts_differ_from_the_base_only_in_their_band():
    from safetensors.torch import load_file

    recipe = json.loads((DEEP / "recipe.json").read_text())
    base = load_file(DEEP / "base" / "model.safetensors")
    for skill, band in recipe["bands"].items():
        expert = load_file(DEEP / skill / "model.safetensors")
        assert expert.keys() == base.keys()
        inside = {k for k in base if any(k.startswith(f"model.layers.{i}.") for i in band)}
        assert all(torch.equal(expert[k], base[k]) for k in base.keys() - inside), skill
        changed = [k for k in inside if not torch.equal(expert[k], base[k])]
        assert len(changed) >= len(inside) // 2, (skill, changed)


def test_task_data_regenerates_and_is_never_trained_on(tmp_path):
    train = _module("train")
    splits = train.make_splits()
    train.write_task_data(splits, tmp_path)
    for skill in train.SKILLS:
        for name in (f"{skill}.jsonl", f"{skill}_val.jsonl"):
            assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
        test, val = splits.test[skill], splits.val[skill]
        assert len(test) == len(val) == 200 and not set(test) & set(val)
    import random

    rng = random.Random(0)
    drawn = {train.draw(s, splits, rng)[0][:-1] for s in train.SKILLS for _ in range(2000)}
    assert not drawn & splits.held_out
    assert train.solve("shift", "abz") == "bca"


def test_training_is_deterministic_and_trains_only_the_band():
    train = _module("train")
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train.tiny.setup_determinism(1)
    try:
        splits = train.make_splits()
        recipe = train.Recipe(
            base=train.Phase(
                steps=3, lr=1e-3, mix={"add": 1, "shift": 1}, seed=1, batch=8, warmup=2, layer_drop=0.5
            ),
            expert_steps=2,
        )
        a = train.train_all(recipe, splits)
        b = train.train_all(recipe, splits)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    for (base_a, experts_a), (base_b, experts_b) in [(a, b)]:
        for x, y in zip([base_a, *experts_a.values()], [base_b, *experts_b.values()]):
            assert all(torch.equal(x[k], y[k]) for k in x)
    base, experts = a
    for skill, band in recipe.bands.items():
        moved = {int(k.split(".")[2]) for k in base if not torch.equal(base[k], experts[skill][k])}
        assert moved == set(band), (skill, moved)


@pytest.mark.slow
def test_documented_scores_reproduce():
    """Base and experts on every held-out example of every task, against the committed table."""
    from graphmerge.evaluation import TaskSpec, build_model, evaluate

    report = _module("report")
    documented = json.loads((DEEP / "scores.json").read_text())
    assert documented["limit"] is None
    config = json.loads((DEEP / "base" / "config.json").read_text())
    specs = [TaskSpec(t, "exact_match") for t in report.TASKS]
    rows = {name: (sd, n) for name, sd, n in report.candidates(DEEP)}
    for name in ("base", "add expert", "reverse expert", "sort expert", "task arithmetic λ=1.0"):
        sd, n = rows[name]
        model = build_model({**config, "num_hidden_layers": n}, sd, torch.float32, "cpu")
        got = evaluate(model, DEEP / "base", specs, REPO / "graphs" / "tasks", batch_size=64).scores
        for task in report.TASKS:
            assert abs(got[task] - documented["scores"][name][task]) <= 0.011, (name, task, got[task])


@pytest.mark.parametrize("name", ["lfs", "lfs_mo", "dis", "prune"])
def test_shipped_graphs_validate(name):
    """The shipped tiny-deep searches resolve their models, tasks (held-out too) and strategy settings."""
    import subprocess

    graph = REPO / "graphs" / f"tiny_deep_{name}_search.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "validate", str(graph)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0 and ": ok (" in proc.stdout, proc.stderr
