"""Seeded sampling of a SearchSpace without ConfigSpace: reproducible, within bounds, conditions and
forbidden clauses honoured, every value reachable."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from graphmerge.errors import SpecError
from graphmerge.search.sampling import sample_configs
from graphmerge.search.space import SearchSpace, validate_config
from graphmerge.search.space_yaml import build_space

REPO = Path(__file__).resolve().parent.parent

SPEC = {
    "params": {
        "method": {"type": "categorical", "choices": ["linear", "ties", "slerp"]},
        "density": {"type": "float", "low": 0.1, "high": 1.0},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "k": {"type": "int", "low": 1, "high": 8},
        "n": {"type": "int", "low": 1, "high": 1000, "log": True},
        "size": {"type": "ordinal", "choices": ["s", "m", "l"]},
        "const": {"type": "constant", "value": 7},
    },
    "conditions": [
        {"child": "density", "parent": "method", "equals": "ties"},
        {"child": "k", "parent": "method", "in": ["ties", "slerp"]},
        {"child": "k", "parent": "size", "in": ["m", "l"]},
    ],
    "forbidden": [{"all": [{"param": "method", "equals": "slerp"}, {"param": "size", "equals": "l"}]}],
}


def test_the_same_seed_gives_the_same_configurations_and_another_seed_others():
    space = build_space(SPEC)
    first = sample_configs(space, 20, seed=1)
    assert first == sample_configs(build_space(SPEC), 20, seed=1)
    assert first != sample_configs(space, 20, seed=2)
    assert sample_configs(space, 5, seed=1) == first[:5]


def test_samples_are_valid_configurations_with_inactive_parameters_absent():
    space = build_space(SPEC)
    configs = sample_configs(space, 400, seed=0)
    for c in configs:
        assert validate_config(space, c) == c  # legal, complete, allowed, sorted
        assert ("density" in c) == (c["method"] == "ties")
        assert ("k" in c) == (c["method"] in ("ties", "slerp") and c["size"] in ("m", "l"))
        assert not (c["method"] == "slerp" and c["size"] == "l")
    # Every choice and the whole of each range is reached; the log-scale ones spread over the decades.
    assert {c["method"] for c in configs} == {"linear", "ties", "slerp"}
    assert {c["size"] for c in configs} == {"s", "m", "l"}
    assert {c["k"] for c in configs if "k" in c} == set(range(1, 9))
    decades = {math.floor(math.log10(c["lr"])) for c in configs}
    assert decades == {-4, -3, -2}
    assert min(c["n"] for c in configs) < 10 and max(c["n"] for c in configs) > 100
    assert all(c["const"] == 7 for c in configs)


def test_a_space_of_nearly_only_forbidden_configurations_is_an_error():
    params = {f"s{i}": {"type": "categorical", "choices": [0, 1]} for i in range(20)}
    forbidden = [{"param": f"s{i}", "equals": 1} for i in range(20)]
    space = build_space({"params": params, "forbidden": forbidden})
    with pytest.raises(SpecError, match="forbidden"):
        sample_configs(space, 1, seed=0)


def test_strategy_style_spaces_sample_too():
    from graphmerge.search.space import AnyOf, Categorical, Equals, Float

    space = SearchSpace(
        (Categorical("a", (0, 1)), Categorical("b", (0, 1)), Float("x", 0.0, 2.0, default=1.0)),
        {"x": AnyOf((Equals("a", 1), Equals("b", 1)))},
    )
    assert space.default_config() == {"a": 0, "b": 0}
    for c in sample_configs(space, 50, seed=0):
        assert ("x" in c) == (c["a"] == 1 or c["b"] == 1)


def test_sampling_imports_neither_configspace_nor_numpy():
    probe = (
        "import sys\n"
        "from graphmerge.search.space_yaml import build_space\n"
        "from graphmerge.search.sampling import sample_configs\n"
        f"sample_configs(build_space({SPEC!r}), 50, seed=0)\n"
        "print(sorted(m for m in ('ConfigSpace', 'scipy', 'numpy', 'smac') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"
