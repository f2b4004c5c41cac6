"""A cached rerun, this tree against another (e.g. the commit before the lock-free store).

    python bench/cached_rerun.py --other /tmp/graphmerge-before [--hidden 512 --layers 8 --rounds 5]

Makes a random Llama-shaped base and two fine-tunes (bench/search_cache.py's models), runs a TIES
merge once per tree to fill a fresh cache each, then, alternating between the trees so that machine
load hits both alike, reruns it `--rounds` times in fresh processes:

  read     the output folder's stamp deleted: every merged tensor is read back from the cache
  no-op    the output is up to date: the run plans, finds every tensor cached, and writes nothing

Prints the median wall time of each and the ratio this tree / other tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

GRAPH = """nodes:
  base: {{op: load, path: {work}/base}}
  a: {{op: load, path: {work}/a}}
  b: {{op: load, path: {work}/b}}
  merged:
    op: merge
    method: ties
    base: base
    models: {{a: {{weight: 0.6, density: 0.5}}, b: {{weight: 0.4, density: 0.7}}}}
  save: {{op: save, input: merged, path: {out}}}
"""


def run(tree: Path, graph: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "graphmerge.cli", "run", str(graph), "--cache-dir", str(cache)]
    start = time.perf_counter()
    subprocess.run([*cmd, "--device", "cpu", "--no-progress"], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", type=Path, required=True, help="another graphmerge source tree")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from search_cache import make_models

    work = Path(tempfile.mkdtemp(prefix="graphmerge-rerun-"))
    model_bytes = make_models(work, args.hidden, args.layers)
    trees = {"this": REPO, "other": args.other.resolve()}
    times: dict[str, dict[str, list[float]]] = {t: {"read": [], "no-op": []} for t in trees}
    for name, tree in trees.items():
        graph = work / f"{name}.yaml"
        graph.write_text(GRAPH.format(work=work, out=work / f"out-{name}"))
        run(tree, graph, work / f"cache-{name}")  # fills the cache
    for _ in range(args.rounds):
        for name, tree in trees.items():
            graph, cache = work / f"{name}.yaml", work / f"cache-{name}"
            (work / f"out-{name}" / "graphmerge.json").unlink()
            times[name]["read"].append(run(tree, graph, cache))
            times[name]["no-op"].append(run(tree, graph, cache))
    load = os.getloadavg()
    result = {
        "model_mb": round(model_bytes / 1e6, 1),
        "load_average": [round(x, 2) for x in load],
        **{
            f"{kind}_s": {name: round(statistics.median(times[name][kind]), 3) for name in trees}
            for kind in ("read", "no-op")
        },
    }
    for kind in ("read", "no-op"):
        result[f"{kind}_ratio_this_over_other"] = round(
            statistics.median(times["this"][kind]) / statistics.median(times["other"][kind]), 3
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
