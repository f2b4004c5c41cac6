"""Search trajectories across processes: hash seeds, thread counts, SIGKILL/SIGINT resume, reruns, extension,
parallel workers, history and divergence. Every search runs in fresh processes (tests/search_trajectory_script.py)
and is long enough (32 trials) to pass the initial design into SMAC's model-based proposals, where the hash
seed used to change the trajectory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ConfigSpace import ConfigurationSpace, Float

from graphmerge.search.determinism import stable_acquisition_maximizer, stable_key
from graphmerge.search.trial_log import LOG_NAME

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "search_trajectory_script.py"
N = 32


def _env(hash_seed: int, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")])
    env["PYTHONHASHSEED"] = str(hash_seed)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def start(state: Path, n: int, *extra: str, hash_seed: int = 0, threads: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(state), str(n), *extra],
        env=_env(hash_seed, threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, expect_rc: int = 0) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == expect_rc, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def run(state: Path, n: int, *extra: str, hash_seed: int = 0, threads: int = 1, expect_rc: int = 0) -> dict:
    return finish(start(state, n, *extra, hash_seed=hash_seed, threads=threads), expect_rc)


def logged_trials(state: Path) -> list[dict]:
    lines = (state / LOG_NAME).read_text().splitlines()[1:]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted 32-trial search (hash seed 1, one thread)."""
    state = tmp_path_factory.mktemp("reference")
    return state, run(state, N, hash_seed=1, threads=1)


def test_stable_local_search_orders_start_points_independently_of_their_order():
    from smac.acquisition.function import EI
    from smac.acquisition.maximizer.local_search import LocalSearch

    from graphmerge.search.determinism import _stable_local_search_type

    cs = ConfigurationSpace(seed=1)
    cs.add([Float("x", (0.0, 1.0)), Float("y", (0.0, 1.0))])
    configs = cs.sample_configuration(12)
    stable = _stable_local_search_type()(cs, acquisition_function=EI(), seed=0)
    plain = LocalSearch(cs, acquisition_function=EI(), seed=0)
    # Without a fitted model SMAC takes the additional start points only: exactly the set it deduplicates.
    points = [(0.0, c) for c in configs]
    forward = stable._get_init_points_from_previous_configs(configs, 12, points)
    backward = stable._get_init_points_from_previous_configs(configs, 12, points[::-1])
    assert len(forward) == 12
    assert forward == backward == sorted(configs, key=stable_key)
    # The same selection as SMAC's own: only the order differs.
    assert set(plain._get_init_points_from_previous_configs(configs, 12, points)) == set(forward)


def test_facades_get_the_stable_local_search(tmp_path):
    from smac import MultiFidelityFacade, Scenario

    from graphmerge.search.determinism import _stable_local_search_type

    cs = ConfigurationSpace(seed=0)
    cs.add(Float("x", (0.0, 1.0)))
    scenario = Scenario(cs, output_directory=tmp_path, min_budget=1, max_budget=4, n_trials=10)
    maximizer = stable_acquisition_maximizer(MultiFidelityFacade, scenario)
    assert type(maximizer._local_search) is _stable_local_search_type()


@pytest.mark.slow
def test_same_trials_for_any_hash_seed_and_thread_count(reference, tmp_path):
    _, ref = reference
    other = run(tmp_path / "b", N, hash_seed=2, threads=2)
    assert len(ref["trials"]) == N
    assert other["trials"] == ref["trials"]
    assert ref["evaluated"] == N and ref["diverged"] == 0


@pytest.mark.slow
def test_sigkill_then_sigint_resume_equals_uninterrupted(reference, tmp_path):
    ref_state, ref = reference
    state = tmp_path / "resumed"
    run(state, N, "--kill-after", "16", hash_seed=3, expect_rc=-9)
    assert len(logged_trials(state)) == 16
    stopped = run(state, N, "--sigint-after", "24", hash_seed=4, expect_rc=3)
    assert "interrupted" in stopped and len(logged_trials(state)) == 24
    done = run(state, N, hash_seed=5, threads=2)
    assert done["trials"] == ref["trials"]
    assert done["replayed"] == 24 and done["evaluated"] == N - 24 and done["diverged"] == 0
    # The log holds each trial once: exactly what the uninterrupted run logged.
    strip = [(e["order"], e["config"], e["budget"], e["scores"]) for e in logged_trials(state)]
    assert strip == [(e["order"], e["config"], e["budget"], e["scores"]) for e in logged_trials(ref_state)]


@pytest.mark.slow
def test_unchanged_rerun_evaluates_nothing_and_extension_replays_then_adds(reference, tmp_path):
    ref_state, ref = reference
    state = tmp_path / "copy"
    shutil.copytree(ref_state, state)
    fresh = start(tmp_path / "fresh48", N + 8, hash_seed=8)
    again = run(state, N, hash_seed=6, threads=2)
    assert again["trials"] == ref["trials"]
    assert (again["evaluated"], again["replayed"], again["diverged"]) == (0, N, 0)
    extended = run(state, N + 8, hash_seed=7)
    assert (extended["evaluated"], extended["replayed"], extended["diverged"]) == (8, N, 0)
    assert extended["trials"] == finish(fresh)["trials"]  # as if it had been asked for 48 from the start


@pytest.mark.slow
def test_fewer_trials_keep_the_rest_in_history_and_the_best_never_gets_worse(reference, tmp_path):
    ref_state, ref = reference
    state = tmp_path / "copy"
    shutil.copytree(ref_state, state)
    best_number = ref["best"][0]
    shorter = run(state, best_number - 1)  # stop before the best trial
    assert shorter["evaluated"] == 0 and shorter["history"] == N - (best_number - 1)
    assert shorter["best"][1] == ref["best"][1]


