"""`graphmerge` command line: run, validate, viz, nodes, cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from graphmerge import __version__
from graphmerge.errors import GraphmergeError

EXIT_USER_ERROR = 2


def _offline_env() -> None:
    # Offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) is the user's choice, never forced here.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin", action="append", default=[], metavar="FILE_OR_MODULE", help="load custom node types"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_graph(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", type=Path, help="graph YAML file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a variable")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $GRAPHMERGE_CACHE or ./.graphmerge")


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers import Python code shipped in model folders (auto_map); off by default",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphmerge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"graphmerge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a graph (cached, resumable)")
    _add_graph(run)
    run.add_argument("--device", default="auto", help="auto | cpu | cuda (auto = CUDA when present)")
    run.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_trust(run)
    run.add_argument(
        "--force",
        action="store_true",
        help="recompute everything for this run, ignoring cached values (they are overwritten)",
    )
    run.add_argument(
        "--cache-max-size",
        default=None,
        metavar="SIZE",
        help="disk budget of cached tensors, e.g. 20GB; 0 = none on disk (default: graph `cache:`, else half the free disk)",
    )
    run.add_argument(
        "--in-flight",
        default=None,
        metavar="SIZE",
        help="bytes of tensors read ahead or waiting for their cache write (default 512MiB)",
    )
    _add_common(run)

    val = sub.add_parser("validate", help="check a graph without running it")
    _add_graph(val)
    _add_trust(val)
    _add_common(val)

    viz = sub.add_parser("viz", help="draw the graph")
    _add_graph(viz)
    viz.add_argument("--format", choices=["dot", "mermaid", "svg", "html", "png"], default="dot")
    viz.add_argument(
        "-o", "--output", type=Path, default=None, help="output file (default: stdout; png needs -o)"
    )
    _add_common(viz)

    conv = sub.add_parser("convert", help="write the graph equivalent to a mergekit YAML config")
    conv.add_argument("config", type=Path, help="mergekit YAML config")
    conv.add_argument("-o", "--output", type=Path, default=None, help="graph file to write (default: stdout)")
    conv.add_argument(
        "--out", default=None, help="output model folder the graph saves to (default: out/NAME)"
    )
    _add_common(conv)

    nodes = sub.add_parser("nodes", help="list node types and merge methods with their parameters")
    _add_common(nodes)

    cache = sub.add_parser("cache", help="inspect or clean the cache")
    cache.add_argument("action", choices=["stats", "verify", "gc"])
    cache.add_argument("--cache-dir", type=Path, default=None)
    cache.add_argument(
        "--max-size", default=None, help="gc: evict least recently used tensors down to SIZE"
    )
    cache.add_argument("--json", action="store_true")
    _add_common(cache)
    return parser


def _load_plugins(args: argparse.Namespace) -> None:
    from graphmerge.registry import load_plugin

    for spec in args.plugin:
        load_plugin(spec)


def cmd_run(args: argparse.Namespace) -> int:
    from graphmerge.runner import run_graph
    from graphmerge.spec import parse_set_overrides

    executor = None
    if args.in_flight is not None:
        from graphmerge.executor import ExecutorSettings
        from graphmerge.io.save import parse_size

        try:
            executor = ExecutorSettings(in_flight=parse_size(args.in_flight))
        except GraphmergeError as exc:
            raise GraphmergeError(exc.what, where="--in-flight", fix=exc.fix) from None
    result = run_graph(
        args.graph,
        overrides=parse_set_overrides(args.set),
        cache_dir=args.cache_dir,
        device=args.device,
        progress=not args.no_progress,
        trust_remote_code=args.trust_remote_code,
        force=args.force,
        cache_max_size=args.cache_max_size,
        executor=executor,
    )
    summary = result.summary()
    s = result.stats
    print(
        f"done in {result.seconds:.1f}s: {s.tasks_executed} tensor tasks executed, {s.tasks_cached} cached, "
        f"{s.tensors_read} tensors read; evaluations {s.evaluations_run} run, {s.evaluations_cached} cached"
        + (f"; outputs: {', '.join(s.outputs)}" if s.outputs else ""),
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from graphmerge.io.remote_code import code_warnings
    from graphmerge.nodes.io import check_load_paths
    from graphmerge.runner import check_graph
    from graphmerge.spec import load_graph, parse_set_overrides

    overrides = parse_set_overrides(args.set)
    # Hub ids first, from the local cache only: checking the load nodes must not download.
    graph = load_graph(args.graph, overrides=overrides)
    pending = check_load_paths(graph)
    if pending:
        # The checks that read model files (shapes, parameters per tensor) need the files: `run`
        # downloads them and makes the same checks before computing anything.
        print(
            f"warning: hub models of {', '.join(pending)} are not downloaded yet; "
            "their per-tensor checks run when `run` has fetched them",
            file=sys.stderr,
        )
    else:
        graph = check_graph(
            args.graph, overrides=overrides, cache_dir=args.cache_dir, trust_remote_code=args.trust_remote_code
        )
    loads = {n: Path(str(s.params.path)) for n, s in graph.nodes.items() if s.op == "load"}
    for line in code_warnings(loads, args.trust_remote_code or graph.trust_remote_code):
        print(f"warning: {line}", file=sys.stderr)
    print(f"{args.graph}: ok ({len(graph.nodes)} nodes: {' -> '.join(graph.order)})")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from graphmerge.atomic import atomic_write_bytes
    from graphmerge.spec import load_graph, parse_set_overrides
    from graphmerge.viz import render

    if args.format == "png" and args.output is None:
        raise GraphmergeError("--format png needs an output file", fix="add -o graph.png")
    graph = load_graph(args.graph, overrides=parse_set_overrides(args.set))
    text_or_bytes = render(graph, args.format, cache_dir=args.cache_dir)
    if args.output is not None:
        data = text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode()
        atomic_write_bytes(args.output, data)
    else:
        sys.stdout.write(text_or_bytes)
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from graphmerge.convert.cli import convert_file

    convert_file(args.config, args.output, args.out)
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from graphmerge.describe import describe_all

    print(describe_all())
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from graphmerge.cache import Cache, default_cache_dir
    from graphmerge.io.save import parse_size
    from graphmerge.store import store_url

    root = args.cache_dir or default_cache_dir()
    if store_url(root) is None and not Path(root).exists():
        raise GraphmergeError(f"no cache at {root}", fix="run a graph first or pass --cache-dir")
    cache = Cache(root)
    try:
        if args.action == "stats":
            out = cache.stats()
            text = (
                f"{out['path']}: {out['tensors']} tensors ({out['tensor_bytes'] / 1e6:.1f} MB), "
                f"{out['results']} node results, {out['file_digests']} memoised file digests, "
                f"{out['tokenizers']} tokenizer folders"
            )
        elif args.action == "verify":
            report = cache.verify()
            out = {
                "checked": report.checked,
                "missing": list(report.missing),
                "corrupted": list(report.corrupted),
                "recovered": list(report.recovered),
                "kinds": dict(report.kinds),
                "corrupted_other": list(report.corrupted_other),
            }
            k = report.kinds
            text = (
                f"checked {report.checked} tensors, {k.get('results', 0)} node results, "
                f"{k.get('digests', 0)} file digests, {k.get('tokenizers', 0)} tokenizer folders: "
                f"{len(report.missing)} missing, {len(report.corrupted) + len(report.corrupted_other)} corrupted"
            )
            for line in report.recovered:
                text += f"\nrecovered: {line}"
            for key in report.missing:
                text += f"\nmissing blob {key} (the next run recomputes it)"
            for key in report.corrupted:
                text += f"\ncorrupted blob {key} (deleted; the next run recomputes it)"
            for name in report.corrupted_other:
                text += f"\ncorrupted {name} (deleted; the next run recomputes it)"
        else:
            out = cache.gc(parse_size(args.max_size) if args.max_size else None)
            text = (
                f"removed {out['stray_files_removed']} stray files, evicted {out['tensors_evicted']} tensors, "
                f"freed {out['bytes_freed'] / 1e6:.1f} MB"
            )
    finally:
        cache.close()
    print(json.dumps(out) if args.json else text)
    if args.action == "verify" and (out["missing"] or out["corrupted"] or out["corrupted_other"]):
        return 1
    return 0


def _unreachable_hub(exc: BaseException) -> str | None:
    """A one-line answer for data that could not be fetched (lm-eval datasets, hub files)."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError"}:
        return (
            f"{exc} (offline mode is on or the data is not cached: unset HF_HUB_OFFLINE and "
            "HF_DATASETS_OFFLINE to download it, or set HF_HOME to a cache that has it)"
        ).replace("\n", " ")
    if names & {"ConnectionError", "ConnectTimeout", "ConnectError", "MaxRetryError", "NameResolutionError"}:
        return (
            f"cannot reach the Hugging Face Hub: {type(exc).__name__} (set HF_HUB_OFFLINE=1 and "
            "HF_DATASETS_OFFLINE=1 to use only cached data, or check the network and HF_ENDPOINT)"
        )
    return None


