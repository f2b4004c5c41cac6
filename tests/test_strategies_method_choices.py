"""LFS and explicit spaces with the new merge methods: conditional hyperparameters, trial nodes that
read a statistics node, and one fixed configuration run end to end on the bundled tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from graphmerge.errors import SpecError
from graphmerge.runner import run_graph
from graphmerge.search.sampling import sample_configs
from graphmerge.spec import build_graph
from graphmerge.strategies import ModelInfo, get_strategy, parse_settings

REPO = Path(__file__).resolve().parent.parent
MODELS = ["add", "reverse"]
INFO = ModelInfo({"add": 4, "reverse": 4, "base": 4})
NEW = ["tsv_m", "iso_c", "iso_cts", "wudi", "regmean", "fisher"]
CALIBRATION = {"file": str(REPO / "models" / "tiny" / "calibration.jsonl"), "max_tokens": 256}


def settings(**extra):
    return parse_settings(
        "lfs",
        {
            "models": MODELS,
            "base": "base",
            "layer_granularity": 2,
            "methods": ["linear", *NEW],
            "calibration": CALIBRATION,
            **extra,
        },
    )


def test_new_method_parameters_are_conditional():
    s = settings()
    cs = get_strategy("lfs").build_space(s, INFO)
    names = set(cs)
    for g in range(2):
        for m in ("tsv_m", "iso_c", "iso_cts", "wudi"):
            assert {f"g{g}_{p}_{m}_lambda" for p in ("attn", "mlp", "other")} <= names
        assert f"g{g}_iso_cts_common_fraction" in names and f"g{g}_attn_regmean_alpha" in names
        assert not any(k.startswith(f"g{g}_") and "fisher" in k for k in names)  # nothing to search
    for cfg in sample_configs(cs, 30, seed=0):
        for g in range(2):
            method = cfg[f"g{g}_method"]
            active = [k for k in cfg if k.startswith(f"g{g}_") and k != f"g{g}_method"]
            assert all(f"_{method}_" in k for k in active)


@pytest.mark.parametrize("method", NEW)
def test_trial_nodes_of_each_new_method_build_a_valid_graph(method):
    s = settings()
    cs = get_strategy("lfs").build_space(s, INFO)
    cfg = next(c for c in sample_configs(cs, 200, seed=0) if c["g0_method"] == method)
    nodes = get_strategy("lfs").trial_nodes(cfg, s, INFO)
    spec = nodes["model"]["slices"][0]["merge"]
    assert spec["method"] == method
    if method in ("regmean", "fisher"):
        stats = nodes[spec["statistics"]]
        assert stats["op"] == "statistics" and stats["models"] == MODELS
        assert "base" not in spec
    else:
        assert spec["base"] == "base" and "statistics" not in spec
    outer = {m: {"op": "load", "path": str(REPO / "models" / "tiny" / m)} for m in ("base", *MODELS)}
    build_graph({"nodes": {**outer, **nodes}}, graph_dir=REPO)  # validates every node


def test_calibrated_methods_need_calibration():
    with pytest.raises((ValidationError, SpecError), match="calibration"):
        settings(calibration=None)


@pytest.mark.slow
def test_one_lfs_configuration_with_regmean_and_tsv_runs(tmp_path):
    config = {"g0_method": "regmean", "g1_method": "tsv_m"}
    for p in ("attn", "mlp", "other"):
        config[f"g0_{p}_regmean_alpha"] = 0.9
        config[f"g1_{p}_tsv_m_lambda"] = 0.5
    tiny = REPO / "models" / "tiny"
    graph = {
        "nodes": {
            **{m: {"op": "load", "path": str(tiny / m)} for m in ("base", *MODELS)},
            "search": {
                "op": "optimize",
                "strategy": "lfs",
                "base": "base",
                "models": MODELS,
                "settings": {
                    "layer_granularity": 2,
                    "methods": ["regmean", "tsv_m", "fisher"],
                    "calibration": CALIBRATION,
                    "embed": "average",
                },
                "objectives": [{"task": "tiny_add"}],
                "include_path": [str(REPO / "graphs" / "tasks")],
                "evaluation": {"limit": 10},
                "config": config,
                "out": str(tmp_path / "out"),
            },
        }
    }
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(graph))
    first = run_graph(path, cache_dir=tmp_path / "c", progress=False)
    assert first.stats.statistics_computed == 2 * 17
    second = run_graph(path, cache_dir=tmp_path / "c", progress=False)
    assert second.stats.statistics_computed == 0 and second.stats.statistics_cached >= 2 * 17
    assert second.stats.tasks_executed == 0


def test_explicit_space_template_with_conditional_method_parameters():
    from graphmerge.optimize.problem import substitute_params
    from graphmerge.search import build_space

    space = build_space(
        {
            "params": {
                "method": {"type": "categorical", "choices": ["tsv_m", "regmean"]},
                "lam": {"type": "float", "low": 0.1, "high": 1.0},
                "alpha": {"type": "float", "low": 0.0, "high": 1.0},
            },
            "conditions": [
                {"child": "lam", "parent": "method", "equals": "tsv_m"},
                {"child": "alpha", "parent": "method", "equals": "regmean"},
            ],
        },
        seed=0,
        where="space",
    )
    template = {
        "stats": {"op": "statistics", "kind": "gram", "models": MODELS, "calibration": CALIBRATION},
        "model": {
            "op": "merge",
            "method": "${params.method}",
            "base": "base",
            "statistics": "stats",  # methods that read no statistics ignore it
            "models": {m: {} for m in MODELS},
            "params": {"lambda": "${params.lam}", "alpha": "${params.alpha}"},
        },
    }
    outer = {m: {"op": "load", "path": str(REPO / "models" / "tiny" / m)} for m in ("base", *MODELS)}
    for method, params in (("tsv_m", {"lam": 0.3}), ("regmean", {"alpha": 0.5})):
        nodes = substitute_params(template, {"method": method, **params}, None, known=list(space))
        assert set(nodes["model"]["params"]) == {"lambda" if method == "tsv_m" else "alpha"}
        build_graph({"nodes": {**outer, **nodes}}, graph_dir=REPO)
