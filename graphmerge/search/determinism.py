"""SMAC components made independent of Python's string-hash seed, and the library versions a log records.

SMAC 2.4's `LocalSearch._get_init_points_from_previous_configs` deduplicates its start points with
`list(set(...))`, and `Configuration.__hash__` is `hash(repr(...))`: the order of the local-search start
points, and with it the random numbers each start point draws, depended on PYTHONHASHSEED. Two fresh
processes with the same seed then asked different configurations from the first model-based proposal on.
`StableLocalSearch` keeps SMAC's selection and puts the start points in a stable order instead.
"""

from __future__ import annotations

import warnings
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# The libraries whose code decides which configuration SMAC asks next.
TRAJECTORY_PACKAGES = ("smac", "ConfigSpace", "pyrfr")


def library_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in TRAJECTORY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def stable_key(config: Any) -> str:
    """A process-independent sort key of a ConfigSpace Configuration (its values, names sorted)."""
    return repr(sorted((str(k), repr(v)) for k, v in dict(config).items()))


@cache
def _stable_local_search_type():
    from smac.acquisition.maximizer.local_search import LocalSearch

    class StableLocalSearch(LocalSearch):
        """SMAC's LocalSearch with its start points in a hash-seed-independent order, and without the
        "Mean of empty slice" warnings its debug timing line raises when a search looked at nothing."""

        def _get_init_points_from_previous_configs(self, previous_configs, n_points, additional_start_points):
            points = super()._get_init_points_from_previous_configs(
                previous_configs, n_points, additional_start_points
            )
            return sorted(points, key=stable_key)

        def _search(self, start_points):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
                warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
                return super()._search(start_points)

    return StableLocalSearch


def stable_acquisition_maximizer(facade: Any, scenario: Any) -> Any:
    """The facade's default acquisition maximizer, its local search turned into a StableLocalSearch.

    The instance keeps every setting and its random state; only the class changes, so nothing SMAC
    configured is copied by hand (and a new SMAC keyword cannot be forgotten here)."""
    maximizer = facade.get_acquisition_maximizer(scenario)
    stable = _stable_local_search_type()
    if not isinstance(maximizer._local_search, stable.__mro__[1]):
        raise TypeError(f"unexpected SMAC local search {type(maximizer._local_search).__name__}")
    maximizer._local_search.__class__ = stable
    return maximizer
