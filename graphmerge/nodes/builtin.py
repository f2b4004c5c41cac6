"""The built-in node types. Importing this module registers them (the registry does it once)."""

from graphmerge.nodes import evaluate, io, lora, merge, optimize, slicing, tokenizer  # noqa: F401
