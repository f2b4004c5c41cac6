"""SMAC ask/tell loop with an append-only trial log, exact replay on resume, and optional dask parallelism.

Why our own loop instead of `smac.optimize()`: SMAC's own resume reloads its runhistory but not the state of
its random generators, so a resumed SMAC run does not continue the trajectory of an uninterrupted one, and
SMAC prompts interactively when its output directory has a different meta. We instead always build a fresh
SMAC (overwrite=True, throw-away temp output dir) with the same seed and *replay* the log: every time SMAC
asks for a (config, budget) that the log already holds, we tell it the logged outcome without evaluating.
SMAC is deterministic given its seed and the sequence of tells, so with n_workers=1 a resumed run asks exactly
the configs the uninterrupted run asked, and its final log is identical (tests check this).

Guarantees (tests/test_search_determinism.py runs each in fresh processes with different hash seeds):
  * the same space, settings and seed ask the same trials in any process: SMAC's local search no longer
    orders its start points by Python's string hash (see determinism.py);
  * a SIGKILL loses only the trial being evaluated (each finished trial is one fsync'ed JSONL line);
  * Ctrl-C (KeyboardInterrupt, also raised inside the objective) stops after the last finished trial and raises
    SearchInterrupted; rerunning resumes exactly where the uninterrupted run would be;
  * raising n_trials extends a finished run: the old trials replay, new ones follow as if it had never stopped
    (the SMAC scenario's own n_trials is fixed and huge, so the initial design does not depend on n_trials);
    the same holds for max_examples, whose count (examples.py) follows from the trial sequence alone, so a
    resumed search stops at the trial the uninterrupted one stopped at;
  * a log from a different search (space, seed, facade, budgets, eta, objectives, initial design) is refused
    with a SpecError; a replay that leaves the log anyway (an edited log, other library versions) is counted
    (`diverged`) and reported, logged outcomes are still reused whenever their (config, budget) is asked again,
    and logged trials not asked again stay in the result's `history`: the best is chosen over everything
    ever logged, so a rerun never reports a worse model than an earlier run found;
  * with n_workers>1 or a scheduler_address trials are told in completion order; the log records how many asks
    preceded each tell, and a replay tells logged trials at the same points, so a rerun asks the same trials
    and evaluates none, with any number of workers (tests/test_search_distributed.py, on a real cluster);
  * a trial whose Dask workers all died is recorded as failed (search/distributed.py) and the search goes on.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graphmerge.atomic import atomic_write_bytes
from graphmerge.errors import GraphmergeError, SpecError

from .determinism import library_versions, stable_acquisition_maximizer
from .distributed import WORKER_LOST, check_scheduler_address, remote_failure, trial_cluster, worker_lost
from .examples import ExampleLedger
from .pareto import non_dominated
from .records import Objective, TrialOutcome, TrialRecord, current_extra, resolve_scores, weighted_score
from .report import convergence_png, pareto_png, trials_csv, trials_jsonl
from .space import SearchSpace, config_to_dict, space_fingerprint, validate_config
from .trial_log import LOG_NAME, TrialLog, trial_key

log = logging.getLogger("graphmerge.search")

# The SMAC scenario's n_trials only feeds the initial-design size cap and smac.optimize(); we stop the loop
# ourselves. A fixed value keeps the trajectory independent of n_trials, which is what lets a run be extended.
_SCENARIO_TRIALS = 10**9
DEFAULT_TRIALS = 500

ObjectiveFn = Callable[[dict[str, Any], "int | None"], TrialOutcome]
FeasibleFn = Callable[[dict[str, Any]], bool]


class SearchInterrupted(GraphmergeError):
    """The user interrupted the search; finished trials are in the log and a rerun resumes."""


class SmacSettings(BaseModel):
    """SMAC settings of an `optimize` node. Defaults mirror auto-merge-llm's exp_config (eta 3, budgets
    100..1000 examples, 500 trials, no random initial points besides the explicit initial configs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    facade: Literal["hpo", "multi_fidelity", "multi_objective"] = "multi_fidelity"
    # Stopping rule: n_trials told trials, or max_examples evaluation examples spent (examples.py), whichever
    # comes first; with neither, DEFAULT_TRIALS trials.
    n_trials: int | None = Field(None, ge=1)
    max_examples: int | None = Field(None, ge=1)
    # Budgets are numbers of evaluation examples (lm-eval `limit`). hpo evaluates every trial at max_budget
    # (None = the full task). multi_objective uses Hyperband when min_budget < max_budget, else plain racing.
    min_budget: int | None = Field(100, ge=1)
    max_budget: int | None = Field(1000, ge=1)
    eta: int = Field(3, ge=2)
    seed: int = 0
    # Trials in flight. >1 without scheduler_address: a LocalCluster of n_workers processes. With
    # scheduler_address and no n_workers: as many as the scheduler's worker threads when the search starts.
    n_workers: int = Field(1, ge=1)
    scheduler_address: str | None = None  # a `dask scheduler` (tcp://HOST:PORT) that runs the trials
    worker_wait_s: float = Field(120.0, gt=0)  # how long to wait for the scheduler's first worker
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(name="score")], min_length=1)
    # Random (multi-fidelity) / Sobol (hpo) initial points, on top of the explicit initial configs.
    n_initial: int = Field(0, ge=0)
    # "raise": an exception in the objective stops the search (finished trials stay logged; rerun resumes).
    # "worst": the trial gets every objective's worst score and the search goes on.
    on_error: Literal["raise", "worst"] = "raise"

    @field_validator("scheduler_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else check_scheduler_address(value)

    @model_validator(mode="after")
    def _check(self) -> SmacSettings:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        if (
            self.facade != "hpo"
            and self.min_budget is not None
            and self.max_budget is not None
            and self.min_budget > self.max_budget
        ):
            raise ValueError(f"min_budget ({self.min_budget}) must not exceed max_budget ({self.max_budget})")
        if self.facade == "multi_fidelity" and (self.min_budget is None or self.max_budget is None):
            raise ValueError("multi_fidelity needs min_budget and max_budget")
        if self.facade == "multi_fidelity" and self.min_budget == self.max_budget:
            raise ValueError("multi_fidelity needs min_budget < max_budget (use facade: hpo for one budget)")
        if self.facade == "multi_objective" and len(self.objectives) < 2:
            raise ValueError("multi_objective needs at least two objectives")
        return self

    @property
    def max_trials(self) -> int | None:
        """The trial count that stops the search (None: only max_examples does)."""
        if self.n_trials is None and self.max_examples is None:
            return DEFAULT_TRIALS
        return self.n_trials

    @property
    def multi_objective(self) -> bool:
        return self.facade == "multi_objective"

    @property
    def distributed(self) -> bool:
        """Trials run on Dask workers (in other processes), not in this one."""
        return self.n_workers > 1 or self.scheduler_address is not None

    @property
    def uses_budgets(self) -> bool:
        if self.facade == "multi_fidelity":
            return True
        return (
            self.facade == "multi_objective"
            and self.min_budget is not None
            and self.max_budget is not None
            and self.min_budget < self.max_budget
        )

    def trajectory_fields(self) -> dict[str, Any]:
        """Settings that change what SMAC asks; a trial log is only valid for equal values."""
        return self.model_dump(
            mode="json",
            include={"facade", "min_budget", "max_budget", "eta", "seed", "objectives", "n_initial"},
        )


@dataclass(frozen=True)
class SearchResult:
    """A finished (or resumed, or extended) search. `trials` are this run's told trials, numbered 1..n;
    `history` holds logged trials this run did not ask for again (a diverged replay, a shrunk n_trials),
    numbered after them: they stay results of this search, and `best` is chosen over both."""

    trials: tuple[TrialRecord, ...]
    objectives: tuple[Objective, ...]
    multi_objective: bool
    best: TrialRecord | None  # best weighted score at the highest budget reached
    pareto: tuple[TrialRecord, ...]  # multi-objective: non-dominated trials at the highest budget reached
    replayed: int = 0
    evaluated: int = 0
    diverged: int = 0  # asks that left the logged trajectory while logged trials remained
    diverged_at: int | None = None  # number of the first such trial
    history: tuple[TrialRecord, ...] = ()
    libraries_then: Mapping[str, str] | None = None  # the log's library versions, when they differ
    in_flight: int = 1  # trials run at once (on Dask workers when more than one or with scheduler_address)
    log_path: Path | None = None
    files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def unused_log_entries(self) -> int:
        return len(self.history)

    @property
    def all_trials(self) -> tuple[TrialRecord, ...]:
        return self.trials + self.history

    @property
    def examples_total(self) -> int:
        """Evaluation examples the search has spent over every logged trial (examples.py)."""
        return max((r.examples_total for r in self.all_trials), default=0)

    @property
    def best_config(self) -> dict[str, Any] | None:
        return None if self.best is None else dict(self.best.config)

    @property
    def best_scores(self) -> dict[str, float] | None:
        return None if self.best is None else dict(self.best.scores)

    def divergence_note(self) -> str:
        return (
            f"the replay left the trial log at trial {self.diverged_at} ({self.diverged} asks differed); "
            f"{len(self.history)} logged trials not asked again stay in the history and count for the best"
        )

    def write(
        self, out_dir: Path, references: Mapping[str, float] | None = None, caption: str | None = None
    ) -> dict[str, Path]:
        """trials.jsonl, trials.csv, report.png, examples.png (report.png's plot against the evaluation
        examples spent) and (multi-objective) pareto.png, each written atomically.
        `references`: scores of other models (e.g. the sources) drawn as horizontal lines on report.png;
        `caption`: a line under its title (e.g. the held-out scores)."""
        out_dir = Path(out_dir)
        files = {
            "trials_jsonl": out_dir / "trials.jsonl",
            "trials_csv": out_dir / "trials.csv",
            "report_png": out_dir / "report.png",
            "examples_png": out_dir / "examples.png",
        }
        rows = self.all_trials
        atomic_write_bytes(files["trials_jsonl"], trials_jsonl(rows, len(self.trials)))
        atomic_write_bytes(files["trials_csv"], trials_csv(rows, self.objectives, len(self.trials)))
        atomic_write_bytes(
            files["report_png"], convergence_png(rows, self.best, references or {}, caption=caption)
        )
        atomic_write_bytes(
            files["examples_png"],
            convergence_png(
                rows, self.best, references or {}, "best score against examples", caption, by="examples"
            ),
        )
        if self.multi_objective:
            files["pareto_png"] = out_dir / "pareto.png"
            top = _at_highest_budget(rows)
            atomic_write_bytes(files["pareto_png"], pareto_png(top, self.pareto, self.objectives))
        return files


def _at_highest_budget(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    budgets = [r.budget for r in records if r.budget is not None]
    if not budgets:
        return list(records)
    top = max(budgets)
    return [r for r in records if r.budget == top]


def best_record(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """Incumbent: highest weighted score among feasible trials at the highest budget reached (ties: earliest)."""
    pool = [r for r in _at_highest_budget(records) if not r.infeasible]
    if not pool:
        return None
    return max(pool, key=lambda r: (r.score, -r.order))


LINE_WIDTH = 100


def progress_line(
    record: TrialRecord,
    best: TrialRecord | None,
    n_trials: int | None,
    width: int = LINE_WIDTH,
    max_examples: int | None = None,
) -> str:
    """One line per trial, at most `width` columns: number, budget, score, best so far, work done, time.
    Per-objective scores are shown when they fit; work counts are the trial's executed/total tensor tasks
    and run/total evaluations. With `max_examples` (the stopping rule) the examples spent come first."""
    head = [f"trial {record.number}" + (f"/{n_trials}" if n_trials else "")]
    if max_examples is not None:
        head.append(f"examples {record.examples_total}/{max_examples}")
    if record.limit is not None:
        head.append(f"budget {record.limit}")
    details: list[str] = []
    if record.infeasible:
        score = "infeasible" + (f" ({record.extra['reason']})" if "reason" in record.extra else "")
    else:
        score = f"score {record.score:.4g}"
        # Per-objective scores with names when they fit, else just the values in objective order.
        details.append(" ".join(f"{k}={v:.3g}" for k, v in record.scores.items()))
        details.append("/".join(f"{v:.3g}" for v in record.scores.values()))
    tail = []
    if best is not None:
        tail.append(f"best {best.score:.4g} #{best.number}")
    x, work = record.extra, []
    if "executed" in x and "cached" in x:
        work.append(f"tasks {x['executed']}/{int(x['executed']) + int(x['cached'])}")
    if "evaluations_run" in x and "evaluations_cached" in x:
        work.append(
            f"evals {x['evaluations_run']}/{int(x['evaluations_run']) + int(x['evaluations_cached'])}"
        )
    if work:
        tail.append(" ".join(work))
    tail.append("replayed" if record.replayed else f"{record.time_s:.1f}s")
    for middle in [*(f"{score} ({d})" for d in details), score]:
        line = " | ".join([*head, middle, *tail])
        if len(line) <= width:
            return line
    return line[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------------------


def _make_smac(
    space: Any,
    settings: SmacSettings,
    output_dir: Path,
    initial_configs: Sequence[Mapping[str, Any]],
):
    """SMAC over `space`, a ConfigSpace.ConfigurationSpace (search/configspace.py)."""
    from ConfigSpace import Configuration
    from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, Scenario
    from smac.model.random_forest import RandomForest
    from smac.multi_objective.parego import ParEGO

    budgets = settings.uses_budgets
    scenario = Scenario(
        space,
        name="graphmerge",
        output_directory=output_dir,
        deterministic=True,  # one evaluation per (config, budget): our objectives fix their own seeds
        objectives=[o.name for o in settings.objectives] if settings.multi_objective else "cost",
        n_trials=_SCENARIO_TRIALS,
        seed=settings.seed,
        min_budget=float(settings.min_budget) if budgets else None,
        max_budget=float(settings.max_budget) if budgets else None,
    )
    facade = MultiFidelityFacade if budgets else HyperparameterOptimizationFacade
    if budgets:
        intensifier = _hyperband_type()(
            scenario=scenario, eta=settings.eta, incumbent_selection="highest_observed_budget"
        )
    else:
        intensifier = HyperparameterOptimizationFacade.get_intensifier(scenario, max_config_calls=1)
    extra_configs = [Configuration(space, values=dict(c)) for c in initial_configs]
    n_initial = settings.n_initial
    if n_initial == 0 and not extra_configs:
        n_initial = 1  # SMAC needs at least one initial point to start its model
    initial_design = facade.get_initial_design(
        scenario, n_configs=n_initial, max_ratio=1.0, additional_configs=extra_configs
    )
    # The facades' random forest, but single-threaded: with n_jobs=-1 sklearn/joblib spends most of each ask
    # polling its thread pool (seconds per ask on a busy machine); the forest itself is identical.
    model = RandomForest(
        log_y=True,
        n_trees=10,
        bootstrapping=True,
        ratio_features=1.0,
        min_samples_split=2,
        min_samples_leaf=1,
        max_depth=2**20,
        configspace=space,
        seed=settings.seed,
        n_jobs=1,
    )
    return facade(
        scenario,
        None,  # pure ask/tell: we evaluate
        model=model,
        acquisition_maximizer=stable_acquisition_maximizer(facade, scenario),
        intensifier=intensifier,
        initial_design=initial_design,
        multi_objective_algorithm=ParEGO(scenario) if settings.multi_objective else None,
        overwrite=True,  # never SMAC's interactive "output exists" prompt; the dir is ours and temporary
        logging_level=False,  # do not let SMAC reconfigure the application's logging
    )


def _hyperband_type():
    from smac.intensifier.hyperband import Hyperband

    class TolerantHyperband(Hyperband):
        """Hyperband whose incumbent bookkeeping cannot crash a tell.

        SMAC 2.4 asserts inside update_incumbents when multi-objective incumbents sit on different budgets
        (seen with ParEGO + Hyperband). Successive halving never uses incumbents to pick trials; we compute
        the incumbent and the Pareto set ourselves from the trial log. So skipping that update is harmless
        and deterministic (the same tell sequence skips the same updates on replay).
        """

        def update_incumbents(self, config):  # type: ignore[override]
            try:
                super().update_incumbents(config)
            except AssertionError:
                log.debug("SMAC incumbent update skipped (multi-objective budgets mismatch)")

    return TolerantHyperband


def _call_objective(objective: ObjectiveFn, config: dict[str, Any], limit: int | None):
    """Runs where the trial runs (here or on a dask worker) so start/end times are the real ones."""
    started = time.time()
    outcome = objective(dict(config), limit)
    finished = time.time()
    if isinstance(outcome, Mapping):  # convenience: a bare {objective: score} dict
        outcome = TrialOutcome(scores=dict(outcome))
    if not isinstance(outcome, TrialOutcome):
        raise TypeError(f"the search objective must return TrialOutcome, got {type(outcome).__name__}")
    return outcome, started, finished


class _Session:
    """State of one run_search call (kept out of run_search to keep the loop readable)."""

    def __init__(self, settings: SmacSettings, tlog: TrialLog, on_trial, is_feasible):
        self.settings = settings
        self.objectives = list(settings.objectives)
        self.tlog = tlog
        self.cache = tlog.cache()
        self.logged = len(tlog.entries)
        self.on_trial = on_trial
        self.is_feasible = is_feasible
        self.records: list[TrialRecord] = []
        self.ledger = ExampleLedger(self.objectives)
        self.replayed = 0
        self.evaluated = 0
        self.diverged = 0
        self.diverged_at: int | None = None

    def finished(self, told: int | None = None) -> bool:
        """Whether the stopping rule is met after `told` trials (default: those told so far)."""
        told = len(self.records) if told is None else told
        max_trials, max_examples = self.settings.max_trials, self.settings.max_examples
        return (max_trials is not None and told >= max_trials) or (
            max_examples is not None and self.ledger.total >= max_examples
        )

    def limit_for(self, budget: float | None) -> int | None:
        if budget is None:
            return self.settings.max_budget  # hpo: evaluate at max_budget (None = full task)
        return max(1, int(round(budget)))

    def _diverge(self, number: int, why: str) -> None:
        self.diverged += 1
        if self.diverged_at is None:
            self.diverged_at = number
            log.warning(
                "replay diverged at trial %d: %s; logged results are still reused when asked again and "
                "every logged trial counts for the best",
                number,
                why,
            )

    def lookup(self, config: dict[str, Any], budget: float | None, asked: int) -> TrialRecord | None:
        """The logged result of (config, budget), with its logged order; None if it has to be evaluated.
        `asked` is this ask's 1-based index."""
        queue = self.cache.get(trial_key(config, budget))
        if not queue:
            if self.replayed < self.logged:
                self._diverge(asked, "SMAC asked for a configuration the log does not have")
            return None
        entry = queue.popleft()
        if not self.settings.distributed and int(entry.get("order", -1)) != len(self.records):
            self._diverge(
                asked, f"SMAC asked for logged trial #{int(entry.get('order', -1)) + 1} out of turn"
            )
        self.replayed += 1
        rec = TrialRecord.from_json(entry, replayed=True)
        # The weighted score is recomputed, not trusted: it must match this session's objectives exactly.
        return _with_score(rec, self.objectives)

    def history(self) -> list[TrialRecord]:
        """Logged trials this run did not ask for, in log order, numbered after this run's trials."""
        left = sorted((e for q in self.cache.values() for e in q), key=lambda e: self.tlog.entries.index(e))
        start = len(self.records)
        return [
            self.ledger.charge(
                _with_score(TrialRecord.from_json(e, replayed=True, order=start + i), self.objectives)
            )
            for i, e in enumerate(left)
        ]

    def infeasible_record(self, config, budget, reason: str, extra: Mapping[str, Any] | None = None):
        outcome = TrialOutcome(scores={}, extra={"reason": reason, **(extra or {})}, infeasible=True)
        now = time.time()
        return self.make_record(config, budget, outcome, now, now)

    def make_record(
        self, config, budget, outcome: TrialOutcome, started: float, finished: float
    ) -> TrialRecord:
        scores = resolve_scores(outcome, self.objectives)
        return TrialRecord(
            order=len(self.records),
            config=config,
            budget=budget,
            limit=self.limit_for(budget),
            scores=scores,
            score=weighted_score(scores, self.objectives),
            infeasible=outcome.infeasible,
            time_s=float(outcome.cost_s) if outcome.cost_s else finished - started,
            started=started,
            finished=finished,
            extra=current_extra(outcome.extra),
        )

    def tell(self, smac, info, record: TrialRecord, asked: int) -> None:
        """Tell SMAC, numbered as the next trial; a new record is logged first with `asked` (the number of
        asks so far), so that a crash between log and tell replays cleanly."""
        from smac.runhistory import TrialValue

        if record.replayed:
            record = self.ledger.charge(replace(record, order=len(self.records)))
        else:
            record = self.ledger.charge(replace(record, order=len(self.records), asks_before_tell=asked))
            self.tlog.append(record)
            self.evaluated += 1
        value = TrialValue(
            cost=record.costs(self.objectives, self.settings.multi_objective),
            time=record.time_s,
            starttime=record.started,
            endtime=record.finished,
        )
        smac.tell(info, value, save=False)
        self.records.append(record)
        if self.on_trial is not None:
            self.on_trial(record, best_record(self.records))
        else:
            log.info(
                "%s",
                progress_line(
                    record,
                    best_record(self.records),
                    self.settings.max_trials,
                    max_examples=self.settings.max_examples,
                ),
            )

    def error_record(self, config, budget, exc: BaseException) -> TrialRecord:
        if self.settings.on_error == "raise" or isinstance(exc, GraphmergeError):
            raise exc
        log.warning("trial %d failed, scored as worst: %r", len(self.records) + 1, exc)
        return self.infeasible_record(config, budget, "error", {"error": repr(exc)[:500]})


def _with_score(rec: TrialRecord, objectives: Sequence[Objective]) -> TrialRecord:
    missing = [o.name for o in objectives if o.name not in rec.scores]
    if missing:
        raise SpecError(f"a logged trial has no score for {missing}", where="trial log", fix="delete the log")
    return replace(rec, score=weighted_score(rec.scores, objectives))


def check_search(
    space: SearchSpace,
    settings: SmacSettings,
    state_dir: Path,
    *,
    initial_configs: Sequence[Mapping[str, Any]] = (),
) -> None:
    """What `run_search` checks before its first trial (initial configs, an existing trial log's
    search and lines), raising the same errors, changing nothing."""
    initial = [
        validate_config(space, c, where=f"initial_configs[{i}]") for i, c in enumerate(initial_configs)
    ]

    def legacy() -> tuple[str, ...]:  # only for a log of another search or an old one: imports ConfigSpace
        from .configspace import to_configspace

        return _legacy_fingerprints(to_configspace(space), settings, initial)

    TrialLog.check(
        Path(state_dir) / LOG_NAME,
        _fingerprint(space_fingerprint(space), settings, initial),
        also_accept=legacy,
    )


def run_search(
    space: SearchSpace,
    objective: ObjectiveFn,
    settings: SmacSettings,
    state_dir: Path,
    on_trial: Callable[[TrialRecord, TrialRecord | None], None] | None = None,
    *,
    initial_configs: Sequence[Mapping[str, Any]] = (),
    is_feasible: FeasibleFn | None = None,
    write_reports: bool = True,
) -> SearchResult:
    """Run (or resume, or extend) a SMAC search; see the module docstring for the resume guarantees.

    objective(config, limit) -> TrialOutcome is called only for trials not in the log. `is_feasible(config)`
    False skips evaluation and scores the trial with every objective's `worst`. `on_trial(record, best)` is
    called after every tell (also for replayed trials, `record.replayed`); without it one progress line per
    trial goes to the `graphmerge.search` logger.
    """
    from .configspace import to_configspace

    state_dir = Path(state_dir)
    initial = [
        validate_config(space, c, where=f"initial_configs[{i}]") for i, c in enumerate(initial_configs)
    ]
    configspace = to_configspace(space)
    tlog = TrialLog(
        state_dir / LOG_NAME,
        _fingerprint(space_fingerprint(space), settings, initial),
        {
            "space": space_fingerprint(space),
            "settings": settings.trajectory_fields(),
            "libraries": library_versions(),
            "created": time.time(),
        },
        also_accept=_legacy_fingerprints(configspace, settings, initial),
    )
    session = _Session(settings, tlog, on_trial, is_feasible)
    smac_logger = logging.getLogger("smac")
    if smac_logger.level == logging.NOTSET:
        smac_logger.setLevel(logging.WARNING)  # SMAC's INFO chatter would drown our one line per trial

    tmp = Path(tempfile.mkdtemp(prefix="graphmerge-smac-"))
    in_flight = 1
    try:
        smac = _make_smac(configspace, settings, tmp / "smac", initial)
        if settings.distributed:
            with trial_cluster(settings) as cluster:
                in_flight = cluster.in_flight
                _loop_parallel(smac, session, objective, cluster.client, cluster.in_flight)
        else:
            _loop_sequential(smac, session, objective)
    except KeyboardInterrupt:
        raise SearchInterrupted(
            f"search interrupted after {len(session.records)} trials ({session.evaluated} evaluated now)",
            where=str(tlog.path),
            fix="finished trials are saved; rerun the same command to resume",
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    records = session.records
    history = session.history()
    everything = records + history
    result = SearchResult(
        trials=tuple(records),
        objectives=tuple(settings.objectives),
        multi_objective=settings.multi_objective,
        best=best_record(everything),
        pareto=(
            tuple(non_dominated(_at_highest_budget(everything), settings.objectives))
            if settings.multi_objective
            else ()
        ),
        replayed=session.replayed,
        evaluated=session.evaluated,
        diverged=session.diverged,
        diverged_at=session.diverged_at,
        history=tuple(history),
        libraries_then=tlog.libraries_then,
        in_flight=in_flight,
        log_path=tlog.path,
    )
    if write_reports:
        files = result.write(state_dir)
        object.__setattr__(result, "files", files)  # frozen dataclass: attach paths once, after writing
    return result


def _fingerprint(
    space: str,
    settings: SmacSettings,
    initial: list[dict[str, Any]],
    smac_version: str | None = None,
) -> str:
    """What makes two searches the same search, given the space's fingerprint. Library versions are not
    part of it (they are recorded in the log header instead); `smac_version` gives the fingerprint older
    logs were written with."""
    import hashlib
    import json

    blob: dict[str, Any] = {
        "space": space,
        "settings": settings.trajectory_fields(),
        "initial": initial,
    }
    if smac_version is not None:
        blob["smac"] = smac_version
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _legacy_fingerprints(
    configspace: Any, settings: SmacSettings, initial: list[dict[str, Any]]
) -> tuple[str, ...]:
    """The fingerprints logs of the same search were written with while the space was hashed through
    ConfigSpace's serialisation (with and, earlier still, without the SMAC version in it)."""
    from .configspace import legacy_space_fingerprint

    space = legacy_space_fingerprint(configspace)
    smac = library_versions()["smac"]
    return (_fingerprint(space, settings, initial), _fingerprint(space, settings, initial, smac_version=smac))


def _ask(smac):
    from smac.main.exceptions import ConfigurationSpaceExhaustedException

    try:
        return smac.ask()
    except (StopIteration, ConfigurationSpaceExhaustedException):  # a small finite space is used up
        return None


def _prepare(session: _Session, info, asked: int) -> tuple[dict[str, Any], float | None, TrialRecord | None]:
    """Replay or infeasibility: returns a record if the trial needs no evaluation."""
    config = config_to_dict(info.config)
    budget = None if info.budget is None else float(info.budget)
    rec = session.lookup(config, budget, asked)
    if rec is None and session.is_feasible is not None and not session.is_feasible(config):
        rec = session.infeasible_record(config, budget, "infeasible")
    return config, budget, rec


def _loop_sequential(smac, session: _Session, objective: ObjectiveFn) -> None:
    while not session.finished():
        info = _ask(smac)
        if info is None:
            log.warning("SMAC has no more configurations to try; stopping early")
            return
        asked = len(session.records) + 1
        config, budget, rec = _prepare(session, info, asked)
        if rec is None:
            try:
                outcome, started, finished = _call_objective(objective, config, session.limit_for(budget))
                rec = session.make_record(config, budget, outcome, started, finished)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                rec = session.error_record(config, budget, e)
        session.tell(smac, info, rec, asked)


def _loop_parallel(smac, session: _Session, objective: ObjectiveFn, client, in_flight: int) -> None:
    """Up to `in_flight` trials at once: as soon as one finishes it is told and the next is asked and
    submitted, so no worker waits for a batch. Trials are told in completion order.

    A replayed trial is told where the logged run told it: after as many asks as it records, in logged
    order. Replayed trials take no worker, so they do not count against `in_flight`: asks go on until
    each logged tell point is reached, whatever the number of workers now. SMAC's proposals depend only
    on that interleaving, so an unchanged rerun asks exactly the logged configurations and evaluates
    nothing, and a resumed run continues from the state the interrupted one had."""
    from distributed import as_completed

    address = session.settings.scheduler_address
    running: dict[Any, tuple[Any, dict[str, Any], float | None]] = {}
    done = as_completed(loop=client.loop)
    held: list[tuple[Any, TrialRecord]] = []  # replayed trials waiting for their logged tell point
    asked = 0
    exhausted = False

    def tell_held(force_one: bool = False) -> None:
        due = [h for h in held if h[1].asks_before_tell is None or h[1].asks_before_tell <= asked]
        if not due and force_one and held:
            due = [min(held, key=lambda h: h[1].order)]  # the log and SMAC disagree: keep going in log order
        for item in sorted(due, key=lambda h: h[1].order):
            held.remove(item)
            session.tell(smac, item[0], item[1], asked)

    def fill() -> None:
        nonlocal asked, exhausted
        while not exhausted and len(running) < in_flight and not session.finished(asked):
            info = _ask(smac)
            if info is None:
                exhausted = True
                return
            asked += 1
            config, budget, rec = _prepare(session, info, asked)
            if rec is None:
                fut = client.submit(_call_objective, objective, config, session.limit_for(budget), pure=False)
                running[fut] = (info, config, budget)
                done.add(fut)
            elif rec.replayed:
                held.append((info, rec))
            else:
                session.tell(smac, info, rec, asked)  # infeasible: nothing to evaluate
            tell_held()

    try:
        # Trials still running when max_examples is reached finish and are told: none is thrown away.
        while not session.finished() or running or held:
            fill()
            if not running:
                if not held:
                    return
                tell_held(force_one=True)
                continue
            fut = next(done)
            info, config, budget = running.pop(fut)
            try:
                outcome, started, ended = fut.result()
                rec = session.make_record(config, budget, outcome, started, ended)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                rec = _failed_remotely(session, config, budget, e, address)
            finally:
                # Drop the result from the worker's memory now: data still wanted when a worker dies is
                # recomputed, which would rerun finished trials.
                fut.release()
            session.tell(smac, info, rec, asked)
            tell_held()
    finally:
        for fut in running:
            fut.cancel()


def _failed_remotely(session: _Session, config, budget, exc: Exception, address: str | None) -> TrialRecord:
    if worker_lost(exc):
        log.warning(
            "trial %d lost its worker on every try, recorded as failed: %s", len(session.records) + 1, exc
        )
        return session.infeasible_record(config, budget, WORKER_LOST, {"error": str(exc)[:500]})
    cluster_error = remote_failure(exc, address)
    if cluster_error is not None:
        raise cluster_error from None
    return session.error_record(config, budget, exc)
