"""`chat_template`: give a model's tokenizer a chat template (mergekit's `chat_template:`)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from graphmerge.errors import ModelError
from graphmerge.hashing import digest
from graphmerge.io.folder import tokenizer_files
from graphmerge.params import NodeParams
from graphmerge.plan import Model
from graphmerge.registry import node

# Well-known formats by name; anything else containing Jinja markup is taken as the template itself.
BUILTIN = {
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
}


class ChatTemplateParams(NodeParams):
    input: str = Field(description="the model whose tokenizer gets the template")
    template: str = Field(
        description="a Jinja chat template, a built-in name (chatml, llama3), or `auto`: the template most "
        "of `models` use"
    )
    models: list[str] = Field(default_factory=list, description="for `auto`: the models to take it from")

    def refs(self) -> list[str]:
        return list(dict.fromkeys([self.input, *self.models]))


def template_of(folder: Path | None) -> str | None:
    if folder is None:
        return None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    try:
        value = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def resolve_template(template: str, models: list[Model], where: str) -> str:
    if template in BUILTIN:
        return BUILTIN[template]
    if template == "auto":
        found = Counter(t for m in models if (t := template_of(m.tokenizer_dir)))
        if not found:
            raise ModelError(
                "chat_template auto: none of the models has a chat template",
                where=where,
                fix=f"name one ({', '.join(BUILTIN)}) or give the Jinja template",
            )
        return found.most_common(1)[0][0]
    if "{%" in template or "{{" in template:
        return template
    raise ModelError(
        f"unknown chat template '{template}'",
        where=where,
        fix=f"use auto, {', '.join(BUILTIN)}, or a Jinja template",
    )


def _with_template(cache, source: Path, template: str) -> Path:
    """A copy of `source`'s tokenizer files (and generation config) with the template set, in the cache."""
    files = tokenizer_files(source)
    gen = source / "generation_config.json"
    parts = [
        (f.name, f.read_bytes().decode("utf-8", "replace")) for f in files + ([gen] if gen.is_file() else [])
    ]

    def fill(tok: Path) -> None:
        tok.mkdir()
        for f in files + ([gen] if gen.is_file() else []):
            if f.name not in ("chat_template.jinja", "chat_template.json"):
                shutil.copyfile(f, tok / f.name)
        config_file = tok / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        config.pop("chat_template", None)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        (tok / "chat_template.jinja").write_text(template)

    return cache.folder("tokenizers", digest("chat_template", parts, template), fill)


@node("chat_template", version="1", params=ChatTemplateParams, inputs=lambda p: p.refs())
def chat_template_node(ctx, params: ChatTemplateParams, inputs: Mapping[str, Model]) -> Model:
    """The input model with a chat template in its tokenizer (tensors untouched)."""
    model = inputs[params.input]
    where = f"node '{ctx.node_name}'"
    if model.tokenizer_dir is None:
        raise ModelError("the model has no tokenizer to attach a chat template to", where=where)
    template = resolve_template(params.template, [inputs[m] for m in params.models or [params.input]], where)
    folder = _with_template(ctx.cache, model.tokenizer_dir, template)
    return model.with_tensors(
        model.tensors,
        tokenizer_dir=folder,
        tokenizer_key=digest(model.tokenizer_key, template),
        provenance=(*model.provenance, "chat_template"),
    )
