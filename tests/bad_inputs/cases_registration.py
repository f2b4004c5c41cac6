"""Plugins and registered names: an unknown strategy, a plugin that takes a built-in's name, a broken
entry point."""

from __future__ import annotations

from pathlib import Path

from case import Case, copy_tasks, graph_case, tiny_models, write

SEARCH = """\
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  search:
    op: optimize
    strategy: STRATEGY
    base: base
    models: [add]
    objectives: [{task: tiny_add, metric: exact_match}]
    include_path: [tasks]
    smac: {n_trials: 2}
"""

SECOND_LFS = '''
from graphmerge.strategies import StrategySettings, strategy


class Mine(StrategySettings):
    pass


@strategy("lfs", settings=Mine, build_space=lambda s, i: None, initial_configs=lambda s, i: [])
def trial_nodes(config, settings, model_info):
    return {}
'''


def _search(root: Path) -> None:
    tiny_models(root)
    copy_tasks(root)


def _with_plugin(root: Path) -> None:
    _search(root)
    write(root, "second_lfs.py", SECOND_LFS)


def _with_broken_entry_point(root: Path) -> None:
    write(root, "broken_nodes.py", "raise RuntimeError('broken on purpose')\n")
    info = "broken_nodes-0.1.0.dist-info"
    write(root, f"{info}/METADATA", "Metadata-Version: 2.1\nName: broken_nodes\nVersion: 0.1.0\n")
    write(root, f"{info}/entry_points.txt", "[graphmerge.nodes]\nbroken = broken_nodes\n")


CASES = [
    Case(
        "strategy_unknown_name",
        graph_case(SEARCH.replace("STRATEGY", "lfz"), command="run", setup=_search),
        mentions=("g.yaml:4", "node 'search'", "unknown strategy 'lfz'", "did you mean 'lfs'"),
    ),
    Case(
        "plugin_strategy_takes_a_builtin_name",
        graph_case(SEARCH.replace("STRATEGY", "lfs"), "--plugin", "second_lfs.py", setup=_with_plugin),
        mentions=("second_lfs.py", "strategies/lfs.py", "strategy 'lfs' is registered twice", "another name"),
    ),
    Case(
        "plugin_entry_point_fails_to_import",
        graph_case("nodes:\n  base: {op: load, path: base}\n", setup=_with_broken_entry_point),
        mentions=("entry point broken = broken_nodes", "graphmerge.nodes", "broken on purpose"),
        env={"PYTHONPATH": "."},
    ),
]
