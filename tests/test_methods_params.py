"""Merge-method parameters: declared once (MethodParams dataclasses), resolved once per tensor by the
merge node (graphmerge.nodes.merge.tensor_params), keyed exactly as the plain values they stand for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from method_helpers import call_method, resolved

import graphmerge.nodes.builtin  # noqa: F401  (registers the merge node and tensor op)
from graphmerge.errors import MergeError
from graphmerge.methods import (
    MergeInputs,
    MethodParams,
    ParamSpec,
    all_methods,
    get_method,
    merge_method,
    param,
)
from graphmerge.methods.params import resolve, specs, with_defaults
from graphmerge.methods.task_arithmetic import VARIANTS, Sparsify, Variant
from graphmerge.nodes.io import open_folder
from graphmerge.nodes.merge import MergeParams, plan_merge
from graphmerge.plan import Model, make_task

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny"


@dataclasses.dataclass(frozen=True)
class Example(MethodParams):
    weight: float = param(doc="required")
    steps: int = param(3, ge=1, le=10)
    lam: float = param(1.0, name="lambda")
    mode: str = param("a")
    flag: bool = param(False)


def test_resolve_fills_defaults_and_converts_types():
    got = resolve(Example, {"weight": 2, "steps": 4.0, "flag": "true"}, method="m")
    assert got == Example(weight=2.0, steps=4, lam=1.0, mode="a", flag=True)
    assert type(got.weight) is float and type(got.steps) is int
    assert got.model_dump() == {"weight": 2.0, "steps": 4, "lambda": 1.0, "mode": "a", "flag": True}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "m: parameter `weight` of model a is required"),
        ({"weight": "x"}, "`weight` of model a must be a number, not 'x'"),
        ({"weight": True}, "`weight` of model a must be a number, not True"),
        ({"weight": float("nan")}, "`weight` of model a is NaN"),
        ({"weight": 1, "steps": 11}, r"`steps` of model a = 11 is outside \[1, 10\]"),
        ({"weight": 1, "steps": 2.5}, "`steps` of model a = 2.5 must be a whole number"),
        ({"weight": 1, "flag": "yes"}, "`flag` of model a must be true or false, not 'yes'"),
        ({"weight": 1, "mode": 3}, "`mode` of model a = 3 must be one of a string"),
        ({"weight": 1, "lambda": "big"}, "`lambda` of model a must be a number"),
    ],
)
def test_resolve_rejects_with_one_line_naming_the_parameter(given, message):
    with pytest.raises(MergeError, match=message) as err:
        resolve(Example, given, method="m", model="a", where="node 'n'")
    assert err.value.where == "node 'n'" and "\n" not in str(err.value)


def test_declared_specs_are_the_views_listings_use():
    declared = specs(Example)
    assert list(declared) == ["weight", "steps", "lambda", "mode", "flag"]
    assert declared["weight"].required and declared["steps"] == ParamSpec(3, int, 1, 10)
    ties = get_method("ties")
    assert ties.global_params["consensus_method"].choices == ("none", "sum", "count")
    assert ties.global_params["consensus_method"].default == "sum"
    assert get_method("task_arithmetic").global_params["consensus_method"].default == "none"


def _plain_fill(declared: dict[str, ParamSpec], given: dict) -> dict:
    """The values the cache key was made of before typed declarations: defaults filled, numbers
    converted to the declared kind, everything else as given."""
    out = {}
    for key, spec in declared.items():
        value = given.get(key, spec.default)
        out[key] = spec.kind(value) if spec.kind in (float, int) else value
    return out


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_task_keys_equal_keys_of_the_plain_values(name):
    m = get_method(name)
    per_model_given = [{k: 0.1 if k == "epsilon" else 0.5 for k in m.model_params} for _ in range(2)]
    global_given = {"t": 0.25} if "t" in m.global_params else {}
    method, per_model, global_params = resolved(name, per_model_given, global_given)
    read = make_task("read", identity="x", shape=(2,), dtype="float32")

    def merge_task(model_params, params):
        return make_task(
            "merge", [read], method=name, method_version=m.version, model_params=model_params, params=params
        )

    plain = [_plain_fill(m.model_params, g) for g in per_model_given]
    assert (
        merge_task(per_model, global_params).key
        == merge_task(plain, _plain_fill(m.global_params, global_given)).key
    )


def _tiny(name: str) -> Model:
    folder = open_folder(TINY / name)
    tasks = {
        n: make_task("read", identity=(name, n), shape=tuple(folder.info(n).shape), dtype="float32")
        for n in folder.tensor_names
    }
    return Model(config=folder.config, tensors=tasks)


@pytest.fixture(scope="module")
def tiny_models():
    return {n: _tiny(n) for n in ("base", "add", "reverse")}


def _keys(sources, **spec):
    tasks = plan_merge(MergeParams(**spec), sources, graph_seed=0, where="m")
    return {n: t.key for n, t in tasks.items()}


def test_linear_base_weight_from_the_bases_models_entry(tiny_models):
    """mergekit lists the base among the models with its own weight; that is `base_weight`."""
    as_model = _keys(
        tiny_models,
        method="linear",
        base="base",
        models={"base": {"weight": [0.2, 0.6]}, "add": {"weight": 1.0}},
    )
    as_param = _keys(
        tiny_models,
        method="linear",
        base="base",
        models={"add": {"weight": 1.0}},
        params={"base_weight": [0.2, 0.6]},
    )
    ignored = _keys(tiny_models, method="linear", base="base", models={"add": {"weight": 1.0}})
    assert as_model == as_param and as_model != ignored
    with pytest.raises(ValueError, match="both weigh the base"):
        MergeParams(
            method="linear",
            base="base",
            models={"base": {"weight": 1}, "add": {"weight": 1}},
            params={"base_weight": 1},
        )


@dataclasses.dataclass(frozen=True)
class Sum(MethodParams):
    base_scale: float = param(0.0)


@merge_method("test_base_scaled_sum", version="1", params=Sum, base_weight="base_scale")
def base_scaled_sum(x: MergeInputs[MethodParams, Sum]) -> torch.Tensor:
    """Sum of the models plus base_scale times the base."""
    out = torch.stack(list(x.tensors)).sum(0)
    return out if x.base is None else out + x.params.base_scale * x.base


def test_base_weight_is_a_declaration_not_a_method_name(tiny_models):
    keys = _keys(
        tiny_models, method="test_base_scaled_sum", base="base", models={"base": {"weight": 2}, "add": None}
    )
    same = _keys(
        tiny_models,
        method="test_base_scaled_sum",
        base="base",
        models={"add": None},
        params={"base_scale": 2},
    )
    assert keys == same
    with pytest.raises(ValueError, match="the base takes no per-model parameters for ties"):
        MergeParams(method="ties", base="base", models={"base": {"weight": 1}, "add": {"weight": 1}})


def test_filters_and_gradients_are_resolved_before_the_method_sees_them():
    weights = [{"weight": [{"filter": "mlp", "value": [0.0, 1.0]}, {"value": 3.0}]}]
    at_mlp = call_method(
        "linear", [[2.0]], None, weights, {"normalize": False}, tensor="mlp.up", position=0.25
    )
    elsewhere = call_method("linear", [[2.0]], None, weights, {"normalize": False}, tensor="attn.q")
    assert at_mlp.tolist() == [0.5] and elsewhere.tolist() == [6.0]


def test_variants_are_keyword_only_and_declare_their_defaults_once():
    with pytest.raises(TypeError):
        Variant("x", Sparsify.NONE, "doc")  # type: ignore[misc]
    for v in VARIANTS:
        m = get_method(v.name)
        assert m.global_params["normalize"].default == v.normalize
        assert m.global_params["rescale"].default == v.rescale
        assert m.global_params["consensus_method"].default == v.consensus
        assert m.per_model is v.sparsify.value.per_model and m.stochastic == v.sparsify.value.stochastic
    derived = with_defaults(Example, "Derived", steps=5)
    assert specs(derived)["steps"] == ParamSpec(5, int, 1, 10) and specs(Example)["steps"].default == 3


def test_della_window_is_checked_when_parameters_are_resolved():
    with pytest.raises(MergeError, match=r"della: model 0 density 0.9 \+/- epsilon 0.15"):
        resolved("della", [{"weight": 1, "density": 0.9}], {})


def test_plugins_of_the_earlier_convention_still_merge():
    @merge_method("test_legacy_scaled", version="1", model_params={"s": ParamSpec(2.0)}, base="none")
    def legacy_scaled(tensors, base, model_params, params, generator):
        """Each model times its `s`, summed."""
        return sum(t * p["s"] for t, p in zip(tensors, model_params))

    assert get_method("test_legacy_scaled").fn is legacy_scaled
    out = call_method("test_legacy_scaled", [[1.0, 2.0], [3.0, 4.0]], None, [{}, {"s": 0.5}])
    assert out.tolist() == [3.5, 6.0]
    with pytest.raises(MergeError, match="`s` of model 1 must be a number"):
        call_method("test_legacy_scaled", [[1.0], [3.0]], None, [{}, {"s": "x"}])


def test_a_declaration_must_be_a_frozen_methodparams_dataclass():
    class NotDeclared(MethodParams):
        w: float = 1.0

    with pytest.raises(TypeError, match="@dataclass"):
        merge_method("test_bad_declaration", version="1", params=NotDeclared)


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_resolved_parameters_pickle_for_other_processes(name):
    import pickle

    m = get_method(name)
    given = [{k: 0.1 if k == "epsilon" else 0.5 for k in m.model_params}]
    _, per_model, global_params = resolved(name, given, {"t": 0.25} if "t" in m.global_params else {})
    assert pickle.loads(pickle.dumps((per_model, global_params))) == (per_model, global_params)
