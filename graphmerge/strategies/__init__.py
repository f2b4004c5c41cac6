"""Search strategies: settings + model info -> SearchSpace; config -> trial subgraph (YAML node dicts).

Strategies register with `@strategy` (graphmerge/strategies/base.py) and load lazily from the
`graphmerge.strategies` entry-point group; `STRATEGIES` is that registry, not a fixed list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphmerge.search.validation import parse_model

from .base import (
    FINAL_NODE,
    STRATEGIES,
    ModelInfo,
    SearchOutcome,
    Strategy,
    StrategyReport,
    StrategySettings,
    strategy,
)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name, where="optimize.strategy")


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
    "strategy",
]
