"""Plain records exchanged between the search driver, the objective and the trial log.

Scores are "higher is better" after `Objective.utility`; SMAC minimises, so costs are negated utilities. Keeping
these conversions in one place is what makes a replayed trial tell SMAC exactly the cost the live run told it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graphmerge.errors import EvaluationError

# TrialOutcome.extra key: the examples lm-eval ran for the trial in its process (cache misses; 0 when the
# cache held every score). Logs from before it was the one key wrote it as `examples`, which from_json
# still reads.
EXAMPLES_RUN = "examples_run"
_OLD_EXTRA_KEYS = {"examples": EXAMPLES_RUN}


class Objective(BaseModel):
    """One score the search optimises: its name in `TrialOutcome.scores`, its weight in the single-objective
    weighted sum, its direction, and the score given to infeasible or failed trials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    weight: float = 1.0
    maximize: bool = True
    # 0.0 is the worst accuracy-like score; set it for minimised objectives (e.g. perplexity: a large number).
    worst: float = 0.0

    def utility(self, score: float) -> float:
        return float(score) if self.maximize else -float(score)


@dataclass(frozen=True)
class TrialOutcome:
    """What an objective returns for one (config, budget).

    scores: raw metric values per objective name. cost_s: seconds spent (for reports). extra: JSON-able
    details (e.g. executed/cached node counts) shown in progress lines and kept in the log. infeasible: the
    config could not be built/evaluated meaningfully; every objective then gets its `worst` score.
    """

    scores: Mapping[str, float] = field(default_factory=dict)
    cost_s: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    infeasible: bool = False


def resolve_scores(outcome: TrialOutcome, objectives: Sequence[Objective]) -> dict[str, float]:
    """Scores for every objective: worst ones for infeasible trials; non-finite scores count as worst too
    (a NaN would poison the surrogate model)."""
    scores: dict[str, float] = {}
    for obj in objectives:
        if outcome.infeasible:
            scores[obj.name] = obj.worst
            continue
        if obj.name not in outcome.scores:
            raise EvaluationError(
                f"the trial returned no score for objective `{obj.name}` (got {sorted(outcome.scores)})",
                where="search objective",
                fix="name objectives after the evaluated tasks",
            )
        value = float(outcome.scores[obj.name])
        scores[obj.name] = value if math.isfinite(value) else obj.worst
    return scores


def weighted_score(scores: Mapping[str, float], objectives: Sequence[Objective]) -> float:
    """Single-objective target: weighted sum of utilities (declared weights, not normalised)."""
    return float(sum(o.weight * o.utility(scores[o.name]) for o in objectives))


@dataclass(frozen=True)
class TrialRecord:
    """One told trial. `order` is its position in SMAC's tell sequence (shown everywhere as the 1-based
    `number`); `budget` is SMAC's (float) budget, `limit` the integer number of evaluation examples passed to
    the objective. `asks_before_tell`: how many configurations SMAC had been asked for when this trial was
    told; with parallel workers that interleaving decides SMAC's next proposals, so replay restores it.
    `examples` / `examples_total`: evaluation examples this trial added to the search and the search's
    running total after it (see examples.py); derived from the trial sequence, recomputed on replay."""

    order: int
    config: Mapping[str, Any]
    budget: float | None
    limit: int | None
    scores: Mapping[str, float]
    score: float
    infeasible: bool = False
    time_s: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    asks_before_tell: int | None = None
    replayed: bool = False
    examples: int = 0
    examples_total: int = 0

    @property
    def number(self) -> int:
        return self.order + 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("replayed")  # a property of this session, not of the trial
        data["config"] = dict(self.config)
        data["scores"] = dict(self.scores)
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, replayed: bool = False, order: int | None = None
    ) -> TrialRecord:
        return cls(
            order=int(data["order"]) if order is None else order,
            config=dict(data["config"]),
            budget=None if data.get("budget") is None else float(data["budget"]),
            limit=None if data.get("limit") is None else int(data["limit"]),
            scores={str(k): float(v) for k, v in data["scores"].items()},
            score=float(data["score"]),
            infeasible=bool(data.get("infeasible", False)),
            time_s=float(data.get("time_s", 0.0)),
            started=float(data.get("started", 0.0)),
            finished=float(data.get("finished", 0.0)),
            extra=current_extra(data.get("extra") or {}),
            asks_before_tell=None if data.get("asks_before_tell") is None else int(data["asks_before_tell"]),
            replayed=replayed,
        )

    def costs(self, objectives: Sequence[Objective], multi_objective: bool) -> float | list[float]:
        """SMAC cost(s): negated utilities (SMAC minimises)."""
        if multi_objective:
            return [-o.utility(self.scores[o.name]) for o in objectives]
        return -weighted_score(self.scores, objectives)


def current_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's extra under today's keys: an old key (from a log of an earlier version, or an objective
    written for one) gives its value to the current key, which wins where both are there, and is dropped,
    so a record logged or written back carries only the current key."""
    out = {k: v for k, v in extra.items() if k not in _OLD_EXTRA_KEYS}
    for old, new in _OLD_EXTRA_KEYS.items():
        if old in extra:
            out.setdefault(new, extra[old])
    return out
