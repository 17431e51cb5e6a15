"""weights/metric_sensitivity.py: the GT scores 100, and boundary edits of a pixel cost what they should."""

from __future__ import annotations

import numpy as np
import pytest

from refine_cli.coco_io import decode_mask

from .conftest import load_script


@pytest.fixture(scope="module")
def sens():
    return load_script("weights/metric_sensitivity.py")


def _rectangle(ann_id: int, x: float, y: float, w: float, h: float, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": crowd, "area": w * h, "bbox": [x, y, w, h],
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _gt() -> dict:
    """One 120x160 image: a 12x12 and a 60x40 polygon rectangle, and a crowd region that is never scored."""
    anns = [_rectangle(1, 10, 10, 12, 12), _rectangle(2, 60, 40, 60, 40), _rectangle(3, 0, 100, 20, 20, crowd=1)]
    return {"images": [{"id": 1, "file_name": "a.jpg", "height": 120, "width": 160}], "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}


def test_morph_and_shift_move_the_boundary_by_one_pixel(sens):
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    assert sens.morph(mask, 1).sum() == 12 * 12 - 4  # the disc of radius 1 is a cross: corners stay
    assert sens.morph(mask, -1).sum() == 8 * 8
    moved = sens.shift(mask, 1)
    assert moved[5:15, 6:16].all() and moved.sum() == mask.sum()
    assert sens.shift(mask, -1)[5:15, 4:14].all()


def test_gt_scores_100_and_edits_score_less(sens):
    result, rle = sens.sensitivity(_gt(), seed=0, sigmas=(1.0,))
    rows = {f["name"]: (f["segm"]["AP"], f["boundary"]["AP"]) for f in result["files"]}
    assert rle == 0 and result["num_gt"] == 3
    assert rows["GT"] == (100.0, 100.0)
    assert rows["GT through the 112x112 output grid"] == (100.0, 100.0)
    for name in ("eroded 1 px", "dilated 1 px", "shifted 1 px"):
        assert rows[name][0] < 100.0 and rows[name][1] < 100.0, name
    # A 2-px edit costs more than a 1-px one.
    assert rows["eroded 2 px"][0] < rows["eroded 1 px"][0]
    assert rows["dilated 2 px"][1] < rows["dilated 1 px"][1]
    table = sens.markdown(result)
    assert table.count("\n") == len(rows) + 1 and "| vertices +N(0, 1 px) |" in table


def test_vertex_noise_is_seeded_and_leaves_rle_alone(sens):
    rng = np.random.default_rng(3)
    ann = _gt()["annotations"][1]
    a = sens.jitter_vertices(ann, 2.0, np.random.default_rng(3), 120, 160)
    b = sens.jitter_vertices(ann, 2.0, rng, 120, 160)
    assert (a == b).all() and a.shape == (120, 160)
    gt_mask = decode_mask(ann, 120, 160, where="test")
    assert (sens.jitter_vertices(ann, 0.0, rng, 120, 160) == gt_mask).all() and (a != gt_mask).any()
    assert sens.jitter_vertices({"segmentation": {"size": [120, 160], "counts": "PPYo1"}}, 2.0, rng, 120, 160) is None
