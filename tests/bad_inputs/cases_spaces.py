"""Bad search spaces, SMAC settings, strategies and trial logs of `optimize` nodes."""

from __future__ import annotations

from pathlib import Path

from case import Case, copy_tasks, graph_case, tiny_models, write

GRAPH = """\
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  search:
    op: optimize
    base: base
    models: [add]
    space: {params: SPACE}
    trial:
      model:
        op: merge
        method: ties
        base: base
        models: {add: {weight: 1.0, density: ${params.d}}}
    objectives: [{task: tiny_add, metric: exact_match}]
    include_path: [tasks]
    SEARCH
    out: sout
"""
SPACE = "{d: {type: float, low: 0.2, high: 0.9}}"
SMAC = "smac: {facade: hpo, n_trials: 2, max_budget: 5}"


def _setup(root: Path) -> None:
    tiny_models(root)
    copy_tasks(root)


def _graph(space: str = SPACE, search: str = SMAC, *, replace: tuple[str, str] = ("", "")) -> str:
    return GRAPH.replace("SPACE", space).replace("SEARCH", search).replace(*replace)


def _case(name: str, text: str, *mentions: str, command: str = "validate", setup=_setup, **kw) -> Case:
    return Case(name, graph_case(text, command=command, setup=setup), mentions=("'search'", *mentions), **kw)


def _with_log(data: bytes):
    def setup(root: Path) -> None:
        _setup(root)
        write(root, "sout/trial_log.jsonl", data)

    return setup


CASES = [
    # `validate` used to say "ok" for this; `run` rejected it.
    _case("space_low_above_high", _graph("{d: {type: float, low: 2.0, high: 1.0}}"), "`low`", "`high`"),
    _case("space_unknown_type", _graph("{d: {type: floaty, low: 0.1, high: 0.9}}"), "floaty"),
    _case("space_default_outside", _graph("{d: {type: float, low: 0.1, high: 0.9, default: 3}}"), "default"),
    _case("space_empty_choices", _graph("{d: {type: categorical, choices: []}}"), "choices"),
    _case("space_log_nonpositive", _graph("{d: {type: float, low: 0.0, high: 0.9, log: true}}"), "log"),
    _case("space_missing_high", _graph("{d: {type: float, low: 0.1}}"), "high"),
    _case("space_empty", _graph("{}"), "params"),
    _case(
        "space_condition_unknown_param",
        _graph(
            SPACE,
            replace=(
                "space: {params: " + SPACE + "}",
                "space: {params: " + SPACE + ", conditions: [{child: d, parent: zz, equals: 1}]}",
            ),
        ),
        "zz",
    ),
    # Every value of the range but the top third is fine: the check plans a seeded sample of
    # configurations, so the corner the merge method rejects is found before the first trial.
    _case("space_corner_outside_method_range", _graph("{d: {type: float, low: 0.5, high: 1.5}}"), "density"),
    _case("trial_unknown_param", _graph(replace=("${params.d}", "${params.dd}")), "params.dd"),
    _case("trial_without_model_node", _graph(replace=("      model:\n", "      merged:\n")), "model"),
    _case("smac_unknown_key", _graph(search="smac: {facade: hpo, n_trial: 2}"), "n_trial"),
    _case("smac_zero_trials", _graph(search="smac: {facade: hpo, n_trials: 0}"), "n_trials"),
    _case("smac_unknown_facade", _graph(search="smac: {facade: bohb, n_trials: 2}"), "facade"),
    _case("config_illegal_value", _graph(search="config: {d: 5.0}"), "5.0"),
    _case("config_and_smac", _graph(search=SMAC + "\n    config: {d: 0.5}"), "config"),
    _case(
        "strategy_unknown_setting",
        "nodes:\n  base: {op: load, path: base}\n  add: {op: load, path: add}\n"
        "  search:\n    op: optimize\n    strategy: lfs\n    base: base\n    models: [add]\n"
        "    settings: {layer_granularty: 2}\n    objectives: [{task: tiny_add}]\n    include_path: [tasks]\n"
        "    smac: {n_trials: 2}\n",
        "layer_granularty",
        one_line=False,
    ),
    _case(
        "trial_log_of_another_search",
        _graph(),
        "trial_log.jsonl",
        "different search",
        setup=_with_log(b'{"type": "header", "version": 1, "fingerprint": "0123456789abcdef"}\n'),
    ),
    _case(
        "trial_log_of_another_search_run",
        _graph(),
        "trial_log.jsonl",
        "different search",
        command="run",
        setup=_with_log(b'{"type": "header", "version": 1, "fingerprint": "0123"}\n{"type": "trial", "con'),
    ),
    _case(
        "trial_log_binary", _graph(), "trial_log.jsonl", "UTF-8", setup=_with_log(bytes(range(256)) + b"\n")
    ),
    _case(
        "trial_log_no_header", _graph(), "trial_log.jsonl", "header", setup=_with_log(b'{"type": "trial"}\n')
    ),
]
