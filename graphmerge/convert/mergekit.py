"""A mergekit YAML config -> the equivalent graphmerge graph (a plain dict, ready to dump).

mergekit's semantics are kept, also where graphmerge's own defaults differ:
- gradients put every non-layer tensor at t=0 (`head_position: 0` on merges);
- a slice stack takes embeddings from the first slice and the final norm and head from the last
  (`head_from`), and a gradient runs over each slice's own layers (`gradients: slice`);
- a per-model parameter not given for a model falls back to the slice's, then the global one;
- filters are substrings.
Anything that cannot be expressed is an error naming the key; keys mergekit itself ignores
(a parameter the method does not take) are dropped with a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graphmerge.errors import SpecError
from graphmerge.gradients import at_position, is_gradient

TOP_KEYS = (
    "merge_method",
    "base_model",
    "models",
    "slices",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "tokenizer",
    "chat_template",
    "parameters",
)
# Keys of mergekit's schema that have no graphmerge equivalent yet, with the reason.
UNSUPPORTED = {
    "modules": "per-module merges (multimodal models) are not supported; use `slices:` or `models:`",
}
# Node and variable names the conversion uses itself.
RESERVED = ("out", "merged", "merged_embed", "merged_head", "save", "tokenizer", "with_template")
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
_GLOB_OR_REGEX = re.compile(r"[*?\[]|^/.*/$")


def is_mergekit_config(data: Any) -> bool:
    """mergekit configs always have `merge_method` and never graphmerge's `nodes`."""
    return isinstance(data, Mapping) and "merge_method" in data and "nodes" not in data


@dataclass(frozen=True)
class Conversion:
    graph: dict[str, Any]
    warnings: tuple[str, ...]

    def to_yaml(self, source: str) -> str:
        header = f"# Converted from the mergekit config {source} by `graphmerge convert`.\n"
        header += "# Model paths are variables: override them with --set NAME=PATH.\n"
        return header + yaml.safe_dump(self.graph, sort_keys=False, default_flow_style=None, width=100)