@pytest.mark.slow
def test_a_replay_that_leaves_the_log_is_reported_and_loses_nothing(reference, tmp_path):
    """A logged top-budget trial after the initial design is edited into a configuration SMAC never asks
    for, with a score above every other trial: the replay misses it (reported), evaluates what SMAC asks
    instead, and keeps the edited trial in the history, where it is still the best."""
    ref_state, ref = reference
    state = tmp_path / "edited"
    shutil.copytree(ref_state, state)
    lines = (state / LOG_NAME).read_text().splitlines()
    k = next(i for i in range(17, len(lines)) if json.loads(lines[i])["limit"] == 16)  # line 0: header
    entry = json.loads(lines[k])
    name = next(k for k, v in sorted(entry["config"].items()) if isinstance(v, float) and v > 0)
    entry["config"][name] /= 2
    entry["scores"] = {"score": ref["best"][1] + 1.0}
    lines[k] = json.dumps(entry, sort_keys=True)
    (state / LOG_NAME).write_text("\n".join(lines) + "\n")
    again = run(state, N)
    assert again["trials"] == ref["trials"]  # the one evaluated trial scores what it scored before
    assert (again["diverged"], again["evaluated"], again["history"]) == (1, 1, 1)
    assert again["best"] == [N + 1, ref["best"][1] + 1.0]  # history is numbered after this run's trials


@pytest.mark.slow
def test_two_workers_rerun_evaluates_nothing(tmp_path):
    state = tmp_path / "par"
    first = run(state, 30, "--workers", "2", hash_seed=11)
    assert first["evaluated"] == 30 and len(first["trials"]) == 30
    again = run(state, 30, "--workers", "2", hash_seed=12, threads=2)
    assert (again["evaluated"], again["replayed"], again["diverged"]) == (0, 30, 0)
    assert again["trials"] == first["trials"]
    extended = run(state, 34, "--workers", "2", hash_seed=13)
    assert extended["evaluated"] == 4 and extended["trials"][:30] == first["trials"]


# --- the CLI on the bundled tiny models --------------------------------------------------------------------

REPO = HERE.parent


def _cli_graph(folder: Path) -> Path:
    text = (REPO / "graphs" / "lfs_search.yaml").read_text()
    graph = folder / "lfs.yaml"
    graph.write_text(text.replace("../models/tiny", str(REPO / "models" / "tiny")))
    shutil.copytree(REPO / "graphs" / "tasks", folder / "tasks")
    return graph


def _cli(folder: Path, n_trials: int, hash_seed: int, threads: int) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "graphmerge.cli",
        "run",
        str(folder / "lfs.yaml"),
        "--json",
        "--no-progress",
    ]
    args += ["--cache-dir", str(folder / "cache"), "--set", f"n_trials={n_trials}", "--set", "out=out"]
    return subprocess.Popen(
        args,
        cwd=folder,
        env=_env(hash_seed, threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli_done(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _table(folder: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (folder / "out" / "trials.jsonl").read_text().splitlines()]
    return [(r["trial"], json.dumps(r["config"], sort_keys=True), r["limit"], r["scores"]) for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # five CLI runs of real trials; minutes on a shared 2-core machine
def test_cli_lfs_search_same_trials_in_any_process_and_a_rerun_does_no_work(tmp_path):
    n = 30
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        graph = _cli_graph(folder)
        # Tiny budgets (2..8 examples) and one-example held-out scoring keep 30 real trials cheap.
        graph.write_text(
            graph.read_text()
            .replace("min_budget: 25, max_budget: 200", "min_budget: 2, max_budget: 8")
            .replace("include_path: [tasks]", "include_path: [tasks]\n    evaluation: {held_out_limit: 1}")
        )
        folders.append(folder)
    procs = [_cli(folders[0], n, hash_seed=1, threads=1), _cli(folders[1], n, hash_seed=2, threads=2)]
    first, other = (_cli_done(p) for p in procs)
    assert first["trials"] == n and first["trials_evaluated"] == n
    assert _table(folders[0]) == _table(folders[1])  # hash seed and thread count change nothing
    assert first["best"] == other["best"] and first["held_out"] == other["held_out"]

    again = _cli_done(_cli(folders[0], n, hash_seed=3, threads=2))
    assert again["tasks"]["executed"] == 0 and again["evaluations"]["run"] == 0
    assert (again["trials_evaluated"], again["trials_replayed"], again["diverged"]) == (0, n, 0)
    assert again["best"] == first["best"]

    extended = _cli_done(_cli(folders[0], n + 3, hash_seed=4, threads=1))
    assert (extended["trials_evaluated"], extended["trials_replayed"], extended["diverged"]) == (3, n, 0)
    assert _table(folders[0])[:n] == _table(folders[1])

    # The saved best model carries the recipe that rebuilds it, with paths relative to its folder.
    saved_dir = folders[0] / "out" / "best_model"
    recipe = yaml.safe_load((saved_dir / "graph.yaml").read_text())
    assert "optimize" not in {n["op"] for n in recipe["nodes"].values()}
    for name in ("base", "add", "reverse"):
        path = recipe["nodes"][name]["path"]
        assert not os.path.isabs(path) and (saved_dir / path).resolve() == REPO / "models" / "tiny" / name
    rebuilt = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "run", "graph.yaml", "--set", "out=rebuilt", "--json"],
        cwd=folders[0] / "out" / "best_model",
        env=_env(0, 1),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    from safetensors.torch import load_file

    def tensors(folder: Path) -> dict:
        return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}

    saved = tensors(folders[0] / "out" / "best_model")
    again_saved = tensors(folders[0] / "out" / "best_model" / "rebuilt")
    assert saved and saved.keys() == again_saved.keys()
    assert all(saved[k].equal(again_saved[k]) for k in saved)
