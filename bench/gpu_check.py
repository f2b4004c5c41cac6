"""CUDA path check: the same merge graphs on CPU and on GPU give equal results; how much faster.

Generates a Llama-shaped bf16 model triple (random weights), plans each merge method through the
real graph machinery (load -> merge), then runs every tensor task through the executor with an
empty cache on each device (reads, math, cache writes included) and compares the outputs.

    python bench/gpu_check.py --layers 16 --hidden 1024 --out results.json
    python bench/gpu_check.py --layers 2 --hidden 256 --vocab 4096 --methods tsv_m,iso_c,iso_cts,wudi,regmean,fisher

RegMean and Fisher run the whole data path on each device: a `statistics` node (Gram matrices or
Fisher diagonals of the models on a few calibration documents, the bundled tiny tokenizer) and the
merge that reads them. Without CUDA the script says so and runs the second pass on the CPU again
(fresh cache): that checks the path and its determinism, not CUDA agreement.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from graphmerge.executor import run_nodes
from graphmerge.runner import make_context
from graphmerge.spec import load_graph

METHODS = {
    "linear": "models: {a: {weight: 0.5}, b: {weight: 0.5}}",
    "task_arithmetic": "base: base\n    models: {a: {weight: 0.6}, b: {weight: 0.4}}",
    "ties": "base: base\n    models: {a: {weight: 1.0, density: 0.5}, b: {weight: 1.0, density: 0.5}}",
    "breadcrumbs_ties": "base: base\n    models: {a: {weight: 1.0, density: 0.8, gamma: 0.01}, b: {weight: 1.0, density: 0.8, gamma: 0.01}}",
    "dare_ties": "base: base\n    models: {a: {weight: 1.0, density: 0.5}, b: {weight: 1.0, density: 0.5}}",
    "della": "base: base\n    models: {a: {weight: 1.0, density: 0.5, epsilon: 0.1}, b: {weight: 1.0, density: 0.5, epsilon: 0.1}}",
    "slerp": "base: base\n    models: {a: {}}\n    params: {t: 0.3}",
    "nuslerp": "models: {a: {weight: 0.5}, b: {weight: 0.5}}",
    "karcher": "models: {a: {}, b: {}}",
    "model_stock": "base: base\n    models: {a: {}, b: {}}",
    "sce": "base: base\n    models: {a: {}, b: {}}",
    "tsv_m": "base: base\n    models: {a: {}, b: {}}",
    "iso_c": "base: base\n    models: {a: {}, b: {}}",
    "iso_cts": "base: base\n    models: {a: {}, b: {}}",
    "wudi": "base: base\n    models: {a: {}, b: {}}\n    params: {steps: 300, lr: 1.0e-4}",
    "regmean": "statistics: stats\n    models: {a: {}, b: {}}",
    "fisher": "statistics: stats\n    models: {a: {}, b: {}}",
}
STATISTICS = {"regmean": "gram", "fisher": "fisher"}
TINY = Path(__file__).resolve().parent.parent / "models" / "tiny"
CALIBRATION = ["12+34=46.", "abcd>dcba.", "dbca:abcd.", "55+10=65.", "zyxw>wxyz."]
STOCHASTIC = {"dare_ties", "della"}


def make_triple(root: Path, layers: int, hidden: int, vocab: int) -> dict[str, Path]:
    from safetensors.torch import save_file

    inter = hidden * 4
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (hidden, hidden),
            p + "self_attn.v_proj.weight": (hidden, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 64), "vocab_size": vocab, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
    }
    gen = torch.Generator().manual_seed(0)
    base = {n: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    out = {}
    for k, name in enumerate(["base", "a", "b"]):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        tensors = base if k == 0 else {n: (t.float() + torch.randn(t.shape, generator=gen) * 0.005).to(torch.bfloat16) for n, t in base.items()}
        save_file(tensors, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(config))
        for f in ("tokenizer.json", "tokenizer_config.json"):  # its 47 ids fit any vocab: for statistics
            (d / f).write_bytes((TINY / "base" / f).read_bytes())
        out[name] = d
    params = sum(t.numel() for t in base.values())
    print(f"model triple: {params / 1e6:.0f}M parameters each, bf16, in {root}", flush=True)
    return out


def run_method(method: str, models: dict[str, Path], device: str, cache: Path) -> tuple[float, dict[str, torch.Tensor]]:
    text = f"""
nodes:
  base: {{op: load, path: {models['base']}}}
  a: {{op: load, path: {models['a']}}}
  b: {{op: load, path: {models['b']}}}
  merged:
    op: merge
    method: {method}
    {METHODS[method]}
"""
    if method in STATISTICS:
        calib = cache.parent / "calibration.jsonl"
        calib.write_text("".join(json.dumps({"text": t}) + "\n" for t in CALIBRATION))
        text += f"""  stats:
    op: statistics
    kind: {STATISTICS[method]}
    models: [a, b]
    calibration: {{file: {calib}}}
"""
    graph = load_graph(text=text)
    ctx = make_context(graph, cache_dir=cache, device=device, progress=False, log=lambda _m: None)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()  # statistics (computed when the graph's nodes run) are timed too
    model = run_nodes(ctx, graph)["merged"]
    names = list(model.tensors)
    outputs: dict[str, torch.Tensor] = {}
    for i, value in ctx.executor.stream([model.tensors[n] for n in names]):
        outputs[names[i]] = value.to("cpu")
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ctx.cache.close()
    return seconds, outputs


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    max_abs, equal, total, scale = 0.0, 0, 0, 0.0
    for name in a:
        x, y = a[name].float(), b[name].float()
        max_abs = max(max_abs, (x - y).abs().max().item())
        scale = max(scale, x.abs().max().item())
        equal += (x == y).sum().item()
        total += x.numel()
    return {"max_abs_diff": max_abs, "max_abs_value": scale, "fraction_bit_equal": equal / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    has_cuda = torch.cuda.is_available()
    info = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if has_cuda else None}
    second = "cuda" if has_cuda else "cpu"
    info["second_device"] = second
    if not has_cuda:
        info["note"] = "no CUDA device: the second pass ran on the CPU again (determinism, not CUDA agreement)"
    print(json.dumps(info), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = make_triple(root / "models", args.layers, args.hidden, args.vocab)
        input_bytes = 3 * sum(f.stat().st_size for f in [models["base"] / "model.safetensors"])
        for method in args.methods.split(","):
            cpu_s, cpu_out = run_method(method, models, "cpu", root / f"cache_cpu_{method}")
            row = {"method": method, "cpu_s": round(cpu_s, 3), "input_GB": round(input_bytes / 1e9, 3)}
            gpu_s, gpu_out = run_method(method, models, second, root / f"cache_gpu_{method}")
            row |= {"second_s": round(gpu_s, 3), "speedup": round(cpu_s / gpu_s, 2), **compare(cpu_out, gpu_out)}
            if method not in STOCHASTIC:
                ok = row["max_abs_diff"] <= 2 ** -7 * max(row["max_abs_value"], 1e-3) * 2
                row["equal_within_bf16_tolerance"] = ok
            else:
                row["equal_within_bf16_tolerance"] = "n/a (random masks differ between CPU and CUDA generators)"
            del gpu_out
            del cpu_out
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"info": info, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
