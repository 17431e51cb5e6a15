"""Which records and images `visualize` draws, their decoded masks, and how they compare (IoU, GT match)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..coco_io import InputError, Predictions, decode_mask, find_image, group_by_image, missing_image

@dataclass(frozen=True)
class InstanceStats:
    """What the gallery lists for one drawn record; holds no masks, so it is kept for every image."""

    index: int  # record index (the same in the coarse and the refined file)
    image_id: int
    label: str
    score: float | None
    iou: float  # IoU(coarse, refined)
    iou_gt_coarse: float | None  # IoU with the matched GT mask (0 when none matches); None without --gt
    iou_gt_refined: float | None

    @property
    def change(self) -> float:
        return 1.0 - self.iou


@dataclass
class Instance:
    """A drawn record: its (H, W) uint8 0/1 masks (None: the record has no mask)."""

    stats: InstanceStats
    coarse: np.ndarray | None
    refined: np.ndarray | None
    gt: np.ndarray | None  # the matched GT instance



@dataclass
class Plan:
    """What to draw: image_id -> record indices (record order) and image file; the counts left out."""

    indices: dict[int, list[int]]
    paths: dict[int, Path]
    skipped: int  # images with no record at or above score_thr
    over_cap: int  # images beyond --max-images
    score_thr: float



def check_same_records(coarse: Predictions, refined: Predictions) -> None:
    """The refined file must be `run`'s output for the coarse one: same image_id and category_id per index."""
    for index, (a, b) in enumerate(zip(coarse.records, refined.records)):
        for key in ("image_id", "category_id"):
            if a.get(key) != b.get(key):
                raise InputError(f"{refined.path}: record {index}: {key} {b.get(key)!r} differs from "
                                 f"{a.get(key)!r} in {coarse.path} (not the refined version of that file)")
    if len(coarse.records) != len(refined.records):
        index = min(len(coarse.records), len(refined.records))
        raise InputError(f"{refined.path}: record {index}: present in only one file ({len(refined.records)} records "
                         f"here, {len(coarse.records)} in {coarse.path})")


def _drawable(record: dict, score_thr: float) -> bool:
    # Same rules as `run`: no score counts as 1.0, crowd regions are not predictions.
    return not record.get("iscrowd", 0) and record.get("score", 1.0) >= score_thr


def select_images(preds: Predictions, image_ids: set[int], score_thr: float,
                  max_images: int) -> tuple[dict[int, list[int]], int, int]:
    """(image_id -> indices of its drawable records, images skipped, images over the cap), in record order.

    ``image_ids`` (empty: all) restricts the images; an id without records is an InputError.
    Images with no drawable record are skipped; of the rest the first ``max_images`` are kept.
    """
    groups = group_by_image(preds.records)
    unknown = sorted(image_ids - groups.keys())
    if unknown:
        raise InputError(f"--image-id {unknown[0]}: no records for this image in {preds.path}")
    selected: dict[int, list[int]] = {}
    skipped = over_cap = 0
    for image_id, indices in groups.items():
        if image_ids and image_id not in image_ids:
            continue
        kept = [index for index in indices if _drawable(preds.records[index], score_thr)]
        if not kept:
            skipped += 1
        elif len(selected) < max_images:
            selected[image_id] = kept
        else:
            over_cap += 1
    return selected, skipped, over_cap


def resolve_paths(preds: Predictions, selected: dict[int, list[int]], images_dir: Path) -> dict[int, Path]:
    """image_id -> file (find_image, as `run` does); a missing one fails before anything is drawn."""
    paths = {}
    for image_id, indices in selected.items():
        path = find_image(image_id, images_dir, preds.images)
        if path is None:
            raise missing_image(preds.path, indices[0], image_id, images_dir, skippable=False)
        paths[image_id] = path
    return paths


