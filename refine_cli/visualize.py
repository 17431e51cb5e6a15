"""``refine-masks visualize``: coarse vs refined (vs GT) masks drawn per image, zoomed crops of the
instances that changed most, and a static gallery (index.html) that opens offline."""

from __future__ import annotations

import heapq
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import click
import cv2
import numpy as np

from .coco_io import (
    InputError,
    Predictions,
    decode_mask,
    find_image,
    group_by_image,
    mask_box,
    read_predictions,
)
from .console import err_console, fail, progress_bar
from .images import ImageReadError, load_image

# Okabe–Ito colours (RGB): the pairs stay distinct under the common colour-vision deficiencies.
COARSE_RGB = (213, 94, 0)  # vermillion
REFINED_RGB = (0, 114, 178)  # blue
GT_RGB = (240, 228, 66)  # yellow
# Per-instance refined fills: the rest of the palette (orange, sky blue, bluish green, reddish purple);
# black is left out because a black fill only darkens the image.
FILL_RGBS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (204, 121, 167))
FILL_ALPHA = 0.35
FONT = cv2.FONT_HERSHEY_SIMPLEX

CROP_MIN_OBJECT = 160  # px: crop panels are upscaled until the object's box side is at least this ...
CROP_MAX_PANEL = 400  # px: ... unless a panel side would pass this
CROP_MARGIN = 0.25  # context around the object in a crop, as a fraction of its box side
CROP_GAP = 4  # px of white between the panels of a strip
CAPTION_HEIGHT = 22  # px: caption bar above each crop panel
THUMB_WIDTH = 320  # px: gallery thumbnail width


# ---------------------------------------------------------------- data


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
    """A drawn record: its (H, W) uint8 0/1 masks (None: the record has no mask) and its fill colour."""

    stats: InstanceStats
    coarse: np.ndarray | None
    refined: np.ndarray | None
    gt: np.ndarray | None  # the matched GT instance
    colour: tuple[int, int, int]


@dataclass
class CropSource:
    """Pixels of one crop strip: an (h, w, 3) RGB image crop and (h, w) mask crops at source resolution."""

    stats: InstanceStats
    image: np.ndarray
    coarse: np.ndarray | None
    refined: np.ndarray | None
    gt: np.ndarray | None
    object_side: int  # longer side of the masks' union box, px


@dataclass
class Plan:
    """What to draw: image_id -> record indices (record order) and image file; the counts left out."""

    indices: dict[int, list[int]]
    paths: dict[int, Path]
    skipped: int  # images with no record at or above score_thr
    over_cap: int  # images beyond --max-images
    score_thr: float


@dataclass
class PageImage:
    image_id: int
    source: Path
    png: str  # path relative to the output folder
    instances: list[InstanceStats]

    @property
    def mean_iou(self) -> float | None:
        return float(np.mean([s.iou for s in self.instances])) if self.instances else None


@dataclass
class PageCrop:
    png: str  # path relative to the output folder
    stats: InstanceStats


@dataclass
class Gallery:
    images: list[PageImage]
    crops: list[PageCrop]

    @property
    def instances(self) -> int:
        return sum(len(page.instances) for page in self.images)


# ---------------------------------------------------------------- planning


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
            raise InputError(f"{preds.path}: record {indices[0]}: no image for image_id {image_id} in {images_dir} "
                             f"(tried the images table, {image_id:012d}.jpg and {image_id}.*)")
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
        instances.append(Instance(stats, coarse_mask, refined_mask, gt, FILL_RGBS[len(instances) % len(FILL_RGBS)]))
    return instances


def _gt_iou(mask: np.ndarray | None, gt: np.ndarray | None, has_gt: bool) -> float | None:
    if not has_gt:
        return None
    return mask_iou(mask, gt) if gt is not None else 0.0


# ---------------------------------------------------------------- drawing


def _line_width(shape: tuple[int, ...]) -> int:
    """Contour width for an (H, W, ...) canvas: 2 px up to ~800 px, growing so big images stay readable.

    Never 1: an anti-aliased 1-px line spreads over two pixels and reaches neither colour fully."""
    return max(2, round(max(shape[:2]) / 320))


def _font_scale(shape: tuple[int, ...]) -> float:
    return max(0.35, max(shape[:2]) / 1600)


