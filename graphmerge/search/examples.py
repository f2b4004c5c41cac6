"""Evaluation examples a search spends, counted the same way in every process.

A trial's `examples` are the examples it adds to the search's evaluation work: per objective task, those
its configuration had not been scored on earlier in this search. Budgets are nested prefixes of each task
and scores are cached per example, so promoting a configuration from 50 to 100 examples evaluates 50 new
ones, and asking a (configuration, budget) again costs nothing. The count depends on the trial sequence
only, never on what a shared cache happened to hold, so a resume, a rerun and another machine count the
same, and it can decide when a search stops (`max_examples`). The examples lm-eval really ran in this
process are kept beside it (`extra.examples_run`, records.EXAMPLES_RUN): with a cold cache the two
agree, except where two configurations build the same model, which the cache evaluates once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .records import Objective, TrialRecord

# TrialOutcome.extra key: examples scored per task (the first N of each, N = min(limit, task size)).
SCORED = "examples_scored"


def scored_per_task(record: TrialRecord, objectives: Sequence[Objective]) -> dict[str, int]:
    """The examples a trial's scores rest on, per task. Logs from before the count existed give the
    limit per objective (exact whenever the limit does not exceed the task)."""
    if record.infeasible:
        return {}
    counts = record.extra.get(SCORED)
    if isinstance(counts, Mapping):
        return {str(k): int(v) for k, v in counts.items()}
    if record.limit is None:
        return {}
    return {o.name: int(record.limit) for o in objectives}


@dataclass
class ExampleLedger:
    """Running count over a trial sequence; `charge` numbers a record's examples and the running total."""

    objectives: Sequence[Objective]
    total: int = 0
    _seen: dict[str, dict[str, int]] = field(default_factory=dict)

    def charge(self, record: TrialRecord) -> TrialRecord:
        key = json.dumps(dict(record.config), sort_keys=True, default=str)
        seen = self._seen.setdefault(key, {})
        new = 0
        for task, count in scored_per_task(record, self.objectives).items():
            new += max(0, count - seen.get(task, 0))
            seen[task] = max(count, seen.get(task, 0))
        self.total += new
        return replace(record, examples=new, examples_total=self.total)


def examples_to_reach(records: Sequence[TrialRecord], score: float, budget: int | None) -> int | None:
    """Examples the search had spent when a trial at `budget` (None: any) first scored >= `score`
    (within float rounding: a weighted sum of the same task scores may differ in its last bit)."""
    for r in records:
        if not r.infeasible and (budget is None or r.limit == budget) and r.score >= score - 1e-9:
            return r.examples_total
    return None