def plan_images(coarse: Predictions, refined: Predictions, images_dir: Path, *, score_thr: float,
                max_images: int, image_ids: set[int]) -> Plan:
    """Check the inputs against each other and choose the images to draw; raises InputError."""
    check_same_records(coarse, refined)
    selected, skipped, over_cap = select_images(coarse, image_ids, score_thr, max_images)
    return Plan(selected, resolve_paths(coarse, selected, images_dir), skipped, over_cap, score_thr)


# ---------------------------------------------------------------- instances


def mask_iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """IoU of two (H, W) 0/1 masks; None is an empty mask and two empty masks are identical (1.0)."""
    if a is None or b is None:
        other = a if b is None else b
        return 1.0 if other is None or not other.any() else 0.0
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def category_names(gt: Predictions | None) -> dict[int, str]:
    """category id -> name from the GT dataset's "categories" (empty without GT or categories)."""
    categories = gt.document.get("categories") if gt and isinstance(gt.document, dict) else None
    if not isinstance(categories, list):
        return {}
    return {c["id"]: str(c["name"]) for c in categories if isinstance(c, dict) and "id" in c and "name" in c}


def _label(record: dict, index: int, names: dict[int, str]) -> str:
    category = record.get("category_id")
    if category is None:
        return f"#{index}"
    return names.get(category, str(category)) if isinstance(category, int) else str(category)


def gt_masks(gt: Predictions, indices: list[int], height: int, width: int) -> list[tuple[object, np.ndarray]]:
    """(category_id, (H, W) mask) of an image's GT annotations; crowd regions and empty masks are left out
    because no prediction should be matched to them."""
    masks = []
    for index in indices:
        record = gt.records[index]
        if record.get("iscrowd", 0):
            continue
        mask = decode_mask(record, height, width, where=f"{gt.path}: annotation {index}")
        if mask is not None and mask.any():
            masks.append((record.get("category_id"), mask))
    return masks


def match_gt(coarse: np.ndarray | None, refined: np.ndarray | None, category: object,
             gts: list[tuple[object, np.ndarray]]) -> np.ndarray | None:
    """The GT mask (same category when both have one) that best overlaps the prediction, or None.

    Ranked by IoU(coarse, gt) + IoU(refined, gt) so that neither mask picks its own favourite GT.
    """
    best, best_score = None, 0.0
    for gt_category, gt_mask in gts:
        if category is not None and gt_category is not None and gt_category != category:
            continue
        score = mask_iou(coarse, gt_mask) + mask_iou(refined, gt_mask)
        if score > best_score:
            best, best_score = gt_mask, score
    return best


def build_instances(coarse: Predictions, refined: Predictions, image_id: int, indices: list[int],
                    shape: tuple[int, int], gts: list[tuple[object, np.ndarray]] | None,
                    names: dict[int, str]) -> list[Instance]:
    """Decode and compare the masks of ``indices`` for an image of ``shape`` (H, W); ``gts`` None: no --gt.

    Records with a mask in neither file have nothing to draw and are left out.
    """
    instances = []
    for index in indices:
        record = coarse.records[index]
        coarse_mask = decode_mask(record, *shape, where=f"{coarse.path}: record {index}")
        refined_mask = decode_mask(refined.records[index], *shape, where=f"{refined.path}: record {index}")
        if coarse_mask is None and refined_mask is None:
            continue
        gt = match_gt(coarse_mask, refined_mask, record.get("category_id"), gts) if gts is not None else None
        stats = InstanceStats(
            index=index, image_id=image_id, label=_label(record, index, names), score=record.get("score"),
            iou=mask_iou(coarse_mask, refined_mask),
            iou_gt_coarse=_gt_iou(coarse_mask, gt, gts is not None),
            iou_gt_refined=_gt_iou(refined_mask, gt, gts is not None))
        instances.append(Instance(stats, coarse_mask, refined_mask, gt))
    return instances


def _gt_iou(mask: np.ndarray | None, gt: np.ndarray | None, has_gt: bool) -> float | None:
    if not has_gt:
        return None
    return mask_iou(mask, gt) if gt is not None else 0.0
