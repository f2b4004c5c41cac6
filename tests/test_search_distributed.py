"""Trials on a real Dask cluster: a `dask scheduler` process and two `dask worker` processes on localhost,
started here on random ports and stopped at the end. Covers SMAC's parallel ask/tell, no idle workers,
exact replay of a parallel log, a worker killed with SIGKILL mid-trial, and a search of the bundled models."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graphmerge.errors import GraphmergeError
from graphmerge.search import SmacSettings, TrialOutcome, build_space, run_search
from graphmerge.search.distributed import WORKER_LOST
from graphmerge.search.trial_log import LOG_NAME

REPO = Path(__file__).resolve().parent.parent
SPACE = {
    "params": {
        "x": {"type": "float", "low": -5.0, "high": 5.0},
        "y": {"type": "float", "low": -5.0, "high": 5.0},
    }
}
ORIGIN = {"x": 0.0, "y": 0.0}
# A trial whose worker dies twice is lost (KilledWorker); once is retried on another worker.
ALLOWED_FAILURES = 1


def score(config) -> float:
    return -((config["x"] - 1.0) ** 2 + (config["y"] + 2.0) ** 2)


def logged(state_dir: Path) -> list[tuple]:
    """The parts of the trial log two runs must share (times differ)."""
    rows = [json.loads(line) for line in (state_dir / LOG_NAME).read_text().splitlines()[1:]]
    return [
        (
            r["order"],
            json.dumps(r["config"], sort_keys=True),
            r["budget"],
            r["scores"],
            r.get("asks_before_tell"),
        )
        for r in rows
    ]


# -- the cluster ---------------------------------------------------------------------------------------------


class Cluster:
    """`dask scheduler` + `dask worker` processes, each in its own session so that stopping one also stops
    the worker process its nanny started."""

    def __init__(self, root: Path, workers: int = 2):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            # Workers unpickle this module's objectives by reference, and graphmerge from this checkout.
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
            "OMP_NUM_THREADS": "1",
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(ALLOWED_FAILURES),
        }
        scheduler_file = root / "scheduler.json"
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(scheduler_file))  # fmt: skip
        deadline = time.time() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.time() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        for i in range(workers):
            self._start(f"worker{i}", "worker", self.address, "--nthreads", "1", "--no-dashboard",
                        "--name", f"w{i}", "--host", "127.0.0.1")  # fmt: skip
        self.wait_for_workers(workers)

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "dask"), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        )

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=120)

    def worker_pids(self) -> set[int]:
        """Our worker processes: the children of the `dask worker` nannies started here."""
        nannies = {p.pid for p in self.procs[1:]}
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid in nannies:
                        pids.add(int(entry.name))
        return pids

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):  # the nanny's children, same session
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield c
    finally:
        c.stop()


# -- objectives (module level: workers import them by name) --------------------------------------------------


def uneven_quadratic(config, limit):
    """The first configuration takes 3 s, every other one 0.2 s; says which process ran it."""
    time.sleep(3.0 if config == ORIGIN else 0.2)
    return TrialOutcome(scores={"score": score(config)}, extra={"pid": os.getpid()})


def _claim(folder: Path, prefix: str) -> int:
    """The next free number for `prefix` in `folder`, taken atomically across processes (1, 2, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            os.close(os.open(folder / f"{prefix}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


class Killable:
    """An objective whose trials can be marked to die: the `once_at`-th trial to start is killed on its
    first attempt only, the `always_at`-th on every attempt. A marked trial
    writes its process id to victims/ and sleeps; the test kills that process with SIGKILL."""

    def __init__(self, root: Path, once_at: int, always_at: int):
        self.root, self.once_at, self.always_at = root, once_at, always_at

    def __call__(self, config, limit):
        key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        _claim(self.root / "calls", "call")
        attempt = _claim(self.root / "attempts", key)
        first = self.root / "first" / key
        if attempt == 1:
            first.parent.mkdir(exist_ok=True)
            first.write_text(str(_claim(self.root / "trials", "trial")))
        started_as = int(first.read_text())
        if started_as == self.always_at or (started_as == self.once_at and attempt == 1):
            victims = self.root / "victims"
            victims.mkdir(exist_ok=True)
            (victims / f"{key}-{attempt}.tmp").write_text(str(os.getpid()))
            (victims / f"{key}-{attempt}.tmp").replace(victims / f"{key}-{attempt}.pid")
            time.sleep(120)
            raise AssertionError("a marked trial was not killed")
        time.sleep(0.2)
        return TrialOutcome(scores={"score": score(config)}, extra={"attempt": attempt, "key": key})


@contextlib.contextmanager
def killer(folder: Path, allowed: Callable[[], set[int]]):
    """Kills (SIGKILL) each process that registers in `folder`, if it is one of ours; yields the kill list."""
    killed: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for f in sorted(folder.glob("*.pid")) if folder.exists() else []:
                pid = int(f.read_text())
                assert pid in allowed(), f"{pid} is not a worker process this test started"
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                f.replace(f.with_suffix(".killed"))
            stop.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


# -- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a real cluster: about 15-20 s each on a loaded 2-core machine
def test_parallel_ask_tell_keeps_every_worker_busy_and_replays_exactly(cluster, tmp_path):
    settings = SmacSettings(
        facade="multi_fidelity", n_trials=10, min_budget=10, max_budget=90, eta=3, seed=0,
        scheduler_address=cluster.address,
    )  # fmt: skip
    space = build_space(SPACE)
    result = run_search(space, uneven_quadratic, settings, tmp_path, initial_configs=[ORIGIN])
    trials = result.trials
    assert len(trials) == 10 and result.evaluated == 10
    assert [r.order for r in trials] == list(range(10))
    assert all(r.score == pytest.approx(score(r.config)) for r in trials)
    pids = {r.extra["pid"] for r in trials}
    assert len(pids) == 2 and os.getpid() not in pids and pids <= cluster.worker_pids()
    # SMAC asked while a trial was pending: the long first trial overlaps trials asked after it.
    slow = next(r for r in trials if r.config == ORIGIN)
    during = [r for r in trials if r is not slow and slow.started < r.started and r.finished < slow.finished]
    # No batches: the other worker ran one short trial after another while the slow one ran (in batches
    # of two it would have run one, then waited for the slow one).
    assert len(during) >= 2, [(r.number, r.started - slow.started, r.finished - slow.started) for r in trials]
    assert {r.limit for r in trials} > {10}  # Hyperband promoted some configurations while others ran

    # The log replays exactly, here with another number of trials in flight: nothing is evaluated again.
    again = run_search(
        space,
        uneven_quadratic,
        settings.model_copy(update={"n_workers": 3}),
        tmp_path,
        initial_configs=[ORIGIN],
    )
    assert again.evaluated == 0 and again.replayed == 10 and again.diverged == 0
    assert [(r.config, r.limit, r.scores) for r in again.trials] == [
        (r.config, r.limit, r.scores) for r in trials
    ]


@pytest.mark.slow  # a real cluster: about 15-20 s each on a loaded 2-core machine
def test_a_worker_killed_mid_trial_loses_that_trial_only(cluster, tmp_path):
    cluster.wait_for_workers(2)
    settings = SmacSettings(
        facade="hpo", n_trials=7, n_initial=4, max_budget=None, seed=1, scheduler_address=cluster.address
    )
    space = build_space(SPACE)
    objective = Killable(tmp_path / "coordination", once_at=2, always_at=4)
    with killer(tmp_path / "coordination" / "victims", cluster.worker_pids) as killed:
        result = run_search(space, objective, settings, tmp_path / "search")
    # 1 kill of the trial retried + (ALLOWED_FAILURES + 1) of the trial that is lost
    assert len(killed) == 2 + ALLOWED_FAILURES and len(set(killed)) == len(killed)
    assert len(result.trials) == 7 and result.evaluated == 7  # the search finished
    lost = [r for r in result.trials if r.infeasible]
    assert len(lost) == 1 and lost[0].extra["reason"] == WORKER_LOST
    assert lost[0].scores == {"score": 0.0}  # the objective's worst
    finished = [r for r in result.trials if not r.infeasible]
    assert all(r.score == pytest.approx(score(r.config)) for r in finished)
    retried = [r for r in finished if r.extra["attempt"] == 2]
    assert len(retried) == 1  # killed once, then finished on a worker of the cluster
    assert all(r.extra["attempt"] == 1 for r in finished if r is not retried[0])  # nothing else was rerun
    calls = len(list((tmp_path / "coordination" / "calls").iterdir()))
    assert calls == 5 + 2 + (ALLOWED_FAILURES + 1)  # 5 trials once, one twice, the lost one each try
    # A rerun replays the lost trial as failed (the log is the record) and evaluates nothing.
    before = logged(tmp_path / "search")
    cluster.wait_for_workers(2)
    again = run_search(space, objective, settings, tmp_path / "search")
    assert again.evaluated == 0 and again.replayed == 7 and again.diverged == 0
    assert logged(tmp_path / "search") == before


def test_scheduler_without_workers_is_one_clear_error(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as empty:
        settings = SmacSettings(
            facade="hpo",
            n_trials=2,
            max_budget=None,
            scheduler_address=empty.scheduler_address,
            worker_wait_s=1,
        )
        with pytest.raises(GraphmergeError, match="no Dask worker joined the scheduler within 1 s") as info:
            run_search(build_space(SPACE), uneven_quadratic, settings, tmp_path)
    assert "dask worker" in info.value.fix
    assert len((tmp_path / LOG_NAME).read_text().splitlines()) == 1  # the header only: nothing was run


@pytest.mark.parametrize("address", ["localhost", "tcp://host", "http://host:8786", "tcp://host:99999"])
def test_scheduler_address_must_be_host_and_port(address):
    with pytest.raises(ValueError, match="not a Dask scheduler address"):
        SmacSettings(scheduler_address=address)


@pytest.mark.slow
def test_search_of_the_bundled_models_on_the_cluster_writes_its_report(cluster, tmp_path):
    from test_search_report_md import short_search

    from graphmerge.runner import run_graph

    cluster.wait_for_workers(2)
    smac = {"facade": "hpo", "n_trials": 4, "max_budget": 4, "scheduler_address": cluster.address}
    graph = short_search(tmp_path, smac)
    run = run_graph(graph, cache_dir=tmp_path / "cache", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["extra"]["evaluations_run"] == 2 for r in rows)  # evaluated by workers
    assert run.stats.evaluations_run >= 8  # the workers' evaluations are counted in the run's stats
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Trials ran on Dask workers, 2 at a time" in report
    assert "| **trials, summed over workers** |" in report
