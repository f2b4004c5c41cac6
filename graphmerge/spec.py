"""The spec layer: a YAML graph file -> a validated `GraphSpec`, every problem reported with file,
line, node and key."""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from pydantic import BaseModel, ValidationError

from graphmerge.errors import SpecError
from graphmerge.extras import missing_extra_message
from graphmerge.params import pydantic_problems
from graphmerge.registry import NodeType, get_node_type, suggest_node_type
from graphmerge.substitution import Scope
from graphmerge.substitution import substitute as substitute_refs

VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
# `{op: load, path: ${base}}` is what users write, but braces end a YAML flow mapping; references
# are swapped for a brace-free sentinel before parsing and read back from it afterwards.
_SENTINEL = re.compile(r"\$__gmvar_([A-Za-z0-9_.]+)__\$")
TOP_LEVEL_KEYS = ("vars", "nodes", "seed", "description", "trust_remote_code", "cache")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    op: str
    params: BaseModel
    inputs: tuple[str, ...]
    line: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # after substitution, for export

    @property
    def node_type(self) -> NodeType:
        nt = get_node_type(self.op)
        assert nt is not None
        return nt


@dataclass(frozen=True)
class GraphSpec:
    file: Path | None
    dir: Path
    text: str
    vars: Mapping[str, Any]
    nodes: Mapping[str, NodeSpec]
    order: tuple[str, ...]
    seed: int = 0
    lines: Mapping[tuple, int] = field(default_factory=dict, compare=False)
    trust_remote_code: bool = False  # the graph's own consent to run code from model folders
    cache: Mapping[str, Any] = field(default_factory=dict)  # the `cache:` settings (see cache.py)

    def where(self, node: str | None = None, key: str | None = None) -> str:
        return _where(self.file, self.lines, node, key)


def plain(value: Any) -> Any:
    """Plain YAML-able data (paths and tuples as JSON would write them), for saved graphs and recipes."""
    return json.loads(json.dumps(value, default=str))


def _where(file: Path | None, lines: Mapping[tuple, int], node: str | None, key: str | None) -> str:
    line = None
    if node is not None and key is not None:
        line = lines.get(("nodes", node, key))
    if line is None and node is not None:
        line = lines.get(("nodes", node))
    loc = str(file) if file else "<graph>"
    if line:
        loc += f":{line}"
    if node is not None:
        loc += f": node '{node}'"
    if key is not None:
        loc += f": key '{key}'"
    return loc


def _where_path(file: Path | None, lines: Mapping[tuple, int], node: str, path: tuple) -> str:
    """The place of a value nested under a node's key: the line of its deepest key that has one."""
    key = ".".join(str(p) for p in path if not isinstance(p, int))
    line = next(
        (lines[k] for n in range(len(path), -1, -1) if (k := ("nodes", node, *path[:n])) in lines), None
    )
    loc = f"{file or '<graph>'}" + (f":{line}" if line else "")
    return f"{loc}: node '{node}': key '{key}'"


def _collect_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _collect_lines(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, (*path, i), lines)


