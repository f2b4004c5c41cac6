"""The data-free subspace methods (tsv_m, iso_c, iso_cts, wudi) and the calibrated ones (regmean,
fisher) as choices of a search strategy: their conditional hyperparameters, their merge specs, and the
`statistics` trial nodes the calibrated ones read.

Per group g and parameter set s (the lfs naming):
  g{g}_{s}_{tsv_m,iso_c,iso_cts,wudi}_lambda   task-vector scale      (active iff that method)
  g{g}_iso_cts_common_fraction                 common-subspace share  (iff iso_cts)
  g{g}_{s}_regmean_alpha                       Gram off-diagonal scale (iff regmean)
fisher has no searched parameter (model weights 1, fisher_floor at its default).
The statistics nodes compute once and are cached: later trials only look them up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

SUBSPACE = ("tsv_m", "iso_c", "iso_cts", "wudi")
CALIBRATED = ("regmean", "fisher")
NEW_METHODS = SUBSPACE + CALIBRATED
STATISTICS_NODE = {"regmean": "stats_gram", "fisher": "stats_fisher"}
_KIND = {"regmean": "gram", "fisher": "fisher"}
COMMON_FRACTION_RANGE = (0.5, 1.0)
ALPHA_RANGE = (0.0, 1.0)


def hyperparameters(
    method: str, lambda_range: tuple[float, float]
) -> list[tuple[str, tuple[float, float], bool]]:
    """(name suffix, range, per parameter set) of each searched parameter of `method`."""
    if method in SUBSPACE:
        out = [(f"{method}_lambda", lambda_range, True)]
        if method == "iso_cts":
            out.append(("iso_cts_common_fraction", COMMON_FRACTION_RANGE, False))
        return out
    if method == "regmean":
        return [("regmean_alpha", ALPHA_RANGE, True)]
    return []


def merge_spec(
    method: str,
    models: list[str],
    base: str | None,
    per_set: Callable[[str], Any],
    per_group: Callable[[str], Any],
) -> dict[str, Any]:
    """The merge spec of one group; `per_set(suffix)` / `per_group(suffix)` read the config."""
    spec: dict[str, Any] = {"method": method, "models": {m: {} for m in models}}
    if method in SUBSPACE:
        spec["base"] = base
        spec["params"] = {"lambda": per_set(f"{method}_lambda")}
        if method == "iso_cts":
            spec["params"]["common_fraction"] = per_group("iso_cts_common_fraction")
    elif method == "regmean":
        spec["params"] = {"alpha": per_set("regmean_alpha")}
    if method in CALIBRATED:
        spec["statistics"] = STATISTICS_NODE[method]
    return spec


def statistics_nodes(
    used: set[str], models: list[str], calibration: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The statistics trial nodes the calibrated methods in `used` read."""
    return {
        STATISTICS_NODE[m]: {
            "op": "statistics",
            "kind": _KIND[m],
            "models": list(models),
            "calibration": dict(calibration or {}),
        }
        for m in CALIBRATED
        if m in used
    }
