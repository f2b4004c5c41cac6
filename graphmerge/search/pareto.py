"""Pareto front of trials over several objectives (all compared as utilities: higher is better)."""

from __future__ import annotations

from collections.abc import Sequence

from .records import Objective, TrialRecord


def member_name(index: int) -> str:
    """The name of the index-th Pareto member: its output key, its recipe file stem, its plot label."""
    return f"pareto_{index}"


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b: no worse everywhere and strictly better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[TrialRecord]:
    """Non-dominated, feasible records in their original order; duplicates of the same config keep the first."""
    points = [
        (r, tuple(o.utility(r.scores[o.name]) for o in objectives)) for r in records if not r.infeasible
    ]
    front: list[TrialRecord] = []
    seen: set[tuple[float, ...]] = set()
    for r, p in points:
        if any(dominates(q, p) for _, q in points):
            continue
        if p in seen:
            continue
        seen.add(p)
        front.append(r)
    return front
