"""Search spaces that only the whole space shows to be wrong (a cycle of conditions, a forbidden
default, a space whose every configuration is forbidden), fixed configs of the wrong kind, and a
plugin strategy still returning a ConfigSpace space: each one `error:` line from `validate`."""

from __future__ import annotations

from pathlib import Path

from case import Case, graph_case, write
from cases_registration import SEARCH
from cases_spaces import SMAC, SPACE, _setup
from cases_spaces import _graph as spaces_graph

# cases_spaces' search, its one-parameter space swapped for this one (flow style: one YAML line).
PARAMS = "d: {type: float, low: 0.2, high: 0.9}, a: {type: categorical, choices: [0, 1]}, b: {type: categorical, choices: [0, 1]}"

PLUGIN = """
from ConfigSpace import ConfigurationSpace
from graphmerge.strategies import StrategySettings, strategy

class OldSettings(StrategySettings):
    pass

@strategy("old_style", settings=OldSettings, build_space=lambda s, i: ConfigurationSpace({"w": (0.0, 1.0)}),
          initial_configs=lambda s, i: [])
def trial_nodes(config, settings, model_info):
    return {"model": {"op": "merge", "method": "linear", "models": {m: {} for m in settings.models}}}
"""


def _plugin_setup(root: Path) -> None:
    _setup(root)
    write(root, "old_style.py", PLUGIN)


def _graph(extra: str = "", search: str = SMAC, params: str = "") -> str:
    space = "space: {params: {" + PARAMS + params + "}" + (", " + extra if extra else "") + "}"
    return spaces_graph(search=search, replace=("space: {params: " + SPACE + "}", space))


def _case(name: str, text: str, *mentions: str, **kw) -> Case:
    return Case(name, graph_case(text, setup=_setup), mentions=("node 'search'", *mentions), **kw)


CASES = [
    _case(
        "space_condition_cycle",
        _graph(
            "conditions: [{child: a, parent: b, equals: 1}, {child: b, parent: a, equals: 1}]",
        ),
        "space.conditions",
        "cycle",
        "a -> b -> a",
    ),
    _case(
        "space_forbids_its_default",
        _graph("forbidden: [{all: [{param: a, equals: 0}, {param: b, equals: 0}]}]"),
        "space.forbidden[0]",
        "default configuration",
    ),
    # Only the default (every switch 0) is allowed, one configuration in 2**20: validate's sample finds
    # no other, where a search would spin.
    _case(
        "space_nearly_everything_forbidden",
        _graph(
            "forbidden: [" + ", ".join(f"{{param: s{i}, equals: 1}}" for i in range(20)) + "]",
            params="".join(f", s{i}: {{type: categorical, choices: [0, 1]}}" for i in range(20)),
        ),
        "forbidden",
    ),
    _case("config_bool_for_a_float", _graph(search="config: {d: true, a: 0, b: 1}"), "`d`", "True"),
    _case("config_choice_of_the_wrong_kind", _graph(search="config: {d: 0.5, a: '1', b: 1}"), "`a`", "'1'"),
    Case(
        "plugin_strategy_returns_a_configspace_space",
        graph_case(SEARCH.replace("STRATEGY", "old_style"), "--plugin", "old_style.py", setup=_plugin_setup),
        mentions=("old_style", "ConfigurationSpace", "SearchSpace", "graphmerge.search.space"),
    ),
]