def known_failure(exc: BaseException, args: argparse.Namespace) -> GraphmergeError | None:
    """A user-facing error for failures that come from the environment rather than from a bug in
    graphmerge: a broken cache index, the file system, undecodable files, memory. None otherwise."""
    import sqlite3

    from graphmerge.errors import storage_error

    if isinstance(exc, sqlite3.Error):
        from graphmerge.cache import broken_store, default_cache_dir

        root = Path(getattr(args, "cache_dir", None) or default_cache_dir())
        if "full" in str(exc):
            return GraphmergeError(
                "no space left on the device holding the cache (its index database is full); "
                "nothing was lost: finished work is cached and existing outputs are unchanged",
                where=str(root),
                fix="free some space there or pass --cache-dir on another disk",
            )
        return GraphmergeError(
            f"a cache index database cannot be used ({type(exc).__name__}: {exc}); "
            "nothing was lost: outputs and cached blobs are untouched",
            where=str(broken_store(root) or root),
            fix=f"move {root} aside and rerun (cached work is recomputed)",
        )
    if isinstance(exc, OSError):
        path = exc.filename or "a file"
        known = storage_error(exc, path, "this", "finished work is cached and existing outputs are unchanged")
        if known is not None:
            return known
        return GraphmergeError(exc.strerror or str(exc), where=str(path), fix="check that path and rerun")
    if isinstance(exc, UnicodeDecodeError):
        return GraphmergeError(
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            fix="check that every path in the graph names the intended text file (rerun with --debug to see which)",
        )
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return GraphmergeError(
            f"out of memory ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'})",
            fix="use --device cpu, a smaller save max_shard_size, or a machine with more memory",
        )
    return None


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "viz": cmd_viz, "nodes": cmd_nodes, "cache": cmd_cache}
COMMANDS["convert"] = cmd_convert


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    args = build_parser().parse_args(argv)
    try:
        _load_plugins(args)
        return COMMANDS[args.command](args)
    except GraphmergeError as exc:
        if type(exc).__name__ == "SearchInterrupted":
            print(f"interrupted: {exc.one_line()}", file=sys.stderr)
            return 130
        if args.debug:
            traceback.print_exc()
        for line in exc.one_line().splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished work is cached; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: short by default, full with --debug
        unreachable = _unreachable_hub(exc)
        if unreachable and not args.debug:
            print(f"error: {unreachable}", file=sys.stderr)
            return EXIT_USER_ERROR
        known = known_failure(exc, args)
        if known is not None:
            if args.debug:
                traceback.print_exc()
            print(f"error: {known.one_line()}", file=sys.stderr)
            return EXIT_USER_ERROR
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
