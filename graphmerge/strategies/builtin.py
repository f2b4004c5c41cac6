"""Importing this module registers the built-in search strategies (the strategy registry imports it
lazily, through the `graphmerge.strategies` entry point or directly from a source checkout)."""

from graphmerge.strategies import dis, lfs, lfs_mo, prune  # noqa: F401
