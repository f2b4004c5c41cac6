"""Bad merge-method parameters: each is resolved (type, range, choices, cross-field window) when the
graph is planned, so `validate` already names the node, the parameter and the model."""

from __future__ import annotations

from pathlib import Path

from case import TINY, Case

LOADS = "".join(f"  {m}: {{op: load, path: {TINY / m}}}\n" for m in ("base", "add", "reverse"))


def _merge(merge: str):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(f"nodes:\n{LOADS}  m: {{op: merge, {merge}}}\n")
        return ["validate", "g.yaml"]

    return build


CASES = [
    Case(
        "method_int_parameter_not_whole",
        _merge("method: wudi, base: base, models: {add: null}, params: {steps: 2.5}"),
        mentions=("g.yaml", "'m'", "`steps`", "2.5", "whole number"),
    ),
    Case(
        "method_choice_parameter_unknown",
        _merge("method: ties, base: base, models: {add: {weight: 1}}, params: {consensus_method: majority}"),
        mentions=("'m'", "consensus_method", "'majority'", "none, sum, count"),
    ),
    Case(
        "method_per_model_parameter_not_a_number",
        _merge("method: linear, models: {add: {weight: heavy}, reverse: {weight: 1}}"),
        mentions=("'m'", "`weight` of model add", "'heavy'"),
    ),
    Case(
        "method_gradient_leaves_the_range",
        _merge("method: ties, base: base, models: {add: {weight: 1, density: [0.5, 1.5]}}"),
        mentions=("'m'", "`density` of model add", "outside [0, 1]"),
    ),
    Case(
        "della_density_epsilon_window",
        _merge("method: della, base: base, models: {add: {weight: 1, density: 0.9}}"),
        mentions=("'m'", "model add", "density 0.9 +/- epsilon 0.15", "lower epsilon"),
    ),
    Case(
        "linear_base_weight_given_twice",
        _merge(
            "method: linear, base: base, models: {base: {weight: 1}, add: {weight: 1}}, params: {base_weight: 1}"
        ),
        mentions=("g.yaml", "'m'", "both weigh the base"),
    ),
]
