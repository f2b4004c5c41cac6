"""Throughput of every merge method on a Llama-shaped bf16 model triple, optionally against mergekit.

    python bench/merge_methods.py                         # all methods, CPU (+ CUDA if available)
    python bench/merge_methods.py --size 300m --skip-methods --mergekit-venv bench/_work/mergekit-venv
    python bench/merge_methods.py --size 300m --skip-methods --mergekit-venv VENV --e2e-methods ties,linear --cuda

The triple (base + 2 fine-tunes, random init, bf16 safetensors) is generated once under bench/_work/.
Throughput = bytes of input tensors read / seconds for: load with safetensors, upcast to float32 on the
device, run the method, cast back to bf16 (outputs are not written). The mergekit comparison runs
`mergekit-yaml` and `graphmerge run` on the same config, alternating, each `--repeats` times, each a
fresh process (graphmerge with an empty cache), and prints wall time, CPU time, peak RSS (os.wait4 of
that process), peak GPU memory (nvidia-smi, with --cuda) and the fraction of bit-identical output
elements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from graphmerge.methods import MergeInputs, all_methods, get_method  # noqa: E402

SIZES = {
    # name: (hidden, intermediate, layers, vocab) -- 300m: 2 x 32.8M embeddings + 14 x 16.8M layers
    "300m": (1024, 4096, 14, 32000),
    "small": (512, 2048, 8, 32000),
    "tiny": (64, 128, 2, 256),
}


def tensor_shapes(size: str) -> dict[str, tuple[int, ...]]:
    h, inter, layers, vocab = SIZES[size]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (h, h)
        shapes[p + "mlp.gate_proj.weight"] = (inter, h)
        shapes[p + "mlp.up_proj.weight"] = (inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (vocab, h)
    return shapes


def make_triple(size: str, work: Path) -> dict[str, Path]:
    """base, model_a, model_b folders; fine-tunes are base + small random task vectors."""
    dirs = {name: work / f"{size}-{name}" for name in ("base", "model_a", "model_b")}
    if all((d / "model.safetensors").exists() for d in dirs.values()):
        return dirs
    h, inter, layers, vocab = SIZES[size]
    g = torch.Generator().manual_seed(0)
    tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in dirs}
    for key, shape in tensor_shapes(size).items():
        base = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=g) * 0.02
        tensors["base"][key] = base.to(torch.bfloat16)
        for name in ("model_a", "model_b"):
            tensors[name][key] = (base + torch.randn(shape, generator=g) * 0.002).to(torch.bfloat16)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, h // 64),
        "num_key_value_heads": max(1, h // 64),
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    for name, d in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        save_file(tensors[name], str(d / "model.safetensors"), metadata={"format": "pt"})
        (d / "config.json").write_text(json.dumps(config, indent=1))
    return dirs


def bench_config(name: str) -> tuple[list[str], bool, dict, dict]:
    """Which inputs a method reads (models, uses base) and its parameters."""
    m = get_method(name)
    mp: dict = {}
    gp: dict = {}
    models = ["model_a", "model_b"]
    if "weight" in m.model_params:
        mp["weight"] = 0.5
    if "density" in m.model_params:
        mp["density"] = 0.9 if name.startswith("breadcrumbs") else 0.5
    if "epsilon" in m.model_params:
        mp["epsilon"] = 0.1
    if name in ("slerp", "nearswap"):
        models = ["model_a"]
        gp["t"] = 0.5 if name == "slerp" else 0.001
    if name == "passthrough":
        models = ["model_a"]
    models = models[: m.max_models or len(models)]  # e.g. arcee_fusion: exactly one besides the base
    if name == "linear":
        gp["base_weight"] = 0.5
    if name == "sce":
        gp["select_topk"] = 0.5
    use_base = m.base != "none"
    return models, use_base, mp, gp


def synthetic_statistics(
    kind: str, key: str, shape: tuple[int, ...], n_models: int, device: str, memo: dict
) -> list[torch.Tensor | None]:
    """Stand-ins for calibration statistics (their values do not change the method's cost): a random
    SPD Gram matrix per linear input width, a random positive Fisher diagonal per tensor shape."""
    if kind == "gram" and (len(shape) != 2 or "embed_tokens" in key):
        return [None] * n_models
    size = (shape[1], shape[1]) if kind == "gram" else shape
    out = []
    for i in range(n_models):
        if (kind, size, i) not in memo:
            g = torch.Generator().manual_seed(i)
            if kind == "gram":
                x = torch.randn(2 * size[0], size[0], generator=g)
                memo[(kind, size, i)] = (x.T @ x / len(x)).to(device)
            else:
                memo[(kind, size, i)] = torch.rand(size, generator=g).to(device)
        out.append(memo[(kind, size, i)])
    return out


def run_ours(name: str, dirs: dict[str, Path], device: str, save_to: Path | None = None) -> tuple[float, int]:
    """Merge every tensor; returns (seconds, input bytes). Methods that read calibration statistics
    get synthetic ones, made before the clock starts (computing real ones is the statistics node's
    cost, not the method's)."""
    m = get_method(name)
    models, use_base, mp, gp = bench_config(name)
    inputs = (["base"] if use_base else []) + models
    handles = [safe_open(str(dirs[n] / "model.safetensors"), framework="pt") for n in inputs]
    full_mp, full_gp = m.resolve([(ref, mp) for ref in models], gp)
    keys = list(handles[0].keys())
    memo: dict = {}
    stats = {}
    if m.statistics:
        for key in keys:
            shape = tuple(handles[0].get_slice(key).get_shape())
            stats[key] = synthetic_statistics(m.statistics, key, shape, len(models), device, memo)
    out: dict[str, torch.Tensor] = {}
    nbytes = 0
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        raw = [h.get_tensor(key) for h in handles]
        nbytes += sum(t.numel() * t.element_size() for t in raw)
        xs = [t.to(device, non_blocking=True).float() for t in raw]
        gen = None
        if m.stochastic:
            gen = torch.Generator(device=device)
            gen.manual_seed(i)
        base = xs[0] if use_base else None
        x = MergeInputs(xs[1:] if use_base else xs, base, full_mp, full_gp, gen, stats.get(key, ()))
        res = m(x).to(torch.bfloat16)
        if save_to is not None:
            out[key] = res.cpu()
        del xs, res, raw
    if device == "cuda":
        torch.cuda.synchronize()
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        save_file(out, str(save_to / "model.safetensors"), metadata={"format": "pt"})
    return time.perf_counter() - t0, nbytes


E2E_PARAMS = {
    # method: (per-model parameters, global parameters), the same for both tools
    "ties": ({"weight": 0.5, "density": 0.5}, {"normalize": True}),
    "linear": ({"weight": 0.5}, {"normalize": True}),
}


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    peak_rss: int  # bytes, of that one process
    peak_gpu: int | None  # bytes used on the GPU above what was in use before (nvidia-smi), None on CPU


def _gpu_used() -> int | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[0]) << 20
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def measure(cmd: list[str], gpu: bool, env: dict | None = None) -> Measured:
    """Run one process; its own wall time, CPU time and peak RSS (wait4), and its GPU peak."""
    before = _gpu_used() if gpu else None
    peak = [before or 0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.05):
            used = _gpu_used()
            if used is not None:
                peak[0] = max(peak[0], used)

    poller = threading.Thread(target=poll, daemon=True)
    if gpu and before is not None:
        poller.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if poller.is_alive():
        poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with exit status {proc.returncode}")
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=usage.ru_maxrss * 1024,
        peak_gpu=(peak[0] - before) if before is not None else None,
    )


