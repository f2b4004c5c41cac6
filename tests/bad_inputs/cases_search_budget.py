"""Bad stopping rules of `optimize` searches: `n_trials` and `max_examples`."""

from __future__ import annotations

from pathlib import Path

from case import Case, copy_tasks, graph_case, tiny_models

GRAPH = """\
vars:
  max_examples: 100
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [add]
    settings: {methods: [linear]}
    objectives: [{task: tiny_add, metric: exact_match}]
    include_path: [tasks]
    smac: {facade: multi_fidelity, min_budget: 5, max_budget: 20, STOP}
    out: sout
"""


def _setup(root: Path) -> None:
    tiny_models(root)
    copy_tasks(root)


def _case(
    name: str, stop: str, *mentions: str, command: str = "validate", args: tuple[str, ...] = ()
) -> Case:
    text = GRAPH.replace("STOP", stop)
    return Case(
        name, graph_case(text, *args, command=command, setup=_setup), mentions=("'search'", *mentions)
    )


CASES = [
    _case("max_examples_zero", "max_examples: 0", "smac.max_examples", "greater than or equal to 1"),
    _case("max_examples_negative_run", "max_examples: -40", "smac.max_examples", command="run"),
    _case("max_examples_fraction", "max_examples: 2.5", "smac.max_examples"),
    _case("max_examples_word", "max_examples: plenty", "smac.max_examples"),
    _case(
        "max_examples_set_to_zero",
        "max_examples: ${max_examples}",
        "max_examples",
        args=("--set", "max_examples=0"),
    ),
    _case("n_trials_negative_with_max_examples", "n_trials: -1, max_examples: 100", "smac.n_trials"),
]
