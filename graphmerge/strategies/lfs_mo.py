"""LFS for several objectives at once (used with the multi_objective / ParEGO facade).

The space and the trial subgraph are exactly those of `lfs`; only the driver settings differ (several
objectives, Pareto set instead of one incumbent). auto-merge-llm's `lfs_multiobj` likewise reuses lfs.
"""

from __future__ import annotations

from .base import strategy
from .lfs import LfsSettings as LfsMoSettings
from .lfs import build_space, initial_configs, trial_nodes

strategy(
    "lfs_mo", settings=LfsMoSettings, build_space=build_space, initial_configs=initial_configs, doc=__doc__
)(trial_nodes)

__all__ = ["LfsMoSettings"]