def mergekit_cmd(venv: Path, method: str, dirs: dict[str, Path], out_dir: Path, cuda: bool) -> list[str]:
    mp, gp = E2E_PARAMS[method]
    models = "".join(
        f"  - model: {dirs[n]}\n    parameters: {json.dumps(mp)}\n" for n in ("model_a", "model_b")
    )
    cfg = (
        f"merge_method: {method}\n"
        + (f"base_model: {dirs['base']}\n" if method == "ties" else "")
        + "models:\n"
        + models
        + f"parameters: {json.dumps(gp)}\n"
        "dtype: float32\n"
        "out_dtype: bfloat16\n"
    )
    cfg_path = out_dir.parent / f"mergekit-{method}.yaml"
    cfg_path.write_text(cfg)
    exe = venv / "bin" / "mergekit-yaml"
    cmd = [str(exe), str(cfg_path), str(out_dir), "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]
    return cmd + (["--cuda"] if cuda else [])


def graphmerge_cmd(method: str, dirs: dict[str, Path], out_dir: Path, cache: Path, cuda: bool) -> list[str]:
    """`graphmerge run` of the same merge with an empty cache: the whole pipeline (planning, hashing,
    cache writes, atomic save), start-up included."""
    mp, gp = E2E_PARAMS[method]
    graph = out_dir.parent / f"graphmerge-{method}.yaml"
    models = "".join(f"      {n}: {json.dumps(mp)}\n" for n in ("model_a", "model_b"))
    graph.write_text(
        "nodes:\n"
        + "".join(f"  {n}: {{op: load, path: {dirs[n]}}}\n" for n in ("base", "model_a", "model_b"))
        + f"  merged:\n    op: merge\n    method: {method}\n"
        + ("    base: base\n" if method == "ties" else "")
        + "    models:\n"
        + models
        + f"    params: {json.dumps(gp)}\n"
        + f"  save: {{op: save, input: merged, path: {out_dir}, dtype: bfloat16}}\n"
    )
    return [
        sys.executable,
        "-m",
        "graphmerge.cli",
        "run",
        str(graph),
        "--cache-dir",
        str(cache),
        "--device",
        "cuda" if cuda else "cpu",
        "--no-progress",
    ]


def end_to_end(
    venv: Path, dirs: dict[str, Path], work: Path, methods: list[str], cuda: bool, repeats: int
) -> None:
    """mergekit-yaml and graphmerge run, alternating, each `repeats` times per method."""
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    dev = "CUDA" if cuda else "CPU"
    load = os.getloadavg()
    print(
        f"\nEnd to end on {dev} (fresh process each, graphmerge with an empty cache; load, merge, save bf16); "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("| method | tool | run | wall s | CPU s | peak RSS MB | peak GPU MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for method in methods:
        runs: dict[str, list[Measured]] = {"mergekit": [], "graphmerge": []}
        tmp = Path(tempfile.mkdtemp(dir=work))
        for r in range(repeats):
            for tool in ("mergekit", "graphmerge"):
                out = tmp / f"{tool}-{r}"
                if tool == "mergekit":
                    cmd = mergekit_cmd(venv, method, dirs, out, cuda)
                else:
                    shutil.rmtree(tmp / "cache", ignore_errors=True)
                    cmd = graphmerge_cmd(method, dirs, out, tmp / "cache", cuda)
                m = measure(cmd, cuda, env)
                runs[tool].append(m)
                gpu = f"{m.peak_gpu / 2**20:.0f}" if m.peak_gpu is not None else "-"
                print(
                    f"| {method} | {tool} | {r + 1} | {m.wall:.1f} | {m.cpu:.1f} | {m.peak_rss / 2**20:.0f} | {gpu} |",
                    flush=True,
                )
        same, worst = compare_outputs(tmp / "graphmerge-0", tmp / "mergekit-0")
        best = {tool: min(ms, key=lambda m: m.wall) for tool, ms in runs.items()}
        wall = best["graphmerge"].wall / best["mergekit"].wall
        cpu = min(m.cpu for m in runs["graphmerge"]) / min(m.cpu for m in runs["mergekit"])
        rss = max(m.peak_rss for m in runs["graphmerge"]) / max(m.peak_rss for m in runs["mergekit"])
        print(
            f"{method}: graphmerge / mergekit (best of {repeats}): wall {wall:.3f}, CPU {cpu:.3f}; "
            f"peak RSS (worst of {repeats}) {rss:.3f}; outputs {same * 100:.4f}% of elements bit-identical, "
            f"max abs difference {worst:.3g}"
        )
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def compare_outputs(ours: Path, theirs: Path) -> tuple[float, float]:
    """Fraction of bf16 elements that are bit-identical, and the max abs difference."""
    same = total = 0
    worst = 0.0
    files = sorted(theirs.glob("*.safetensors"))
    mine = safe_open(str(ours / "model.safetensors"), framework="pt")
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for key in h.keys():
                a, b = mine.get_tensor(key), h.get_tensor(key)
                same += int((a == b).sum())
                total += a.numel()
                worst = max(worst, float((a.float() - b.float()).abs().max()))
    return same / max(total, 1), worst


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="all", help="comma-separated method names, or all")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu + cuda if available)")
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--work", type=Path, default=ROOT / "_work")
    ap.add_argument(
        "--mergekit-venv", type=Path, default=None, help="venv with mergekit 0.1.5: compare end to end"
    )
    ap.add_argument("--e2e-methods", default="ties", help="end-to-end comparison methods: ties,linear")
    ap.add_argument(
        "--cuda", action="store_true", help="end to end on CUDA (mergekit-yaml --cuda, --device cuda)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="end-to-end runs per tool, alternating")
    ap.add_argument("--skip-methods", action="store_true", help="only the end-to-end comparison")
    args = ap.parse_args()

    names = sorted(all_methods()) if args.methods == "all" else args.methods.split(",")
    devices = (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    )
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dirs = make_triple(args.size, args.work)
    n_params = sum(torch.Size(s).numel() for s in tensor_shapes(args.size).values())
    print(f"machine: {machine()}")
    print(
        f"model triple: {args.size}, {n_params / 1e6:.1f}M params per model, bf16 (ready in {time.perf_counter() - t0:.1f}s)\n"
    )

    if not args.skip_methods:
        print("| method | device | inputs | seconds | GB/s |")
        print("| --- | --- | --- | ---: | ---: |")
    for device in [] if args.skip_methods else devices:
        for name in names:
            if device == "cuda":
                run_ours(name, dirs, device)  # warm up kernels and the allocator
            secs, nbytes = run_ours(name, dirs, device)
            models, use_base, _, _ = bench_config(name)
            n_in = len(models) + use_base
            print(f"| {name} | {device} | {n_in} | {secs:.2f} | {nbytes / secs / 1e9:.2f} |", flush=True)

    if args.mergekit_venv is not None:
        methods = args.e2e_methods.split(",")
        end_to_end(args.mergekit_venv.absolute(), dirs, args.work, methods, args.cuda, args.repeats)


if __name__ == "__main__":
    main()
