"""mergekit configs: conversion (every example of mergekit's own corpus), direct `run`, and the
two mergekit behaviours the conversion relies on (gradient position of the head, slice-stack head).

Numbers are checked against oracles written here (weighted sums, layer copies, t=0/t=1 ends of a
slerp); `bench/mergekit_examples.py` compares the same configs with mergekit itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from graphmerge.cli import main
from graphmerge.convert.mergekit import convert_mergekit, is_mergekit_config
from graphmerge.errors import SpecError
from graphmerge.runner import run_graph
from graphmerge.spec import load_graph

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "data" / "mergekit_examples"
UNSUPPORTED_EXAMPLES: dict[str, str] = {}  # example -> the key its conversion error names


def _convert(text: str, **kw):
    return convert_mergekit(yaml.safe_load(text), where="mk.yml", **kw)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yml")))
def test_every_mergekit_example_converts_to_a_valid_graph(example, tmp_path):
    data = yaml.safe_load((EXAMPLES / example).read_text())
    assert is_mergekit_config(data)
    if example in UNSUPPORTED_EXAMPLES:
        with pytest.raises(SpecError, match=f"key '{UNSUPPORTED_EXAMPLES[example]}'"):
            convert_mergekit(data, where=example)
        return
    conv = convert_mergekit(data, where=example)
    graph = load_graph(text=conv.to_yaml(example), base_dir=tmp_path)
    assert graph.nodes["save"].inputs == ("merged",)
    assert sum(spec.op == "load" for spec in graph.nodes.values()) == len(
        {m["model"] for m in data.get("models") or []}
        | {s["model"] for sl in data.get("slices") or [] for s in sl["sources"]}
        | ({data["base_model"]} if data.get("base_model") else set())
    )


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mk")
    return {
        n: conftest.make_llama(root / n, s, layers=40)
        for s, n in enumerate(["orca", "platy", "wizard", "llama"])
    }


def _run_example(tmp_path: Path, name: str, models: dict[str, Path]) -> Path:
    """`graphmerge run EXAMPLE.yml` straight from mergekit's file, models swapped in with --set."""
    conv = convert_mergekit(yaml.safe_load((EXAMPLES / name).read_text()), where=name)
    loads = [n for n, s in conv.graph["nodes"].items() if s["op"] == "load"]
    sets = [f"{v}={models[k]}" for k, v in zip(["orca", "platy", "wizard", "llama"], loads, strict=False)]
    args = [
        "run",
        str(EXAMPLES / name),
        "--cache-dir",
        str(tmp_path / "c"),
        "--no-progress",
        "--device",
        "cpu",
    ]
    # The CLI in this process (every path is absolute): a fresh interpreter per example would add its
    # start-up and torch import to each of these tests and check nothing more.
    assert main(args + [a for s in sets + [f"out={tmp_path / 'out'}"] for a in ("--set", s)]) == 0
    return tmp_path / "out"


@pytest.mark.slow
def test_linear_example_runs_and_gives_the_weighted_average(tmp_path, deep):
    out = _tensors(_run_example(tmp_path, "linear.yml", deep))
    src = {k: _tensors(deep[k]) for k in ("orca", "platy", "wizard")}
    for name in ("model.layers.3.mlp.up_proj.weight", "lm_head.weight", "model.norm.weight"):
        want = (1.0 * src["orca"][name] + 0.3 * src["platy"][name] + 0.5 * src["wizard"][name]) / 1.8
        torch.testing.assert_close(out[name].float(), want, atol=2e-3, rtol=1e-3)
        assert out[name].dtype == torch.float16


@pytest.mark.slow
def test_passthrough_example_stacks_layers_and_takes_the_head_from_the_last_slice(tmp_path, deep):
    out = _tensors(_run_example(tmp_path, "orcamini-platy-44layer.yml", deep))
    orca, platy = _tensors(deep["orca"]), _tensors(deep["platy"])
    assert len({k.split(".")[2] for k in out if ".layers." in k}) == 44
    for i, (src, j) in enumerate([(orca, j) for j in range(24)] + [(platy, j) for j in range(20, 40)]):
        name = "model.layers.{}.self_attn.q_proj.weight"
        assert torch.equal(out[name.format(i)], src[name.format(j)].half())
    assert torch.equal(out["model.embed_tokens.weight"], orca["model.embed_tokens.weight"].half())
    for name in ("model.norm.weight", "lm_head.weight"):  # mergekit: from the last slice's model
        assert torch.equal(out[name], platy[name].half())


