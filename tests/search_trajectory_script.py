"""A search in its own process, for the determinism and resume tests (tests/test_search_determinism.py).

    python tests/search_trajectory_script.py STATE_DIR N_TRIALS [--workers N] [--kill-after K] [--sigint-after K]

Runs the real SMAC driver on the LFS strategy's real search space (two models, four layers, three methods:
a conditional space like the shipped graphs') with a cheap deterministic objective, and prints one JSON line:
the trial table and the run's counters. `--kill-after K` / `--sigint-after K` make the objective send its own
process SIGKILL / SIGINT once the trial log holds K finished trials, i.e. in the middle of trial K+1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from graphmerge.search import SearchInterrupted, SmacSettings, TrialOutcome, run_search
from graphmerge.search.trial_log import LOG_NAME
from graphmerge.strategies import ModelInfo, lfs, parse_settings

SETTINGS = parse_settings(
    "lfs",
    {
        "models": ["a", "b"],
        "base": "c",
        "layer_granularity": 2,
        "methods": ["linear", "task_arithmetic", "ties"],
    },
)
INFO = ModelInfo(num_layers={"a": 4, "b": 4, "c": 4})


class Objective:
    """A smooth part (SMAC's model can learn it) plus a config-hash part (ties are rare); lower budgets see
    a biased version, like scoring fewer examples. Picklable, so Dask workers can run it."""

    def __init__(self, state_dir: str, kill_after: int | None, sigint_after: int | None):
        self.log = Path(state_dir) / LOG_NAME
        self.kill_after, self.sigint_after = kill_after, sigint_after

    def _logged(self) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if '"type": "trial"' in line)

    def __call__(self, config, limit):
        if self.kill_after is not None and self._logged() >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.sigint_after is not None and self._logged() >= self.sigint_after:
            os.kill(os.getpid(), signal.SIGINT)
        blob = json.dumps(config, sort_keys=True).encode()
        noise = int(hashlib.sha256(blob).hexdigest()[:8], 16) / 2**32
        smooth = sum(
            v for k, v in config.items() if isinstance(v, float) and (k.endswith("_a") or "lambda" in k)
        )
        return TrialOutcome(
            scores={"score": round(smooth / 8 + 0.3 * noise - 2.0 / limit, 6)},
            extra={"executed": 1, "cached": 0, "evaluations_run": 1, "evaluations_cached": 0},
        )


def table(result) -> list[list]:
    return [
        [r.number, json.dumps(dict(r.config), sort_keys=True), r.budget, r.limit, dict(r.scores)]
        for r in result.trials
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("state_dir")
    ap.add_argument("n_trials", type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kill-after", type=int)
    ap.add_argument("--sigint-after", type=int)
    args = ap.parse_args(argv)
    settings = SmacSettings(
        facade="multi_fidelity",
        n_trials=args.n_trials,
        min_budget=4,
        max_budget=16,
        eta=2,
        seed=0,
        n_workers=args.workers,
    )
    try:
        result = run_search(
            lfs.build_space(SETTINGS, INFO),
            Objective(args.state_dir, args.kill_after, args.sigint_after),
            settings,
            Path(args.state_dir),
            on_trial=lambda r, b: None,
            initial_configs=lfs.initial_configs(SETTINGS, INFO),
            write_reports=False,
        )
    except SearchInterrupted as e:
        print(json.dumps({"interrupted": str(e)}))
        return 3
    summary = {
        "trials": table(result),
        "evaluated": result.evaluated,
        "replayed": result.replayed,
        "diverged": result.diverged,
        "history": len(result.history),
        "best": [result.best.number, result.best.score] if result.best else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    # Import this file as a module: Dask pickles the objective by its module name, and `__main__` is not one
    # the workers can import (the tests put this folder on PYTHONPATH).
    import search_trajectory_script

    sys.exit(search_trajectory_script.main())
