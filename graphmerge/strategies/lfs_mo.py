"""LFS for several objectives at once (used with the multi_objective / ParEGO facade).

The space and the trial subgraph are exactly those of `lfs`; only the driver settings differ (several
objectives, Pareto set instead of one incumbent). auto-merge-llm's `lfs_multiobj` likewise reuses lfs.
"""

from __future__ import annotations

from dataclasses import replace

from .lfs import STRATEGY as _LFS
from .lfs import LfsSettings as LfsMoSettings

STRATEGY = replace(_LFS, name="lfs_mo", doc=__doc__ or "")

__all__ = ["STRATEGY", "LfsMoSettings"]