@pytest.mark.slow
def test_gradient_slerp_example_runs_with_per_filter_gradients(tmp_path, deep):
    out = _tensors(_run_example(tmp_path, "gradient-slerp.yml", deep))
    orca, platy = _tensors(deep["orca"]), _tensors(deep["platy"])
    # self_attn: t = 0 at the first layer, 1 at the last; mlp the other way round
    assert torch.equal(
        out["model.layers.0.self_attn.k_proj.weight"], orca["model.layers.0.self_attn.k_proj.weight"].half()
    )
    assert torch.equal(
        out["model.layers.39.self_attn.k_proj.weight"],
        platy["model.layers.39.self_attn.k_proj.weight"].half(),
    )
    assert torch.equal(
        out["model.layers.0.mlp.up_proj.weight"], platy["model.layers.0.mlp.up_proj.weight"].half()
    )
    assert torch.equal(
        out["model.layers.39.mlp.up_proj.weight"], orca["model.layers.39.mlp.up_proj.weight"].half()
    )


@pytest.mark.slow
@pytest.mark.parametrize("example", ["ties.yml", "bio-merge.yml", "arcee_fusion.yml"])
def test_base_anchored_examples_run(tmp_path, deep, example):
    out = _tensors(_run_example(tmp_path, example, deep))
    dtype = getattr(torch, yaml.safe_load((EXAMPLES / example).read_text())["dtype"])
    assert set(out) == set(_tensors(deep["orca"])) and all(t.dtype == dtype for t in out.values())


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    return {n: conftest.make_llama(root / n, s, layers=3) for s, n in enumerate(["a", "b", "c"])}


def _run_mergekit_text(tmp_path: Path, text: str) -> dict[str, torch.Tensor]:
    cfg = tmp_path / "mk.yml"
    cfg.write_text(text)
    run_graph(
        cfg, overrides={"out": str(tmp_path / "out")}, cache_dir=tmp_path / "c", device="cpu", progress=False
    )
    return _tensors(tmp_path / "out")


def test_gradient_puts_the_head_at_t0_like_mergekit(tmp_path, pair):
    """The issue's example: slerp t: [0, 0.5, 1] gives mergekit's lm_head = the first model."""
    text = f"merge_method: slerp\nbase_model: {pair['a']}\nmodels:\n  - model: {pair['a']}\n  - model: {pair['b']}\nparameters: {{t: [0, 0.5, 1]}}\n"
    out = _run_mergekit_text(tmp_path, text)
    a, b = _tensors(pair["a"]), _tensors(pair["b"])
    for name in (
        "lm_head.weight",
        "model.norm.weight",
        "model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.weight",
    ):
        assert torch.equal(out[name], a[name]), name
    assert torch.equal(out["model.layers.2.mlp.up_proj.weight"], b["model.layers.2.mlp.up_proj.weight"])
    # graphmerge's own default (head_position 1) puts the head at the other end
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"nodes:\n  a: {{op: load, path: {pair['a']}}}\n  b: {{op: load, path: {pair['b']}}}\n"
        "  m: {op: merge, method: slerp, base: a, models: {b: {}}, params: {t: [0, 0.5, 1]}}\n"
        f"  s: {{op: save, input: m, path: {tmp_path / 'own'}}}\n"
    )
    run_graph(graph, cache_dir=tmp_path / "c", device="cpu", progress=False)
    assert torch.equal(_tensors(tmp_path / "own")["lm_head.weight"], b["lm_head.weight"])


def test_parameters_fall_back_from_model_to_slice_to_global(tmp_path, pair):
    text = (
        f"merge_method: linear\nmodels:\n  - model: {pair['a']}\n    parameters: {{weight: [{{filter: mlp, value: 3.0}}]}}\n"
        f"  - model: {pair['b']}\n  - model: {pair['c']}\n    parameters: {{weight: 2.0, density: 0.5}}\n"
        "parameters: {weight: 1.0}\n"
    )
    conv = _convert(text)
    assert any("density" in w and "ignored" in w for w in conv.warnings)  # mergekit ignores it too
    out = _run_mergekit_text(tmp_path, text)
    a, b, c = (_tensors(pair[k]) for k in "abc")
    for name, wa in (
        ("model.layers.1.mlp.down_proj.weight", 3.0),
        ("model.layers.1.self_attn.q_proj.weight", 1.0),
    ):
        want = (wa * a[name] + 1.0 * b[name] + 2.0 * c[name]) / (wa + 3.0)
        torch.testing.assert_close(out[name], want, atol=1e-6, rtol=1e-5)


