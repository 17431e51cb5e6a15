"""Coarse-mask simulation: each mode's IoU with GT falls in its stated range; seeds are honoured."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refine_cli.train.simulate import jitter_box, simulate, simulate_dataset


def _blob(seed: int):
    rng = np.random.default_rng(seed)
    m = np.zeros((240, 320), np.uint8)
    cx, cy = rng.integers(100, 220), rng.integers(80, 160)
    cv2.ellipse(m, (int(cx), int(cy)), (int(rng.integers(30, 70)), int(rng.integers(25, 60))),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    cv2.circle(m, (int(cx) + 30, int(cy) - 20), 18, 1, -1)
    ys, xs = np.nonzero(m)
    return m, np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], float)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


# Median IoU with GT over 40 blobs, per mode (measured ranges, with margin).
RANGES = {"resolution": (0.93, 1.0), "realistic": (0.6, 0.95), "polygon": (0.93, 1.0)}


@pytest.mark.parametrize("mode", list(RANGES))
def test_mode_iou_range(mode):
    rng = np.random.default_rng(0)
    ious = [_iou(m, simulate(m, box, mode, rng)[0]) for m, box in map(_blob, range(40))]
    lo, hi = RANGES[mode]
    assert lo <= np.median(ious) <= hi
    if mode == "realistic":
        assert np.median(ious) < np.median([_iou(m, simulate(m, b, "resolution", rng)[0])
                                            for m, b in map(_blob, range(40))])


def test_box_mode_has_no_mask_and_jittered_box():
    m, box = _blob(0)
    coarse, jittered = simulate(m, box, "box", np.random.default_rng(0))
    assert coarse is None and not np.allclose(jittered, box) and np.allclose(jittered, box, rtol=0.3)


def test_seeded_and_deterministic():
    m, box = _blob(1)
    a = simulate(m, box, "realistic", np.random.default_rng(5))[0]
    b = simulate(m, box, "realistic", np.random.default_rng(5))[0]
    c = simulate(m, box, "realistic", np.random.default_rng(6))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_jitter_keeps_positive_size():
    rng = np.random.default_rng(0)
    for _ in range(100):
        _, _, w, h = jitter_box(np.array([5.0, 5.0, 2.0, 2.0]), rng, 0.5)
        assert w >= 1 and h >= 1


def test_unknown_mode():
    m, box = _blob(0)
    with pytest.raises(ValueError, match="unknown simulation mode"):
        simulate(m, box, "nope", np.random.default_rng(0))


def test_simulate_dataset_skips_crowd_and_keeps_ids():
    from refine_cli.coco_io import encode_mask

    m, box = _blob(2)
    gt = {"images": [{"id": 7, "height": 240, "width": 320, "file_name": "x.png"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": box.tolist(), "iscrowd": 0,
                           "segmentation": encode_mask(m)},
                          {"id": 2, "image_id": 7, "category_id": 3, "bbox": box.tolist(), "iscrowd": 1,
                           "segmentation": encode_mask(m)}]}
    out = simulate_dataset(gt, "realistic", 0)
    assert len(out) == 1 and out[0]["image_id"] == 7 and out[0]["category_id"] == 3
    assert out[0]["segmentation"]["size"] == [240, 320]
    assert simulate_dataset(gt, "realistic", 0) == out


def test_zero_box_sigma_keeps_the_gt_box_and_a_near_perfect_resolution_mask():
    m, box = _blob(4)
    coarse, out_box = simulate(m, box, "resolution", np.random.default_rng(0), box_sigma=0.0)
    assert np.allclose(out_box, box)
    assert _iou(coarse.astype(bool), m.astype(bool)) > 0.97  # only the 28x28 grid is lost
