"""COCO mask AP and Boundary AP for one or more prediction files.

Mask AP is plain pycocotools ``COCOeval(iouType="segm")``. Boundary AP
(Cheng et al., CVPR 2021) reruns the same evaluation with the IoU of a
detection and a non-crowd ground truth replaced by min(mask IoU, boundary IoU),
exactly like the official boundary-iou-api; crowd regions keep mask IoU.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
from collections.abc import Callable

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console
from rich.table import Table
from rich.text import Text

from refine_cli.evaluate.boundary import boundary_width, rle_to_boundary_rle
from refine_cli.evaluate.by_quality import QualityError
from refine_cli.evaluate.by_quality import by_quality as by_quality_rows

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
# Positions of METRIC_KEYS in COCOeval.stats.
_STATS_INDEX = (0, 1, 2, 3, 4, 5, 8)
_RECORD_FIELDS = ("image_id", "category_id", "segmentation")


class EvalInputError(ValueError):
    """A GT or prediction input is unusable; the message names file and record."""


def evaluate(
    gt: str | os.PathLike | dict,
    predictions: list[str | os.PathLike | list | dict],
    *,
    dilation_ratio: float = 0.02,
    per_category: bool = False,
    by_quality: bool = False,
    names: list[str] | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict:
    """Mask AP and Boundary AP of each prediction source against one GT.

    Args:
        gt: COCO instances JSON path, or the already-loaded dataset dict
            (not modified).
        predictions: each a JSON path, a list of result records, or a COCO
            dataset dict (records without ``score`` count as score 1.0).
            Records are not modified.
        dilation_ratio: boundary width as a fraction of the image diagonal.
        per_category: also report per-category AP and Boundary AP.
        by_quality: also report mean IoU per bin of ``refine_quality`` (see
            :mod:`refine_cli.evaluate.by_quality`); the files must align record by record.
        names: display names, one per prediction source (default: the path,
            or ``predictions[i]`` for in-memory sources).
        on_step: called after each of the 2 * len(predictions) evaluations
            (mask AP, then Boundary AP, per source), for progress reports.

    Returns:
        ``{"files": [{"name", "segm": {METRIC_KEYS}, "boundary": {METRIC_KEYS},
        "per_category": {cat_name: {"segm_AP", "boundary_AP"}}}], "num_images",
        "num_gt", "dilation_ratio"}`` (and ``"by_quality"`` rows); metrics in percent, undefined ones
        (no GT in that bucket) reported as 0.0.

    Raises:
        EvalInputError: unreadable, malformed or inconsistent input.
    """
    if not dilation_ratio > 0:
        raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
    if names is None:
        names = [_source_name(source, f"predictions[{i}]") for i, source in enumerate(predictions)]
    elif len(names) != len(predictions):
        raise ValueError(f"got {len(names)} names for {len(predictions)} prediction sources")

    # pycocotools prints progress on every step; the training loop calls this each epoch.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _load_gt(gt)
        # Parse every file before evaluating any, so a bad last file fails fast.
        coco_dts = [_load_predictions(source, name, coco_gt) for source, name in zip(predictions, names)]
        gt_boundaries = _BoundaryCache(coco_gt, dilation_ratio)
        try:
            quality_rows = by_quality_rows(coco_gt, coco_dts, names) if by_quality else None
        except QualityError as e:
            raise EvalInputError(str(e)) from None
        files = [
            _evaluate_one(coco_gt, coco_dt, name, gt_boundaries, dilation_ratio, per_category, on_step or _no_step)
            for coco_dt, name in zip(coco_dts, names)
        ]
    metrics = {
        "files": files,
        "num_images": len(coco_gt.imgs),
        "num_gt": len(coco_gt.anns),
        "dilation_ratio": dilation_ratio,
    }
    if quality_rows is not None:
        metrics["by_quality"] = quality_rows
    return metrics


# ---------------------------------------------------------------- evaluation


class _BoundaryCache:
    """Annotation id -> boundary RLE of that annotation, computed on first use."""

    def __init__(self, coco: COCO, dilation_ratio: float):
        self._coco = coco
        self._dilation_ratio = dilation_ratio
        self._rles: dict = {}

    def __call__(self, ann: dict) -> dict:
        """Boundary of ``ann`` (whose segmentation is already compressed RLE)."""
        rle = self._rles.get(ann["id"])
        if rle is None:
            img = self._coco.imgs[ann["image_id"]]
            d = boundary_width(img["height"], img["width"], self._dilation_ratio)
            rle = self._rles[ann["id"]] = rle_to_boundary_rle(ann["segmentation"], d)
        return rle


class BoundaryCOCOeval(COCOeval):
    """``COCOeval`` (segm) whose IoU is min(mask IoU, boundary IoU) for non-crowd GT.

    Crowd GT keeps the standard crowd mask IoU (intersection over detection
    area), as in the official boundary-iou-api. ``gt_boundaries`` may be
    shared between evaluations against the same GT.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, gt_boundaries: _BoundaryCache, dilation_ratio: float):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self._gt_boundaries = gt_boundaries
        self._dt_boundaries = _BoundaryCache(coco_dt, dilation_ratio)

    def computeIoU(self, imgId, catId):
        """(D, G) IoUs of the top-``maxDets[-1]`` detections (by score) vs the GTs, or []."""
        p = self.params
        if p.useCats:
            gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gts = [g for c in p.catIds for g in self._gts[imgId, c]]
            dts = [d for c in p.catIds for d in self._dts[imgId, c]]
        if not gts and not dts:
            return []
        # Same order and truncation as COCOeval.computeIoU: evaluateImg indexes rows by it.
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order[: p.maxDets[-1]]]
        iscrowd = [int(g["iscrowd"]) for g in gts]
        ious = mask_utils.iou([d["segmentation"] for d in dts], [g["segmentation"] for g in gts], iscrowd)
        if len(ious) == 0:
            return ious
        return self._apply_boundary_iou(ious, dts, gts, np.asarray(iscrowd, dtype=bool))

    def _apply_boundary_iou(self, ious: np.ndarray, dts: list, gts: list, crowd: np.ndarray) -> np.ndarray:
        """Lower ``ious`` (D, G) in place to the boundary IoU where that is smaller.

        Pairs whose mask IoU is already below the lowest IoU threshold keep it:
        evaluateImg never matches them either way, so AP and AR are unchanged,
        and most detections then need no boundary at all.
        """
        candidate = ious >= min(self.params.iouThrs)
        candidate[:, crowd] = False
        rows = np.flatnonzero(candidate.any(axis=1))
        cols = np.flatnonzero(candidate.any(axis=0))
        if rows.size == 0:
            return ious
        boundary_ious = mask_utils.iou(
            [self._dt_boundaries(dts[i]) for i in rows],
            [self._gt_boundaries(gts[j]) for j in cols],
            [0] * cols.size,
        )
        block = np.ix_(rows, cols)
        ious[block] = np.minimum(ious[block], boundary_ious)
        return ious


