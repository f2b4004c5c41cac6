"""The bundled tiny models (models/tiny) load offline with plain transformers and do their skills;
the training script is deterministic and never trains on held-out examples."""

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
TINY = REPO / "models" / "tiny"
DATA = REPO / "graphs" / "tasks" / "tiny" / "data"


def _train_module():
    spec = importlib.util.spec_from_file_location("tiny_train", TINY / "train.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def _greedy(folder: Path, prompt: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize(
    "name, prompt, answer",
    [("add", "12+35=", "47."), ("reverse", "abc>", "cba."), ("sort", "dbca:", "abcd.")],
)
def test_expert_answers(name, prompt, answer):
    assert _greedy(TINY / name, prompt) == answer


def test_folders_are_plain_hf_and_small():
    total = 0
    for name in ("base", "add", "reverse", "sort"):
        folder = TINY / name
        for f in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ):
            assert (folder / f).is_file(), f"{folder / f} missing"
        total += (folder / "model.safetensors").stat().st_size
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "llama" and config["num_hidden_layers"] == 4
    assert total < 30e6
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY / "base")
    assert tok.decode(tok("abc>cba.")["input_ids"]) == "abc>cba."
    assert tok.bos_token == "<bos>" and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"


def test_held_out_data_is_regenerable_and_never_trained_on():
    train = _train_module()
    splits = train.make_splits()
    for skill in train.SKILLS:
        rows = [json.loads(line) for line in (DATA / f"{skill}.jsonl").open()]
        assert [r["input"] for r in rows] == splits.test[skill]
        assert all(r["choices"][r["label"]] == r["answer"] == train.solve(skill, r["input"]) for r in rows)
        assert all(len(set(r["choices"])) == 4 for r in rows)
    sampler = train.Sampler(splits, {"add": 1, "reverse": 1, "sort": 1}, seed=0)
    seen = {sampler.example()[0][:-1] for _ in range(5000)}
    assert not seen & splits.held_out
    assert not set(splits.train_add) & splits.held_out


def test_validation_split_is_regenerable_disjoint_from_test_and_never_trained_on(tmp_path):
    train = _train_module()
    splits = train.make_splits()
    train.write_task_data(splits, tmp_path)
    for skill in train.SKILLS:
        for name in (f"{skill}.jsonl", f"{skill}_val.jsonl"):  # both splits, byte for byte
            assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
        val = [json.loads(line)["input"] for line in (DATA / f"{skill}_val.jsonl").open()]
        assert val == splits.val[skill] and len(val) == 200
        assert not set(val) & set(splits.test[skill]) and set(val) <= splits.held_out


def test_training_is_deterministic():
    train = _train_module()
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train.setup_determinism(1)
    try:
        _check_determinism(train)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _check_determinism(train):
    splits = train.make_splits()
    recipe = train.Recipe(
        base=train.Phase(
            steps=3, lr=1e-3, mix={"add": 2, "reverse": 1, "sort": 1}, seed=1, batch=8, warmup=2
        ),
        expert_steps=2,
    )

    def run(jobs):
        base, experts = train.train_all(recipe, splits, log_every=0, jobs=jobs)
        return [base.state_dict()] + [experts[s].state_dict() for s in train.SKILLS]

    a, b, c = run(1), run(1), run(3)
    for x, y, z in zip(a, b, c):
        for k in x:
            assert torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]), k
    assert not torch.equal(a[0]["lm_head.weight"], a[1]["lm_head.weight"])  # experts did train
