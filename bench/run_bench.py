"""Benchmark of `refine-masks run`: throughput, where the time goes, per-instance scaling, peak memory.

    python bench/run_bench.py [--weights weights/refinemask_effl0.pt] [--quick] [--tiny]
                              [--threads 1,2] [--device cpu|cuda] [--repeats 1] [--out bench/RESULTS.md]

Prints rich tables and appends a markdown section to --out. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from refine_cli.boxes import crop_masks, expand_boxes, paste_mask_in_box, xywh_to_xyxy
from refine_cli.coco_io import (
    BoxMask,
    decode_mask,
    encode_mask,
    encode_mask_in_box,
    find_image,
    group_by_image,
    read_predictions,
    write_json_atomic,
)
from refine_cli.engine import (
    SKIP_REFINED_EMPTY,
    _changed,
    refine_predictions,
    resolve_images,
)
from refine_cli.images import load_image
from refine_cli.inputs import input_scale, to_input
from refine_cli.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from refine_cli.model.config import tiny_config
from refine_cli.model.refinemask import RefineMask
from refine_cli.refiner import Refiner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "coco_val"
STAGES = ("decode", "resize", "masks in", "backbone", "head", "paste+encode", "diff stats", "json I/O")
PER_INSTANCE = ("masks in", "head", "paste+encode", "diff stats")  # stages whose work grows with instances
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class Case:
    """A predictions file and its images folder; ``density`` is detections per image (None: real data)."""

    name: str
    predictions: Path
    images: Path
    density: int | None = None


@dataclass
class Result:
    """One case on one device/thread setting."""

    case: Case
    config: str
    images: int
    instances: int
    e2e: float  # median seconds of read_predictions + refine_predictions + write_json_atomic
    stages: Counter  # seconds per stage of the instrumented pass
    identical: float  # share of records the instrumented pass wrote exactly as `run` did


# ---------------------------------------------------------------- data


def random_ellipse(rng: np.random.Generator, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(centre, half-axes, angle) of an ellipse centred inside an h x w image, 1%..25% of its short side."""
    short = min(h, w)
    centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    axes = tuple(int(v) for v in rng.integers(max(4, short // 100), short // 4, 2))
    return centre, axes, int(rng.integers(0, 180))


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour noise plus a few filled ellipses (compresses like a photo, unlike white noise)."""
    noise = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    image = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        centre, axes, angle = random_ellipse(rng, h, w)
        cv2.ellipse(image, centre, axes, angle, 0, 360, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return image


def detection(rng: np.random.Generator, image_id: int, h: int, w: int, rle: bool) -> dict:
    """A result record for a random ellipse: its box and its mask as a polygon or a compressed RLE."""
    centre, axes, angle = random_ellipse(rng, h, w)
    poly = cv2.ellipse2Poly(centre, axes, angle, 0, 360, 10).astype(np.float64)
    poly = np.clip(poly, 0, [w - 1, h - 1])
    (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
    segmentation = [poly.ravel().tolist()]
    if rle:
        counts = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))["counts"]
        segmentation = {"size": [h, w], "counts": counts.decode("ascii")}
    return {"image_id": image_id, "category_id": 1, "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
            "score": round(float(rng.uniform(0.3, 1.0)), 3), "segmentation": segmentation}


def make_synthetic(root: Path, n_images: int, densities: tuple[int, ...], seed: int = 0) -> dict[int, Path]:
    """Write ``n_images`` seeded JPEGs (long side 640..1333 px) and, per density, a predictions file
    with that many detections on every image (half polygons, half RLE). -> density -> predictions."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    records = {d: [] for d in densities}
    for image_id in range(1, n_images + 1):
        long = int(rng.integers(640, 1334))
        short = int(long * rng.uniform(0.5, 1.0))
        h, w = (short, long) if rng.random() < 0.7 else (long, short)
        cv2.imwrite(str(root / "images" / f"{image_id:012d}.jpg"), synthetic_image(rng, h, w))
        for d in densities:
            records[d] += [detection(rng, image_id, h, w, rle=k % 2 == 1) for k in range(d)]
    return {d: write_records(root / f"predictions_{d}.json", recs) for d, recs in records.items()}


def write_records(path: Path, records: list[dict]) -> Path:
    """Write a results list as JSON; -> path."""
    path.write_text(json.dumps(records))
    return path


def first_images(records: list[dict], n: int) -> list[dict]:
    """The records of the first ``n`` image ids (in order of appearance)."""
    keep = set(list(group_by_image(records))[:n])
    return [r for r in records if r["image_id"] in keep]


def make_cases(tmp: Path, quick: bool) -> list[Case]:
    """The shipped example (4 images with --quick) and the synthetic cases, one per density."""
    n_images, densities = (8, (1, 10)) if quick else (200, (1, 10, 100))
    example = EXAMPLE / "predictions.json"
    if quick:
        example = write_records(tmp / "example.json", first_images(json.loads(example.read_text()), 4))
    console.print(f"generating {n_images} synthetic images x {densities} detections in {tmp} ...")
    synthetic = make_synthetic(tmp / "synthetic", n_images, densities)
    os.sync()  # else the first fsync of write_json_atomic also pays for flushing the generated images
    return [Case("example", example, EXAMPLE / "images")] + [
        Case(f"synthetic x{d}", path, tmp / "synthetic" / "images", d) for d, path in synthetic.items()]


# ---------------------------------------------------------------- timed passes


@contextmanager
def timed(totals: Counter, stage: str, device: torch.device):
    """Add the wall time of the block (GPU work included) to ``totals[stage]``."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
    totals[stage] += time.perf_counter() - start


def e2e_pass(case: Case, refiner: Refiner, out: Path) -> tuple[float, int, list[dict]]:
    """What `run` does between parsing options and printing: -> (seconds, instances refined, records)."""
    start = time.perf_counter()
    preds = read_predictions(case.predictions)
    summary = refine_predictions(preds, case.images, refiner)
    write_json_atomic(out, preds.document)
    return time.perf_counter() - start, summary.refined + summary.skipped[SKIP_REFINED_EMPTY], preds.records


@torch.inference_mode()
def instrumented_pass(case: Case, refiner: Refiner, out: Path) -> tuple[Counter, list[dict]]:
    """`run` stage by stage: the functions engine._refine_one_image and Refiner.refine_image call, in
    their order, each stage timed. Assumes every record has a box and a mask (true of both data sets), so
    of the engine's skip rules only "empty coarse mask" (4 records of the example) is mirrored.
    -> (seconds per stage, records)."""
    t, device, model, cfg = Counter(), refiner.device, refiner.model, refiner.cfg
    with timed(t, "json I/O", device):
        preds = read_predictions(case.predictions)
    paths = resolve_images(preds, case.images, skip_missing=False)
    for image_id, indices in group_by_image(preds.records).items():
        with timed(t, "decode", device):
            image = load_image(paths[image_id])
        h, w = image.shape[:2]
        with timed(t, "masks in", device):
            coarse = [decode_mask(preds.records[i], h, w, where="", contiguous=False) for i in indices]
            kept = [(i, m) for i, m in zip(indices, coarse) if m.any()]  # the engine skips empty masks
            indices, coarse = [i for i, _ in kept], [m for _, m in kept]
            if not kept:
                continue
            boxes = xywh_to_xyxy(torch.tensor([preds.records[i]["bbox"] for i in indices], dtype=torch.float32))
            frames = expand_boxes(boxes, cfg.box_expand)
            grids = crop_masks(coarse, frames, cfg.stage_sizes[-1])
        with timed(t, "resize", device):
            scale = input_scale(h, w, cfg.short_side, cfg.max_size)
            x = to_input(image, scale, cfg.size_divisibility).to(device, memory_format=torch.channels_last)
        with timed(t, "backbone", device), refiner.autocast():
            feats = model.extract(x)
        rois = torch.cat([torch.zeros(len(frames), 1), frames * scale], dim=1).to(device)
        for start in range(0, len(frames), refiner.batch_size):
            sl = slice(start, start + refiner.batch_size)
            with timed(t, "head", device), refiner.autocast():
                probs = model.refine(feats, rois[sl], grids[sl].to(device)).float().cpu()
            for index, mask, prob, frame in zip(indices[sl], coarse[sl], probs[:, 0], frames[sl].tolist()):
                with timed(t, "paste+encode", device):
                    crop, x0, y0 = paste_mask_in_box(prob, tuple(frame), h, w)
                    if crop.any():
                        preds.records[index]["segmentation"] = encode_mask_in_box(crop, x0, y0, h, w)
                with timed(t, "diff stats", device):
                    _changed(BoxMask.of(mask), crop, x0, y0)
    with timed(t, "json I/O", device):
        write_json_atomic(out, preds.document)
    return t, preds.records


def baseline_pass(case: Case, out: Path) -> float:
    """No refinement: JSON read, image decode, every coarse mask decoded and re-encoded, JSON write."""
    start = time.perf_counter()
    preds = read_predictions(case.predictions)
    paths = resolve_images(preds, case.images, skip_missing=False)
    for image_id, indices in group_by_image(preds.records).items():
        h, w = load_image(paths[image_id]).shape[:2]
        for i in indices:
            preds.records[i]["segmentation"] = encode_mask(decode_mask(preds.records[i], h, w, where=""))
    write_json_atomic(out, preds.document)
    return time.perf_counter() - start


def warm_up(case: Case, refiner: Refiner) -> None:
    """One refine_image on the case's first image (allocator, kernels, lazy init) before anything is timed."""
    preds = read_predictions(case.predictions)
    image_id, indices = next(iter(group_by_image(preds.records).items()))
    image = load_image(find_image(image_id, case.images, preds.images))
    h, w = image.shape[:2]
    boxes = np.array([preds.records[i]["bbox"] for i in indices], np.float32)
    refiner.refine_image(image, boxes, [decode_mask(preds.records[i], h, w, where="") for i in indices])


@dataclass
class Cost:
    """Model FLOPs of one case: what the compute alone sets as the floor of e2e / backbone."""

    case: Case
    extract_gflop: float  # backbone + FPN + semantic branch, mean per image
    head_gflop: float  # RefineMask.refine per RoI
    per_image: float  # instances per image

    @property
    def floor(self) -> float:
        """e2e / backbone if the head ran at the backbone's FLOP/s and everything else were free."""
        return 1.0 + self.per_image * self.head_gflop / self.extract_gflop


@torch.inference_mode()
def model_cost(case: Case, model: RefineMask, n_images: int = 8) -> Cost:
    """FLOPs counted by torch's FlopCounterMode on the case's first ``n_images`` input sizes."""
    cfg = model.cfg
    preds = read_predictions(case.predictions)
    groups = group_by_image(preds.records)
    extract = []
    for image_id in list(groups)[:n_images]:
        h, w = load_image(find_image(image_id, case.images, preds.images)).shape[:2]
        x = to_input(np.zeros((h, w, 3), np.uint8), input_scale(h, w, cfg.short_side, cfg.max_size),
                     cfg.size_divisibility)
        with FlopCounterMode(display=False) as counter:
            feats = model.extract(x)
        extract.append(counter.get_total_flops() / 1e9)
    n = 8  # the head's FLOPs do not depend on the box; count a batch and divide
    rois = torch.tensor([[0.0, 16.0, 16.0, 112.0, 112.0]]).repeat(n, 1)
    with FlopCounterMode(display=False) as counter:
        model.refine(feats, rois, torch.rand(n, 1, cfg.stage_sizes[-1], cfg.stage_sizes[-1]))
    return Cost(case, statistics.mean(extract), counter.get_total_flops() / 1e9 / n,
                len(preds.records) / len(groups))


def run_config(cases: list[Case], refiner: Refiner, config: str, repeats: int, tmp: Path) -> list[Result]:
    """Every case on one device/thread setting: warm-up, ``repeats`` end-to-end passes, one instrumented pass."""
    results = []
    for case in cases:
        warm_up(case, refiner)
        runs = [e2e_pass(case, refiner, tmp / "e2e.json") for _ in range(repeats)]
        seconds, instances, records = statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2]
        stages, mirrored = instrumented_pass(case, refiner, tmp / "split.json")
        same = sum(a["segmentation"] == b["segmentation"] for a, b in zip(records, mirrored)) / len(records)
        n_images = len(group_by_image(records))
        results.append(Result(case, config, n_images, instances, seconds, stages, same))
        console.print(f"  {config:>10}  {case.name:<14} {n_images:4d} images {instances:6d} instances  "
                      f"{seconds:8.2f} s end to end")
    return results


# The child reports its own peak: ru_maxrss of a spawned child is not its own, since Linux carries the
# parent's high-water RSS across fork/vfork + exec (a `python -c pass` spawned by an 800 MiB parent
# reports 827 MiB). VmHWM in /proc/self/status belongs to the exec'd image alone.
_RUN_WITH_PEAK = """
import atexit, os
def _write_peak():
    with open("/proc/self/status") as status, open(os.environ["RSS_OUT"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
if os.path.exists("/proc/self/status"):
    atexit.register(_write_peak)
from refine_cli.cli import main
main()
"""


def cli_peak_rss_mib(args: list[str], tmp: Path) -> tuple[float, str]:
    """Run `refine-masks ARGS` in a subprocess; -> (its peak RSS in MiB, how it was measured).

    The child's VmHWM where /proc exists (Linux); else its ru_maxrss from os.wait4, which also
    counts this process's own peak (see ``_RUN_WITH_PEAK``). Exits with the child's output if it fails.
    """
    cmd = [sys.executable, "-c", _RUN_WITH_PEAK, *args]
    peak_file = tmp / "rss_peak.txt"
    peak_file.unlink(missing_ok=True)
    with open(tmp / "rss.log", "w+b") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "RSS_OUT": str(peak_file)})
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            sys.exit(f"`refine-masks {shlex.join(args)}` failed:\n{log.read().decode(errors='replace')}")
    if peak_file.exists():
        return int(peak_file.read_text()) / 1024, "VmHWM"  # both KiB on Linux
    return usage.ru_maxrss / 1024, "ru_maxrss (includes the bench's own peak)"