def _evaluate_one(coco_gt, coco_dt, name, gt_boundaries, dilation_ratio, per_category, on_step) -> dict:
    """Both evaluations of one prediction source; see ``evaluate`` for the result."""
    segm = _run(COCOeval(coco_gt, coco_dt, iouType="segm"))
    on_step()
    boundary = _run(BoundaryCOCOeval(coco_gt, coco_dt, gt_boundaries, dilation_ratio))
    on_step()
    result = {"name": name, "segm": _summary(segm), "boundary": _summary(boundary)}
    if per_category:
        segm_ap, boundary_ap = _per_category_ap(segm), _per_category_ap(boundary)
        result["per_category"] = {
            coco_gt.cats[cat_id]["name"]: {"segm_AP": ap, "boundary_AP": boundary_ap[cat_id]}
            for cat_id, ap in segm_ap.items()
        }
    return result


def _no_step() -> None:
    pass


def _run(coco_eval: COCOeval) -> COCOeval:
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def _percent(value: float) -> float:
    # COCOeval marks "no GT in this bucket" with -1; report it as 0.0.
    return float(value) * 100.0 if value >= 0 else 0.0


def _summary(coco_eval: COCOeval) -> dict:
    return {key: _percent(coco_eval.stats[i]) for key, i in zip(METRIC_KEYS, _STATS_INDEX)}


def _per_category_ap(coco_eval: COCOeval) -> dict:
    """Category id -> AP (percent), for categories with at least one non-crowd GT."""
    precision = coco_eval.eval["precision"]  # (T iou, R recall, K cat, A area, M maxDets)
    result = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        if values.size:
            result[cat_id] = float(values.mean()) * 100.0
    return result


# ------------------------------------------------------------------- loading


def _source_name(source, default: str) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else default


