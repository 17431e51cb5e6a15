"""Coarse masks simulated from ground truth the way real detectors err.

Modes (each seeded through the ``rng`` passed in):
- ``resolution``: box jittered a few %, GT resampled to a 28x28 (or 14x14) grid in the box,
  pasted back bilinearly, thresholded — what a Mask R-CNN head at its own resolution gives.
- ``realistic``: the same plus low-frequency noise on the soft grid and a random erode/dilate
  of a few pixels — blobby masks that miss or spill over parts.
- ``polygon``: the GT contour simplified with ``cv2.approxPolyDP``.
- ``box``: no mask at all (the detector gave only a box).
- ``perfect``: the GT mask itself (with ``box_sigma=0`` the GT box too): what a refiner must not spoil.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import crop_mask, paste_mask_in_box

MODES = ("resolution", "realistic", "polygon", "box", "perfect")


def jitter_box(box: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """xywh box with each edge moved by N(0, sigma * side) (clipped to a 1 px minimum size)."""
    x, y, w, h = box
    dx0, dx1 = rng.normal(0, sigma * w, 2)
    dy0, dy1 = rng.normal(0, sigma * h, 2)
    x0, y0, x1, y1 = x + dx0, y + dy0, x + w + dx1, y + h + dy1
    return np.array([x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)], dtype=np.float64)


def _paste_full(grid: torch.Tensor, box_xyxy, height: int, width: int) -> np.ndarray:
    full = np.zeros((height, width), np.uint8)
    crop, x0, y0 = paste_mask_in_box(grid, box_xyxy, height, width)
    full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return full


def _grid(gt: np.ndarray, box: np.ndarray, size: int) -> tuple[torch.Tensor, tuple]:
    x, y, w, h = box
    xyxy = (x, y, x + w, y + h)
    return crop_mask(gt, xyxy, size), xyxy


def resolution_mask(gt: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) GT -> (H, W) uint8 coarse mask from a 28x28 (20 % of the time 14x14) box grid."""
    grid, xyxy = _grid(gt, box, 14 if rng.random() < 0.2 else 28)
    return _paste_full(grid, xyxy, *gt.shape)


def realistic_mask(gt: np.ndarray, box: np.ndarray, rng: np.random.Generator,
                   noise: float = 0.25, max_morph: int = 2) -> np.ndarray:
    """(H, W) GT -> (H, W) uint8 blobby mask: 28x28 grid + low-frequency noise + erode/dilate."""
    grid, xyxy = _grid(gt, box, 28)
    k = int(rng.integers(3, 7))
    field = torch.from_numpy(rng.normal(0.0, noise, (1, 1, k, k)).astype(np.float32))
    grid = grid + F.interpolate(field, size=grid.shape, mode="bicubic", align_corners=True)[0, 0]
    mask = _paste_full(grid, xyxy, *gt.shape)
    r = int(rng.integers(-max_morph, max_morph + 1))
    if r:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
        mask = (cv2.dilate if r > 0 else cv2.erode)(mask, kernel)
    return mask


def polygon_mask(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) GT -> its outer contours simplified with an epsilon of 1-4 % of sqrt(area)."""
    contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    eps = rng.uniform(0.01, 0.04) * np.sqrt(max(gt.sum(), 1))
    out = np.zeros(gt.shape, np.uint8)
    polys = [cv2.approxPolyDP(c, eps, True) for c in contours]
    cv2.fillPoly(out, [p for p in polys if len(p) >= 3], 1)
    return out


def simulate(gt: np.ndarray, gt_box: np.ndarray, mode: str, rng: np.random.Generator,
             box_sigma: float = 0.03, noise: float = 0.25) -> tuple[np.ndarray | None, np.ndarray]:
    """One coarse prediction for one GT instance.

    gt: (H, W) uint8 mask; gt_box: xywh. Returns (coarse (H, W) uint8 or None for ``box``,
    detector box xywh jittered by ``box_sigma``). ``noise``: strength of ``realistic`` mode.
    """
    box = jitter_box(gt_box, rng, box_sigma)
    if mode == "resolution":
        return resolution_mask(gt, box, rng), box
    if mode == "realistic":
        return realistic_mask(gt, box, rng, noise=noise), box
    if mode == "polygon":
        return polygon_mask(gt, rng), box
    if mode == "box":
        return None, box
    if mode == "perfect":
        return gt.copy(), box
    raise ValueError(f"unknown simulation mode {mode!r}; choose from {MODES}")


def simulate_dataset(gt: dict, mode: str, seed: int, box_sigma: float = 0.03) -> list[dict]:
    """COCO results (one per non-crowd GT instance, score 1.0) with coarse masks of ``mode``.

    gt: a COCO dataset dict. Box-only records carry no "segmentation". Deterministic per seed.
    """
    from ..coco_io import (  # local: keeps this module light for workers
        decode_mask,
        encode_mask,
    )

    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    results = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        im = images[ann["image_id"]]
        mask = decode_mask(ann, im["height"], im["width"], where=f"annotation {ann['id']}")
        coarse, box = simulate(mask, np.asarray(ann["bbox"], float), mode, rng, box_sigma)
        record = {"image_id": ann["image_id"], "category_id": ann["category_id"],
                  "bbox": [round(float(v), 2) for v in box], "score": 1.0}
        if coarse is not None:
            record["segmentation"] = encode_mask(coarse)
        results.append(record)
    return results
