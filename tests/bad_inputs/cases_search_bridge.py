"""Names no pass defines, in a search's `trial:` template and elsewhere: one substitution engine, so
each is an error with file, line and key, whatever the command (`validate` or `run`)."""

from __future__ import annotations

from case import Case, graph_case, tiny_models
from cases_spaces import _graph, _setup

DENSITY = "${params.d}"  # the reference in cases_spaces' trial template, on line 15 below `vars:`


def _case(name: str, density: str, *mentions: str, command: str = "validate") -> Case:
    text = "vars: {density: 0.5}\n" + _graph(replace=(DENSITY, density))
    return Case(name, graph_case(text, command=command, setup=_setup), mentions=mentions)


MERGE_WITH_BUDGET = """\
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  merged:
    op: merge
    method: linear
    models: {base: {weight: 0.5}, add: {weight: "${budget}"}}
"""

VARS_WITH_PARAMS = """\
vars: {w: "${params.w}"}
nodes:
  base: {op: load, path: base}
"""

CASES = [
    # a typo for a name the search does not define: once it passed the spec layer and broke a trial
    _case(
        "trial_undefined_budget_max",
        "${budget_max}",
        "g.yaml:15",
        "node 'search'",
        "key 'trial.model.models.add.density'",
        "undefined variable ${budget_max}",
    ),
    _case("trial_undefined_budget_max_run", "${budget_max}", "g.yaml:15", "${budget_max}", command="run"),
    # a graph variable misspelt inside the template is caught by the same pass, with a suggestion
    _case("trial_undefined_var", "${densty}", "g.yaml:15", "did you mean ${density}"),
    # ${budget} / ${params.X} mean something only inside a `trial:` template
    Case(
        "budget_outside_trial",
        graph_case(MERGE_WITH_BUDGET, setup=tiny_models),
        mentions=("g.yaml:7", "node 'merged'", "undefined variable ${budget}"),
    ),
    Case(
        "params_in_vars",
        graph_case(VARS_WITH_PARAMS, setup=tiny_models),
        mentions=("vars.w", "undefined variable ${params.w}"),
    ),
]
