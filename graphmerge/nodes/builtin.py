"""The built-in node types. Importing this module registers them (the registry does it once)."""

from graphmerge.nodes import io, merge, slicing, tokenizer  # noqa: F401
