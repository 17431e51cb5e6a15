"""How much is one pixel worth? Mask AP and Boundary AP of the GT itself after annotation-scale edits.

    python weights/metric_sensitivity.py [--gt examples/coco_val/instances.json] [--seed 0] [--json OUT]

Scores the GT masks of every non-crowd instance, as predictions against themselves, with the
project's evaluator, after edits a second annotator or a sub-pixel convention could make
(and once resampled through the refiner's 112x112 output grid, the resolution it predicts at):
erosion and dilation by 1 and 2 px, a 1-px shift, and Gaussian noise of sigma px added to each
polygon vertex coordinate (RLE annotations are kept as they are and counted). The untouched GT scores 100;
the rows say how far from 100 a refiner lands whose boundaries are that close to the annotator's,
which puts the accuracy bar of weights/README.md on a pixel scale. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from refine_cli.boxes import paste_mask
from refine_cli.coco_io import decode_mask, encode_mask, mask_box, write_json_atomic
from refine_cli.evaluate import evaluate
from refine_cli.model.config import RefineMaskConfig
from refine_cli.refiner import coarse_inputs


def morph(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilate (r > 0) or erode (r < 0) an (H, W) 0/1 mask by |r| px with a disc of radius |r|."""
    if r == 0:
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1,) * 2)
    return cv2.dilate(mask, disc) if r > 0 else cv2.erode(mask, disc)


def shift(mask: np.ndarray, dx: int) -> np.ndarray:
    """Move an (H, W) mask ``dx`` px to the right; what leaves the image is lost."""
    out = np.zeros_like(mask)
    if dx >= 0:
        out[:, dx:] = mask[:, :mask.shape[1] - dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


def jitter_vertices(ann: dict, sigma: float, rng: np.random.Generator, height: int, width: int) -> np.ndarray | None:
    """The polygon annotation re-rasterised with N(0, sigma) px added to each vertex coordinate; None for RLE."""
    polygons = ann["segmentation"]
    if not isinstance(polygons, list):
        return None
    moved = [(np.asarray(p, np.float64) + rng.normal(0.0, sigma, len(p))).tolist() for p in polygons]
    return decode_mask({"segmentation": moved}, height, width, where=f"annotation {ann.get('id')}")


def through_output_grid(mask: np.ndarray) -> np.ndarray:
    """The mask resampled to the refiner's output grid in its expanded box and pasted back, as `run`
    pastes a refined mask: what a perfect 112x112 prediction would score."""
    cfg = RefineMaskConfig()
    frames, grids = coarse_inputs(np.array([mask_box(mask)]), [mask], cfg.box_expand, cfg.stage_sizes[-1])
    return paste_mask(grids[0, 0], tuple(frames[0].tolist()), *mask.shape)


def edits(sigmas: tuple[float, ...] = (1.0, 1.5, 2.0)) -> dict[str, Callable]:
    """Row name -> f(ann, mask, rng) giving the edited (H, W) mask or None (unchanged)."""
    table = {"GT": lambda a, m, rng: m,
             "GT through the 112x112 output grid": lambda a, m, rng: through_output_grid(m)}
    for r in (-2, -1, 1, 2):
        table[f"{'dilated' if r > 0 else 'eroded'} {abs(r)} px"] = lambda a, m, rng, r=r: morph(m, r)
    table["shifted 1 px"] = lambda a, m, rng: shift(m, 1)
    for s in sigmas:
        table[f"vertices +N(0, {s:g} px)"] = lambda a, m, rng, s=s: jitter_vertices(a, s, rng, *m.shape)
    return table


def sensitivity(gt: dict, seed: int = 0, sigmas: tuple[float, ...] = (1.0, 1.5, 2.0)) -> tuple[dict, int]:
    """Evaluate every edit of the GT's non-crowd masks; returns (evaluate()'s result, RLE instances kept)."""
    images = {im["id"]: im for im in gt["images"]}
    anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    masks = [decode_mask(a, images[a["image_id"]]["height"], images[a["image_id"]]["width"],
                         where=f"annotation {a.get('id')}") for a in anns]
    table = edits(sigmas)
    sources = []
    for edit in table.values():
        rng = np.random.default_rng(seed)  # each row sees the same noise stream
        records = []
        for ann, mask in zip(anns, masks):
            edited = edit(ann, mask, rng)
            records.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0,
                            "segmentation": encode_mask(mask if edited is None else edited)})
        sources.append(records)
    rle = sum(not isinstance(a["segmentation"], list) for a in anns)
    return evaluate(gt, sources, names=list(table)), rle


def markdown(result: dict) -> str:
    """One table row per edit: mask AP, Boundary AP, and both per size bucket."""
    lines = ["| GT edited | mask AP | Boundary AP | APs / APm / APl | BAPs / BAPm / BAPl |", "|---|---|---|---|---|"]
    for f in result["files"]:
        s, b = f["segm"], f["boundary"]
        lines.append(f"| {f['name']} | {s['AP']:.1f} | {b['AP']:.1f} | {s['APs']:.1f} / {s['APm']:.1f} / {s['APl']:.1f}"
                     f" | {b['APs']:.1f} / {b['APm']:.1f} / {b['APl']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=Path("examples/coco_val/instances.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the evaluator's full result here")
    args = parser.parse_args()
    gt = json.loads(args.gt.read_text())
    result, kept = sensitivity(gt, args.seed)
    print(markdown(result))
    print(f"\n{result['num_images']} images, {result['num_gt']} GT instances; "
          f"{kept} RLE instances keep their mask in the vertex rows")
    if args.json:
        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()
