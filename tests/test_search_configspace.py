"""graphmerge's search spaces against ConfigSpace as the oracle: the ConfigurationSpace SMAC gets
(search/configspace.py) has the same parameters, default, legal values, conditions and forbidden
clauses as the SearchSpace that `validate` samples without it, and old trial logs still resume."""

from __future__ import annotations

import json
import random

import pytest
from ConfigSpace import Configuration

from graphmerge.errors import SpecError
from graphmerge.search import SmacSettings, TrialOutcome, run_search
from graphmerge.search.configspace import legacy_space_fingerprint, to_configspace
from graphmerge.search.sampling import sample_configs
from graphmerge.search.space import config_to_dict, validate_config
from graphmerge.search.space_yaml import build_space
from graphmerge.search.trial_log import LOG_NAME
from graphmerge.strategies import ModelInfo, get_strategy, parse_settings

INFO = ModelInfo({"a": 6, "b": 6, "c": 6, "base": 6})
STRATEGY_SPACES = [
    ("dis", {"models": ["a", "b", "c"], "base": "base", "fix_layers": 1}),
    ("dis", {"models": ["a", "b"], "base": "base", "ends": "base", "scale_range": [0.5, 1.5]}),
    ("lfs", {"models": ["a", "b", "c"], "base": "base", "layer_granularity": 3}),
    (
        "lfs",
        {
            "models": ["a", "b"],
            "base": "base",
            "methods": ["linear", "slerp", "iso_cts", "regmean", "fisher"],
            "calibration": {"tasks": ["t"]},
        },
    ),
    ("prune", {"base": "base", "remove": 2}),
    ("prune", {"base": "base", "models": ["a", "b"], "remove": 1, "replace": True, "lambda_range": [0.2, 2]}),
]


def _random_spec(rng: random.Random) -> dict:
    """A YAML space with every parameter type, random bounds and defaults, conditions and forbiddens."""
    params: dict = {
        "m": {"type": "categorical", "choices": ["x", "y", "z"][: rng.randint(2, 3)]},
        "flag": {"type": "categorical", "choices": [0, 1], "default": rng.choice([0, 1])},
        "size": {"type": "ordinal", "choices": ["s", "m", "l"]},
        "c": {"type": "constant", "value": rng.choice([7, "seven", 0.5])},
    }
    for name, ptype in (("f", "float"), ("g", "float"), ("i", "int"), ("j", "int")):
        log = rng.random() < 0.5
        low = rng.choice([1, 2, 3]) if log or ptype == "int" else rng.uniform(-3, 3)
        high = low + (rng.randint(1, 40) if ptype == "int" else rng.uniform(0.1, 50))
        spec = {"type": ptype, "low": low, "high": high, "log": log}
        if rng.random() < 0.4:
            spec["default"] = rng.randint(low, high) if ptype == "int" else rng.uniform(low, high)
        params[name] = spec
    conditions = [
        {"child": "f", "parent": "m", "equals": "x"},
        {"child": "i", "parent": "m", "in": ["x", "y"]},
    ]
    if rng.random() < 0.5:
        conditions.append({"child": "i", "parent": "flag", "equals": 1})  # AND-ed with the one above
    conditions.append({"child": "g", "parent": "f" if rng.random() < 0.5 else "size", "in": ["m", "l"]})
    if conditions[-1]["parent"] == "f":  # a float parent: condition on the chain m -> i -> g instead
        conditions[-1] = {
            "child": "g",
            "parent": "i",
            "in": list(range(params["i"]["low"], params["i"]["high"])),
        }
    forbidden = [{"all": [{"param": "m", "equals": "y"}, {"param": "size", "in": ["l"]}]}]
    return {"params": params, "conditions": conditions, "forbidden": forbidden}


def _spaces():
    rng = random.Random(7)
    for k in range(12):
        yield f"yaml{k}", build_space(_random_spec(rng), seed=k)
    for k, (name, data) in enumerate(STRATEGY_SPACES):
        yield f"{name}{k}", get_strategy(name).build_space(parse_settings(name, data), INFO)


def _close(got: dict, want: dict) -> bool:
    """Equal configurations, floats to 12 digits (ConfigSpace hands them back rounded to 13 decimals)."""
    return got.keys() == want.keys() and all(
        got[k] == pytest.approx(v, rel=1e-12) if isinstance(v, float) else got[k] == v for k, v in want.items()
    )