def peak_rss_mib(case: Case, n_images: int, weights: Path, device_args: list[str], tmp: Path) -> tuple[float, str]:
    """Peak RSS of `refine-masks run` on the case's first ``n_images`` images (see cli_peak_rss_mib)."""
    predictions = write_records(tmp / f"rss_{n_images}.json",
                                first_images(json.loads(case.predictions.read_text()), n_images))
    return cli_peak_rss_mib(["run", str(predictions), str(case.images), "-o", str(tmp / "rss_out.json"),
                             "--weights", str(weights), *device_args], tmp)


# ---------------------------------------------------------------- report


def machine() -> str:
    """CPU model, core count, OS, Python and torch versions."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def tables(results: list[Result], baselines: dict[str, float], rss: list[tuple[int, float, str]],
           densities: list[int], costs: list[Cost]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the report."""
    through = [[r.case.name, r.config, str(r.images), str(r.instances), f"{r.e2e:.2f}", f"{r.images / r.e2e:.2f}",
                f"{r.instances / r.e2e:.1f}", f"{baselines[r.case.name]:.2f}", f"{r.e2e / baselines[r.case.name]:.1f}"]
               for r in results]
    split = []
    for r in results:
        total = sum(r.stages.values())
        split.append([r.case.name, r.config] + [f"{r.stages[s]:.2f} ({100 * r.stages[s] / total:.0f}%)" for s in STAGES]
                     + [f"{total / r.e2e:.2f}", f"{r.e2e / r.stages['backbone']:.2f}", f"{100 * r.identical:.1f}%"])
    scaling = []
    for config in dict.fromkeys(r.config for r in results):
        by_density = {r.case.density: r for r in results if r.config == config and r.case.density}
        e2e = [1000 * by_density[d].e2e / by_density[d].instances for d in densities]
        part = [1000 * sum(by_density[d].stages[s] for s in PER_INSTANCE) / by_density[d].instances for d in densities]
        scaling.append([config] + [f"{v:.2f}" for v in e2e] + [f"{v:.2f}" for v in part]
                       + [f"{part[-1] / part[0]:.2f}"])
    return [
        ("End to end (read JSON -> refine_predictions -> write JSON)",
         ["case", "device", "images", "instances", "seconds", "images/s", "instances/s",
          "no-refinement s", "refine / no-refinement"], through),
        ("Time split, seconds (share) of the instrumented pass",
         ["case", "device", *STAGES, "split sum / e2e", "e2e / backbone (goal <= 1.5)", "same output as run"], split),
        ("Per-instance time, ms, synthetic cases (goal: per-instance part flat)",
         ["device"] + [f"e2e x{d}" for d in densities] + [f"per-instance part x{d}" for d in densities]
         + [f"part x{densities[-1]} / x{densities[0]}"], scaling),
        ("Model FLOPs (torch FlopCounterMode): the floor compute alone puts under e2e / backbone",
         ["case", "instances/image", "backbone GFLOP/image", "head GFLOP/instance", "FLOP floor of e2e / backbone"],
         [[c.case.name, f"{c.per_image:.1f}", f"{c.extract_gflop:.2f}", f"{c.head_gflop:.3f}", f"{c.floor:.2f}"]
          for c in costs]),
        ("Peak RSS of `refine-masks run` (subprocess), synthetic x10 (goal: flat)",
         ["images", "peak RSS MiB", "ratio to first", "measured as"],
         [[str(n), f"{m:.0f}", f"{m / rss[0][1]:.2f}", how] for n, m, how in rss]),
    ]


