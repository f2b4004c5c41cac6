"""Optional extras: which packages each one brings, and the one-line error when one is missing.

A plain `pip install graphmerge` merges. Evaluation, search and plots need packages that cost a
gigabyte and minutes to install, so they come with `pip install 'graphmerge[eval|search|viz|all]'`
(pyproject.toml lists the same groups). Checking uses `importlib.util.find_spec`, which looks for a
package without importing it, so `validate` can report a missing extra instantly.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from graphmerge.errors import GraphmergeError

# extra -> the import names it provides (pyproject.toml's optional-dependencies, by import name).
EXTRAS: dict[str, tuple[str, ...]] = {
    "eval": ("lm_eval",),
    "search": ("lm_eval", "smac", "ConfigSpace", "dask", "distributed", "matplotlib"),
    "viz": ("matplotlib",),
    "fsspec": ("fsspec",),
}


@cache
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(extra: str) -> list[str]:
    """The packages of `extra` that cannot be imported here (empty when the extra is installed)."""
    return [m for m in EXTRAS[extra] if not _installed(m)]


def missing_extra_message(extra: str, feature: str) -> tuple[str, str] | None:
    """(message, fix) when `extra` is not installed, else None."""
    missing = missing_modules(extra)
    if not missing:
        return None
    return (
        f"{feature} needs the [{extra}] extra, which is not installed (missing: {', '.join(missing)})",
        f"pip install 'graphmerge[{extra}]', or pip install -e '.[{extra}]' in a source checkout",
    )


def require_extra(extra: str, feature: str) -> None:
    """Raise the one-line error naming the extra to install when `extra` is not installed."""
    problem = missing_extra_message(extra, feature)
    if problem is not None:
        message, fix = problem
        raise GraphmergeError(message, fix=fix)
