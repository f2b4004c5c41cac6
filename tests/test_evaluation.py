"""graphmerge.evaluation on the bundled tiny models and tasks (offline, CPU, a few seconds each)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from graphmerge.errors import EvaluationError, ModelError  # noqa: E402
from graphmerge.evaluation import (  # noqa: E402
    TaskSpec,
    build_model,
    evaluate,
    task_config_hash,
    task_data_files,
    task_metrics,
)

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "graphs" / "tasks"
MODELS = REPO / "models" / "tiny"

# Measured once with these exact calls (greedy, first 50 held-out examples); the models are fixed files.
ADD_EXPERT_TINY_ADD_50 = 1.0
SORT_EXPERT_TINY_SORT_MC_50 = 1.0
BASE_TINY_ADD_50 = 0.54
BASE_TINY_ADD_MC_50 = 0.7


def _tensors(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")


def test_known_scores_from_folder():
    r = evaluate(MODELS / "add", None, [TaskSpec("tiny_add", "exact_match")], TASKS, limit=50)
    assert r.scores == {"tiny_add": ADD_EXPERT_TINY_ADD_50}
    assert r.raw["n-samples"]["tiny_add"]["effective"] == 50
    r = evaluate(
        MODELS / "sort", MODELS / "sort", [{"task": "tiny_sort_mc", "metric": "acc"}], [TASKS], limit=50
    )
    assert r.scores == {"tiny_sort_mc": SORT_EXPERT_TINY_SORT_MC_50}
    specs = [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_add_mc", "acc", weight=3.0)]
    r = evaluate(MODELS / "base", None, specs, TASKS, limit=50)
    assert r.scores == {"tiny_add": BASE_TINY_ADD_50, "tiny_add_mc": BASE_TINY_ADD_MC_50}
    assert r.weighted(specs) == pytest.approx((BASE_TINY_ADD_50 + 3 * BASE_TINY_ADD_MC_50) / 4)


def test_build_model_matches_from_pretrained():
    from transformers import AutoModelForCausalLM

    config, tensors = _tensors(MODELS / "add")
    built = build_model(config, tensors, torch.float32, "cpu")
    ref = AutoModelForCausalLM.from_pretrained(MODELS / "add").eval()
    ids = torch.tensor([[5, 6, 40, 7, 9, 41], [13, 12, 40, 5, 5, 41]])
    with torch.no_grad():
        assert torch.equal(built(input_ids=ids).logits, ref(input_ids=ids).logits)
    # and it scores exactly like the folder, without a checkpoint on disk
    r = evaluate(built, MODELS / "add", [TaskSpec("tiny_add", "exact_match")], TASKS, limit=50)
    assert r.scores["tiny_add"] == ADD_EXPERT_TINY_ADD_50


def test_build_model_tied_and_errors():
    config, tensors = _tensors(MODELS / "base")
    tied = dict(tensors)
    del tied["lm_head.weight"]
    m = build_model({**config, "tie_word_embeddings": True}, tied, "bfloat16")
    assert m.dtype == torch.bfloat16
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    bad = dict(tensors)
    del bad["model.norm.weight"]
    bad["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ModelError, match=r"1 missing \(model.norm.weight\); 1 unexpected \(model.extra.weight\)"
    ):
        build_model(config, bad)
    with pytest.raises(ModelError, match="shape"):
        build_model(config, {**tensors, "model.norm.weight": torch.ones(3)})


def test_limit_takes_nested_prefixes():
    config, tensors = _tensors(MODELS / "base")
    model = build_model(config, tensors)
    specs = [TaskSpec("tiny_reverse", "exact_match")]
    small = evaluate(model, MODELS / "base", specs, TASKS, limit=10, log_samples=True)
    big = evaluate(model, MODELS / "base", specs, TASKS, limit=25, log_samples=True)
    again = evaluate(model, MODELS / "base", specs, TASKS, limit=25, log_samples=True)

    def rows(r):
        return [
            (s["doc_id"], s["doc"]["input"], s["filtered_resps"]) for s in r.raw["samples"]["tiny_reverse"]
        ]

    assert [d for d, _, _ in rows(small)] == list(range(10))
    assert rows(big)[:10] == rows(small)
    assert rows(big) == rows(again) and big.scores == again.scores
    first = [json.loads(line)["input"] for line in (TASKS / "tiny" / "data" / "reverse.jsonl").open()][:25]
    assert [i for _, i, _ in rows(big)] == first


def test_unknown_task_suggests():
    with pytest.raises(EvaluationError, match=r"unknown task 'tiny_ad'.*did you mean tiny_add"):
        evaluate(MODELS / "add", None, [TaskSpec("tiny_ad", "exact_match")], TASKS, limit=5)


def test_missing_data_file_names_file_and_yaml(tmp_path):
    shutil.copytree(TASKS / "tiny", tmp_path / "tiny")
    (tmp_path / "tiny" / "data" / "add.jsonl").unlink()
    with pytest.raises(EvaluationError) as e:
        evaluate(MODELS / "add", None, [TaskSpec("tiny_add", "exact_match")], tmp_path, limit=5)
    msg = str(e.value)
    assert "data/add.jsonl" in msg and "tiny_add.yaml" in msg and "\n" not in msg


def test_metric_not_produced_lists_metrics():
    assert task_metrics("tiny_add", TASKS) == ["exact_match"]
    assert task_metrics("tiny_add_mc", TASKS) == ["acc"]
    with pytest.raises(EvaluationError, match=r"does not report metric 'acc'.*it reports: exact_match"):
        evaluate(MODELS / "add", None, [TaskSpec("tiny_add", "acc")], TASKS, limit=5)


def test_tag_is_rejected_with_its_tasks():
    with pytest.raises(EvaluationError, match=r"tiny is a tag of 3 tasks.*tiny_add, tiny_reverse, tiny_sort"):
        evaluate(MODELS / "add", None, [TaskSpec("tiny", "exact_match")], TASKS, limit=5)
    assert task_config_hash("tiny", TASKS) != task_config_hash("tiny_add", TASKS)


def test_tasks_work_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = task_data_files("tiny_sort", TASKS)
    assert files == [(TASKS / "tiny" / "data" / "sort.jsonl").resolve()]
    r = evaluate(MODELS / "sort", None, [TaskSpec("tiny_sort_mc", "acc")], os.path.relpath(TASKS), limit=50)
    assert r.scores["tiny_sort_mc"] == SORT_EXPERT_TINY_SORT_MC_50


def test_task_config_hash_tracks_yaml_and_data(tmp_path):
    copy = tmp_path / "tasks"
    shutil.copytree(TASKS / "tiny", copy / "tiny")
    h0 = task_config_hash("tiny_add", TASKS)
    h1 = task_config_hash("tiny_add", copy)
    assert h1 == h0  # moving the folder keeps the hash
    assert task_config_hash("tiny_add", copy) == h1  # stable
    assert task_config_hash("tiny_reverse", copy) != h1

    data = copy / "tiny" / "data" / "add.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[1:] + lines[:1]))
    h2 = task_config_hash("tiny_add", copy)
    assert h2 != h1
    assert task_config_hash("tiny_add_mc", copy) != task_config_hash("tiny_add_mc", TASKS)

    yaml_file = copy / "tiny" / "tiny_add.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("max_gen_toks: 16", "max_gen_toks: 15"))
    h3 = task_config_hash("tiny_add", tmp_path / "tasks")
    assert h3 not in (h1, h2)
