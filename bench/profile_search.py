"""Where a search trial's time goes: cProfile of a short LFS search, split into parts.

    OMP_NUM_THREADS=1 python bench/profile_search.py --trials 16 --out /tmp/lfs_profile

Runs `graphmerge run graphs/lfs_search.yaml --set n_trials=N` in this process with an empty cache
(a fresh folder under --out), one torch thread, under cProfile (wall clock), then prints the share
of the run spent in each part and the per-trial seconds. The parts are cumulative times of the
functions that enter them, so they do not overlap except where noted; `other` is the remainder.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WARM_IMPORTS = (
    "lm_eval.evaluator",
    "lm_eval.tasks",
    "lm_eval.api.task",
    "lm_eval.models.huggingface",
    "transformers.models.llama.modeling_llama",
    "smac",
    "graphmerge.nodes.optimize",
    "graphmerge.search",
    "graphmerge.evaluation",
)

# part -> (module path fragment, function name) pairs whose cumulative time makes up the part.
PARTS: dict[str, list[tuple[str, str]]] = {
    "lm-eval environment collection (add_env_info, git hash)": [
        ("lm_eval/loggers/utils.py", "add_env_info"),
        ("lm_eval/loggers/utils.py", "get_git_commit_hash"),
    ],
    "generation (HFLM.generate_until)": [("lm_eval/models/huggingface.py", "generate_until")],
    "loglikelihood (HFLM)": [
        ("lm_eval/models/huggingface.py", "loglikelihood"),
        ("lm_eval/models/huggingface.py", "loglikelihood_rolling"),
    ],
    "building / loading the model": [
        ("graphmerge/evaluation/model.py", "build_model"),
        ("graphmerge/evaluation/model.py", "resident_model"),
    ],
    "task checks and keys (evaluation/tasks.py)": [
        ("graphmerge/evaluation/tasks.py", f)
        for f in (
            "resolve_tasks",
            "task_config_hash",
            "task_metrics",
            "task_filters",
            "task_data_files",
            "_entry",
        )
    ],
    "tensor work (executor.materialize)": [("graphmerge/executor.py", "materialize")],
    "SMAC (ask + tell)": [("graphmerge/search/driver.py", "_ask"), ("graphmerge/search/driver.py", "tell")],
}


def _cumulative(stats: pstats.Stats, pairs: list[tuple[str, str]]) -> float:
    total = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        for frag, name in pairs:
            # only outermost calls: skip recursive/nested entries from a function of the same part
            if func == name and filename.endswith(frag):
                nested = any(
                    cf == name and cfile.endswith(frag) for (cfile, _l, cf) in callers for frag, name in pairs
                )
                if not nested:
                    total += ct
    return total


def split(stats: pstats.Stats, total: float, trials: int) -> list[tuple[str, float]]:
    """(part, seconds) rows; lm-eval's total is split into environment, model calls and the rest."""
    t = {name: _cumulative(stats, pairs) for name, pairs in PARTS.items()}
    env = t["lm-eval environment collection (add_env_info, git hash)"]
    gen = t["generation (HFLM.generate_until)"]
    ll = t["loglikelihood (HFLM)"]
    # simple_evaluate calls evaluate through a decorator, so nested calls are not seen as nested:
    # take simple_evaluate's time where it ran, else evaluate's.
    simple = _cumulative(stats, [("lm_eval/evaluator.py", "simple_evaluate")])
    lm_total = simple or _cumulative(stats, [("lm_eval/evaluator.py", "evaluate")])
    lm_rest = max(lm_total - env - gen - ll, 0.0)
    rows = [
        ("lm-eval environment collection (add_env_info, git hash)", env),
        ("generation (HFLM.generate_until)", gen + ll),
        ("the rest of lm-eval", lm_rest),
        ("building / loading the model", t["building / loading the model"]),
        ("SMAC (ask + tell)", t["SMAC (ask + tell)"]),
        ("tensor work (executor.materialize)", t["tensor work (executor.materialize)"]),
        ("task checks and keys (evaluation/tasks.py)", t["task checks and keys (evaluation/tasks.py)"]),
    ]
    rows.append(("everything else (planning, cache, logging, reports)", total - sum(s for _, s in rows)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--graph", type=Path, default=REPO / "graphs/lfs_search.yaml")
    ap.add_argument("--out", type=Path, default=Path("/tmp/graphmerge_profile"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="extra graph vars")
    ap.add_argument(
        "--stats", type=Path, default=None, help="split a saved profile.pstats instead of running"
    )
    args = ap.parse_args(argv)
    if args.stats is not None:
        stats = pstats.Stats(str(args.stats))
        total = max(ct for (_f, _l, fn), (_c, _n, _t, ct, _cl) in stats.stats.items() if fn == "main")  # type: ignore[attr-defined]
        _table(stats, total, args.trials)
        return 0

    import importlib

    import torch

    torch.set_num_threads(1)
    # Imports are paid once per process, in whichever part first needs them; load them up front so
    # the split shows what every trial pays.
    for name in WARM_IMPORTS:
        importlib.import_module(name)
    from graphmerge.cli import main as cli

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    cli_args = [
        "run",
        str(args.graph),
        "--set",
        f"n_trials={args.trials}",
        "--set",
        f"out={args.out / 'search'}",
        "--cache-dir",
        str(args.out / "cache"),
        "--no-progress",
    ]
    for s in args.set:
        cli_args += ["--set", s]
    prof = cProfile.Profile()
    cpu_before = _cpu()
    started = time.perf_counter()
    prof.enable()
    code = cli(cli_args)
    prof.disable()
    total = time.perf_counter() - started
    cpu = _cpu() - cpu_before
    prof.dump_stats(str(args.out / "profile.pstats"))
    print(
        f"exit {code}; {args.trials} trials; {total:.1f} s wall under cProfile; CPU {cpu:.1f} s (with children)"
    )
    _table(pstats.Stats(prof), total, args.trials)
    return 0 if code in (0, None) else 1


def _cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _table(stats: pstats.Stats, total: float, trials: int) -> None:
    print("| part | share of wall | s per trial |\n|---|---|---|")
    for name, secs in split(stats, total, trials):
        print(f"| {name} | {100 * secs / total:.0f}% | {secs / trials:.2f} |")
    print(f"| total | 100% | {total / trials:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
