"""The bad-input corpus: every case gives a clear error (exit status, the place named, no
traceback) and leaves every file that existed before the command untouched."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "bad_inputs"
sys.path.insert(0, str(HERE))

from case import Case  # noqa: E402


def _load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(HERE.glob("cases_*.py")):
        spec = importlib.util.spec_from_file_location(f"bad_inputs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


CASES = _load_cases()


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class _Zygote:
    """Runs CLI commands in forks of one warm interpreter (see bad_inputs/zygote.py); a command's
    process is still its own: working directory, environment, file descriptors, exit status."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "zygote.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        out, err = cwd.parent / "stdout.txt", cwd.parent / "stderr.txt"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        rc = json.loads(self.proc.stdout.readline())["rc"]
        return subprocess.CompletedProcess(argv, rc, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _env(work: Path, case: Case) -> dict[str, str]:
    env = {**os.environ, "GRAPHMERGE_CACHE": str(work / ".graphmerge"), **case.env}
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def cli_runner():
    # GRAPHMERGE_CORPUS_SUBPROCESS=1: one fresh interpreter per case (slower; for comparison).
    if not hasattr(os, "fork") or os.environ.get("GRAPHMERGE_CORPUS_SUBPROCESS") == "1":
        yield None
        return
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    zygote = _Zygote(env)
    yield zygote
    zygote.close()


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_bad_input(case: Case, tmp_path: Path, cli_runner) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        argv = case.build(work)
    finally:
        os.chdir(old_cwd)
    before = _snapshot(work)
    env = _env(work, case)
    # A case with its own environment (e.g. a sitecustomize hiding a package) needs a fresh
    # interpreter: the forked one has imported everything already.
    if cli_runner is not None and not case.env:
        proc = cli_runner.run(argv, work, env)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "graphmerge.cli", *argv],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    err = proc.stderr
    codes = case.exit_code if isinstance(case.exit_code, tuple) else (case.exit_code,)
    assert proc.returncode in codes, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    if proc.returncode == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors, err
        if case.one_line:
            assert len(errors) == 1, err
    for needle in case.mentions:
        assert needle in err, f"{needle!r} not in:\n{err}"
    after = _snapshot(work)
    for rel, digest in before.items():
        if any(fnmatch(rel, pat) for pat in case.may_change):
            continue
        assert after.get(rel) == digest, f"{rel} changed or vanished"
    if case.check is not None:
        case.check(work, err)