def _read_json(source, name: str):
    """Parsed JSON of a path; in-memory lists and dicts are returned as they are."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    try:
        with open(source, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise EvalInputError(f"{name}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{name}: malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise EvalInputError(f"{name}: malformed JSON: not UTF-8 text") from None


def _require_fields(record, fields, where: str) -> None:
    if not isinstance(record, dict):
        raise EvalInputError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise EvalInputError(f"{where}: missing field {', '.join(map(repr, missing))}")


def _is_known(key, table: dict) -> bool:
    try:
        return key in table
    except TypeError:  # unhashable id, e.g. a list
        return False


def _load_gt(source) -> COCO:
    """COCO index over a validated copy of the GT, segmentations as compressed RLE."""
    name = _source_name(source, "gt")
    data = _read_json(source, name)
    if not isinstance(data, dict):
        raise EvalInputError(f"{name}: expected a COCO dataset object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvalInputError(f"{name}: missing list {key!r}")
    for i, img in enumerate(data["images"]):
        _require_fields(img, ("id", "height", "width"), f"{name}: image {i}")
    for i, cat in enumerate(data["categories"]):
        _require_fields(cat, ("id", "name"), f"{name}: category {i}")
    if not data["images"]:
        raise EvalInputError(f"{name}: no images")

    image_ids = {img["id"] for img in data["images"]}
    cat_ids = {cat["id"] for cat in data["categories"]}
    coco = COCO()
    # Copies: COCOeval writes 'segmentation', 'ignore' and '_ignore' into GT records.
    coco.dataset = {
        "images": list(data["images"]),
        "categories": list(data["categories"]),
        "annotations": [
            _gt_annotation(ann, f"{name}: annotation {i}", image_ids, cat_ids)
            for i, ann in enumerate(data["annotations"])
        ],
    }
    coco.createIndex()
    if len(coco.anns) != len(coco.dataset["annotations"]):
        raise EvalInputError(f"{name}: duplicate annotation ids")
    if len(coco.imgs) != len(coco.dataset["images"]):
        raise EvalInputError(f"{name}: duplicate image ids")
    for i, ann in enumerate(coco.dataset["annotations"]):
        # annToRLE is what COCOeval itself would apply to GT; converting once
        # here makes every later evaluation against this GT skip it.
        try:
            ann["segmentation"] = coco.annToRLE(ann)
        except Exception as e:  # pycocotools raises bare TypeError/IndexError/Exception on bad shapes
            raise EvalInputError(f"{name}: annotation {i}: unusable segmentation ({e})") from None
        ann.setdefault("area", float(mask_utils.area(ann["segmentation"])))
    return coco


def _gt_annotation(ann, where: str, image_ids: set, cat_ids: set) -> dict:
    """Shallow copy of one GT annotation, checked against the GT's images and categories."""
    _require_fields(ann, ("id", "image_id", "category_id", "segmentation"), where)
    if not _is_known(ann["image_id"], image_ids):
        raise EvalInputError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
    if not _is_known(ann["category_id"], cat_ids):
        raise EvalInputError(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
    ann = dict(ann)
    ann.setdefault("iscrowd", 0)
    return ann


def _load_predictions(source, name: str, coco_gt: COCO) -> COCO:
    """COCO results index over validated copies of a prediction source's records."""
    data = _read_json(source, name)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        records, default_score = data["annotations"], 1.0
    elif isinstance(data, list):
        records, default_score = data, None
    else:
        raise EvalInputError(
            f"{name}: expected a list of result records or a COCO dataset object with "
            f"'annotations', got {type(data).__name__}"
        )
    coco = COCO()
    coco.dataset = {
        "images": coco_gt.dataset["images"],
        "categories": coco_gt.dataset["categories"],
        "annotations": [_result_annotation(r, i, name, coco_gt, default_score) for i, r in enumerate(records)],
    }
    coco.createIndex()
    return coco


def _result_annotation(record, index: int, name: str, coco_gt: COCO, default_score) -> dict:
    """One prediction record as a fresh COCO results annotation (compressed RLE, no bbox).

    The caller's ``bbox`` is dropped so that COCOeval's size buckets use the
    mask area (as detectron2 does).
    """
    where = f"{name}: record {index}"
    _require_fields(record, _RECORD_FIELDS + (() if default_score is not None else ("score",)), where)
    image_id, category_id = record["image_id"], record["category_id"]
    if not _is_known(image_id, coco_gt.imgs):
        raise EvalInputError(f"{where}: image_id {image_id!r} is not in the ground truth")
    if not _is_known(category_id, coco_gt.cats):
        raise EvalInputError(f"{where}: category_id {category_id!r} is not in the ground truth")
    score = record.get("score", default_score)
    if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
        raise EvalInputError(f"{where}: score must be a finite number, got {score!r}")
    img = coco_gt.imgs[image_id]
    rle = _to_rle(record["segmentation"], img["height"], img["width"], where)
    ann = {
        "id": index + 1,
        "image_id": image_id,
        "category_id": category_id,
        "score": float(score),
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "iscrowd": 0,
    }
    quality = record.get("refine_quality")
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, numbers.Real) or not math.isfinite(quality):
            raise EvalInputError(f"{where}: refine_quality must be a finite number, got {quality!r}")
        ann["refine_quality"] = float(quality)
    return ann


