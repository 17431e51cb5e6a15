"""Accuracy by the refiner's own quality estimate (``refine_quality``, written by ``run --write-quality``).

Records of the compared files (those with as many records as the one holding the estimate) are
matched by position (``run`` keeps every record in order), binned
by the estimate, and each record is scored by its IoU with the best-overlapping non-crowd GT
instance of its image and category. A bin's row says how good the inputs really were (is the
estimate calibrated?) and how much refining changed them there.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

QUALITY_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


class QualityError(ValueError):
    """The files cannot be compared by quality; the message says why."""


def best_gt_iou(coco_gt: COCO, coco_dt: COCO) -> np.ndarray:
    """(N,) IoU of each result (in annotation-id order) with its best same-image, same-category
    non-crowd GT mask; 0 where there is none."""
    anns = [coco_dt.anns[i] for i in sorted(coco_dt.anns)]
    out = np.zeros(len(anns))
    groups: dict[tuple, list[int]] = {}
    for k, a in enumerate(anns):
        groups.setdefault((a["image_id"], a["category_id"]), []).append(k)
    for (image_id, cat_id), idx in groups.items():
        gt_ids = coco_gt.getAnnIds(imgIds=[image_id], catIds=[cat_id], iscrowd=False)
        if not gt_ids:
            continue
        gts = [coco_gt.annToRLE(coco_gt.anns[g]) for g in gt_ids]
        ious = mask_utils.iou([anns[k]["segmentation"] for k in idx], gts, [0] * len(gts))
        out[idx] = np.asarray(ious).max(axis=1)
    return out


def quality_of(coco_dts: list[COCO], names: list[str]) -> tuple[np.ndarray, list[int]]:
    """(N,) ``refine_quality`` of the first file that has any (NaN for its records without one: those
    the run kept without the network), and the indices of the files with as many records (those are
    compared; e.g. a GT file given as a prediction is not)."""
    for coco in coco_dts:
        anns = [coco.anns[i] for i in sorted(coco.anns)]
        if any("refine_quality" in a for a in anns):
            quality = np.array([a.get("refine_quality", np.nan) for a in anns], dtype=float)
            return quality, [i for i, c in enumerate(coco_dts) if len(c.anns) == len(anns)]
    raise QualityError("--by-quality: no file has 'refine_quality' (write it with `refine-masks run --write-quality`)")


def by_quality(coco_gt: COCO, coco_dts: list[COCO], names: list[str]) -> dict:
    """``{"files": compared names, "rows": [{"bin": [lo, hi], "n", "estimate", "iou": [mean IoU per
    compared file]}]}`` for the non-empty bins."""
    quality, compared = quality_of(coco_dts, names)
    ious = [best_gt_iou(coco_gt, coco_dts[i]) for i in compared]
    bins = np.clip(np.digitize(np.nan_to_num(quality, nan=0.0), QUALITY_BINS[1:-1]), 0, len(QUALITY_BINS) - 2)
    rows = []
    for b in range(len(QUALITY_BINS) - 1):
        sel = (bins == b) & np.isfinite(quality)
        if sel.any():
            rows.append({"bin": [QUALITY_BINS[b], QUALITY_BINS[b + 1]], "n": int(sel.sum()),
                         "estimate": float(quality[sel].mean()), "iou": [float(i[sel].mean()) for i in ious]})
    return {"files": [names[i] for i in compared], "rows": rows}
