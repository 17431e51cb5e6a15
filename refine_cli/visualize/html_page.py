"""The static gallery page (index.html): inline CSS, relative links, opens offline."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .drawing import COARSE_RGB, GT_RGB, REFINED_RGB
from .selection import InstanceStats, Plan

TILE_WIDTH = 560  # px: gallery tile width (320 was too small to judge an edge); a click shows full size


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



# The viewer is CSS only (":target", no script): a click on a tile opens #view-<id>, the image as wide as
# the window with pixelated upscaling, so an edge can be judged pixel by pixel (it scrolls when taller
# than the window); a click anywhere closes it.
_CSS = """
body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{background:#fff;border:1px solid #ddd;padding:.5em;width:%dpx;max-width:100%%}
.card img{width:100%%;height:auto;display:block;cursor:zoom-in}
.viewer{display:none;position:fixed;inset:0;z-index:9;overflow:auto;background:rgba(0,0,0,.88);cursor:zoom-out}
.viewer:target{display:block}.card .viewer img{width:100%%;margin:1em 0;image-rendering:pixelated;cursor:zoom-out}
figure{margin:0 0 1.2em}figure img{max-width:100%%;height:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
.sw{display:inline-block;width:1.6em;height:.5em;margin:0 .3em 0 1em;vertical-align:middle}
.meta{color:#555;font-size:.9em}
""" % TILE_WIDTH


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
    view = f"view-{page.image_id}"
    return (f'<div class="card"><a href="#{view}"><img src="{_href(page.png)}" loading="lazy" '
            f'alt="image {page.image_id}"></a>'
            f'<a class="viewer" id="{view}" href="#"><img src="{_href(page.png)}" loading="lazy" '
            f'alt="image {page.image_id}, full size"></a>'
            f'<p>image {page.image_id} · {_e(page.source.name)} · <a href="{_href(page.png)}">PNG</a><br>'
            f"{len(page.instances)} instances · "
            f"mean IoU(coarse, refined) {_num(page.mean_iou)}</p>"
            f"<details><summary>instances</summary><table>{head}{''.join(rows)}</table></details></div>")


def summary_line(gallery: Gallery, plan: Plan) -> str:
    capped = f", {plan.over_cap} more not drawn (--max-images)" if plan.over_cap else ""
    return (f"{len(gallery.images)} images written, {plan.skipped} skipped (no prediction with score >= "
            f"{plan.score_thr:g}){capped}, {gallery.instances} instances drawn, {len(gallery.crops)} crops")
