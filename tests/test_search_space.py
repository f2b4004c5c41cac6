"""YAML-shaped search spaces, config validation and template substitution."""

from __future__ import annotations

import pytest

from graphmerge.errors import SpecError
from graphmerge.optimize.problem import substitute_params
from graphmerge.search.sampling import sample_configs
from graphmerge.search.space import config_key, space_fingerprint, validate_config
from graphmerge.search.space_yaml import build_space

SPEC = {
    "params": {
        "method": {"type": "categorical", "choices": ["linear", "ties"], "default": "linear"},
        "density": {"type": "float", "low": 0.1, "high": 1.0},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "k": {"type": "int", "low": 1, "high": 8, "default": 2},
        "size": {"type": "ordinal", "choices": ["s", "m", "l"]},
        "const": {"type": "constant", "value": 7},
    },
    "conditions": [{"child": "density", "parent": "method", "equals": "ties"}],
    "forbidden": [{"all": [{"param": "method", "equals": "ties"}, {"param": "k", "in": [7, 8]}]}],
}


def test_build_space_with_conditions_and_forbidden():
    cs = build_space(SPEC)
    assert set(cs.keys()) == {"method", "density", "lr", "k", "size", "const"}
    assert cs["lr"].log and cs["k"].default_value == 2
    for d in sample_configs(cs, 30, seed=0):
        assert ("density" in d) == (d["method"] == "ties")
        assert not (d["method"] == "ties" and d["k"] in (7, 8))
    assert space_fingerprint(cs) == space_fingerprint(build_space(SPEC, seed=5))
    changed = {**SPEC, "params": {**SPEC["params"], "k": {"type": "int", "low": 1, "high": 9}}}
    assert space_fingerprint(build_space(changed)) != space_fingerprint(cs)


def test_several_conditions_on_one_child_are_anded():
    spec = {
        "params": {
            "a": {"type": "categorical", "choices": [0, 1]},
            "b": {"type": "categorical", "choices": [0, 1]},
            "x": {"type": "float", "low": 0, "high": 1},
        },
        "conditions": [{"child": "x", "parent": "a", "equals": 1}, {"child": "x", "parent": "b", "in": [1]}],
    }
    cs = build_space(spec)
    for d in sample_configs(cs, 20, seed=0):
        assert ("x" in d) == (d["a"] == 1 and d["b"] == 1)


@pytest.mark.parametrize(
    "spec, where, message",
    [
        ({}, "search.params", "non-empty"),
        ({"params": {"x": {"type": "floaty"}}}, "search.params.x", "type"),
        ({"params": {"x": {"type": "float", "low": 1}}}, "search.params.x", "`high` is required"),
        ({"params": {"x": {"type": "float", "low": 2, "high": 1}}}, "search.params.x", "smaller"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1, "log": True}}}, "search.params.x", "> 0"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1, "step": 2}}}, "search.params.x", "step"),
        ({"params": {"x": {"type": "int", "low": 0.5, "high": 3}}}, "search.params.x", "integer"),
        ({"params": {"c": {"type": "categorical", "choices": []}}}, "search.params.c", "choices"),
        ({"params": {"c": {"type": "categorical", "choices": ["a", "a"]}}}, "search.params.c", "duplicates"),
        (
            {"params": {"c": {"type": "categorical", "choices": ["a"], "default": "b"}}},
            "search.params.c",
            "default",
        ),
        ({"params": {"c": {"type": "constant"}}}, "search.params.c", "value"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1}}, "extra": 1}, "search", "extra"),
        (
            {**SPEC, "conditions": [{"child": "nope", "parent": "method", "equals": "ties"}]},
            "search.conditions[0]",
            "unknown parameter 'nope'",
        ),
        (
            {**SPEC, "conditions": [{"child": "density", "parent": "method", "equals": "slerp"}]},
            "search.conditions[0]",
            "not legal",
        ),
        (
            {**SPEC, "conditions": [{"child": "density", "parent": "method"}]},
            "search.conditions[0]",
            "exactly one",
        ),
        (
            {**SPEC, "forbidden": [{"all": [{"param": "k", "equals": 99}]}]},
            "search.forbidden[0].all[0]",
            "not legal",
        ),
        ({**SPEC, "forbidden": [{"all": []}]}, "search.forbidden[0]", "non-empty"),
    ],
)
def test_spec_errors_name_the_key(spec, where, message):
    with pytest.raises(SpecError) as e:
        build_space(spec)
    assert e.value.where == where and message in str(e.value)


def test_validate_config_fixed_path():
    cs = build_space(SPEC)
    cfg = {"method": "linear", "density": 0.5, "lr": 0.01, "k": 3, "size": "m", "const": 7}
    out = validate_config(cs, cfg)
    assert "density" not in out  # inactive values are dropped, not rejected
    assert validate_config(cs, out) == out
    with pytest.raises(SpecError, match="unknown parameter `K`.*did you mean `k`"):
        validate_config(cs, {**cfg, "K": 1})
    with pytest.raises(SpecError, match="`k`"):
        validate_config(cs, {**cfg, "k": 100})
    with pytest.raises(SpecError, match="missing value for active parameter `density`"):
        validate_config(cs, {**{k: v for k, v in cfg.items() if k != "density"}, "method": "ties"})
    with pytest.raises(SpecError, match="forbidden"):
        validate_config(cs, {**cfg, "method": "ties", "k": 8})
    assert config_key({"b": 1, "a": 0.1}) == config_key({"a": 0.1, "b": 1})


def test_substitute_params_keeps_types_and_drops_inactive():
    template = {
        "merged": {
            "op": "merge",
            "method": "${params.method}",
            "models": {"a": {"weight": "${params.w}", "density": "${params.density}"}},
            "params": {"k": "${params.k}", "note": "k=${params.k} m=${params.method}"},
        },
        "eval": {
            "op": "evaluate",
            "input": "merged",
            "limit": "${budget}",
            "values": ["${params.density}", 1],
        },
    }
    out = substitute_params(template, {"method": "linear", "w": 0.25, "k": 3}, 50)
    assert out["merged"]["method"] == "linear"
    assert out["merged"]["models"]["a"] == {"weight": 0.25}  # inactive density dropped
    assert out["merged"]["params"] == {"k": 3, "note": "k=3 m=linear"}
    assert isinstance(out["merged"]["params"]["k"], int) and out["eval"]["limit"] == 50
    assert out["eval"]["values"] == [1]
    no_budget = substitute_params(template, {"method": "ties", "w": 1.0, "k": 1, "density": 0.5}, None)
    assert "limit" not in no_budget["eval"] and no_budget["merged"]["models"]["a"]["density"] == 0.5
    assert template["eval"]["limit"] == "${budget}"  # the template is not modified
    with pytest.raises(SpecError, match="no value"):
        substitute_params({"x": "a${params.density}"}, {}, None)
    with pytest.raises(SpecError, match="names no parameter"):
        substitute_params({"x": "${params.typo}"}, {}, None, known=["density"])
