"""Where parallel trials run: a Dask cluster, local or reached through `scheduler_address`.

The search loop itself (search/driver.py) only submits trials and reads their results; this module
connects to the cluster, decides how many trials to keep in flight, turns the ways a cluster can fail
into one-line errors, and says which failed trials were lost with their worker.

What a lost worker costs: Dask's scheduler reruns a task whose worker died on another worker, up to its
`distributed.scheduler.allowed-failures` (default 3: a recipe that kills every worker it lands on must
not take the whole cluster down). A trial that exhausts them arrives here as `KilledWorker` and is
recorded as a failed trial (every objective's worst score, `reason: worker lost`); the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphmerge.errors import GraphmergeError

if TYPE_CHECKING:
    from .driver import SmacSettings

log = logging.getLogger("graphmerge.search")

WORKER_LOST = "worker lost"
# tcp://host:port, tls://[::1]:port, host:port; the schemes distributed ships comms for.
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ucx|ws|wss|inproc)://)?(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}$")
_START_WORKER = "start one with `dask worker {address} --nthreads 1` in the driver's Python environment"


def check_scheduler_address(address: str) -> str:
    """`scheduler_address` as distributed will parse it; raises ValueError (pydantic's message) otherwise."""
    address = address.strip()
    if not _ADDRESS.match(address) or int(address.rsplit(":", 1)[1]) > 65535:
        raise ValueError(
            f"{address!r} is not a Dask scheduler address; write tcp://HOST:PORT "
            "(what `dask scheduler` prints as 'Scheduler at')"
        )
    return address


@dataclass(frozen=True)
class TrialCluster:
    client: Any  # distributed.Client
    in_flight: int  # trials kept running at once
    workers: int  # worker processes when the search started


def _worker_threads(client) -> tuple[int, int]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return len(workers), sum(int(w.get("nthreads", 1)) for w in workers.values())


def _connect(address: str):
    from distributed import Client

    try:
        return Client(address, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise GraphmergeError(
            f"cannot reach the Dask scheduler ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            where=f"smac.scheduler_address {address}",
            fix="start it with `dask scheduler` and give the address it prints, or drop scheduler_address "
            "to run trials on this machine",
        ) from None


@contextlib.contextmanager
def trial_cluster(settings: SmacSettings) -> Iterator[TrialCluster]:
    """A client for the search's trials, closed (with the LocalCluster it started, if any) on exit.

    In flight: `n_workers` when given; with `scheduler_address` and no `n_workers`, the worker threads
    the scheduler has when the search starts (it waits up to `worker_wait_s` for the first worker)."""
    from distributed import Client, LocalCluster

    cluster = None
    if settings.scheduler_address:
        client = _connect(settings.scheduler_address)
    else:
        cluster = LocalCluster(
            n_workers=settings.n_workers,
            threads_per_worker=1,  # one trial per worker process: trials hold whole models in memory
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster, set_as_default=False)
    try:
        if settings.scheduler_address:
            try:
                client.wait_for_workers(1, timeout=settings.worker_wait_s)
            except TimeoutError:
                raise GraphmergeError(
                    f"no Dask worker joined the scheduler within {settings.worker_wait_s:g} s",
                    where=f"smac.scheduler_address {settings.scheduler_address}",
                    fix=_START_WORKER.format(address=settings.scheduler_address)
                    + " (or raise smac.worker_wait_s)",
                ) from None
        workers, threads = _worker_threads(client)
        if threads > workers:
            log.warning(
                "Dask workers run %d threads for %d processes: trials sharing a process share its memory "
                "and torch threads; start workers with --nthreads 1",
                threads,
                workers,
            )
        explicit = "n_workers" in settings.model_fields_set or not settings.scheduler_address
        in_flight = settings.n_workers if explicit else max(1, threads)
        log.info("trials on Dask: %d in flight, %d workers at the start", in_flight, workers)
        yield TrialCluster(client=client, in_flight=in_flight, workers=workers)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_lost(exc: BaseException) -> bool:
    """The trial's worker died (and the scheduler's retries on other workers ran out)."""
    from distributed import KilledWorker

    return isinstance(exc, KilledWorker)


def remote_failure(exc: BaseException, address: str | None) -> GraphmergeError | None:
    """A failure of the cluster rather than of the trial, as one line; None for anything else."""
    from concurrent.futures import CancelledError

    where = f"smac.scheduler_address {address}" if address else "Dask cluster"
    if isinstance(exc, CancelledError):
        return GraphmergeError(
            f"a trial was cancelled by the cluster ({str(exc).splitlines()[0][:200]})",
            where=where,
            fix="check the scheduler is still running; finished trials are saved, rerun to resume",
        )
    if isinstance(exc, ImportError):  # the worker could not unpickle the trial
        return GraphmergeError(
            f"a Dask worker could not import what the trial needs ({exc})",
            where=where,
            fix="start workers from the same Python environment as the driver, with the same PYTHONPATH",
        )
    return None
