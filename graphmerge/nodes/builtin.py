"""The built-in node types. Importing this module registers them (the registry does it once)."""

from graphmerge.nodes import evaluate, io, merge, optimize, slicing, statistics, tokenizer  # noqa: F401