def _duplicate_keys(node: yaml.Node, path: tuple, out: list[tuple[tuple, str, int, int]]) -> None:
    """Every key given twice in one mapping, at any depth: (path, key, first line, second line).
    PyYAML keeps the last silently, which once replaced a saved model with an unintended one.
    Keys brought in by a `<<:` merge may be overridden; only keys written twice count."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key != "<<":
                if key in seen:
                    out.append((path, key, seen[key], line))
                else:
                    seen[key] = line
            _duplicate_keys(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, (*path, i), out)


def _unsentinel(key: Any) -> str:
    return _SENTINEL.sub(lambda m: "${" + m.group(1) + "}", str(key))


def substitute(
    value: Any, variables: Mapping[str, Any], where: str | Callable[[tuple], str], later: tuple[str, ...] = ()
) -> Any:
    """Graph variables replaced in `value` (see graphmerge/substitution.py); names matching `later`
    belong to a template that another pass fills."""
    return substitute_refs(_unsentinel_all(value), Scope(values=variables, later=later), where)


def _unsentinel_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unsentinel_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsentinel_all(v) for v in value]
    return _unsentinel(value) if isinstance(value, str) else value


def template_names(info: Any) -> tuple[str, ...]:
    """The names a template field (``json_schema_extra={"template": [...]}``) leaves for its own
    pass to fill: the spec layer substitutes graph variables in it and nothing else."""
    extra = info.json_schema_extra
    return tuple(extra.get("template", ())) if isinstance(extra, dict) else ()


def _annotation_has_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, typing.Annotated):
        return any(_annotation_has_path(a) for a in typing.get_args(annotation))
    return False


def local_or_hub(info: Any) -> bool:
    """A string field that names a local path or a hub id (`load`'s path): marked with
    ``json_schema_extra={"local_or_hub": True}``."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("local_or_hub"))


def path_fields(model: type[BaseModel]) -> set[str]:
    """The fields of a node's parameters that hold file-system paths."""
    return {
        name
        for name, info in model.model_fields.items()
        if _annotation_has_path(info.annotation) or local_or_hub(info)
    }


def _local_parts(value: Any, base_dir: Path) -> Any:
    """Each `+`-joined part of a local-or-hub reference that names an existing local path (or is
    written as one: ./x, ../x, /x, ~/x) made absolute; hub ids are left as they are."""
    if not isinstance(value, str) or not value or "${" in value:
        return value
    parts = []
    for part in value.split("+"):
        p = Path(os.path.expanduser(part))
        local = p if p.is_absolute() else base_dir / p
        looks_local = part.startswith((".", "/", "~"))
        parts.append(str(local) if looks_local or local.exists() else part)
    return "+".join(parts)


def _resolve_paths(raw: dict, model: type[BaseModel], base_dir: Path) -> dict:
    out = dict(raw)
    for name, info in model.model_fields.items():
        if name in out and local_or_hub(info):
            out[name] = _local_parts(out[name], base_dir)
            continue
        if name not in out or not _annotation_has_path(info.annotation):
            continue
        value = out[name]

        def fix(v: Any) -> Any:
            if isinstance(v, str) and v and "${" not in v:
                p = Path(os.path.expanduser(v))
                return str(p if p.is_absolute() else (base_dir / p))
            return v

        out[name] = [fix(v) for v in value] if isinstance(value, list) else fix(value)
    return out


def parse_set_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set name=value`: the value is parsed as YAML (numbers, lists); a relative path that
    exists from the working directory is made absolute so it does not resolve against the graph."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SpecError(f"--set {pair!r} is not NAME=VALUE", fix="write e.g. --set out=out/ties")
        name, text = pair.split("=", 1)
        if not name.strip():
            raise SpecError(f"--set {pair!r} has no variable name", fix="write e.g. --set out=out/ties")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SpecError(
                f"--set {pair}: the value is not valid YAML ({problem})",
                fix=f"quote it to pass a string: --set '{name}=\"{text}\"'",
            ) from None
        if isinstance(value, str) and not os.path.isabs(value) and (os.sep in value or os.path.exists(value)):
            candidate = Path(value)
            if candidate.exists() or candidate.parent.exists() and str(candidate.parent) not in ("", "."):
                value = str(candidate.absolute())
        out[name.strip()] = value
    return out


def load_graph(
    path: Path | str | None = None,
    *,
    text: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> GraphSpec:
    """Parse and validate a graph. Raises SpecError whose `problems` lists every issue found."""
    file = Path(path) if path is not None else None
    if text is None:
        assert file is not None
        if not file.is_file():
            raise SpecError(f"graph file {file} not found", fix="check the path")
        text = read_graph_text(file)
    graph_dir = (base_dir or (file.parent if file else Path.cwd())).absolute()
    loc = str(file) if file else "<graph>"
    parse_text = VAR_PATTERN.sub(lambda m: f"$__gmvar_{m.group(1)}__$", text)
    try:
        composed = yaml.compose(parse_text)
        data = yaml.safe_load(parse_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a multi-line str()
            line = f":{parse_text[: exc.position].count(chr(10)) + 1}"
            problem = f"unacceptable character #x{ord(exc.character) if isinstance(exc.character, str) else exc.character:04x}"
        raise SpecError(
            f"invalid YAML: {problem or str(exc).splitlines()[0]}", where=f"{loc}{line}"
        ) from None
    lines: dict[tuple, int] = {}
    if composed is not None:
        _collect_lines(composed, (), lines)
        duplicates: list[tuple[tuple, str, int, int]] = []
        _duplicate_keys(composed, (), duplicates)
        if duplicates:
            raise SpecErrors(
                [
                    f"{loc}:{second}: duplicate key '{_unsentinel(key)}'"
                    + (f" under '{'.'.join(_unsentinel(p) for p in path)}'" if path else "")
                    + f" (first at line {first}; YAML would silently keep only the last: rename or remove one)"
                    for path, key, first, second in duplicates
                ]
            )
    if not isinstance(data, dict):
        raise SpecError("a graph must be a mapping with a `nodes:` key", where=loc)
    from graphmerge.convert.mergekit import is_mergekit_config

    if is_mergekit_config(data):
        data, text, lines = _from_mergekit(data, loc, graph_dir, file)
    return build_graph(data, file=file, graph_dir=graph_dir, text=text, lines=lines, overrides=overrides)


def _from_mergekit(data: dict, loc: str, graph_dir: Path, file: Path | None) -> tuple[dict, str, dict]:
    import sys

    from graphmerge.convert.mergekit import convert_mergekit

    out = f"out/{file.stem if file else 'merged'}"
    conv = convert_mergekit(data, where=loc, graph_dir=graph_dir, out=out)
    for warning in conv.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return conv.graph, conv.to_yaml(loc), {}


def read_graph_text(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the graph file: {exc.strerror or exc}", where=str(file)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"the graph file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            where=f"{file}:{line}",
            fix="a graph is a YAML text file; check that the path names the right file",
        ) from None


def _check_overrides(
    overrides: Mapping[str, Any], declared: Mapping[str, Any], text: str, loc: str
) -> list[str]:
    """`--set` names a variable that `vars:` declares or that the graph references as ${name};
    anything else would be ignored without a word."""
    referenced = {m.group(1) for m in VAR_PATTERN.finditer(text)}
    known = set(declared) | referenced
    problems = []
    for name in overrides:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else (
                f"known variables: {', '.join(sorted(known))}" if known else "the graph declares no `vars:`"
            )
        )
        problems.append(f"{loc}: --set {name}: no variable '{name}' in this graph ({hint})")
    return problems


def build_graph(
    data: Mapping[str, Any],
    *,
    file: Path | None = None,
    graph_dir: Path,
    text: str = "",
    lines: Mapping[tuple, int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    external: Mapping[str, NodeSpec] | None = None,
) -> GraphSpec:
    """Validate an already parsed graph. `external` names nodes defined outside this graph that
    its nodes may reference (a trial subgraph references the enclosing graph's nodes)."""
    lines = dict(lines or {})
    external = dict(external or {})
    loc = str(file) if file else "<graph>"
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(
                f"{loc}:{lines.get((key,), '?')}: unknown top-level key '{key}' (allowed: {', '.join(TOP_LEVEL_KEYS)})"
            )

    declared = data.get("vars")
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise SpecError(
            f"`vars:` must be a mapping of name -> value, got {_kind(declared)}",
            where=f"{loc}:{lines.get(('vars',), '?')}",
            fix="write e.g. `vars: {out: out/merged}`",
        )
    if overrides:
        problems.extend(_check_overrides(overrides, declared, text, loc))
    variables = {str(k): v for k, v in declared.items()}
    variables.update(overrides or {})
    for _ in range(5):  # variables may reference other variables
        variables = {k: substitute(v, variables, f"{loc}: vars.{k}") for k, v in variables.items()}
    seed = substitute(data.get("seed", 0), variables, f"{loc}: seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(
            f"{loc}:{lines.get(('seed',), '?')}: key 'seed': must be an integer, got {seed!r} "
            "(write e.g. `seed: 0`)"
        )
        seed = 0
    if not isinstance(data.get("trust_remote_code", False), bool):
        problems.append(
            f"{loc}:{lines.get(('trust_remote_code',), '?')}: trust_remote_code must be true or false"
        )
    cache_raw = data.get("cache") or {}
    if not isinstance(cache_raw, dict):
        problems.append(
            f"{loc}:{lines.get(('cache',), '?')}: `cache:` must be a mapping (max_size, memory, search_persist)"
        )
        cache_raw = {}
    else:
        from graphmerge.cache import CacheSettings

        try:
            CacheSettings.from_mapping(cache_raw, where=f"{loc}:{lines.get(('cache',), '?')}")
        except SpecError as exc:
            problems.append(exc.one_line())
    nodes_raw = data.get("nodes")
    if nodes_raw is not None and not isinstance(nodes_raw, dict):
        raise SpecError(
            f"`nodes:` must be a mapping of name -> {{op: ...}}, got {_kind(nodes_raw)}",
            where=f"{loc}:{lines.get(('nodes',), '?')}",
            fix="write each node as `name: {op: TYPE, ...}` under `nodes:`",
        )
    if not nodes_raw:
        problems.append(f"{loc}: the graph has no nodes (add a `nodes:` mapping of name -> {{op: ...}})")
        raise SpecErrors(problems)

    specs: dict[str, NodeSpec] = {}
    needs_extra: dict[str, list[tuple[str, str]]] = {}  # extra -> (node, op) using it
    for name, body in nodes_raw.items():
        name = str(name)
        where = _where(file, lines, name, None)
        if "." in name:
            problems.append(f"{where}: node names may not contain '.' (it separates a node from its output)")
            continue
        if not isinstance(body, dict) or "op" not in body:
            problems.append(f"{where}: key 'op': missing (every node needs `op: TYPE`)")
            continue
        op = body["op"]
        node_type = get_node_type(str(op))
        if node_type is None:
            close = suggest_node_type(str(op))
            hint = f"did you mean '{close}'?" if close else "run `graphmerge nodes` for the list"
            problems.append(f"{_where(file, lines, name, 'op')}: unknown op '{op}' ({hint})")
            continue
        for extra in node_type.extras:
            needs_extra.setdefault(extra, []).append((name, node_type.name))
        raw = {k: v for k, v in body.items() if k != "op"}
        fields = node_type.params_model.model_fields
        try:
            raw = {
                k: substitute(
                    v,
                    variables,
                    lambda path, k=k, name=name: _where_path(file, lines, name, (k, *path)),
                    later=template_names(fields[k]) if k in fields else (),
                )
                for k, v in raw.items()
            }
        except SpecError as exc:
            problems.append(exc.one_line())
            continue
        raw = _resolve_paths(raw, node_type.params_model, graph_dir)
        try:
            params = node_type.params_model.model_validate(raw)
        except ValidationError as exc:
            for key, msg in pydantic_problems(exc, node_type.params_model):
                top = key.split(".")[0]
                problems.append(f"{_where(file, lines, name, top)}{'' if key == top else f' ({key})'}: {msg}")
            continue
        except SpecError as exc:
            problems.append(f"{where}: {exc.one_line()}")
            continue
        specs[name] = NodeSpec(
            name=name,
            op=node_type.name,
            params=params,
            inputs=tuple(node_type.inputs_of(params)),
            line=lines.get(("nodes", name), 0),
            raw={"op": node_type.name, **raw},
        )

    for extra, users in needs_extra.items():  # one line per missing extra, at its first user
        (first, op), more = users[0], len(users) - 1
        missing = missing_extra_message(extra, f"op '{op}'" + (f" (and {more} more nodes)" if more else ""))
        if missing is not None:
            problems.append(f"{_where(file, lines, first, 'op')}: {missing[0]} ({missing[1]})")

    graph = nx.DiGraph()
    graph.add_nodes_from(specs)
    for name, spec in specs.items():
        for ref in spec.inputs:
            target, _, output = ref.partition(".")
            if target in external and target not in nodes_raw:
                continue
            if target not in nodes_raw:
                close = difflib.get_close_matches(target, list(nodes_raw), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "reference a node defined under `nodes:`"
                problems.append(
                    f"{_where(file, lines, name, _key_of_ref(spec, ref))}: unknown input '{ref}' ({hint})"
                )
                continue
            target_spec = specs.get(target)
            if output and target_spec is not None:
                outputs = target_spec.node_type.outputs
                if "*" not in outputs and output not in outputs:
                    known = ", ".join(outputs) or "none (use the plain node name)"
                    problems.append(
                        f"{_where(file, lines, name, _key_of_ref(spec, ref))}: node '{target}' has no output '{output}' (outputs: {known})"
                    )
                    continue
            graph.add_edge(target, name)
    try:
        cycle = nx.find_cycle(graph)
        names = [u for u, _ in cycle] + [cycle[0][0]]
        problems.append(f"{_where(file, lines, cycle[0][0], None)}: cycle: {' -> '.join(names)}")
    except nx.NetworkXNoCycle:
        pass
    if problems:
        raise SpecErrors(problems)
    order = tuple(nx.lexicographical_topological_sort(graph, key=lambda n: lines.get(("nodes", n), 0)))
    return GraphSpec(
        file=file.absolute() if file else None,
        dir=graph_dir,
        text=text,
        vars=variables,
        nodes=specs,
        order=order,
        seed=int(seed),
        lines=lines,
        trust_remote_code=data.get("trust_remote_code") is True,
        cache=dict(cache_raw),
    )


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r}"


def _key_of_ref(spec: NodeSpec, ref: str) -> str:
    """The parameter key that holds a reference, for pointing at the right line."""
    for key, value in spec.params.model_dump().items():
        if value == ref or (isinstance(value, (list, dict)) and ref in value):
            return key
    return "input"


class SpecErrors(SpecError):
    """Several problems in one graph; `problems` has one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n" + "\n".join(problems)
        )

    def one_line(self) -> str:
        return "\n".join(self.problems)


def ancestors(graph: GraphSpec, name: str) -> set[str]:
    """Every node `name` depends on, directly or not."""
    out: set[str] = set()
    stack = [r.split(".")[0] for r in graph.nodes[name].inputs]
    while stack:
        n = stack.pop()
        if n in out or n not in graph.nodes:
            continue
        out.add(n)
        stack.extend(r.split(".")[0] for r in graph.nodes[n].inputs)
    return out
