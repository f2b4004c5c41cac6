"""Seeded random configurations of a SearchSpace, without SMAC or ConfigSpace: what `validate` plans
besides the default and the strategy's initial configurations.

Python's own generator (`random.Random`), so that a seed gives the same sample on every platform and
numpy need not be imported. Parameters are drawn parents first; an inactive one is left out. A draw that
a forbidden clause matches is drawn again.
"""

from __future__ import annotations

import random
from typing import Any

from graphmerge.errors import SpecError

from .space import SearchSpace

# Redraws of one configuration before the space counts as (nearly) all forbidden.
MAX_DRAWS = 1000


def sample_configs(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` configurations drawn with `seed`, each sorted by name like `config_to_dict`."""
    rng = random.Random(seed)
    return [_draw(space, rng) for _ in range(n)]


def _draw(space: SearchSpace, rng: random.Random) -> dict[str, Any]:
    for _ in range(MAX_DRAWS):
        config = space.resolve(lambda name: space[name].sample(rng))
        if space.forbids(config) is None:
            return config
    raise SpecError(
        f"{MAX_DRAWS} random configurations in a row were forbidden",
        where="search space",
        fix="loosen the `forbidden` clauses",
    )
