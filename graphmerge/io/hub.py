"""Model references on the Hugging Face Hub: `org/name`, `org/name@revision`, `hf://org/name[@rev]`.

Resolved with huggingface_hub into its own cache (HF_HOME / HF_HUB_CACHE), downloading only what a
merge reads: the config, safetensors weights (pickled .bin only where a repo has no safetensors),
tokenizer, generation config and PEFT adapter files; never subfolders. Offline mode
(HF_HUB_OFFLINE=1) and tokens (HF_TOKEN or `hf auth login`) are the user's, as in transformers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from graphmerge.errors import ModelError

_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
_HUB_REF = re.compile(rf"^(?P<repo>{_REPO})(?:@(?P<rev>[\w./-]+))?$")
COMMON_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.*",
    "merges.txt",
    "*.tiktoken",
    "chat_template.*",
    "adapter_config.json",
    "adapter_model.safetensors",
]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
PICKLED = ["*.bin", "pytorch_model.bin.index.json", "adapter_model.bin"]


class NotCached(ModelError):
    """A hub model that is not in the cache while downloads were not allowed (validate)."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(text: str) -> HubRef | None:
    """`org/name[@rev]` or `hf://org/name[@rev]`; None for anything else."""
    m = _HUB_REF.match(text.removeprefix("hf://"))
    return HubRef(m["repo"], m["rev"]) if m else None


def hub_cache_dir() -> Path:
    # Read at call time (huggingface_hub reads its environment once, at import).
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def locate_model(path: str, graph_dir: Path, *, download: bool = True) -> Path:
    """The local folder for a `load` path: an existing local path as is (relative to the graph),
    else a hub reference resolved through the hub cache (downloading only when `download`)."""
    text = os.path.expanduser(path)
    if not text.startswith("hf://"):
        local = Path(text) if Path(text).is_absolute() else graph_dir / text
        if local.exists() or parse_hub_ref(text) is None:
            return local  # a missing local folder is reported by the folder reader
    ref = parse_hub_ref(text)
    if ref is None:
        raise ModelError(
            f"'{path}' is not a hub reference", fix="write hf://org/name or hf://org/name@revision"
        )
    return snapshot(ref, download=download)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def snapshot(ref: HubRef, *, download: bool = True) -> Path:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    local_only = offline() or not download

    def fetch(patterns: list[str]) -> Path:
        return Path(
            snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                cache_dir=cache,
                allow_patterns=patterns,
                ignore_patterns=["*/*"],
                local_files_only=local_only,
            )
        )

    try:
        folder = fetch(COMMON_FILES + SAFETENSORS)
        if not _has_weights(folder) and not local_only:
            folder = fetch(COMMON_FILES + PICKLED)
    except (hf_errors.GatedRepoError, hf_errors.RepositoryNotFoundError) as exc:
        gated = isinstance(exc, hf_errors.GatedRepoError)
        raise ModelError(
            f"hub model {ref} is {'gated' if gated else 'not found or private'}",
            fix="check the name; for private or gated models accept its terms and set HF_TOKEN "
            "(or run `hf auth login`)",
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelError(
            f"hub model {ref.repo_id} has no revision '{ref.revision}'", fix="check the revision"
        ) from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, FileNotFoundError):
        if local_only:
            raise (ModelError if offline() else NotCached)(
                f"hub model {ref} is not in the Hugging Face cache {cache} and offline mode is on "
                "(HF_HUB_OFFLINE=1)",
                fix="unset HF_HUB_OFFLINE to download it, or set HF_HOME to a cache that has it",
            ) from None
        raise ModelError(
            f"cannot download hub model {ref}: the Hugging Face Hub is unreachable and the model is not "
            f"in the cache {cache}",
            fix="check the network (HF_ENDPOINT, proxies), or set HF_HOME to a cache that has it",
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise ModelError(
            f"cannot download hub model {ref}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix="check the network, or set HF_HUB_OFFLINE=1 and HF_HOME to a cache that has it",
        ) from None
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        hint = "download it once with network access" if local_only else "is it a transformers model?"
        raise ModelError(f"hub model {ref} has no config.json in the cache {cache}", fix=hint)
    return folder
