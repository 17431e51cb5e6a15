"""Box geometry against the torchvision / detectron2 conventions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from refine_cli.boxes import (
    crop_mask,
    crop_masks,
    expand_boxes,
    paste_mask,
    paste_mask_in_box,
    paste_probs_in_box,
    xywh_to_xyxy,
)
from refine_cli.refiner import box_grid


def _ellipse(h=300, w=400):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (200, 150), (80, 50), 20, 0, 360, 1, -1)
    return m


def test_crop_paste_round_trip_keeps_ellipse():
    m = _ellipse()
    ys, xs = np.nonzero(m)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    back = paste_mask(crop_mask(m, box, 28), box, *m.shape)
    iou = (m & back).sum() / (m | back).sum()
    shift = np.abs(np.mean(np.nonzero(back), 1) - np.mean(np.nonzero(m), 1))
    assert iou >= 0.99
    assert shift.max() <= 0.1


def test_paste_then_crop_gives_back_the_grid():
    # A smooth random grid: cropping averages each cell, which equals the cell value only
    # where the pasted surface is locally linear; a half-pixel misalignment would still show.
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 1, 4, 4, generator=g)
    grid = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=True)[0, 0]
    box = (40.3, 30.6, 40.3 + 28 * 8, 30.6 + 28 * 6)
    probs, x0, y0 = paste_probs_in_box(grid, box, 300, 400)
    full = np.zeros((300, 400), np.float32)
    full[y0:y0 + probs.shape[0], x0:x0 + probs.shape[1]] = probs.numpy()
    back = crop_mask(full, box, 28)
    # Border cells fade towards the zero outside the box (grid_sample zero padding, as detectron2).
    assert torch.allclose(back[1:-1, 1:-1], grid[1:-1, 1:-1], atol=0.02)
    assert back[0].sum() < grid[0].sum()


def test_crop_matches_full_image_roi_align():
    from torchvision.ops import roi_align

    m = _ellipse().astype(np.float32)
    for box in [(10.3, 20.7, 150.2, 90.9), (-15.0, -8.0, 60.0, 40.0), (350.5, 250.0, 420.0, 330.0)]:
        ref = roi_align(torch.from_numpy(m)[None, None], torch.tensor([[0.0, *box]]), 28,
                        spatial_scale=1.0, sampling_ratio=0, aligned=True)[0, 0]
        assert torch.allclose(crop_mask(m, box, 28), ref, atol=1e-6)


def test_paste_matches_detectron2_full_grid():
    """detectron2 _do_paste_mask without skip_empty: a grid over the whole image."""
    g = torch.Generator().manual_seed(1)
    grid = torch.rand(28, 28, generator=g)
    h, w, box = 120, 160, (20.4, 10.2, 90.7, 100.9)
    x0, y0, x1, y1 = box
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    ref = torch.nn.functional.grid_sample(grid[None, None], torch.stack([gx, gy], -1)[None], align_corners=False)
    assert np.array_equal(paste_mask(grid, box, h, w), (ref[0, 0] >= 0.5).numpy().astype(np.uint8))


def test_paste_clips_to_image_and_handles_outside_boxes():
    crop, x0, y0 = paste_mask_in_box(torch.ones(28, 28), (-10.0, -10.0, 20.0, 20.0), 50, 60)
    assert (x0, y0) == (0, 0) and crop.shape == (21, 21) and crop[:20, :20].all()
    crop, _, _ = paste_mask_in_box(torch.ones(28, 28), (100.0, 100.0, 120.0, 130.0), 50, 60)
    assert crop.size == 0
    assert crop_mask(np.ones((50, 60), np.uint8), (100.0, 100.0, 120.0, 130.0), 14).sum() == 0


def test_expand_and_convert():
    b = xywh_to_xyxy(torch.tensor([[10.0, 20.0, 30.0, 40.0]]))
    assert b.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert expand_boxes(b, 1.5).tolist() == [[2.5, 10.0, 47.5, 70.0]]


def test_box_grid_marks_the_inner_box():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    frames = expand_boxes(boxes, 2.0)
    g = box_grid(boxes, frames, 8)[0, 0]
    assert g.sum() == 16 and g[2:6, 2:6].all()


def test_crop_masks_batches_per_instance():
    m = _ellipse()
    boxes = torch.tensor([[100.0, 80.0, 300.0, 220.0], [0.0, 0.0, 10.0, 10.0]])
    out = crop_masks([m, m], boxes, 14)
    assert out.shape == (2, 1, 14, 14) and out[0].sum() > 50 and out[1].sum() == 0


@pytest.mark.parametrize("size", [14, 56])
def test_crop_values_in_unit_range(size):
    out = crop_mask(_ellipse(), (0.0, 0.0, 400.0, 300.0), size)
    assert out.min() >= 0 and out.max() <= 1
