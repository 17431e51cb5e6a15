"""ONNX export vs torch, and the library API vs `run`, on the shipped example: per-instance mask IoU and time.

    python bench/onnx_vs_torch.py                   # export the shipped weights, 2 threads, 2 rounds
    python bench/onnx_vs_torch.py --out bench/RESULTS.md

Each round runs `run`'s engine (read_predictions -> refine_predictions) once with the torch
Refiner and once with the onnxruntime OnnxRefiner, alternating so that a busy machine slows both
alike; the median time per engine is reported. IoU is taken per record between the torch and the
onnxruntime output masks (records with an empty mask in both count as 1), and between the torch
`run` output and ``MaskRefiner.refine`` called per image on the same records.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refine_cli.api import MaskRefiner  # noqa: E402
from refine_cli.coco_io import decode_mask, find_image, group_by_image, read_predictions  # noqa: E402
from refine_cli.engine import refine_predictions  # noqa: E402
from refine_cli.images import load_image  # noqa: E402
from refine_cli.model.checkpoint import load_checkpoint  # noqa: E402
from refine_cli.onnx_export import export_model  # noqa: E402
from refine_cli.onnx_runtime import OnnxRefiner  # noqa: E402
from refine_cli.refiner import Refiner  # noqa: E402

EXAMPLE = ROOT / "examples" / "coco_val"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def masks(records: list[dict], sizes: dict[int, tuple[int, int]]) -> list[np.ndarray]:
    return [decode_mask(r, *sizes[r["image_id"]], where="") != 0 for r in records]


def engine_pass(refiner) -> tuple[float, list[dict]]:
    preds = read_predictions(EXAMPLE / "predictions.json")
    summary = refine_predictions(preds, EXAMPLE / "images", refiner)
    return summary.seconds, preds.records


def api_masks(refiner: MaskRefiner) -> tuple[float, dict[int, np.ndarray]]:
    """index -> mask from MaskRefiner.refine, one call per image, and the seconds it took."""
    preds = read_predictions(EXAMPLE / "predictions.json")
    out, seconds = {}, 0.0
    for image_id, indices in group_by_image(preds.records).items():
        image = load_image(find_image(image_id, EXAMPLE / "images", preds.images))
        h, w = image.shape[:2]
        recs = [preds.records[i] for i in indices]
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in recs)], np.float32)
        coarse = np.stack([decode_mask(r, h, w, where="") for r in recs])
        start = time.perf_counter()
        refined = refiner.refine(image, boxes, coarse)
        seconds += time.perf_counter() - start
        out.update(zip(indices, refined))
    return seconds, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "refinemask_effl0.pt")
    p.add_argument("--onnx", type=Path, default=None, help="an existing export [default: export --weights]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="markdown file to append the section to")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or Path(tmp) / "model.onnx"
        if args.onnx is None:
            export_model(model, onnx_path)
        engines = {"torch": Refiner(model, "cpu"), "onnxruntime": OnnxRefiner(onnx_path, "cpu", args.threads)}
        times = {name: [] for name in engines}
        outputs = {}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                seconds, outputs[name] = engine_pass(engine)
                times[name].append(seconds)
        api_seconds, by_api = api_masks(MaskRefiner(engines["torch"]))
    preds = read_predictions(EXAMPLE / "predictions.json")
    sizes = {}
    for image_id in group_by_image(preds.records):
        sizes[image_id] = load_image(find_image(image_id, EXAMPLE / "images", preds.images)).shape[:2]
    ref = masks(outputs["torch"], sizes)
    onnx_iou = [iou(a, b) for a, b in zip(ref, masks(outputs["onnxruntime"], sizes))]
    api_iou = [iou(ref[i], by_api[i]) for i in range(len(ref))]
    t_torch, t_onnx = statistics.median(times["torch"]), statistics.median(times["onnxruntime"])
    n = len(ref)
    rows = [
        f"| onnxruntime vs torch `run` | {n} | {np.mean(onnx_iou):.5f} | {min(onnx_iou):.5f} | "
        f"{sum(v == 1.0 for v in onnx_iou)} |",
        f"| `MaskRefiner.refine` vs torch `run` | {n} | {np.mean(api_iou):.5f} | {min(api_iou):.5f} | "
        f"{sum(v == 1.0 for v in api_iou)} |",
    ]
    report = [
        f"\n## ONNX export vs torch on the example ({args.threads} threads, `bench/onnx_vs_torch.py`)\n",
        f"- rounds: {args.rounds}, engines alternating; times are `refine_predictions` seconds (median), "
        f"all {n} records of 33 images",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs "
        "while measured: the two engines alternate so both see the same load)",
        f"- torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, fp32 both",
        "",
        "| comparison | records | mean IoU | worst IoU | identical |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| engine | seconds | instances/s | per-round seconds |",
        "|---|---|---|---|",
        f"| torch | {t_torch:.1f} | {n / t_torch:.1f} | {', '.join(f'{t:.1f}' for t in times['torch'])} |",
        f"| onnxruntime | {t_onnx:.1f} | {n / t_onnx:.1f} | "
        f"{', '.join(f'{t:.1f}' for t in times['onnxruntime'])} |",
        f"| `MaskRefiner.refine` (torch, refine calls only) | {api_seconds:.1f} | {n / api_seconds:.1f} | |",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
