"""mergekit's own example configs: how many convert, run, and give mergekit's numbers.

    python bench/mergekit_examples.py --mergekit-venv bench/_work/mergekit-venv [--dtype float32]

Every model a config names is replaced by a tiny random Llama stand-in (hidden 16, as many layers as
the config's layer ranges need, seed per name). Each config is converted (`graphmerge convert`), run
directly (`graphmerge run CONFIG.yml`, which converts on the fly) and, where a mergekit venv is given,
run with `mergekit-yaml`; the two outputs are compared tensor by tensor. `--dtype float32` rewrites
the configs' `dtype`/`out_dtype` so that only the methods differ, not the rounding of half-precision
arithmetic (mergekit computes in `dtype`, graphmerge in float32 and casts at the end).

`--configs bench/mergekit_configs` runs our own configs instead: one per method and per conversion
rule the examples do not exercise (merged multi-slice gradients, passthrough scale filters, parameter
fall-back, `model+lora` with a peft adapter stand-in, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "tests" / "data" / "mergekit_examples"


def model_refs(cfg: dict) -> list[str]:
    refs = [cfg.get("base_model")] + [m["model"] for m in cfg.get("models") or []]
    refs += [s["model"] for sl in cfg.get("slices") or [] for s in sl["sources"]]
    return list(dict.fromkeys(r for r in refs if r))


def layers_needed(cfg: dict) -> int:
    ends = [s["layer_range"][1] for sl in cfg.get("slices") or [] for s in sl["sources"]]
    return max(ends, default=4)


def make_adapter(base: Path, path: Path, seed: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(path)


def make_standin(path: Path, seed: int, layers: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path)


def with_standins(cfg: dict, paths: dict[str, str], dtype: str | None) -> dict:
    def swap(v):
        if isinstance(v, dict):
            return {k: (paths.get(x, x) if k in ("model", "base_model") else swap(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    out = swap(cfg)
    if dtype:
        out["dtype"] = dtype
    return out


def compare(ours: Path, theirs: Path) -> tuple[bool, float, int]:
    """(same tensor names, max abs difference, tensors compared)."""

    def tensors(folder: Path) -> dict[str, torch.Tensor]:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                out.update({k: h.get_tensor(k) for k in h.keys()})
        return out

    a, b = tensors(ours), tensors(theirs)
    if set(a) != set(b):
        return False, float("inf"), 0
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return True, worst, len(a)


def standins(cfg: dict, work: Path) -> dict[str, str]:
    """A stand-in path for every model reference; `model+lora` gets a peft adapter on its model."""
    paths: dict[str, str] = {}
    made: dict[str, str] = {}
    for ref in model_refs(cfg):
        parts = ref.split("+")
        for i, part in enumerate(parts):
            if part not in made:
                made[part] = str(work / "models" / f"m{len(made)}")
                if i == 0:
                    make_standin(Path(made[part]), len(made), layers_needed(cfg))
                else:
                    make_adapter(Path(made[parts[0]]), Path(made[part]), len(made))
        paths[ref] = "+".join(made[p] for p in parts)
    return paths


def run_one(source: Path, cfg: dict, work: Path, venv: Path | None, dtype: str | None) -> dict:
    name = source.name
    row: dict = {"config": name}
    conv = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphmerge.cli",
            "convert",
            str(source),
            "-o",
            str(work / "graph.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    row["converts"] = conv.returncode == 0
    if not row["converts"]:
        row["why"] = conv.stderr.strip().splitlines()[-1]
    paths = standins(cfg, work)
    local = work / name
    local.write_text(yaml.safe_dump(with_standins(cfg, paths, dtype), sort_keys=False))
    if row["converts"]:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "graphmerge.cli",
                "run",
                str(local),
                "--set",
                f"out={work / 'ours'}",
                "--cache-dir",
                str(work / "cache"),
                "--no-progress",
                "--device",
                "cpu",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        row["runs"] = run.returncode == 0
        if not row["runs"]:
            row["why"] = (run.stderr.strip().splitlines() or ["?"])[-1]
    if venv is not None:
        mk = subprocess.run(
            [
                str(venv / "bin" / "mergekit-yaml"),
                str(local),
                str(work / "theirs"),
                "--no-copy-tokenizer",
                "--no-write-model-card",
                "--quiet",
                "--allow-crimes",
                "--lora-merge-cache",
                str(work / "lora-cache"),
            ],
            capture_output=True,
            text=True,
        )
        row["mergekit_runs"] = mk.returncode == 0
        if not row["mergekit_runs"]:
            row["mergekit_why"] = (mk.stderr.strip().splitlines() or ["?"])[-1][:200]
        if row.get("runs") and row["mergekit_runs"]:
            same_names, worst, n = compare(work / "ours", work / "theirs")
            row.update(same_names=same_names, max_abs_diff=worst, tensors=n)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit-venv", type=Path, default=None)
    ap.add_argument("--dtype", choices=["config", "float32"], default="float32")
    ap.add_argument("--tolerance", type=float, default=1e-6, help="max abs difference counted as equal")
    ap.add_argument("--configs", type=Path, default=EXAMPLES, help="folder of mergekit configs (*.yml)")
    args = ap.parse_args()
    dtype = None if args.dtype == "config" else args.dtype
    rows = []
    for f in sorted(args.configs.glob("*.yml")):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_one(f, yaml.safe_load(f.read_text()), Path(tmp), args.mergekit_venv, dtype))
        print(json.dumps(rows[-1]), flush=True)
    n = len(rows)
    conv = sum(r["converts"] for r in rows)
    ran = sum(bool(r.get("runs")) for r in rows)
    equal = sum(bool(r.get("same_names")) and r["max_abs_diff"] <= args.tolerance for r in rows)
    print(
        f"\n{conv} of {n} convert, {ran} run, {equal} equal mergekit's output (max abs diff <= {args.tolerance:g}, "
        f"dtype {args.dtype})"
    )
    for r in rows:
        diff = r.get("max_abs_diff")
        print(
            f"| {r['config']} | {'yes' if r['converts'] else 'no'} | {'yes' if r.get('runs') else 'no'} | "
            f"{'-' if diff is None else f'{diff:.2g}'} | {r.get('why', '')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