def fill(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Blend ``colour`` at FILL_ALPHA into the (H, W, 3) uint8 ``canvas`` where the (H, W) ``mask`` is set."""
    inside = mask.astype(bool)
    blended = canvas[inside] * (1 - FILL_ALPHA) + np.asarray(colour) * FILL_ALPHA
    canvas[inside] = np.round(blended).astype(np.uint8)


def contour(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    """Draw the outer and hole boundaries of the (H, W) 0/1 ``mask`` on the (H, W, 3) ``canvas``."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, thickness, lineType=cv2.LINE_AA)


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts only have ASCII glyphs; the HTML shows the full text.
    return text.encode("ascii", "replace").decode("ascii")


def _text_box(canvas: np.ndarray, text: str, x: int, y: int, background: tuple[int, int, int],
              foreground: tuple[int, int, int], scale: float) -> None:
    """``text`` on a filled box whose bottom-left corner is at (x, y), moved as needed to stay inside the canvas."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    pad = 2
    box_w, box_h = width + 2 * pad, height + baseline + 2 * pad
    x = min(max(x, 0), max(canvas.shape[1] - box_w, 0))
    y = min(max(y, box_h), canvas.shape[0])
    cv2.rectangle(canvas, (x, y - box_h), (x + box_w, y), background, cv2.FILLED)
    cv2.putText(canvas, text, (x + pad, y - baseline - pad), FONT, scale, foreground, 1, cv2.LINE_AA)


def _instance_text(stats: InstanceStats) -> str:
    score = f" {stats.score:.2f}" if stats.score is not None else ""
    return _ascii(f"{stats.label}{score}")


def draw_label(canvas: np.ndarray, instance: Instance, scale: float) -> None:
    """Label and score on the instance's fill colour, just above the top-left of its masks' box."""
    masks = [m for m in (instance.refined, instance.coarse) if m is not None]
    box = mask_box(np.logical_or.reduce(masks))
    if box is not None:
        _text_box(canvas, _instance_text(instance.stats), int(box[0]), int(box[1]), instance.colour, (0, 0, 0),
                  scale)


def draw_legend(canvas: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]], scale: float) -> None:
    """A dark box in the top-left corner with a line in each entry's colour next to its name."""
    sizes = [cv2.getTextSize(name, FONT, scale, 1) for name, _ in entries]
    text_w = max(w for (w, _), _ in sizes)
    text_h = max(h + b for (_, h), b in sizes)
    pad, swatch, row = 4, 2 * text_h, text_h + 4
    cv2.rectangle(canvas, (0, 0), (3 * pad + swatch + text_w, 2 * pad + row * len(entries)), (40, 40, 40),
                  cv2.FILLED)
    for i, (name, colour) in enumerate(entries):
        middle = pad + i * row + row // 2
        cv2.line(canvas, (pad, middle), (pad + swatch, middle), colour, 3, cv2.LINE_AA)
        cv2.putText(canvas, name, (2 * pad + swatch, middle + text_h // 3), FONT, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)


def render_image(image: np.ndarray, instances: list[Instance],
                 gts: list[tuple[object, np.ndarray]] | None) -> np.ndarray:
    """(H, W, 3) RGB overview of an (H, W, 3) RGB image: refined fills, then GT, coarse and refined contours
    (refined last: it is the result being judged), labels and the legend."""
    canvas = image.copy()
    thickness, scale = _line_width(canvas.shape), _font_scale(canvas.shape)
    for instance in instances:
        if instance.refined is not None:
            fill(canvas, instance.refined, instance.colour)
    for _, gt in gts or []:
        contour(canvas, gt, GT_RGB, thickness)
    for attribute, colour in (("coarse", COARSE_RGB), ("refined", REFINED_RGB)):
        for instance in instances:
            mask = getattr(instance, attribute)
            if mask is not None:
                contour(canvas, mask, colour, thickness)
    for instance in instances:
        draw_label(canvas, instance, scale)
    legend = [("coarse", COARSE_RGB), ("refined", REFINED_RGB)] + ([("GT", GT_RGB)] if gts is not None else [])
    draw_legend(canvas, legend, scale)
    return canvas


# ---------------------------------------------------------------- crops


def crop_source(image: np.ndarray, instance: Instance) -> CropSource | None:
    """The region of the instance's masks (union box, grown by CROP_MARGIN, clipped to the image); None if empty."""
    masks = [m for m in (instance.coarse, instance.refined, instance.gt) if m is not None]
    box = mask_box(np.logical_or.reduce(masks))
    if box is None:
        return None
    x, y, w, h = (int(v) for v in box)
    margin = max(4, round(CROP_MARGIN * max(w, h)))
    x0, y0 = max(x - margin, 0), max(y - margin, 0)
    x1, y1 = min(x + w + margin, image.shape[1]), min(y + h + margin, image.shape[0])

    def cut(mask: np.ndarray | None) -> np.ndarray | None:
        return None if mask is None else mask[y0:y1, x0:x1].copy()

    return CropSource(instance.stats, image[y0:y1, x0:x1].copy(), cut(instance.coarse), cut(instance.refined),
                      cut(instance.gt), max(w, h))


def crop_scale(object_side: int, panel_side: int) -> float:
    """Zoom that brings the object's box side up to CROP_MIN_OBJECT px, capped so the panel's longer side
    stays within CROP_MAX_PANEL px (which also shrinks crops of objects bigger than that)."""
    return min(max(1.0, CROP_MIN_OBJECT / object_side), CROP_MAX_PANEL / panel_side)


def _panel(image: np.ndarray, mask: np.ndarray | None, colour: tuple[int, int, int], caption: str) -> np.ndarray:
    """(CAPTION_HEIGHT + h, w, 3) panel: ``caption`` above the (h, w, 3) image with the mask's fill and contour."""
    canvas = image.copy()
    if mask is not None:
        fill(canvas, mask, colour)
        contour(canvas, mask, colour, 2)
    bar = np.full((CAPTION_HEIGHT, canvas.shape[1], 3), 40, dtype=np.uint8)
    cv2.putText(bar, _ascii(caption), (4, CAPTION_HEIGHT - 7), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, canvas])


def render_strip(source: CropSource, has_gt: bool) -> np.ndarray:
    """(CAPTION_HEIGHT + h', n * w' + gaps, 3) RGB strip [image | coarse | refined | GT] of the zoomed crop."""
    height, width = source.image.shape[:2]
    scale = crop_scale(source.object_side, max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def zoom(array: np.ndarray | None) -> np.ndarray | None:
        # Nearest neighbour for the image too: each source pixel stays one visible block, aligned with the
        # mask blocks, so the panels show exactly which pixels each mask took.
        return None if array is None else cv2.resize(array, size, interpolation=cv2.INTER_NEAREST)

    image = zoom(source.image)
    stats = source.stats
    panels = [
        _panel(image, None, (0, 0, 0), _instance_text(stats)),
        _panel(image, zoom(source.coarse), COARSE_RGB, _with_gt_iou("coarse", stats.iou_gt_coarse)),
        _panel(image, zoom(source.refined), REFINED_RGB, _with_gt_iou("refined", stats.iou_gt_refined)),
    ]
    if has_gt:
        panels.append(_panel(image, zoom(source.gt), GT_RGB, "GT" if source.gt is not None else "GT: none"))
    gap = np.full((panels[0].shape[0], CROP_GAP, 3), 255, dtype=np.uint8)
    return np.hstack([part for panel in panels for part in (gap, panel)][1:])


def _with_gt_iou(name: str, iou: float | None) -> str:
    return name if iou is None else f"{name}  IoU vs GT {iou:.2f}"


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


# ---------------------------------------------------------------- files


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


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{background:#fff;border:1px solid #ddd;padding:.5em;width:%dpx}
.card img{width:100%%;height:auto;display:block}
figure{margin:0 0 1.2em}figure img{max-width:100%%;height:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
.sw{display:inline-block;width:1.6em;height:.5em;margin:0 .3em 0 1em;vertical-align:middle}
.meta{color:#555;font-size:.9em}
""" % THUMB_WIDTH


def _e(value: object) -> str:
    return html.escape(str(value))


def _href(relative: str) -> str:
    """An attribute-safe relative URL for a path under the output folder."""
    return html.escape(quote(relative))


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _swatch(name: str, colour: tuple[int, int, int]) -> str:
    return f'<span class="sw" style="background:rgb{colour}"></span>{_e(name)}'


def render_html(gallery: Gallery, plan: Plan, inputs: dict[str, Path | None]) -> str:
    """The static gallery page: inline CSS, relative links only, so it opens offline from the output folder."""
    has_gt = inputs.get("GT") is not None
    legend = [("coarse", COARSE_RGB), ("refined", REFINED_RGB)] + ([("GT", GT_RGB)] if has_gt else [])
    files = " · ".join(f"{_e(name)}: {_e(path)}" for name, path in inputs.items() if path is not None)
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>refine-masks visualize</title><style>{_CSS}</style></head><body>",
        "<h1>refine-masks visualize</h1>",
        f'<p class="meta">{files}</p>',
        f"<p>{''.join(_swatch(name, colour) for name, colour in legend)}</p>",
        f"<p>{_e(summary_line(gallery, plan))}</p>",
        _crops_html(gallery.crops, has_gt),
        "<h2>Images</h2>",
        '<div class="grid">',
        *(_image_html(page, has_gt) for page in gallery.images),
        "</div></body></html>\n",
    ]
    return "\n".join(parts)


def _crops_html(crops: list[PageCrop], has_gt: bool) -> str:
    if not crops:
        return "<h2>Most changed instances</h2><p>No instance changed.</p>"
    figures = []
    for crop in crops:
        s = crop.stats
        gt = f" · IoU vs GT: coarse {_num(s.iou_gt_coarse)}, refined {_num(s.iou_gt_refined)}" if has_gt else ""
        caption = (f"image {s.image_id} · record {s.index} · {s.label} · score {_num(s.score)} · "
                   f"IoU(coarse, refined) {_num(s.iou)}{gt}")
        figures.append(f'<figure><a href="{_href(crop.png)}"><img src="{_href(crop.png)}" alt="{_e(caption)}"></a>'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "<h2>Most changed instances</h2>\n" + "\n".join(figures)


def _image_html(page: PageImage, has_gt: bool) -> str:
    head = "<tr><th>record</th><th>label</th><th>score</th><th>IoU(c, r)</th>"
    head += "<th>coarse vs GT</th><th>refined vs GT</th></tr>" if has_gt else "</tr>"
    rows = []
    for s in page.instances:
        gt = f"<td>{_num(s.iou_gt_coarse)}</td><td>{_num(s.iou_gt_refined)}</td>" if has_gt else ""
        rows.append(f"<tr><td>{s.index}</td><td>{_e(s.label)}</td><td>{_num(s.score)}</td>"
                    f"<td>{_num(s.iou)}</td>{gt}</tr>")
    return (f'<div class="card"><a href="{_href(page.png)}"><img src="{_href(page.png)}" loading="lazy" '
            f'alt="image {page.image_id}"></a>'
            f"<p>image {page.image_id} · {_e(page.source.name)}<br>{len(page.instances)} instances · "
            f"mean IoU(coarse, refined) {_num(page.mean_iou)}</p>"
            f"<details><summary>instances</summary><table>{head}{''.join(rows)}</table></details></div>")


def summary_line(gallery: Gallery, plan: Plan) -> str:
    capped = f", {plan.over_cap} more not drawn (--max-images)" if plan.over_cap else ""
    return (f"{len(gallery.images)} images written, {plan.skipped} skipped (no prediction with score >= "
            f"{plan.score_thr:g}){capped}, {gallery.instances} instances drawn, {len(gallery.crops)} crops")


# ---------------------------------------------------------------- command


@click.command("visualize")
@click.argument("coarse", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", type=click.Path(file_okay=False, path_type=Path))
@click.option("--refined", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="`run`'s output for COARSE (same records in the same order).")
@click.option("--gt", "gt_path", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO instances JSON: GT contours, IoU vs GT and category names.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created; files of the same name are replaced).")
@click.option("--images-json", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO JSON whose 'images' map image ids to file names.")
@click.option("--score-thr", type=float, default=0.5, show_default=True,
              help="Draw only records scoring at least this (records without a score always).")
@click.option("--max-images", type=click.IntRange(min=1), default=50, show_default=True,
              help="Draw at most this many images (the first in record order).")
@click.option("--image-id", "image_ids", type=int, multiple=True, help="Draw only this image (repeatable).")
@click.option("--top-changed", type=click.IntRange(min=0), default=8, show_default=True,
              help="Zoomed crops of the K instances whose mask changed most (1 - IoU).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def visualize_command(coarse, images, refined, gt_path, output, images_json, score_thr, max_images, image_ids,
                      top_changed, debug):
    """Draw COARSE vs --refined masks on the images in IMAGES, with zoomed crops and an HTML gallery."""
    if not images.is_dir():
        fail(f"{images}: not a directory of images")
    try:
        coarse_preds = read_predictions(coarse, images_json)
        refined_preds = read_predictions(refined)
        gt = read_predictions(gt_path) if gt_path else None
        plan = plan_images(coarse_preds, refined_preds, images, score_thr=score_thr, max_images=max_images,
                           image_ids=set(image_ids))
        with progress_bar() as bar:
            task = bar.add_task("drawing", total=len(plan.indices), rate="")
            drawn = [0]

            def on_image(n: int) -> None:
                drawn[0] += n
                bar.update(task, advance=1, rate=f"{drawn[0]} inst")

            gallery = draw_gallery(plan, coarse_preds, refined_preds, gt, output, top_changed=top_changed,
                                   on_image=on_image)
    except (InputError, OSError) as e:
        fail(str(e), debug)
    err_console.print(f"{summary_line(gallery, plan)} -> {output / 'index.html'}", markup=False, highlight=False,
                      soft_wrap=True)
