"""A first run over new model files: bytes read and wall time, reading each source once against the
old way (hash every file first, then merge, reading it again).

    python bench/source_reads.py                 # the 300m triple of bench/merge_methods.py (made once)
    python bench/source_reads.py --size small --repeats 3
    python bench/source_reads.py --cold          # the weights evicted from the page cache before each run

Each run is a fresh process with an empty cache: TIES (weights 0.5, density 0.5) of the bf16 triple,
saved. `hash first` fills the cache's digest memo by hashing every weight file before the same run,
which is what a first run did before source digests were learnt from the reads. Bytes read are the
process's `rchar` after its imports (/proc/self/io: every read(2)/pread(2), page cache or not), so they count what the
process asked of the files, not what came from the disk. With `--cold`, the weight files' pages are
dropped from the page cache (posix_fadvise DONTNEED) before each run, so the first read of each byte
comes from the disk, as on a first merge of freshly downloaded models larger than the free memory.
Runs alternate; ratios are best-of-N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from merge_methods import make_triple  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from graphmerge.cache import Cache
from graphmerge.io.folder import ModelFolder
from graphmerge.runner import run_graph
import graphmerge.nodes, safetensors.torch, torch  # imports' own reads are not the models'
def rchar():
    return int(next(l.split()[1] for l in open("/proc/self/io") if l.startswith("rchar:")))
imported = rchar()
graph, cache, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if mode == "hash first":
    memo = Cache(cache)
    for line in Path(graph).read_text().splitlines():
        if "op: load" in line:
            ModelFolder.open(line.split("path:")[1].strip(" }")).tensor_digests(memo=memo.digests)
    memo.close()
run_graph(graph, cache_dir=cache, device="cpu", progress=False, log=lambda m: None)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - start, "cpu": ru.ru_utime + ru.ru_stime, "rchar": rchar() - imported}))
"""

GRAPH = """
nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {model_a}}}
  b: {{op: load, path: {model_b}}}
  merged:
    op: merge
    method: ties
    base: base
    models:
      a: {{weight: 0.5, density: 0.5}}
      b: {{weight: 0.5, density: 0.5}}
  out: {{op: save, input: merged, path: {out}}}
"""


def evict(dirs: dict[str, Path]) -> None:
    for d in dirs.values():
        for f in d.glob("*.safetensors"):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_once(dirs: dict[str, Path], mode: str, tmp: Path, cold: bool) -> dict:
    out, cache = tmp / "out", tmp / "cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    graph = tmp / "ties.yaml"
    graph.write_text(GRAPH.format(out=out, **dirs))
    if cold:
        evict(dirs)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT.parent),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(graph), str(cache), mode], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{mode} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="300m", choices=["300m", "small", "tiny"])
    ap.add_argument("--work", type=Path, default=ROOT / "_work")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--cold", action="store_true", help="evict the weights from the page cache before each run"
    )
    args = ap.parse_args()
    dirs = make_triple(args.size, args.work)
    weights = sum((d / "model.safetensors").stat().st_size for d in dirs.values())
    load_before = os.getloadavg()[0]
    rows: dict[str, list[dict]] = {"read once": [], "hash first": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for mode in rows:
                r = run_once(dirs, mode, Path(tmp), args.cold)
                rows[mode].append(r)
                print(
                    f"{mode:10}  wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s  "
                    f"read {r['rchar'] / weights:5.2f} x the weights ({weights / 1e6:.0f} MB)",
                    flush=True,
                )
    best = {m: min(rs, key=lambda r: r["wall"]) for m, rs in rows.items()}
    once, first = best["read once"], best["hash first"]
    print(
        f"{'cold' if args.cold else 'page cache'}: read once / hash first (best of {args.repeats}): wall {once['wall'] / first['wall']:.3f}, "
        f"cpu {once['cpu'] / first['cpu']:.3f}, bytes read {once['rchar'] / first['rchar']:.3f}; "
        f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
