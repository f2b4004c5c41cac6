"""Importing this module registers every built-in merge method (the registry imports it lazily)."""

from graphmerge.methods import (  # noqa: F401
    arcee_fusion,
    fisher,
    iso,
    karcher,
    linear,
    model_stock,
    nearswap,
    passthrough,
    regmean,
    sce,
    slerp,
    task_arithmetic,
    tsv,
    wudi,
)
