"""`run --engine ray` against one process on examples/coco_val with the shipped weights (issue 18 items 4-5).

Each case runs in a fresh subprocess (so every Ray case starts its own local instance, as `run` does)
through `engine.refine_to_file`, the function `run` calls, and reports:

- wall s: the whole subprocess (imports, indexing, model load, Ray start, refining, writing);
- to 1st image s: from the call of refine_to_file to the first image journalled (for Ray: starting the
  local instance and the actors, each loading the model, and one image);
- steady images/s: (images - 1) / (last image - first image): the rate once the workers are up;
- == single: the output against the single-process 1-thread output, byte for byte.

    python bench/ray_bench.py [--rounds 2] [--workers 1,2] [--threads 1] [--no-prefetch]

``--no-prefetch`` adds a single-process case whose engine prepares each image (read its records,
decode the image and its coarse masks) only when the network is done with the previous one: the
default engine's prefetch thread, switched off, so the pair measures what the overlap gains.

Prints a markdown table (cases alternate within a round so a changing load hits all of them).
Needs `pip install 'refine-masks[ray]'`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "coco_val"

_CASE = r"""
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from refine_cli.engine import RefinerSpec, open_input, prepare_task, refine_prepared, refine_to_file
from refine_cli.model.config import DEFAULT_WEIGHTS
out, workers, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
index, table = open_input(Path(sys.argv[4]))
spec = RefinerSpec(str(DEFAULT_WEIGHTS), "cpu", threads=threads)
refiner = spec.load()
engine = None
if workers < 0:  # one process, no prefetch: each image prepared only after the previous one is refined
    def engine(tasks, source, options):
        with open(source, "rb") as f:
            for task in tasks:
                yield task.position, *refine_prepared(prepare_task(task, f, source, options), refiner, options)
elif workers:
    from refine_cli.ray_engine import RayOptions, ray_engine
    engine = ray_engine(spec, RayOptions(workers=workers, cpus=threads))
times = []
called = time.perf_counter()
summary, _ = refine_to_file(index, table, Path(sys.argv[5]), out, refiner, {}, engine=engine,
                            on_image=lambda n: times.append(time.perf_counter()))
print(json.dumps({"images": len(times), "to_first": times[0] - called,
                  "steady": (len(times) - 1) / (times[-1] - times[0]), "ready": called - start}))
"""


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def case(out: Path, workers: int, threads: int) -> dict:
    before = load()
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CASE, str(out), str(workers), str(threads),
                          str(EXAMPLE / "predictions.json"), str(EXAMPLE / "images")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    if res.returncode:
        sys.exit(res.stderr)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    return {**result, "wall": time.perf_counter() - start, "load": f"{before} / {load()}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", default="1,2", help="Ray worker counts (1 thread each unless --threads)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the single process and of each worker")
    ap.add_argument("--no-prefetch", action="store_true", help="add a single-process case without prefetch")
    args = ap.parse_args()
    print("| round | engine | workers x threads | images | wall s | to 1st image s | steady images/s "
          "| load avg before / after | == single |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "single.json"
        for r in range(1, args.rounds + 1):
            cases = [("single process", 0)] + [("no prefetch", -1)] * args.no_prefetch + \
                [("ray", int(w)) for w in args.workers.split(",") if w]
            for name, workers in cases:
                first = not reference.exists()
                out = reference if first else Path(tmp) / f"{name.split()[0]}{abs(workers)}.json"
                row = case(out, workers, args.threads)
                same = "(reference)" if first else "yes" if filecmp.cmp(reference, out, shallow=False) else "NO"
                print(f"| {r} | {name} | {max(workers, 1)} x {args.threads} | {row['images']} | {row['wall']:.1f} | "
                      f"{row['to_first']:.1f} | {row['steady']:.2f} | {row['load']} | {same} |", flush=True)


if __name__ == "__main__":
    main()
