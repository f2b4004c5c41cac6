"""A model folder of the kind people download: the bundled tiny model, plus custom tokenizer and
model code (named by `auto_map`) that writes a marker file when Python imports it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny"

_PREAMBLE = """
from pathlib import Path
with open({marker!r}, "a") as _f:
    _f.write({tag!r} + "\\n")
"""

_TOKENIZER = """
from transformers import PreTrainedTokenizerFast


class MarkerTokenizer(PreTrainedTokenizerFast):
    pass
"""

_CONFIG = """
from transformers import LlamaConfig


class MarkerConfig(LlamaConfig):
    model_type = "marker_llama"
"""

_MODEL = """
from transformers import LlamaForCausalLM

from .configuration_marker import MarkerConfig


class MarkerForCausalLM(LlamaForCausalLM):
    config_class = MarkerConfig
"""


def make_remote_code_folder(dest: Path, marker: Path, source: str = "base") -> Path:
    """Copy models/tiny/SOURCE to `dest` and make it need its own code; importing that code appends
    a line to `marker`."""
    shutil.copytree(TINY / source, dest)
    for name, tag, body in [
        ("tokenization_marker.py", "tokenizer", _TOKENIZER),
        ("configuration_marker.py", "config", _CONFIG),
        ("modeling_marker.py", "model", _MODEL),
    ]:
        (dest / name).write_text(_PREAMBLE.format(marker=str(marker), tag=tag) + body)
    tok_cfg = json.loads((dest / "tokenizer_config.json").read_text())
    tok_cfg["tokenizer_class"] = "MarkerTokenizer"
    tok_cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_marker.MarkerTokenizer"]}
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    cfg = json.loads((dest / "config.json").read_text())
    cfg["model_type"] = "marker_llama"
    cfg["architectures"] = ["MarkerForCausalLM"]
    cfg["auto_map"] = {
        "AutoConfig": "configuration_marker.MarkerConfig",
        "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM",
    }
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return dest