def show(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print one table with rich."""
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name, justify="left" if name in ("case", "device") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    """One table as a markdown sub-section."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def append_results(out: Path, heading: str, facts: list[str], report: list) -> None:
    """Append one section to ``out`` (created with a header if missing); earlier sections are kept."""
    if not out.exists():
        out.write_text("# refine-masks benchmark results\n\nSections appended by `bench/run_bench.py`; "
                       "see `bench/README.md` for how to read them.\n")
    section = [f"\n## {heading}\n", *[f"- {fact}" for fact in facts], ""] + [markdown(*t) for t in report]
    with out.open("a") as f:
        f.write("\n".join(section))


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """Options; --threads becomes a list of ints and --out gets its default."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "refinemask_effl0.pt")
    p.add_argument("--quick", action="store_true", help="smoke size: 8 synthetic images x {1, 10}, 4 example images")
    p.add_argument("--tiny", action="store_true", help="random tiny model instead of --weights (smoke test only)")
    p.add_argument("--threads", default="1,2", help="CPU thread counts to run, comma-separated ('' = no CPU runs)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda adds a GPU run after the CPU runs")
    p.add_argument("--repeats", type=int, default=1, help="end-to-end passes per case (median reported)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown file to append to [default: bench/RESULTS.md; with --tiny: none]")
    args = p.parse_args()
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if not args.threads and args.device == "cpu":
        p.error("nothing to run: --threads is empty and --device is cpu")
    if args.out is None and not args.tiny:
        args.out = ROOT / "bench" / "RESULTS.md"
    return args


def load_model(args: argparse.Namespace, tmp: Path) -> tuple[RefineMask, Path, str]:
    """-> (model, checkpoint file for the CLI subprocess, description)."""
    if args.tiny:
        torch.manual_seed(0)
        model = RefineMask(tiny_config()).eval()
        save_checkpoint(tmp / "tiny.pt", model)
        return model, tmp / "tiny.pt", "TINY RANDOM MODEL (smoke test; these are NOT real numbers)"
    try:
        model, _ = load_checkpoint(args.weights)
    except CheckpointError as e:
        sys.exit(f"error: {e}\n(train the model first, pass --weights, or use --tiny for a smoke test)")
    return model, args.weights, f"{args.weights} ({args.weights.stat().st_size / 2**20:.1f} MiB)"


def main() -> None:
    """Generate the data, time every case on every setting, measure peak RSS, print and append the report."""
    args = parse_args()
    command = shlex.join(["python", *sys.argv])
    default_threads = torch.get_num_threads()
    configs = [("cpu", t, f"cpu x{t}") for t in args.threads]
    if args.device == "cuda":
        configs.append(("cuda", default_threads, "cuda bf16"))  # Refiner's default precision on CUDA
    with tempfile.TemporaryDirectory(prefix="refine_bench_") as tmp_name:
        tmp = Path(tmp_name)
        model, weights, model_text = load_model(args, tmp)
        console.print(f"model: {model_text}")
        cases = make_cases(tmp, args.quick)
        costs = [model_cost(c, model) for c in cases]  # before a Refiner moves the model to its device
        baselines = {c.name: statistics.median(baseline_pass(c, tmp / "base.json") for _ in range(3)) for c in cases}
        results = []
        for device, threads, config in configs:
            torch.set_num_threads(threads)
            results += run_config(cases, Refiner(model, device), config, args.repeats, tmp)
        device, threads, _ = configs[-1]
        rss_case = next(c for c in cases if c.density == 10)
        n_images = len(group_by_image(json.loads(rss_case.predictions.read_text())))
        device_args = ["--device", device] + (["--threads", str(threads)] if device == "cpu" else [])
        rss = [(n, *peak_rss_mib(rss_case, n, weights, device_args, tmp)) for n in (n_images // 4, n_images)]
    densities = [c.density for c in cases if c.density]
    report = tables(results, baselines, rss, densities, costs)
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    facts = [f"machine: {machine()}{gpu}", f"model: {model_text}", f"command: `{command}`",
             f"peak-RSS runs used `{' '.join(device_args)}`"]
    console.print(*facts, sep="\n")
    for t in report:
        show(*t)
    if args.out:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        append_results(args.out, f"{stamp}{' — TINY RANDOM MODEL, NOT REAL NUMBERS' if args.tiny else ''}",
                       facts, report)
        console.print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
