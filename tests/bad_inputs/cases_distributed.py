"""Trials on a Dask cluster that cannot be reached or addressed: one error line before any trial runs."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml
from case import Case

REPO = Path(__file__).resolve().parents[2]


def _graph(smac: str) -> str:
    """An LFS search of two bundled models, with `smac` added to its SMAC settings."""
    tiny, tasks = REPO / "models" / "tiny", REPO / "graphs" / "tasks"
    search = {
        "op": "optimize", "strategy": "lfs", "base": "base", "models": ["add"],
        "settings": {"layer_granularity": 2, "methods": ["linear"]},
        "objectives": [{"task": "tiny_add_val", "metric": "exact_match"}],
        "include_path": [str(tasks)], "out": "out",
        "smac": {"facade": "hpo", "n_trials": 2, "max_budget": 4, **yaml.safe_load("{" + smac + "}")},
    }  # fmt: skip
    loads = {name: {"op": "load", "path": str(tiny / name)} for name in ("base", "add")}
    return yaml.safe_dump({"nodes": {**loads, "search": search}}, sort_keys=False)


def _run(smac: str, command: str = "run"):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(_graph(smac))
        return [command, "g.yaml"]

    return build


def _nobody_listens(root: Path) -> list[str]:
    """A localhost port that was free a moment ago: connecting is refused until the timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return _run(f"scheduler_address: 'tcp://127.0.0.1:{port}'")(root)


CASES = [
    Case(
        "dask_scheduler_address_without_port",
        _run("scheduler_address: localhost"),
        mentions=("smac.scheduler_address", "not a Dask scheduler address", "tcp://HOST:PORT"),
    ),
    Case(
        "dask_scheduler_address_of_another_protocol",
        _run("scheduler_address: 'http://127.0.0.1:8786'", command="validate"),
        mentions=("smac.scheduler_address", "not a Dask scheduler address"),
    ),
    Case(
        "dask_worker_wait_not_positive",
        _run("scheduler_address: 'tcp://127.0.0.1:8786', worker_wait_s: 0"),
        mentions=("smac.worker_wait_s", "greater than 0"),
    ),
    Case(
        "dask_scheduler_not_running",
        _nobody_listens,
        mentions=(
            "cannot reach the Dask scheduler",
            "smac.scheduler_address tcp://127.0.0.1:",
            "dask scheduler",
        ),
        may_change=(".graphmerge/**", "out/**"),
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    ),
]