class _Converter:
    def __init__(self, data: Mapping[str, Any], where: str, base_dir: Path, graph_dir: Path, out: str):
        self.data = data
        self.where = where
        self.base_dir = base_dir
        self.graph_dir = graph_dir
        self.vars: dict[str, Any] = {}
        self.nodes: dict[str, Any] = {}
        self.refs: dict[str, str] = {}  # mergekit model reference -> load node
        self.warnings: list[str] = []
        self.out = out

    def error(self, what: str, key: str, fix: str | None = None) -> SpecError:
        return SpecError(what, where=f"{self.where}: key '{key}'", fix=fix)

    # ---- models -------------------------------------------------------------------------------
    def _local(self, path: str) -> str:
        # mergekit resolves relative paths against the working directory, a graph against its folder.
        p = Path(os.path.expanduser(path))
        if not p.is_absolute() and (self.base_dir / p).exists():
            return os.path.relpath(self.base_dir / p, self.graph_dir)
        return path

    def model(self, ref: Any, key: str) -> str:
        if not isinstance(ref, str) or not ref:
            raise self.error(
                f"model reference {ref!r} is not a string", key, "write `model: org/name` or a path"
            )
        if ref in self.refs:
            return self.refs[ref]
        parts = ref.split("+")
        if len(parts) > 2:
            raise self.error(
                f"model reference {ref!r} has more than one `+`", key, "write MODEL or MODEL+LORA"
            )
        path = "+".join(self._local(p) for p in parts)
        stem = re.sub(r"[^A-Za-z0-9_]", "_", parts[0].split("@")[0].rstrip("/").split("/")[-1]) or "model"
        if len(parts) == 2:
            stem += "_" + (re.sub(r"[^A-Za-z0-9_]", "_", parts[1].rstrip("/").split("/")[-1]) or "lora")
        if stem[0].isdigit():
            stem = "m_" + stem
        name, n = stem, 2
        while name in self.nodes or name in RESERVED:
            name, n = f"{stem}_{n}", n + 1
        self.vars[name] = path
        self.nodes[name] = {"op": "load", "path": "${" + name + "}"}
        self.refs[ref] = name
        return name

    # ---- parameters ---------------------------------------------------------------------------
    def value(self, v: Any, key: str) -> Any:
        """A mergekit parameter setting in graphmerge's syntax (filters become explicit substrings)."""
        if isinstance(v, Mapping):
            v = [v]
        if isinstance(v, list) and v and all(isinstance(e, Mapping) for e in v):
            out = []
            for e in v:
                extra = set(e) - {"filter", "value"}
                if extra or "value" not in e:
                    raise self.error(f"filter entry {dict(e)} needs `value` (and optionally `filter`)", key)
                entry: dict[str, Any] = {}
                f = e.get("filter")
                if f is not None and f != "*":
                    f = str(f)
                    # mergekit filters are plain substrings; escape anything we would read as a pattern.
                    entry["filter"] = f"/{re.escape(f)}/" if _GLOB_OR_REGEX.search(f) else f
                entry["value"] = self.value(e["value"], key)
                out.append(entry)
            return out
        if isinstance(v, list):
            if not is_gradient(v):
                raise self.error(
                    f"parameter list {v!r} is not a gradient of numbers",
                    key,
                    "use numbers or {filter, value} entries",
                )
            return [float(e) if isinstance(e, float) else e for e in v]
        if isinstance(v, (int, float, bool, str)):
            return v
        raise self.error(f"unsupported parameter value {v!r}", key)

    def params(self, raw: Any, key: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.error("`parameters` must be a mapping", key)
        return {str(k): self.value(v, f"{key}.{k}") for k, v in raw.items()}

    @staticmethod
    def fallback(first: Any, then: Any) -> Any:
        """mergekit reads a parameter from the most specific level where it resolves to a value."""
        if first is None:
            return then
        if then is None or not (isinstance(first, list) and first and isinstance(first[0], dict)):
            return first
        if any("filter" not in e for e in first):
            return first
        return first + (
            then if isinstance(then, list) and then and isinstance(then[0], dict) else [{"value": then}]
        )

    # ---- merges -------------------------------------------------------------------------------
    def merge_spec(
        self,
        method_name: str,
        sources: list[tuple[str, dict[str, Any], str]],
        base: str | None,
        levels: list[dict[str, Any]],
        key: str,
    ) -> dict[str, Any]:
        """sources: (node, per-model parameters, where); levels: slice/global parameters, most
        specific first."""
        from graphmerge.methods import get_method

        method = get_method(method_name)
        inherited: dict[str, Any] = {}
        for level in reversed(levels):
            for k, v in level.items():
                inherited[k] = self.fallback(v, inherited.get(k))
        models: dict[str, dict[str, Any]] = {}
        base_node = base
        if method.base == "none" and base is not None:
            self.warnings.append(f"{self.where}: base_model is ignored by merge_method {method_name}")
            base_node = None
        if method.base_weight is not None:
            base_node = None  # mergekit's linear averages every listed model, the base included if listed
        for node, given, where in sources:
            if node == base_node:
                dropped = sorted(given)
                if dropped:
                    self.warnings.append(
                        f"{where}: parameters {', '.join(dropped)} of the base model are ignored by {method_name}"
                    )
                continue
            vals: dict[str, Any] = {}
            for k, v in given.items():
                if k not in method.model_params:
                    if k not in method.global_params:
                        self.warnings.append(
                            f"{where}: parameter '{k}' is ignored by merge_method {method_name} (mergekit ignores it too)"
                        )
                        continue
                vals[k] = v
            for k in method.model_params:
                v = self.fallback(vals.get(k), inherited.get(k))
                if v is not None:
                    vals[k] = v
            per_model_globals = {k for k in vals if k in method.global_params}
            if per_model_globals:
                self.warnings.append(
                    f"{where}: {', '.join(sorted(per_model_globals))} set per model; graphmerge takes it globally "
                    "(put it under `parameters:`)"
                )
                for k in per_model_globals:
                    inherited.setdefault(k, vals.pop(k))
            models[node] = vals
        params: dict[str, Any] = {}
        for k, v in inherited.items():
            if k in method.global_params:
                params[k] = v
            elif k not in method.model_params:
                self.warnings.append(
                    f"{self.where}: global parameter '{k}' is ignored by merge_method {method_name} (mergekit ignores it too)"
                )
        if method.base == "required" and base_node is None:
            raise self.error(
                f"merge_method {method_name} needs a base model", "base_model", "add `base_model:`"
            )
        spec: dict[str, Any] = {"method": method_name}
        if base_node is not None:
            spec["base"] = base_node
        spec["models"] = models
        if params:
            spec["params"] = params
        return spec

    def _has_gradient(self, spec: Mapping[str, Any]) -> bool:
        def grad(v: Any) -> bool:
            if isinstance(v, list) and v and isinstance(v[0], dict):
                return any(grad(e["value"]) for e in v)
            return isinstance(v, list) and len(v) > 1

        values = [*spec.get("params", {}).values()] + [v for m in spec["models"].values() for v in m.values()]
        return any(grad(v) for v in values)

    # ---- whole config -------------------------------------------------------------------------
    def convert(self) -> Conversion:
        d = self.data
        for key in d:
            if key in UNSUPPORTED:
                raise self.error(f"mergekit key '{key}' is not supported", key, UNSUPPORTED[key])
            if key == "name":  # mergekit-multi's document name; a single merge has no use for it
                self.warnings.append(f"{self.where}: key 'name' is ignored")
            elif key not in TOP_KEYS:
                raise self.error(
                    f"unknown mergekit key '{key}'", key, f"mergekit configs take {', '.join(TOP_KEYS)}"
                )
        method = d.get("merge_method")
        from graphmerge.errors import MergeError
        from graphmerge.methods import all_methods, get_method

        try:
            get_method(str(method))
        except MergeError:
            raise self.error(
                f"merge_method '{method}' is not supported",
                "merge_method",
                f"graphmerge has {', '.join(sorted(all_methods()))}",
            ) from None
        if bool(d.get("models")) == bool(d.get("slices")):
            raise self.error("give exactly one of `models` or `slices`", "models")
        dtype = self.dtype("dtype")
        out_dtype = self.dtype("out_dtype") or dtype
        base = self.model(d["base_model"], "base_model") if d.get("base_model") is not None else None
        global_params = self.params(d.get("parameters"), "parameters")
        tokenizer = self.tokenizer(base)
        if d.get("models"):
            result = self.from_models(str(method), base, global_params, dtype)
        else:
            result = self.from_slices(str(method), base, global_params, dtype)
        if tokenizer:
            self.align(tokenizer)
        self.vars["out"] = self.out
        save: dict[str, Any] = {"op": "save", "input": result, "path": "${out}"}
        if out_dtype:
            save["dtype"] = out_dtype
        if d.get("chat_template") is not None:
            template = d["chat_template"]
            if not isinstance(template, str):
                raise self.error("chat_template must be a string", "chat_template")
            node: dict[str, Any] = {"op": "chat_template", "input": result, "template": template}
            if template == "auto":
                node["models"] = [n for n, spec in self.nodes.items() if spec.get("op") == "load"]
            self.nodes["with_template"] = node
            save["input"] = "with_template"
        self.nodes["save"] = save
        return Conversion(graph={"vars": self.vars, "nodes": self.nodes}, warnings=tuple(self.warnings))

    def dtype(self, key: str) -> str | None:
        v = self.data.get(key)
        if v is None:
            return None
        name = str(v).removeprefix("torch.")
        if name not in DTYPES:
            raise self.error(f"dtype '{v}' is not supported", key, f"use one of {', '.join(DTYPES)}")
        return DTYPES[name]

    def model_entries(self, entries: Any, key: str) -> list[tuple[str, dict[str, Any], str]]:
        if not isinstance(entries, list):
            raise self.error(f"`{key}` must be a list", key)
        out = []
        for i, e in enumerate(entries):
            where = f"{key}[{i}]"
            if isinstance(e, str):
                e = {"model": e}
            if not isinstance(e, Mapping) or "model" not in e:
                raise self.error("each entry needs `model:`", where)
            extra = set(e) - {"model", "parameters", "layer_range"}
            for k in sorted(extra):
                self.warnings.append(f"{self.where}: key '{where}.{k}' is ignored (mergekit ignores it too)")
            node = self.model(e["model"], f"{where}.model")
            out.append(
                (node, self.params(e.get("parameters"), f"{where}.parameters"), f"{self.where}: {where}")
            )
        return out

    def from_models(self, method: str, base: str | None, global_params: dict, dtype: str | None) -> str:
        sources = self.model_entries(self.data["models"], "models")
        spec = self.merge_spec(method, sources, base, [global_params], "models")
        if dtype:
            spec["dtype"] = dtype
        if self._has_gradient(spec):
            spec["head_position"] = 0.0
        self.nodes["merged"] = {"op": "merge", **spec}
        return "merged"

    def from_slices(self, method: str, base: str | None, global_params: dict, dtype: str | None) -> str:
        raw = self.data["slices"]
        if not isinstance(raw, list) or not raw:
            raise self.error("`slices` must be a non-empty list", "slices")
        entries = []
        ends: list[dict[str, Any]] = []
        for k, s in enumerate(raw):
            key = f"slices[{k}]"
            if not isinstance(s, Mapping) or not s.get("sources"):
                raise self.error("each slice needs `sources:`", key)
            for extra in set(s) - {"sources", "parameters", "base_model"}:
                if extra == "residual_weight":
                    raise self.error(
                        "mergekit key 'residual_weight' is not supported", f"{key}.residual_weight"
                    )
                self.warnings.append(
                    f"{self.where}: key '{key}.{extra}' is ignored (mergekit ignores it too)"
                )
            sources = self.model_entries(s["sources"], f"{key}.sources")
            ranges = []
            for i, src in enumerate(s["sources"]):
                r = src.get("layer_range") if isinstance(src, Mapping) else None
                if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)):
                    raise self.error(
                        "each slice source needs `layer_range: [start, end]`", f"{key}.sources[{i}]"
                    )
                ranges.append(tuple(r))
            if len({b - a for a, b in ranges}) > 1:
                raise self.error("all sources of a slice must have the same number of layers", key)
            slice_base = self.model(s["base_model"], f"{key}.base_model") if s.get("base_model") else base
            slice_params = self.params(s.get("parameters"), f"{key}.parameters")
            if method == "passthrough" and not slice_params and all(not p for _, p, _ in sources):
                if len(sources) != 1:
                    raise self.error("passthrough takes exactly one source per slice", key)
                entries.append({"model": sources[0][0], "layers": list(ranges[0])})
                ends.append({"model": sources[0][0]})
                continue
            if len(set(ranges)) > 1:
                raise self.error(
                    "sources of one merged slice with different layer ranges are not supported",
                    key,
                    "give every source of the slice the same layer_range",
                )
            if slice_base is not None and slice_base not in {n for n, _, _ in sources}:
                sources.append((slice_base, {}, f"{self.where}: {key}"))
            spec = self.merge_spec(method, sources, slice_base, [slice_params, global_params], key)
            if dtype:
                spec["dtype"] = dtype
            entries.append({"merge": spec, "layers": list(ranges[0])})
            ends.append(spec)
        node: dict[str, Any] = {"op": "slice", "slices": entries}
        first = self.ends(ends[0], "embed")
        last = self.ends(ends[-1], "head")
        if first != entries[0].get("model"):
            node["embed_from"] = first
        node["head_from"] = last
        if any("merge" in e for e in entries):
            node["gradients"] = "slice"
        self.nodes["merged"] = node
        return "merged"

    def ends(self, spec: dict[str, Any], role: str) -> str:
        """The node giving a slice stack's non-layer tensors: the slice's model, or (mergekit) the
        slice's merge evaluated at t=0."""
        if "model" in spec:
            return spec["model"]
        at0 = {
            **spec,
            "models": {r: {k: at_position(v, 0.0) for k, v in m.items()} for r, m in spec["models"].items()},
        }
        if "params" in spec:
            at0["params"] = {k: at_position(v, 0.0) for k, v in spec["params"].items()}
        for name, existing in self.nodes.items():
            if existing == {"op": "merge", **at0}:
                return name
        name = f"merged_{role}"
        self.nodes[name] = {"op": "merge", **at0}
        return name

    # ---- tokenizer ----------------------------------------------------------------------------
    def tokenizer(self, base: str | None) -> dict[str, Any] | None:
        d = self.data
        if d.get("tokenizer_source") is not None and d.get("tokenizer") is not None:
            raise self.error("give `tokenizer_source` or `tokenizer`, not both", "tokenizer")
        source, pad, tokens = d.get("tokenizer_source"), 1, {}
        key = "tokenizer_source"
        if d.get("tokenizer") is not None:
            t = d["tokenizer"]
            key = "tokenizer"
            if not isinstance(t, Mapping):
                raise self.error("`tokenizer` must be a mapping", key)
            for k in t:
                if k not in ("source", "tokens", "pad_to_multiple_of"):
                    raise self.error(f"unknown key '{k}' under tokenizer", f"tokenizer.{k}")
            tokens = self.tokens(t.get("tokens") or {})
            source, pad = t.get("source", "union"), int(t.get("pad_to_multiple_of") or 1)
        if source is None:
            return None
        if source == "base":
            if base is None:
                raise self.error("tokenizer source 'base' needs base_model", key)
            src = "base"
        elif source == "union":
            src = "union"
        else:
            src = self.model(source, key)
        return {"source": src, "base": base, "pad": pad, "tokens": tokens}

    def tokens(self, raw: Any) -> dict[str, Any]:
        """mergekit's per-token embedding sources -> align_tokenizer `tokens` entries."""
        if not isinstance(raw, Mapping):
            raise self.error("`tokens` must be a mapping of token -> {source, force}", "tokenizer.tokens")
        out: dict[str, Any] = {}
        for token, cfg in raw.items():
            key = f"tokenizer.tokens.{token}"
            if not isinstance(cfg, Mapping) or set(cfg) - {"source", "force"} or cfg.get("source") is None:
                raise self.error("each token needs `source:` (and optionally `force:`)", key)
            src = cfg["source"]
            entry: dict[str, Any]
            if isinstance(src, str):
                entry = {"source": self.model(src, f"{key}.source")}
            elif isinstance(src, Mapping) and src.get("kind") == "zero":
                entry = {"source": "zero"}
            elif isinstance(src, Mapping) and src.get("kind") == "model_token" and src.get("model"):
                entry = {"source": self.model(src["model"], f"{key}.source.model")}
                if (src.get("token") is None) == (src.get("token_id") is None):
                    raise self.error(
                        "model_token needs exactly one of `token` or `token_id`", f"{key}.source"
                    )
                entry.update({k: src[k] for k in ("token", "token_id") if src.get(k) is not None})
            else:
                raise self.error(f"unsupported token source {src!r}", f"{key}.source")
            if cfg.get("force"):
                entry["force"] = True
            out[str(token)] = entry
        return out

    def align(self, tok: dict[str, Any]) -> None:
        """Put an align_tokenizer node between the loads and every merge or slice."""
        loads = [n for n, spec in self.nodes.items() if spec.get("op") == "load"]
        align: dict[str, Any] = {"op": "align_tokenizer", "models": loads}
        if tok["base"]:
            align["base"] = tok["base"]  # mergekit's fill rule is align_tokenizer's default, `only`
        align["source"] = tok["source"]
        if tok["pad"] > 1:
            align["pad_to_multiple"] = tok["pad"]
        if tok["tokens"]:
            align["tokens"] = tok["tokens"]

        def rename(v: Any) -> Any:
            if isinstance(v, dict):
                return {(f"tokenizer.{k}" if k in loads else k): rename(x) for k, x in v.items()}
            if isinstance(v, list):
                return [rename(x) for x in v]
            return f"tokenizer.{v}" if isinstance(v, str) and v in loads else v

        for name, spec in list(self.nodes.items()):
            if spec.get("op") in ("merge", "slice"):
                self.nodes[name] = {
                    k: (v if k in ("op", "method", "params") else rename(v)) for k, v in spec.items()
                }
        nodes = {n: s for n, s in self.nodes.items() if s.get("op") == "load"}
        nodes["tokenizer"] = align
        nodes.update({n: s for n, s in self.nodes.items() if s.get("op") != "load"})
        self.nodes = nodes


def convert_mergekit(
    data: Mapping[str, Any],
    *,
    where: str = "<mergekit config>",
    base_dir: Path | None = None,
    graph_dir: Path | None = None,
    out: str = "merged",
) -> Conversion:
    """Convert a parsed mergekit config. Relative model paths are taken from `base_dir` (the
    working directory, as mergekit does) and written relative to `graph_dir`."""
    cwd = Path.cwd()
    return _Converter(data, where, (base_dir or cwd).absolute(), (graph_dir or cwd).absolute(), out).convert()