@pytest.mark.parametrize("label, space", list(_spaces()), ids=lambda v: v if isinstance(v, str) else "")
def test_configspace_agrees_on_default_samples_and_validation(label, space):
    cs = to_configspace(space)
    assert set(cs.keys()) == set(space.keys())
    for p in space.params:
        hp = cs[p.name]
        assert hp.default_value == p.default_value
        if hasattr(p, "low"):
            bounds = p.bounds if hasattr(p, "bounds") else (p.low, p.high)  # floats: as ConfigSpace rounds them
            assert (hp.lower, hp.upper, hp.log) == (*bounds, p.log)
        elif hasattr(p, "choices"):
            assert tuple(getattr(hp, "choices", getattr(hp, "sequence", ()))) == p.choices
    assert config_to_dict(cs.get_default_configuration()) == space.default_config()
    # Our samples are configurations ConfigSpace accepts: legal values, exactly the active parameters,
    # nothing forbidden (Configuration checks all three).
    for config in sample_configs(space, 40, seed=3):
        assert _close(config_to_dict(Configuration(cs, values=config)), config)
    # ConfigSpace's own samples pass our validation unchanged.
    cs.seed(5)
    for c in cs.sample_configuration(40):
        config = config_to_dict(c)
        assert validate_config(space, config) == config


def test_the_seed_goes_with_the_space_to_configspace():
    from ConfigSpace import ConfigurationSpace, Float

    def drawn(cs):
        return [dict(c) for c in cs.sample_configuration(3)]

    spec = {"params": {"x": {"type": "float", "low": 0, "high": 1}}}
    assert drawn(to_configspace(build_space(spec, seed=11))) == drawn(
        ConfigurationSpace(seed=11, space=[Float("x", (0, 1))])
    )
    assert drawn(to_configspace(build_space(spec, seed=11))) != drawn(
        to_configspace(build_space(spec, seed=12))
    )


@pytest.mark.parametrize(
    "extra",
    [
        {
            "conditions": [
                {"child": "a", "parent": "b", "equals": 1},
                {"child": "b", "parent": "a", "equals": 1},
            ]
        },
        {"forbidden": [{"param": "a", "equals": 0}]},  # the default configuration
    ],
    ids=["cycle", "forbidden_default"],
)
def test_spaces_configspace_refuses_are_refused_without_it(extra):
    from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, ForbiddenEqualsClause

    spec = {"params": {n: {"type": "categorical", "choices": [0, 1]} for n in "ab"}, **extra}
    with pytest.raises(SpecError):
        build_space(spec)
    cs = ConfigurationSpace()
    a, b = Categorical("a", [0, 1]), Categorical("b", [0, 1])
    cs.add([a, b])
    with pytest.raises(Exception):  # noqa: B017 - the oracle's own error types vary by case
        if "conditions" in extra:
            cs.add([EqualsCondition(a, b, 1), EqualsCondition(b, a, 1)])
        else:
            cs.add(ForbiddenEqualsClause(a, 0))


def test_a_fixed_config_is_canonicalised_like_smac_would_hand_it_out():
    space = build_space(
        {
            "params": {
                "x": {"type": "float", "low": 0, "high": 2},
                "k": {"type": "int", "low": 1, "high": 8},
                "c": {"type": "categorical", "choices": [0.5, 1]},
            }
        }
    )
    assert validate_config(space, {"x": 1, "k": 3.0, "c": 1.0}) == {"c": 1, "k": 3, "x": 1.0}
    for bad in ({"x": True, "k": 3, "c": 1}, {"x": 1.0, "k": 3.5, "c": 1}, {"x": 1.0, "k": 3, "c": "1"}):
        with pytest.raises(SpecError, match="not legal"):
            validate_config(space, bad)


SPACE = {"params": {"x": {"type": "float", "low": -2.0, "high": 2.0}}}


def _quadratic(config, limit):
    return TrialOutcome(scores={"score": -((config["x"] - 0.3) ** 2)})


def test_a_log_written_when_spaces_were_configspace_objects_resumes(tmp_path):
    """Such logs hashed the space through ConfigSpace's serialisation: the same search replays them."""
    from graphmerge.search.driver import _fingerprint

    space = build_space(SPACE)
    settings = SmacSettings(facade="hpo", n_trials=3, seed=0, n_initial=2, max_budget=None)
    first = run_search(space, _quadratic, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    header = json.loads(lines[0])
    header["fingerprint"] = _fingerprint(legacy_space_fingerprint(to_configspace(space)), settings, [])
    (tmp_path / LOG_NAME).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    calls = []
    again = run_search(
        space,
        lambda c, lim: calls.append(c) or _quadratic(c, lim),
        settings,
        tmp_path,
        on_trial=lambda r, b: None,
        write_reports=False,
    )
    assert calls == [] and again.replayed == 3
    assert [r.config for r in again.trials] == [r.config for r in first.trials]
    # Another space is still another search, for old logs as for new ones.
    other = build_space({"params": {"x": {"type": "float", "low": -2.0, "high": 3.0}}})
    with pytest.raises(SpecError, match="different search"):
        run_search(other, _quadratic, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
