"""Streaming `run`: one image at a time through the refiner, records rewritten in place."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .coco_io import (
    InputError,
    Predictions,
    decode_mask,
    encode_mask_in_box,
    find_image,
    group_by_image,
    mask_box,
)
from .images import ImageReadError, load_image

if TYPE_CHECKING:  # only a type here; validate imports this module before torch is worth loading
    from .refiner import Refiner

# Why a record is written back unchanged (counted in the summary).
SKIP_CROWD = "crowd region"
SKIP_SCORE = "below --score-thr"
SKIP_EMPTY = "empty coarse mask"
SKIP_NO_BOX = "no box and no mask"
SKIP_DEGENERATE = "zero or negative box"
SKIP_OUTSIDE = "box outside the image"
SKIP_IMAGE = "image missing or unreadable (--skip-missing)"
SKIP_REFINED_EMPTY = "refined mask empty (coarse kept)"

# Timing hook: ``timer(stage)`` wraps each stage of the work (the bench's time split). The stages are
# "decode", "masks in", "paste+encode", "diff stats" here and "masks in", "resize", "backbone", "head",
# "paste+encode" in Refiner.refine_image. The default, nullcontext, costs nothing.
Timer = Callable[[str], AbstractContextManager]


@dataclass
class Summary:
    images: int = 0
    refined: int = 0
    skipped: Counter = field(default_factory=Counter)
    changed_pixels: int = 0  # sum over refined instances of |refined XOR coarse|
    seconds: float = 0.0

    @property
    def mean_changed_pixels(self) -> float:
        return self.changed_pixels / self.refined if self.refined else 0.0


def resolve_images(preds: Predictions, images_dir: Path, skip_missing: bool) -> dict[int, Path | None]:
    """image_id -> file for every image with records; missing ones fail up front (before any work)."""
    paths = {}
    for image_id, indices in group_by_image(preds.records).items():
        paths[image_id] = find_image(image_id, images_dir, preds.images)
        if paths[image_id] is None and not skip_missing:
            raise InputError(f"{preds.path}: record {indices[0]}: no image for image_id {image_id} in {images_dir} "
                             f"(tried the images table, {image_id:012d}.jpg and {image_id}.*; "
                             "--skip-missing keeps such records unchanged)")
    return paths


def _box(record: dict, mask: np.ndarray | None, height: int, width: int) -> tuple[list[float] | None, str | None]:
    """The record's xywh box (its own, else the mask's tight box) or the reason it cannot be refined."""
    box = record.get("bbox")
    if box is None:
        if mask is None:
            return None, SKIP_NO_BOX
        box = mask_box(mask)
    x, y, w, h = box
    if not (w > 0 and h > 0):
        return None, SKIP_DEGENERATE
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return None, SKIP_OUTSIDE
    return list(box), None


def _changed(coarse: np.ndarray | None, crop: np.ndarray, x0: int, y0: int) -> int:
    """|refined XOR coarse| when the refined mask is ``crop`` at (x0, y0) and zero elsewhere."""
    if coarse is None:
        return int(np.count_nonzero(crop))
    h, w = crop.shape
    window = coarse[y0:y0 + h, x0:x0 + w]
    return int(np.count_nonzero(window != crop) + np.count_nonzero(coarse) - np.count_nonzero(window))


def refine_predictions(preds: Predictions, images_dir: Path, refiner: Refiner, *, score_thr: float = 0.0,
                       update_bbox: bool = False, skip_missing: bool = False, write_quality: bool = False,
                       on_image: Callable[[int], None] | None = None, timer: Timer = nullcontext) -> Summary:
    """Replace the segmentation of every refinable record of ``preds`` in place.

    ``write_quality``: also set ``refine_quality`` (the gate's estimate of the coarse mask's IoU
    with the truth) on every record that went through the model; the refiner must have a gate.

    Images are decoded one at a time and their masks dropped after encoding, so memory
    does not grow with the dataset. ``on_image(n_records)`` is called after each image;
    ``timer`` (see Timer) times the stages.
    """
    start = time.perf_counter()
    summary = Summary()
    paths = resolve_images(preds, Path(images_dir), skip_missing)
    for image_id, indices in group_by_image(preds.records).items():
        _refine_one_image(preds, image_id, indices, paths[image_id], refiner, score_thr, update_bbox,
                          skip_missing, write_quality, summary, timer)
        if on_image:
            on_image(len(indices))
    summary.seconds = time.perf_counter() - start
    return summary


def _refine_one_image(preds, image_id, indices, path, refiner, score_thr, update_bbox, skip_missing, write_quality,
                      summary, timer):
    if path is None:
        summary.skipped[SKIP_IMAGE] += len(indices)
        return
    try:
        with timer("decode"):
            image = load_image(path)
    except ImageReadError as e:
        if not skip_missing:
            raise InputError(f"{preds.path}: record {indices[0]}: {e}") from e
        summary.skipped[SKIP_IMAGE] += len(indices)
        return
    summary.images += 1
    height, width = image.shape[:2]
    expected = preds.images.get(image_id)
    if expected and (expected.get("height"), expected.get("width")) not in ((height, width), (None, None)):
        raise InputError(f"{preds.path}: image {image_id} ({path}) is {height}x{width} but the images table "
                         f"says {expected.get('height')}x{expected.get('width')}")
    todo, boxes, coarse = [], [], []
    for index in indices:
        record = preds.records[index]
        where = f"{preds.path}: record {index}"
        if record.get("iscrowd", 0):
            summary.skipped[SKIP_CROWD] += 1
            continue
        if record.get("score", 1.0) < score_thr:
            summary.skipped[SKIP_SCORE] += 1
            continue
        with timer("masks in"):
            mask = decode_mask(record, height, width, where=where, contiguous=False)
        if mask is not None and not mask.any():
            summary.skipped[SKIP_EMPTY] += 1
            continue
        box, reason = _box(record, mask, height, width)
        if reason:
            summary.skipped[reason] += 1
            continue
        todo.append(index), boxes.append(box), coarse.append(mask)
    results, qualities = refiner.refine_image_with_quality(image, np.array(boxes, np.float32).reshape(-1, 4), coarse,
                                                           timer=timer)
    for index, mask, (crop, x0, y0), quality in zip(todo, coarse, results, qualities):
        if write_quality:
            preds.records[index]["refine_quality"] = round(quality, 4)
        if not crop.any():
            summary.skipped[SKIP_REFINED_EMPTY] += 1
            continue
        record = preds.records[index]
        with timer("paste+encode"):
            record["segmentation"] = encode_mask_in_box(crop, x0, y0, height, width)
        if update_bbox:
            x, y, w, h = mask_box(crop)
            record["bbox"] = [x + x0, y + y0, w, h]
        summary.refined += 1
        with timer("diff stats"):
            summary.changed_pixels += _changed(mask, crop, x0, y0)
