"""The files of a `visualize` output folder: one image decoded at a time, PNGs and index.html written atomically."""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..coco_io import InputError, Predictions, group_by_image
from ..images import ImageReadError, load_image
from .drawing import crop_source, render_image, render_strip
from .html_page import Gallery, PageCrop, PageImage, render_html
from .selection import Instance, Plan, build_instances, category_names, gt_masks


def keep_most_changed(heap: list, image: np.ndarray, instances: list[Instance], k: int) -> None:
    """Keep in ``heap`` (a min-heap of (change, -index, CropSource)) the k instances seen so far with the largest
    1 - IoU(coarse, refined), ties to the lower record index; unchanged instances never qualify.

    Only the crops are kept, so the strips are drawn at the end without decoding any image twice.
    """
    for instance in instances:
        key = (instance.stats.change, -instance.stats.index)
        if k == 0 or key[0] <= 0 or (len(heap) == k and key <= heap[0][:2]):
            continue
        source = crop_source(image, instance)
        if source is None:
            continue
        if len(heap) < k:
            heapq.heappush(heap, (*key, source))
        else:
            heapq.heapreplace(heap, (*key, source))


def write_crops(out_dir: Path, heap: list, has_gt: bool) -> list[PageCrop]:
    """Write the heap's strips as crops/NN_image<id>_record<index>.png, most changed first."""
    crops = []
    for rank, (_, _, source) in enumerate(sorted(heap, key=lambda entry: entry[:2], reverse=True), start=1):
        name = f"crops/{rank:02d}_image{source.stats.image_id}_record{source.stats.index}.png"
        write_png(out_dir / name, render_strip(source, has_gt))
        crops.append(PageCrop(name, source.stats))
    return crops



def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp name next to ``path``, then rename: ``path`` never holds a partial file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) RGB uint8 array as a PNG file.

    cv2.imencode + our own write rather than cv2.imwrite: imwrite reports failure as a bare False, and the
    file write raises OSError with the real reason (and handles non-ASCII paths everywhere).
    """
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    _write_atomic(path, encoded.tobytes())


def draw_gallery(plan: Plan, coarse: Predictions, refined: Predictions, gt: Predictions | None, out_dir: Path, *,
                 top_changed: int, on_image: Callable[[int], None] | None = None) -> Gallery:
    """Write <id>.png per planned image, crops/*.png for the top_changed instances and index.html.

    One image is decoded at a time; ``on_image(n_instances_drawn)`` is called after each.
    """
    (out_dir / "crops").mkdir(parents=True, exist_ok=True)
    names = category_names(gt)
    gt_groups = group_by_image(gt.records) if gt else {}
    pages, heap = [], []
    for image_id, indices in plan.indices.items():
        image = _load(coarse, image_id, indices[0], plan.paths[image_id])
        gts = gt_masks(gt, gt_groups.get(image_id, []), *image.shape[:2]) if gt else None
        instances = build_instances(coarse, refined, image_id, indices, image.shape[:2], gts, names)
        png = f"{image_id}.png"
        write_png(out_dir / png, render_image(image, instances, gts))
        pages.append(PageImage(image_id, plan.paths[image_id], png, [i.stats for i in instances]))
        keep_most_changed(heap, image, instances, top_changed)
        if on_image:
            on_image(len(instances))
    gallery = Gallery(pages, write_crops(out_dir, heap, gt is not None))
    inputs = {"coarse": coarse.path, "refined": refined.path, "GT": gt.path if gt else None}
    _write_atomic(out_dir / "index.html", render_html(gallery, plan, inputs).encode("utf-8"))
    return gallery


def _load(preds: Predictions, image_id: int, index: int, path: Path) -> np.ndarray:
    """(H, W, 3) RGB image; an unreadable file or a size the images table contradicts is an InputError."""
    try:
        image = load_image(path)
    except ImageReadError as e:
        raise InputError(f"{preds.path}: record {index}: {e}") from e
    height, width = image.shape[:2]
    expected = preds.images.get(image_id, {})
    # Polygons carry no size, so a wrong image would otherwise be drawn on silently.
    if (expected.get("height"), expected.get("width")) not in ((height, width), (None, None)):
        raise InputError(f"{preds.path}: image {image_id} ({path}) is {height}x{width} but the images table "
                         f"says {expected.get('height')}x{expected.get('width')}")
    return image