def _to_rle(segm, height: int, width: int, where: str) -> dict:
    """Polygons, uncompressed RLE or compressed RLE -> compressed RLE of (height, width)."""
    if isinstance(segm, list):
        return _polygons_to_rle(segm, height, width, where)
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise EvalInputError(f"{where}: segmentation must be polygons or an RLE object with 'counts' and 'size'")
    if not isinstance(segm["size"], (list, tuple)) or list(segm["size"]) != [height, width]:
        raise EvalInputError(f"{where}: segmentation size {segm['size']} does not match the image ({height}, {width})")
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, numbers.Integral) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise EvalInputError(f"{where}: uncompressed RLE counts must be non-negative ints summing to H*W")
        return mask_utils.frPyObjects(segm, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise EvalInputError(f"{where}: RLE counts must be a string or a list, got {type(counts).__name__}")
    return {"size": [height, width], "counts": counts}


def _polygons_to_rle(polygons: list, height: int, width: int, where: str) -> dict:
    for polygon in polygons:
        # pycocotools treats 4-number lists as boxes, so shorter polygons are rejected.
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise EvalInputError(f"{where}: each polygon must be a list of >= 3 x,y pairs")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in polygon):
            raise EvalInputError(f"{where}: polygon coordinates must be numbers")
    if not polygons:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


# ----------------------------------------------------------------- rendering


def render_tables(metrics: dict, console: Console) -> None:
    """Print ``evaluate``'s result as rich tables: files side by side, Δ vs the first file."""
    console.print(_summary_table(metrics))
    if metrics["files"] and "per_category" in metrics["files"][0]:
        console.print(_per_category_table(metrics))
    if "by_quality" in metrics:
        console.print(_by_quality_table(metrics))


def _delta(value: float, base: float) -> Text:
    delta = value - base
    style = "green" if delta > 0 else "red" if delta < 0 else "dim"
    return Text(f"{delta:+.2f}", style=style)


def _comparison_columns(table: Table, files: list, header) -> None:
    """Add one value column per file, each later file followed by its Δ column."""
    for i, f in enumerate(files):
        table.add_column(header(f["name"]), justify="right")
        if i:
            table.add_column(f"Δ {header(f['name'])}", justify="right")


def _comparison_cells(values: list) -> list:
    """Cells for one row: value per file, each later value followed by its Δ vs the first."""
    cells = []
    for i, value in enumerate(values):
        cells.append(f"{value:.2f}")
        if i:
            cells.append(_delta(value, values[0]))
    return cells


def _summary_table(metrics: dict) -> Table:
    files = metrics["files"]
    table = Table(
        title="Mask AP and Boundary AP (%)",
        caption=f"{metrics['num_images']} images, {metrics['num_gt']} GT instances, "
        f"boundary dilation ratio {metrics['dilation_ratio']}",
    )
    table.add_column("metric")
    _comparison_columns(table, files, lambda name: name)
    for kind, label in (("segm", "mask"), ("boundary", "boundary")):
        if kind == "boundary":
            table.add_section()
        for key in METRIC_KEYS:
            table.add_row(f"{label} {key}", *_comparison_cells([f[kind][key] for f in files]))
    return table


def _per_category_table(metrics: dict) -> Table:
    files = metrics["files"]
    table = Table(title="Per-category AP (%)")
    table.add_column("category")
    for label in ("AP", "Boundary AP"):
        _comparison_columns(table, files, lambda name, label=label: f"{label} {name}")
    for category in files[0]["per_category"]:
        cells = []
        for kind in ("segm_AP", "boundary_AP"):
            cells += _comparison_cells([f["per_category"][category][kind] for f in files])
        table.add_row(category, *cells)
    return table


def _by_quality_table(metrics: dict) -> Table:
    compared = metrics["by_quality"]["files"]
    table = Table(title="Mean IoU with the best-matching GT, by the refiner's quality estimate",
                  caption="estimate: mean refine_quality of the bin (the model's guess of the input's IoU)")
    table.add_column("refine_quality")
    table.add_column("records", justify="right")
    table.add_column("estimate", justify="right")
    _comparison_columns(table, [{"name": n} for n in compared], lambda name: f"IoU {name}")
    for row in metrics["by_quality"]["rows"]:
        lo, hi = row["bin"]
        table.add_row(f"[{lo:.2f}, {hi:.2f}{']' if hi >= 1 else ')'}", str(row["n"]), f"{row['estimate']:.3f}",
                      *_comparison_cells([100 * v for v in row["iou"]]))
    return table
