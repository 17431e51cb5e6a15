"""ONNX export vs torch, and the library API vs `run`, on the shipped example: per-instance mask IoU and time.

    python bench/onnx_vs_torch.py                   # export the shipped weights, 2 threads
    python bench/onnx_vs_torch.py --out bench/RESULTS.md

IoU: one pass of `run`'s engine (read_predictions -> refine_predictions) over all records with
the torch Refiner and one with the onnxruntime OnnxRefiner, compared per record (records with
an empty mask in both count as 1); and the torch `run` output against ``MaskRefiner.refine``
called per image on the same records. Time: ``refine_image`` on each of the first
``--timing-images`` images, torch and onnxruntime alternating ``--repeats`` times, the minimum
per image summed (the minimum is what a busy shared machine distorts least).
"""

from __future__ import annotations

import argparse
import os
import platform
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
from refine_cli.visualize.selection import mask_iou  # noqa: E402

EXAMPLE = ROOT / "examples" / "coco_val"


def masks(records: list[dict], sizes: dict[int, tuple[int, int]]) -> list[np.ndarray]:
    return [decode_mask(r, *sizes[r["image_id"]], where="") != 0 for r in records]


def engine_pass(refiner) -> list[dict]:
    preds = read_predictions(EXAMPLE / "predictions.json")
    refine_predictions(preds, EXAMPLE / "images", refiner)
    return preds.records


def image_inputs(n_images: int) -> list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """(image, xywh boxes, coarse masks) of the example's first ``n_images`` images (non-empty masks)."""
    preds = read_predictions(EXAMPLE / "predictions.json")
    out = []
    for image_id, indices in list(group_by_image(preds.records).items())[:n_images]:
        image = load_image(find_image(image_id, EXAMPLE / "images", preds.images))
        coarse = [decode_mask(preds.records[i], *image.shape[:2], where="") for i in indices]
        keep = [k for k, m in enumerate(coarse) if m.any()]
        boxes = np.array([preds.records[indices[k]]["bbox"] for k in keep], np.float32)
        out.append((image, boxes, [coarse[k] for k in keep]))
    return out


def min_times(engines: dict, inputs: list, repeats: int) -> dict[str, float]:
    """Per engine: the sum over images of the fastest of ``repeats`` refine_image calls."""
    best = {name: [float("inf")] * len(inputs) for name in engines}
    for _ in range(repeats):
        for k, (image, boxes, coarse) in enumerate(inputs):
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.refine_image(image, boxes, coarse)
                best[name][k] = min(best[name][k], time.perf_counter() - start)
    return {name: sum(t) for name, t in best.items()}


def api_masks(refiner: MaskRefiner) -> dict[int, np.ndarray]:
    """index -> mask from MaskRefiner.refine, one call per image."""
    preds = read_predictions(EXAMPLE / "predictions.json")
    out = {}
    for image_id, indices in group_by_image(preds.records).items():
        image = load_image(find_image(image_id, EXAMPLE / "images", preds.images))
        h, w = image.shape[:2]
        recs = [preds.records[i] for i in indices]
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in recs)], np.float32)
        coarse = np.stack([decode_mask(r, h, w, where="") for r in recs])
        out.update(zip(indices, refiner.refine(image, boxes, coarse)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "refinemask_effl0.pt")
    p.add_argument("--onnx", type=Path, default=None, help="an existing export [default: export --weights]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timing-images", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="markdown file to append the section to")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or Path(tmp) / "model.onnx"
        if args.onnx is None:
            export_model(model, onnx_path)
        engines = {"torch": Refiner(model, "cpu"), "onnxruntime": OnnxRefiner(onnx_path, "cpu", args.threads)}
        outputs = {name: engine_pass(engine) for name, engine in engines.items()}
        by_api = api_masks(MaskRefiner(engines["torch"]))
        inputs = image_inputs(args.timing_images)
        n_timed = sum(len(c) for _, _, c in inputs)
        times = min_times(engines, inputs, args.repeats)
    preds = read_predictions(EXAMPLE / "predictions.json")
    sizes = {}
    for image_id in group_by_image(preds.records):
        sizes[image_id] = load_image(find_image(image_id, EXAMPLE / "images", preds.images)).shape[:2]
    ref = masks(outputs["torch"], sizes)
    onnx_iou = [mask_iou(a, b) for a, b in zip(ref, masks(outputs["onnxruntime"], sizes))]
    api_iou = [mask_iou(ref[i], by_api[i]) for i in range(len(ref))]
    n = len(ref)
    rows = [
        f"| onnxruntime vs torch `run` | {n} | {np.mean(onnx_iou):.5f} | {min(onnx_iou):.5f} | "
        f"{sum(v == 1.0 for v in onnx_iou)} |",
        f"| `MaskRefiner.refine` vs torch `run` | {n} | {np.mean(api_iou):.5f} | {min(api_iou):.5f} | "
        f"{sum(v == 1.0 for v in api_iou)} |",
    ]
    report = [
        f"\n## ONNX export vs torch on the example ({args.threads} threads, `bench/onnx_vs_torch.py`)\n",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other "
        "jobs while measured (hence the minimum of alternating repeats for the times)",
        f"- torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, fp32 both",
        f"- IoU over all {n} records of the 33 images; times: `refine_image` on the first "
        f"{len(inputs)} images ({n_timed} instances), fastest of {args.repeats} per image, summed",
        "",
        "| comparison | records | mean IoU | worst IoU | identical |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| engine | seconds | instances/s | images/s |",
        "|---|---|---|---|",
        *[f"| {name} | {t:.2f} | {n_timed / t:.1f} | {len(inputs) / t:.2f} |" for name, t in times.items()],
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
