"""A warm process that forks one child per bad-input case.

Starting `python -m graphmerge.cli` costs seconds (torch, transformers, lm-eval imports) and the corpus has
dozens of cases. This process imports all of that once, then for each request (one JSON line on stdin:
argv, cwd, env, stdout/stderr file paths) forks a child that runs `graphmerge.cli.main(argv)` as a
fresh command would: own working directory, environment and file descriptors, exit status from main.
It replies with one JSON line {"rc": status}.
"""

from __future__ import annotations

import json
import os
import sys

import graphmerge.cli
import graphmerge.runner  # noqa: F401
from graphmerge.registry import all_node_types

all_node_types()  # registers the built-in nodes once, as every command would
try:  # preloaded when present: evaluation and search cases import them
    import ConfigSpace  # noqa: F401
    import lm_eval.tasks  # noqa: F401
    import transformers  # noqa: F401
except ImportError:  # pragma: no cover
    pass


def _child(req: dict) -> int:
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        code = graphmerge.cli.main(req["argv"])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException:  # what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code or 0)


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(req)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