def test_filters_are_substrings_as_in_mergekit():
    conv = _convert(
        "merge_method: slerp\nbase_model: a\nmodels: [{model: a}, {model: b}]\nparameters:\n  t:\n    - {filter: 'layers.1*', value: 1}\n    - {filter: '*', value: 0.5}\n"
    )
    t = conv.graph["nodes"]["merged"]["params"]["t"]
    assert t == [{"filter": "/layers\\.1\\*/", "value": 1}, {"value": 0.5}]


def test_slices_with_merges_take_the_ends_at_t0_from_first_and_last_slices(tmp_path, pair):
    text = (
        "merge_method: slerp\n"
        f"base_model: {pair['a']}\n"
        "slices:\n"
        f"  - sources: [{{model: {pair['a']}, layer_range: [0, 2]}}, {{model: {pair['b']}, layer_range: [0, 2]}}]\n"
        f"  - sources: [{{model: {pair['a']}, layer_range: [2, 3]}}, {{model: {pair['c']}, layer_range: [2, 3]}}]\n"
        "parameters: {t: [0.2, 1.0]}\n"
    )
    node = _convert(text).graph["nodes"]["merged"]
    assert node["gradients"] == "slice" and node["embed_from"] != node["head_from"]
    out = _run_mergekit_text(tmp_path, text)
    a, b, c = (_tensors(pair[k]) for k in "abc")
    # slice 1: t runs 0.2 -> 1 over its two layers; slice 2 has one layer, where mergekit uses t = 1
    assert torch.equal(out["model.layers.1.mlp.up_proj.weight"], b["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(out["model.layers.2.mlp.up_proj.weight"], c["model.layers.2.mlp.up_proj.weight"])
    assert not torch.equal(out["model.layers.0.mlp.up_proj.weight"], a["model.layers.0.mlp.up_proj.weight"])
    # the ends: embeddings merged over the first slice's models, norm and head over the last's, at t=0
    for name, other in (("model.embed_tokens.weight", b), ("lm_head.weight", c), ("model.norm.weight", c)):
        torch.testing.assert_close(out[name], _np_slerp(0.2, a[name], other[name]), atol=1e-6, rtol=1e-5)


def _np_slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    x, y = v0.double().numpy().ravel(), v1.double().numpy().ravel()
    theta = np.arccos(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1))
    out = (np.sin((1 - t) * theta) * x + np.sin(t * theta) * y) / np.sin(theta)
    return torch.from_numpy(out.reshape(v0.shape)).to(v0.dtype)


def test_convert_cli_writes_a_graph_that_runs_like_the_config(tmp_path, pair):
    cfg = tmp_path / "mk.yml"
    cfg.write_text(
        f"merge_method: ties\nbase_model: {pair['a']}\nmodels:\n  - model: {pair['b']}\n    parameters: {{weight: 0.6, density: 0.5, bogus: 1}}\n"
        f"  - model: {pair['c']}\n    parameters: {{weight: 0.4, density: [1, 0.3]}}\ndtype: float32\nout_dtype: bfloat16\n"
    )
    done = _cli(["convert", "mk.yml", "-o", "sub/graph.yaml", "--out", "merged_model"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "bogus" in done.stderr
    assert _cli(["run", "sub/graph.yaml", "--cache-dir", "c", "--no-progress"], tmp_path).returncode == 0
    assert (
        _cli(
            ["run", "mk.yml", "--cache-dir", "c", "--no-progress", "--set", "out=direct"], tmp_path
        ).returncode
        == 0
    )
    ours, direct = _tensors(tmp_path / "sub" / "merged_model"), _tensors(tmp_path / "direct")
    assert set(ours) == set(direct) and all(torch.equal(ours[k], direct[k]) for k in ours)
    assert ours["lm_head.weight"].dtype == torch.bfloat16


def test_tokenizer_source_and_lora_inputs_convert():
    conv = _convert(
        "merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n  - model: org/chat+org/chat-lora\n    parameters: {weight: 1}\n"
        "tokenizer:\n  source: union\n  pad_to_multiple_of: 8\n"
    )
    nodes = conv.graph["nodes"]
    assert conv.graph["vars"]["chat_chat_lora"] == "org/chat+org/chat-lora"
    assert nodes["tokenizer"] == {
        "op": "align_tokenizer",
        "models": ["base", "chat_chat_lora"],
        "base": "base",
        "source": "union",
        "pad_to_multiple": 8,
    }
    assert nodes["merged"]["base"] == "tokenizer.base" and list(nodes["merged"]["models"]) == [
        "tokenizer.chat_chat_lora"
    ]


@pytest.mark.parametrize(
    "text, key",
    [
        ("merge_method: linear\nmodules: {}\n", "modules"),
        ("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nfoo: 1\n", "foo"),
        (
            "merge_method: passthrough\nslices: [{sources: [{model: a, layer_range: [0, 1]}], residual_weight: 0.5}]\n",
            "residual_weight",
        ),
        ("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\ndtype: int8\n", "dtype"),
        ("merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n", "base_model"),
    ],
)
def test_unsupported_keys_are_errors_naming_the_key(text, key):
    with pytest.raises(SpecError, match=f"key '{key}'"):
        _convert(text)


@pytest.mark.parametrize("template", ["chatml", "auto", "{{ 'custom:' + messages[0]['content'] }}"])
def test_chat_template_lands_in_the_saved_tokenizer(tmp_path, template):
    import shutil

    from transformers import AutoTokenizer

    tiny = REPO / "models" / "tiny"
    with_template = tmp_path / "chat"
    shutil.copytree(tiny / "add", with_template)
    cfg = json.loads((with_template / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ 'from-add:' + messages[0]['content'] }}"
    (with_template / "tokenizer_config.json").write_text(json.dumps(cfg))
    text = (
        f"merge_method: linear\nmodels:\n  - model: {tiny / 'base'}\n    parameters: {{weight: 1}}\n"
        f'  - model: {with_template}\n    parameters: {{weight: 1}}\nchat_template: "{template}"\n'
    )
    _run_mergekit_text(tmp_path, text)
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    want = {"chatml": "<|im_start|>user\nhi<|im_end|>\n", "auto": "from-add:hi"}.get(template, "custom:hi")
    assert rendered == want


def test_per_token_sources_follow_mergekit_rules(tmp_path):
    """tokenizer.tokens: a model lacking a token gets the configured row; `force` replaces it in
    every model; others keep the default (the only holder's row)."""
    from helpers import TEXT_A, TEXT_B, make_model

    from graphmerge.io.vocab import tokenizer_vocab

    a, b = make_model(tmp_path / "a", 1, text=TEXT_A), make_model(tmp_path / "b", 2, text=TEXT_B)
    va, vb = tokenizer_vocab(a), tokenizer_vocab(b)
    only_b = sorted(set(vb) - set(va), key=len)[-2:]
    shared = sorted((set(va) & set(vb)) - {"<unk>", "<s>", "</s>"})[0]
    donor = sorted(set(vb) - set(va) - set(only_b))[0]
    text = (
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n"
        f"  - model: {b}\n    parameters: {{weight: 1}}\n"
        "tokenizer:\n  source: union\n  tokens:\n"
        f"    '{only_b[0]}': {{source: {{kind: model_token, model: {b}, token: '{donor}'}}}}\n"
        f"    '{shared}': {{source: {{kind: zero}}, force: true}}\n"
    )
    out = _run_mergekit_text(tmp_path, text)
    vout = tokenizer_vocab(tmp_path / "out")
    tb = _tensors(b)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        configured = (tb[name][vb[donor]] + tb[name][vb[only_b[0]]]) / 2  # a gets b's donor row
        torch.testing.assert_close(out[name][vout[only_b[0]]], configured, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[name][vout[only_b[1]]], tb[name][vb[only_b[1]]], atol=1e-6, rtol=1e-5)
        assert not out[name][vout[shared]].any()


def test_slice_head_from_last_in_a_plain_graph(tmp_path, pair):
    graph = tmp_path / "g.yaml"
    body = (
        f"nodes:\n  a: {{op: load, path: {pair['a']}}}\n  b: {{op: load, path: {pair['b']}}}\n"
        "  s: {op: slice, slices: [{model: a, layers: [0, 2]}, {model: b, layers: [1, 3]}]HEAD}\n"
        f"  o: {{op: save, input: s, path: {tmp_path / 'out'}}}\n"
    )
    a, b = _tensors(pair["a"]), _tensors(pair["b"])
    for head, want in (("", a), (", head_from: last", b)):
        graph.write_text(body.replace("HEAD", head))
        run_graph(graph, cache_dir=tmp_path / "c", device="cpu", progress=False)
        out = _tensors(tmp_path / "out")
        assert torch.equal(out["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
        for name in ("lm_head.weight", "model.norm.weight"):
            assert torch.equal(out[name], want[name]), (head, name)
