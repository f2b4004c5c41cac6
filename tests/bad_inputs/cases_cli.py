"""Bad command-line arguments."""

from __future__ import annotations

from case import TIES_MERGE, Case, graph_case, no_file, tiny_models, tiny_models_and_output, write

GRAPH = "vars:\n  density: 0.5\n  out: out\n" + TIES_MERGE.replace("DENSITY", "${density}").replace(
    "OUT", "${out}"
)

_models = tiny_models


_models_and_output = tiny_models_and_output


def _cli(*args: str, command: str = "validate", setup=_models):
    return graph_case(GRAPH, *args, command=command, setup=setup)


CASES = [
    # `--set` of a name that is no variable used to be ignored without a word.
    Case("set_unknown_var", _cli("--set", "densty=0.7"), mentions=("--set densty", "did you mean 'density'")),
    Case("set_unknown_var_no_close", _cli("--set", "zzz=1"), mentions=("--set zzz", "density")),
    Case("set_bad_yaml", _cli("--set", "density=[1"), mentions=("--set density=[1", "not valid YAML")),
    Case("set_no_equals", _cli("--set", "density"), mentions=("--set 'density'", "NAME=VALUE")),
    Case("set_empty_name", _cli("--set", "=3"), mentions=("--set '=3'",)),
    Case(
        "set_out_of_range_run_keeps_output",
        _cli("--set", "density=1.5", command="run", setup=_models_and_output),
        mentions=("g.yaml:7", "'merged'", "density"),
    ),
    Case("device_unknown", _cli("--device", "foo", command="run"), mentions=("--device 'foo'", "cpu")),
    Case("device_cuda_index", _cli("--device", "cuda:99", command="run"), mentions=("--device cuda:99",)),
    Case("device_garbage_index", _cli("--device", "cpu:x", command="run"), mentions=("--device 'cpu:x'",)),
    Case("plugin_missing_file", _cli("--plugin", "nope.py"), mentions=("nope.py", "does not exist")),
    Case("plugin_missing_module", _cli("--plugin", "no_such_module_xyz"), mentions=("no_such_module_xyz",)),
    Case(
        "plugin_raises",
        lambda root: [
            write(root, "p.py", "raise RuntimeError('boom')\n") and "validate",
            str(write(root, "g.yaml", "nodes:\n  a: {op: load, path: x}\n")),
            "--plugin",
            "p.py",
        ],
        mentions=("p.py", "boom"),
    ),
    Case(
        "cache_verify_no_cache",
        lambda root: ["cache", "verify", "--cache-dir", "nocache"],
        mentions=("nocache",),
    ),
    Case(
        "cache_gc_bad_size",
        lambda root: [(root / "c").mkdir() or "cache", "gc", "--cache-dir", "c", "--max-size", "lots"],
        mentions=("'lots'",),
    ),
    Case("viz_png_without_output", _cli("--format", "png", command="viz"), mentions=("-o",)),
    Case(
        "cache_dir_is_a_file",
        lambda root: (
            _cli("--cache-dir", "cfile", command="run")(root) + [] if write(root, "cfile", "x") else []
        ),
        mentions=("cfile",),
    ),
    Case(
        "graph_given_twice_no_code_run",
        _cli("--set", "out=!!python/object/apply:os.system ['touch pwned']"),
        mentions=("--set out",),
        check=no_file("pwned"),
    ),
]
