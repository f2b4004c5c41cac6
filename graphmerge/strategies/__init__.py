"""Search strategies: settings + model info -> ConfigSpace; config -> trial subgraph (YAML node dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphmerge.errors import SpecError
from graphmerge.search.validation import parse_model

from . import dis, lfs, lfs_mo, prune
from .base import FINAL_NODE, ModelInfo, SearchOutcome, Strategy, StrategyReport, StrategySettings

STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (lfs.STRATEGY, lfs_mo.STRATEGY, dis.STRATEGY, prune.STRATEGY)
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise SpecError(
            f"unknown strategy {name!r}", where="optimize.strategy", fix=f"use one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[name]


def parse_settings(name: str, data: Mapping[str, Any], *, where: str = "optimize") -> StrategySettings:
    """Validate a strategy's settings dict (graph-file keys) into its pydantic model; errors name the key."""
    return parse_model(get_strategy(name).settings_type, data, where=where)


__all__ = [
    "FINAL_NODE",
    "STRATEGIES",
    "ModelInfo",
    "SearchOutcome",
    "Strategy",
    "StrategyReport",
    "StrategySettings",
    "get_strategy",
    "parse_settings",
]
