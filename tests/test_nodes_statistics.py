"""The `statistics` node on the bundled tiny models: Gram matrices against per-sequence forward hooks,
Fisher diagonals against explicit autograd, content-addressed caching (a second run computes none),
layer passes that give the same numbers, and calibration from lm-eval task documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphmerge.cache import Cache
from graphmerge.evaluation import build_model, load_tokenizer
from graphmerge.io.folder import ModelFolder
from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"
DOCS = ["12+34=46.", "abcd>dcba.", "dbca:abcd.", "55+10=65.", "zyx>xyz."]


def graph(tmp_path: Path, kind: str, models=("add", "reverse"), extra: str = "", merge: str = "") -> Path:
    (tmp_path / "calib.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    loads = "".join(f"  {m}: {{op: load, path: {TINY / m}}}\n" for m in ("base", *models))
    text = (
        "nodes:\n"
        + loads
        + f"  stats:\n    op: statistics\n    kind: {kind}\n    models: [{', '.join(models)}]\n"
        + f"    calibration: {{file: calib.jsonl}}\n{extra}"
        + merge
    )
    (tmp_path / "g.yaml").write_text(text)
    return tmp_path / "g.yaml"


def hf(name: str):
    folder = ModelFolder.open(TINY / name)
    tensors = {n: folder.read(n) for n in folder.tensor_names}
    return build_model(dict(folder.config), tensors)


def token_ids(name: str) -> list[list[int]]:
    tok = load_tokenizer(TINY / name)
    return [list(tok(d)["input_ids"]) for d in DOCS]


def stored(cache_dir: Path, stats, model_key: str) -> dict[str, torch.Tensor]:
    cache = Cache(cache_dir)
    try:
        return {n: cache.get_tensor(t.key) for n, t in stats.tasks[model_key].items()}
    finally:
        cache.close()


def test_gram_matrices_match_per_sequence_hooks(tmp_path):
    result = run_graph(graph(tmp_path, "gram", ("add",)), cache_dir=tmp_path / "c", progress=False)
    stats = result.values["stats"]
    grams = stored(tmp_path / "c", stats, result.values["add"].key)

    model = hf("add")
    inputs: dict[str, list[torch.Tensor]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(
                lambda m, a, o, name=name: inputs.setdefault(name, []).append(a[0][0])
            )
    with torch.no_grad():
        for ids in token_ids("add"):  # one sequence at a time: no padding involved
            model(torch.tensor([ids]))
    for name, xs in inputs.items():
        x = torch.cat(xs)
        torch.testing.assert_close(grams[f"{name}.weight"], x.T @ x / len(x), atol=1e-5, rtol=1e-4)
    # q, k and v read one input: one stored Gram matrix
    tasks = stats.tasks[result.values["add"].key]
    attn = "model.layers.0.self_attn"
    assert tasks[f"{attn}.q_proj.weight"].key == tasks[f"{attn}.k_proj.weight"].key
    assert tasks[f"{attn}.q_proj.weight"].key != tasks[f"{attn}.o_proj.weight"].key
    assert result.stats.statistics_computed == 4 * 4 + 1  # per layer: attn in, o, mlp in, down; head


def test_fisher_matches_explicit_autograd(tmp_path):
    result = run_graph(graph(tmp_path, "fisher", ("add",)), cache_dir=tmp_path / "c", progress=False)
    fisher = stored(tmp_path / "c", result.values["stats"], result.values["add"].key)

    model = hf("add")
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    seqs = token_ids("add")
    for ids in seqs:
        model.zero_grad()
        logits = model(torch.tensor([ids])).logits[0]
        loglik = 0.0
        for t in range(len(ids) - 1):  # the model's own greedy prediction after each prefix
            logp = torch.log_softmax(logits[t], dim=-1)
            loglik = loglik + logp[int(logp.argmax())]
        loglik.backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad**2
    assert set(fisher) == set(expected)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n] / len(seqs), atol=1e-7, rtol=1e-3)


@pytest.mark.parametrize("kind", ["gram", "fisher"])
def test_layer_passes_give_the_same_statistics(tmp_path, kind):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = run_graph(graph(tmp_path / "a", kind, ("add",)), cache_dir=tmp_path / "c1", progress=False)
    two = run_graph(
        graph(tmp_path / "b", kind, ("add",), extra="    layers_per_pass: 1\n    batch_size: 2\n"),
        cache_dir=tmp_path / "c2",
        progress=False,
    )
    key = one.values["add"].key
    a = stored(tmp_path / "c1", one.values["stats"], key)
    b = stored(tmp_path / "c2", two.values["stats"], key)
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-4)


def test_second_run_computes_no_statistics_and_merges_nothing(tmp_path):
    merge = (
        "  merged:\n    op: merge\n    method: regmean\n    statistics: stats\n"
        "    models: {add: null, reverse: null}\n"
        "  sliced:\n    op: slice\n    slices:\n"
        "      - {merge: {method: regmean, statistics: stats, models: {add: null, reverse: null}}, layers: [0, 2]}\n"
        "      - {model: add, layers: [2, 4]}\n"
        "  save_merged: {op: save, input: merged, path: out/merged}\n"
        "  save_sliced: {op: save, input: sliced, path: out/sliced}\n"
    )
    path = graph(tmp_path, "gram", merge=merge)
    first = run_graph(path, cache_dir=tmp_path / "c", progress=False)
    assert first.stats.statistics_computed == 2 * 17
    assert first.stats.tasks_executed > 0
    second = run_graph(path, cache_dir=tmp_path / "c", progress=False)
    assert second.summary()["statistics"] == {"computed": 0, "cached": 2 * 17}
    assert second.stats.tasks_executed == 0
    # The merged q_proj is RegMean of the two models' weights with their stored Gram matrix.
    from graphmerge.methods.regmean import regmean_weight

    name = "model.layers.1.self_attn.q_proj.weight"
    stats = first.values["stats"]
    grams = [stored(tmp_path / "c", stats, first.values[m].key)[name] for m in ("add", "reverse")]
    weights = [ModelFolder.open(TINY / m).read(name) for m in ("add", "reverse")]
    merged = ModelFolder.open(tmp_path / "out" / "merged").read(name)
    sliced = ModelFolder.open(tmp_path / "out" / "sliced").read(name)
    torch.testing.assert_close(merged, regmean_weight(weights, grams, 0.9), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sliced, merged)


def test_calibration_from_lm_eval_task_documents():
    from graphmerge.evaluation.calibration import task_documents

    docs = list(task_documents(["tiny_add", "tiny_sort"], [str(REPO / "graphs" / "tasks")], 3))
    rows = [json.loads(x) for x in (REPO / "graphs/tasks/tiny/data/add.jsonl").read_text().splitlines()[:3]]
    assert docs[:3] == [r["prompt"] + r["answer"] for r in rows]
    assert len(docs) == 6 and ":" in docs[3]


def test_tokenize_respects_the_token_budget():
    from graphmerge.evaluation.calibration import tokenize

    tok = load_tokenizer(TINY / "add")
    seqs = tokenize(iter(DOCS), tok, max_tokens=15, max_length=6)
    assert [len(s) for s in seqs] == [6, 6, 3]


def test_statistics_node_reads_lm_eval_task_documents(tmp_path):
    (tmp_path / "g.yaml").write_text(
        f"nodes:\n  add: {{op: load, path: {TINY / 'add'}}}\n"
        "  stats:\n    op: statistics\n    kind: gram\n    models: [add]\n"
        f"    calibration: {{tasks: [tiny_add, tiny_sort], include_path: [{REPO / 'graphs' / 'tasks'}], limit: 4, max_tokens: 40}}\n"
    )
    result = run_graph(tmp_path / "g.yaml", cache_dir=tmp_path / "c", progress=False)
    assert result.stats.statistics_computed == 17
    grams = stored(tmp_path / "c", result.values["stats"], result.values["add"].key)
    assert all(torch.isfinite(g).all() for g in grams.values())
