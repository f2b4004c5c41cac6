"""The built-in node types. Importing this module registers them (the registry does it once)."""

from graphmerge.nodes import (  # noqa: F401
    chat_template,
    evaluate,
    io,
    lora,
    merge,
    optimize,
    slicing,
    statistics,
    tokenizer,
)
