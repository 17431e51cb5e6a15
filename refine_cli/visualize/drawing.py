"""Pixels: the per-image overview (fills, contours, labels, legend) and the zoomed crop strips."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..coco_io import mask_box
from .selection import Instance, InstanceStats

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
MAX_LABELS = 10  # per overview image; the gallery's table lists every instance
LABEL_PAD = 2  # px around a label's text


@dataclass
class CropSource:
    """Pixels of one crop strip: an (h, w, 3) RGB image crop and (h, w) mask crops at source resolution."""

    stats: InstanceStats
    image: np.ndarray
    coarse: np.ndarray | None
    refined: np.ndarray | None
    gt: np.ndarray | None
    object_side: int  # longer side of the masks' union box, px



def _line_width(shape: tuple[int, ...]) -> int:
    """Refined contour width for an (H, W, ...) canvas: 2 px up to ~800 px, growing so big images stay readable.

    Never 1: an anti-aliased 1-px line spreads over two pixels and reaches neither colour fully."""
    return max(2, round(max(shape[:2]) / 320))


def contour_widths(shape: tuple[int, ...]) -> dict[str, int]:
    """Coarse widest, GT narrower, refined narrowest, drawn in that order: where the three boundaries
    coincide (most of a good mask) each still shows as a 1-px band beside the one drawn over it."""
    width = _line_width(shape)
    return {"coarse": width + 4, "GT": width + 2, "refined": width}


def _font_scale(shape: tuple[int, ...]) -> float:
    return max(0.4, max(shape[:2]) / 1200)


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


def _label_rect(shape: tuple[int, ...], text: str, x: int, y: int, scale: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of ``text``'s box with its bottom-left corner at (x, y), moved inside the canvas."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    box_w, box_h = width + 2 * LABEL_PAD, height + baseline + 2 * LABEL_PAD
    x = min(max(x, 0), max(shape[1] - box_w, 0))
    y = min(max(y, box_h), shape[0])
    return x, y - box_h, x + box_w, y


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def instance_text(stats: InstanceStats, with_score: bool = True) -> str:
    score = f" {stats.score:.2f}" if with_score and stats.score is not None else ""
    return _ascii(f"{stats.label}{score}")


def draw_labels(canvas: np.ndarray, instances: list[Instance], colours: list[tuple[int, int, int]],
                scale: float) -> int:
    """Labels above the top-left corner of the instances' boxes, most changed first, at most MAX_LABELS and
    none over another (busy scenes otherwise become a pile of text). Returns how many were drawn.

    The score is shown only when the image's scores differ: a column of "1.00" says nothing.
    """
    with_score = len({i.stats.score for i in instances}) > 1
    placed: list[tuple[int, int, int, int]] = []
    for k in sorted(range(len(instances)), key=lambda k: (-instances[k].stats.change, instances[k].stats.index)):
        if len(placed) == MAX_LABELS:
            break
        instance = instances[k]
        box = mask_box(np.logical_or.reduce([m for m in (instance.refined, instance.coarse) if m is not None]))
        if box is None:
            continue
        text = instance_text(instance.stats, with_score)
        rect = _label_rect(canvas.shape, text, int(box[0]), int(box[1]), scale)
        if any(_overlaps(rect, other) for other in placed):
            continue
        x0, y0, x1, y1 = rect
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colours[k], cv2.FILLED)
        baseline = cv2.getTextSize(text, FONT, scale, 1)[1]
        cv2.putText(canvas, text, (x0 + LABEL_PAD, y1 - baseline - LABEL_PAD), FONT, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
        placed.append(rect)
    return len(placed)


def draw_legend(canvas: np.ndarray, entries: list[tuple[str, tuple[int, int, int], int]], scale: float,
                occupied: np.ndarray) -> None:
    """A dark box with a line in each entry's colour and width next to its name, in the corner where it
    covers the fewest pixels of the (H, W) ``occupied`` mask (top-left on a tie)."""
    sizes = [cv2.getTextSize(name, FONT, scale, 1) for name, _, _ in entries]
    text_w = max(w for (w, _), _ in sizes)
    text_h = max(h + b for (_, h), b in sizes)
    pad, swatch = 4, 2 * text_h
    row = max(text_h, max(width for _, _, width in entries)) + 4
    box_w, box_h = min(3 * pad + swatch + text_w, canvas.shape[1]), min(2 * pad + row * len(entries), canvas.shape[0])
    height, width = canvas.shape[:2]
    corners = [(0, 0), (width - box_w, 0), (0, height - box_h), (width - box_w, height - box_h)]
    x0, y0 = min(corners, key=lambda c: np.count_nonzero(occupied[c[1]:c[1] + box_h, c[0]:c[0] + box_w]))
    cv2.rectangle(canvas, (x0, y0), (x0 + box_w, y0 + box_h), (40, 40, 40), cv2.FILLED)
    for i, (name, colour, line_width) in enumerate(entries):
        middle = y0 + pad + i * row + row // 2
        cv2.line(canvas, (x0 + pad, middle), (x0 + pad + swatch, middle), colour, line_width, cv2.LINE_AA)
        cv2.putText(canvas, name, (x0 + 2 * pad + swatch, middle + text_h // 3), FONT, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)


def render_image(image: np.ndarray, instances: list[Instance],
                 gts: list[tuple[object, np.ndarray]] | None) -> np.ndarray:
    """(H, W, 3) RGB overview of an (H, W, 3) RGB image: refined fills, then coarse, GT and refined contours
    at decreasing widths (see contour_widths), labels and the legend."""
    canvas = image.copy()
    widths, scale = contour_widths(canvas.shape), _font_scale(canvas.shape)
    colours = [FILL_RGBS[i % len(FILL_RGBS)] for i in range(len(instances))]
    for instance, colour in zip(instances, colours):
        if instance.refined is not None:
            fill(canvas, instance.refined, colour)
    for instance in instances:
        if instance.coarse is not None:
            contour(canvas, instance.coarse, COARSE_RGB, widths["coarse"])
    for _, gt in gts or []:
        contour(canvas, gt, GT_RGB, widths["GT"])
    for instance in instances:
        if instance.refined is not None:
            contour(canvas, instance.refined, REFINED_RGB, widths["refined"])
    draw_labels(canvas, instances, colours, scale)
    legend = [("coarse", COARSE_RGB), ("refined", REFINED_RGB)] + ([("GT", GT_RGB)] if gts is not None else [])
    masks = [m for i in instances for m in (i.coarse, i.refined) if m is not None] + [m for _, m in gts or []]
    occupied = np.logical_or.reduce(masks) if masks else np.zeros(canvas.shape[:2], bool)
    draw_legend(canvas, [(name, colour, widths[name]) for name, colour in legend], scale, occupied)
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
        _panel(image, None, (0, 0, 0), instance_text(stats)),
        _panel(image, zoom(source.coarse), COARSE_RGB, _with_gt_iou("coarse", stats.iou_gt_coarse)),
        _panel(image, zoom(source.refined), REFINED_RGB, _with_gt_iou("refined", stats.iou_gt_refined)),
    ]
    if has_gt:
        panels.append(_panel(image, zoom(source.gt), GT_RGB, "GT" if source.gt is not None else "GT: none"))
    gap = np.full((panels[0].shape[0], CROP_GAP, 3), 255, dtype=np.uint8)
    return np.hstack([part for panel in panels for part in (gap, panel)][1:])


def _with_gt_iou(name: str, iou: float | None) -> str:
    return name if iou is None else f"{name}  IoU vs GT {iou:.2f}"
