"""What a user writes under an `optimize` node. Objectives are the evaluate node's task entries and the
evaluation settings its options (graphmerge/eval_settings.py), each with the one field a search adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from graphmerge.eval_settings import EvaluationOptions, EvaluationRequest, TaskEntry
from graphmerge.params import NodeParams

# The names a `trial:` template leaves for each trial to fill (see graphmerge/substitution.py).
TRIAL_NAMES = ("params.*", "budget")


class ObjectiveEntry(TaskEntry):
    held_out: str | None = Field(
        None,
        description="task with the same metric on held-out data, scored for the best model and the sources",
    )

    def entry(self, task: str | None = None) -> TaskEntry:
        """This objective as the evaluate node's task entry (on `task` instead, e.g. its held-out one)."""
        return TaskEntry(task=task or self.task, metric=self.metric, weight=self.weight)


class EvaluationSettings(EvaluationOptions):
    """The `evaluate` node's lm-eval settings; `limit` applies when the facade has no budgets."""

    held_out_limit: int | None = Field(None, ge=1, description="held-out examples per task (None: all)")


class OptimizeParams(NodeParams):
    strategy: str | None = Field(
        None, description="a registered search strategy: space + trial template (or give space: and trial:)"
    )
    models: list[str] = Field(min_length=1, description="model nodes the trials merge (and may reference)")
    base: str | None = Field(None, description="base model node")
    settings: dict[str, Any] = Field(default_factory=dict, description="strategy settings")
    objectives: list[ObjectiveEntry] = Field(min_length=1, description="tasks to maximise")
    include_path: list[Path] = Field(default_factory=list, description="folders of task YAMLs")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    smac: dict[str, Any] | None = Field(
        None, description="SMAC settings: facade, n_trials, min/max_budget, seed, ..."
    )
    config: dict[str, Any] | None = Field(
        None, description="evaluate this one configuration instead of searching"
    )
    space: dict[str, Any] | None = Field(
        None, description="explicit search space (params, conditions, forbidden)"
    )
    trial: dict[str, Any] | None = Field(
        None,
        description="explicit trial subgraph: nodes using ${params.X}, ${budget}",
        json_schema_extra={"template": list(TRIAL_NAMES)},
    )
    output: str = Field("model", description="the trial node whose model is evaluated")
    out: Path | None = Field(
        None, description="folder for trials, report, recipe (default: out/NODE next to the graph)"
    )

    @model_validator(mode="after")
    def _shape(self) -> OptimizeParams:
        if (self.strategy is None) == (self.trial is None):
            raise ValueError("give either `strategy:` or an explicit `space:` + `trial:`")
        if self.trial is not None and self.space is None and self.config is None:
            raise ValueError("an explicit `trial:` needs a `space:` (or a fixed `config:`)")
        if self.smac is None and self.config is None:
            raise ValueError("give `smac:` to search or `config:` to evaluate one configuration")
        if self.smac is not None and self.config is not None:
            raise ValueError("give `smac:` or `config:`, not both")
        with_held_out = [o.task for o in self.objectives if o.held_out]
        if with_held_out and len(with_held_out) != len(self.objectives):
            raise ValueError(
                f"give `held_out` for every objective or for none (only {with_held_out} have one)"
            )
        return self

    def refs(self) -> list[str]:
        return list(dict.fromkeys(([self.base] if self.base else []) + self.models))

    def out_dir(self, graph_dir: Path, node_name: str) -> Path:
        return Path(self.out) if self.out else graph_dir / "out" / node_name

    def request(self, limit: int | float | None, *, held_out: bool = False) -> EvaluationRequest:
        """The evaluation that scores a model for this search's objectives (or their held-out tasks):
        `limit` (a facade's budget) when given, else `evaluation.limit`."""
        tasks = [o.entry(o.held_out if held_out else None) for o in self.objectives]
        limit = limit if limit is not None else self.evaluation.limit
        return EvaluationRequest.of(self.evaluation, tasks, self.include_path, limit=limit)

    def smac_settings(self):
        from graphmerge.search import Objective as SearchObjective
        from graphmerge.search import SmacSettings
        from graphmerge.search.validation import parse_model

        data = {
            **(self.smac or {}),
            "objectives": [SearchObjective(name=o.task, weight=o.weight) for o in self.objectives],
        }
        return parse_model(SmacSettings, data, where="smac")
