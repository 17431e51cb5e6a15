"""Tests for refine_cli.visualize: overview PNGs, crop strips, the HTML gallery and input errors."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from click.testing import CliRunner

from refine_cli.visualize.drawing import (
    CAPTION_HEIGHT,
    COARSE_RGB,
    FILL_ALPHA,
    FILL_RGBS,
    GT_RGB,
    REFINED_RGB,
    MAX_LABELS,
    contour_widths,
    crop_scale,
    draw_labels,
    instance_text,
    render_image,
)
from refine_cli.visualize.command import visualize_command
from refine_cli.visualize.selection import Instance, InstanceStats, mask_iou, match_gt

# pycocotools' decode trips a numpy 2 deprecation on every call; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZES = {1: (120, 160), 2: (100, 140)}  # image_id -> (H, W)
# Masks as (rows, cols) slices. Image 1: the refined square is the coarse one moved 10 px right, GT lies
# between them and reaches 6 px lower; image 2: refined adds one row.
COARSE_1 = (slice(60, 100), slice(80, 120))
REFINED_1 = (slice(60, 100), slice(90, 130))
GT_1 = (slice(64, 106), slice(84, 124))
COARSE_2 = (slice(20, 50), slice(30, 70))
REFINED_2 = (slice(20, 51), slice(30, 70))


# ------------------------------------------------------------------ helpers


def rle(image_id: int, where: tuple[slice, slice]) -> dict:
    """Compressed RLE (counts as str) of a rectangle on image ``image_id``."""
    mask = np.zeros(SIZES[image_id], dtype=np.uint8)
    mask[where] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def make_image(image_id: int) -> np.ndarray:
    """(H, W, 3) RGB test image: a gradient, so every pixel differs from every drawing colour."""
    height, width = SIZES[image_id]
    y, x = np.mgrid[:height, :width]
    return np.stack([50 + x // 2, 100 + y // 2, np.full_like(x, 60)], axis=-1).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def coarse_records() -> list[dict]:
    """Image 1: one instance; image 2: one drawn + one below the default --score-thr; image 3: only a low score."""
    return [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": rle(1, COARSE_1)},
        {"image_id": 2, "category_id": 2, "score": 0.8, "segmentation": rle(2, COARSE_2)},
        {"image_id": 3, "category_id": 1, "score": 0.1, "segmentation": rle(1, COARSE_1)},
        {"image_id": 2, "category_id": 1, "score": 0.2, "segmentation": rle(2, COARSE_2)},
    ]


@pytest.fixture
def scene(tmp_path) -> dict[str, Path]:
    """images/{1,2}.png (no file for image 3), coarse.json, refined.json and gt.json in tmp_path."""
    images = tmp_path / "images"
    images.mkdir()
    for image_id in SIZES:
        cv2.imwrite(str(images / f"{image_id}.png"), cv2.cvtColor(make_image(image_id), cv2.COLOR_RGB2BGR))
    refined = coarse_records()
    refined[0]["segmentation"] = rle(1, REFINED_1)
    refined[1]["segmentation"] = rle(2, REFINED_2)
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w} for i, (h, w) in SIZES.items()],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(1, GT_1), "iscrowd": 0,
                         "area": 42.0 * 40, "bbox": [84, 64, 40, 42]}],
        "categories": [{"id": 1, "name": "widget"}],
    }
    return {
        "images": images,
        "coarse": write_json(tmp_path / "coarse.json", coarse_records()),
        "refined": write_json(tmp_path / "refined.json", refined),
        "gt": write_json(tmp_path / "gt.json", gt),
        "out": tmp_path / "viz",
    }


def invoke(scene: dict[str, Path], *extra: str, gt: bool = True):
    args = [str(scene["coarse"]), str(scene["images"]), "--refined", str(scene["refined"]), "-o", str(scene["out"])]
    if gt:
        args += ["--gt", str(scene["gt"])]
    return CliRunner().invoke(visualize_command, args + list(extra))


def assert_close(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 2) -> None:
    assert np.abs(pixel.astype(int) - np.array(colour)).max() <= tolerance, (pixel, colour)


class LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("href", "src")]


# ------------------------------------------------------------------ command: outputs


def test_writes_one_png_per_image_at_input_size(scene):
    result = invoke(scene)
    assert result.exit_code == 0, result.output
    out = scene["out"]
    for image_id, size in SIZES.items():
        assert read_rgb(out / f"{image_id}.png").shape == (*size, 3)
    assert not (out / "3.png").exists()  # only a below-threshold record: skipped, and its image file is not needed
    assert (out / "index.html").is_file()
    assert "2 images written, 1 skipped" in result.stderr
    assert "2 instances drawn, 2 crops" in result.stderr
    assert "drawing images: 1/2 (50%) 1 inst" in result.stderr  # no terminal: progress as log lines
    assert not list(out.glob(".*.tmp"))  # temp files were all renamed


def test_contours_fill_and_untouched_pixels(scene):
    assert invoke(scene).exit_code == 0
    drawn, original = read_rgb(scene["out"] / "1.png"), make_image(1)
    assert_close(drawn[80, 80], COARSE_RGB)  # coarse left edge, outside the refined mask
    assert_close(drawn[80, 129], REFINED_RGB)  # refined right edge, outside the coarse mask
    assert_close(drawn[105, 100], GT_RGB)  # GT bottom edge, below both predictions
    # Inside the refined mask, away from every contour (image 2, 15 px from each edge): the translucent fill.
    drawn_2, original_2 = read_rgb(scene["out"] / "2.png"), make_image(2)
    expected_fill = np.round(original_2[35, 50] * (1 - FILL_ALPHA) + np.array(FILL_RGBS[0]) * FILL_ALPHA)
    assert_close(drawn_2[35, 50], tuple(expected_fill))
    # Far from every mask, label and the legend: unchanged.
    np.testing.assert_array_equal(drawn[110, 20], original[110, 20])
    np.testing.assert_array_equal(drawn[5:40, 140:], original[5:40, 140:])


def test_without_gt_no_gt_contour(scene):
    assert invoke(scene, gt=False).exit_code == 0
    drawn, original = read_rgb(scene["out"] / "1.png"), make_image(1)
    np.testing.assert_array_equal(drawn[105, 100], original[105, 100])
    assert_close(drawn[80, 80], COARSE_RGB)


def test_crop_strips_of_most_changed_instances(scene):
    assert invoke(scene, "--top-changed", "1").exit_code == 0
    crops = sorted((scene["out"] / "crops").glob("*.png"))
    assert [p.name for p in crops] == ["01_image1_record0.png"]  # IoU 0.6 beats image 2's 0.97
    strip = read_rgb(crops[0])
    # Union of coarse, refined and GT is 50 px wide: upscaled so it is >= 160 px, 4 panels + 3 gaps of 4 px.
    panel_height = strip.shape[0] - CAPTION_HEIGHT
    assert panel_height >= 160
    panel_width = (strip.shape[1] - 3 * 4) / 4
    assert panel_width == int(panel_width) and panel_width >= 160
    # Every panel shows its own contour colour somewhere (image panel: none of them).
    panels = [strip[CAPTION_HEIGHT:, i * (int(panel_width) + 4):][:, :int(panel_width)] for i in range(4)]
    for panel, colour, present in zip(panels, (COARSE_RGB, COARSE_RGB, REFINED_RGB, GT_RGB),
                                      (False, True, True, True)):
        assert (np.abs(panel.astype(int) - colour).max(axis=-1) <= 2).any() == present


def test_no_crops_without_change_or_with_zero(scene):
    result = invoke(scene, "--top-changed", "0")
    assert result.exit_code == 0
    assert not list((scene["out"] / "crops").glob("*.png"))
    assert "No instance changed" in (scene["out"] / "index.html").read_text()


def test_html_links_resolve_offline(scene):
    assert invoke(scene).exit_code == 0
    out = scene["out"]
    page = (out / "index.html").read_text(encoding="utf-8")
    collector = LinkCollector()
    collector.feed(page)
    # Per image: the tile's <img>, the full-size viewer's <img> and a PNG link; per crop an <a> around an <img>.
    files = [link for link in collector.links if not link.startswith("#")]
    assert len(files) == 2 * 3 + 2 * 2
    viewers = {link[1:] for link in collector.links if link.startswith("#view-")}
    assert viewers == {"view-1", "view-2"} and all(f'id="{v}"' in page for v in viewers)
    for link in files:
        assert "://" not in link and not link.startswith("/"), link
        assert (out / unquote(link)).is_file(), link
    assert "<link" not in page and "<script" not in page
    assert "widget" in page  # GT category name
    assert "0.600" in page  # IoU(coarse, refined) of record 0
    # IoU vs GT of record 0: the overlaps are 36x36 (coarse) and 36x34 (refined) px.
    assert f"{1296 / (1600 + 1680 - 1296):.3f}" in page and f"{1224 / (1600 + 1680 - 1224):.3f}" in page


def test_html_escapes_text(scene, tmp_path):
    gt = json.loads(scene["gt"].read_text())
    gt["categories"][0]["name"] = "<b>&"
    write_json(scene["gt"], gt)
    assert invoke(scene).exit_code == 0
    page = (scene["out"] / "index.html").read_text(encoding="utf-8")
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page


# ------------------------------------------------------------------ command: selection


def test_image_id_restricts_images(scene):
    result = invoke(scene, "--image-id", "2")
    assert result.exit_code == 0, result.output
    assert (scene["out"] / "2.png").exists() and not (scene["out"] / "1.png").exists()
    assert "1 images written" in result.stderr


def test_unknown_image_id_is_an_error(scene):
    result = invoke(scene, "--image-id", "99")
    assert result.exit_code == 2
    assert "--image-id 99" in result.stderr


def test_max_images_keeps_the_first(scene):
    result = invoke(scene, "--max-images", "1")
    assert result.exit_code == 0
    assert (scene["out"] / "1.png").exists() and not (scene["out"] / "2.png").exists()
    assert "1 more not drawn" in result.stderr


def test_score_thr_counts_skipped_images(scene):
    result = invoke(scene, "--score-thr", "0.95")
    assert result.exit_code == 0
    assert "0 images written, 3 skipped" in result.stderr


# ------------------------------------------------------------------ command: errors


@pytest.mark.parametrize("edit, expected", [
    (lambda records: records[1].update(image_id=1), "record 1: image_id 1 differs from 2"),
    (lambda records: records[2].update(category_id=5), "record 2: category_id 5 differs from 1"),
    (lambda records: records.pop(), "record 3: present in only one file"),
])
def test_mismatched_refined_file(scene, edit, expected):
    records = json.loads(scene["refined"].read_text())
    edit(records)
    write_json(scene["refined"], records)
    result = invoke(scene)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not scene["out"].exists()  # checked before anything is written


def test_missing_image(scene):
    (scene["images"] / "2.png").unlink()
    result = invoke(scene)
    assert result.exit_code == 2
    assert "record 1: no image for image_id 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_mask_size_mismatch_keeps_brackets(scene):
    records = json.loads(scene["refined"].read_text())
    records[0]["segmentation"] = rle(2, REFINED_2)  # image 2's size on image 1
    write_json(scene["refined"], records)
    result = invoke(scene)
    assert result.exit_code == 2
    assert "record 0: mask size [100, 140] != image size [120, 160]" in result.stderr


def test_debug_shows_the_exception(scene):
    (scene["images"] / "2.png").unlink()
    result = invoke(scene, "--debug")
    assert result.exit_code == 1 and "no image for image_id 2" in str(result.exception)


# ------------------------------------------------------------------ helpers of the module


def test_mask_iou_edge_cases():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    a[:2], b[1:3] = 1, 1
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(None, None) == 1.0
    assert mask_iou(None, np.zeros_like(a)) == 1.0
    assert mask_iou(a, None) == 0.0


def test_match_gt_prefers_overlap_within_category():
    pred = np.zeros((8, 8), np.uint8)
    pred[2:6, 2:6] = 1
    same_place_other_category = (2, pred.copy())
    shifted = np.zeros_like(pred)
    shifted[3:7, 3:7] = 1
    assert match_gt(pred, pred, 1, [same_place_other_category, (1, shifted)]) is shifted
    assert match_gt(pred, pred, None, [same_place_other_category, (1, shifted)]) is same_place_other_category[1]
    elsewhere = np.zeros_like(pred)
    elsewhere[7, 7] = 1
    assert match_gt(pred, pred, 1, [(1, elsewhere)]) is None


def test_crop_scale():
    assert crop_scale(30, 46) == pytest.approx(160 / 30)  # small object: box side -> 160 px
    assert crop_scale(10, 200) == pytest.approx(2.0)  # ... unless the panel would pass 400 px
    assert crop_scale(600, 900) == pytest.approx(400 / 900)  # big crops shrink to the cap
    assert crop_scale(200, 300) == 1.0


def test_coinciding_contours_all_stay_visible():
    """Coarse, GT and refined on the same boundary: each shows as its own band (coarse widest, refined on top)."""
    mask = np.zeros((120, 160), np.uint8)
    mask[40:80, 40:120] = 1
    stats = InstanceStats(0, 1, "a", 1.0, 1.0, 1.0, 1.0)
    canvas = render_image(np.full((120, 160, 3), 128, np.uint8), [Instance(stats, mask, mask, mask)],
                          [(1, mask)])
    column = canvas[:, 100]
    widths = contour_widths(canvas.shape)
    assert widths["coarse"] > widths["GT"] > widths["refined"] >= 2
    # The bottom boundary row is 79; from there outwards the bands read refined, GT, coarse (each pixel
    # nearest in colour to its band's, anti-aliasing blends the 1-px GT and coarse bands a little).
    palette = {"refined": REFINED_RGB, "GT": GT_RGB, "coarse": COARSE_RGB, "image": (128, 128, 128)}

    def nearest(pixel):
        return min(palette, key=lambda name: np.abs(pixel.astype(int) - palette[name]).sum())

    assert [nearest(column[79 + d]) for d in range(widths["coarse"] // 2 + 2)] == \
        ["refined", "refined", "GT", "coarse", "image"]


def test_labels_are_capped_do_not_overlap_and_skip_a_constant_score():
    masks, instances = [], []
    for k in range(30):  # 30 small objects in a row: their labels would all overlap
        mask = np.zeros((200, 300), np.uint8)
        mask[100:110, 5 + 9 * k:12 + 9 * k] = 1
        instances.append(Instance(InstanceStats(k, 1, "person", 1.0, 1 - k / 100, None, None), mask, mask, None))
    canvas = np.zeros((200, 300, 3), np.uint8)
    colours = [FILL_RGBS[k % len(FILL_RGBS)] for k in range(30)]
    drawn = draw_labels(canvas, instances, colours, 0.4)
    assert 1 <= drawn <= MAX_LABELS and drawn < 30
    assert instance_text(instances[0].stats, with_score=False) == "person"
