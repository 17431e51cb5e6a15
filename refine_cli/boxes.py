"""Box geometry: expand, crop a full-image mask into a box grid, paste a grid back.

Conventions follow torchvision / detectron2: pixel j covers [j, j + 1) with its centre at
j + 0.5; crops use ``roi_align(aligned=True)``; pastes sample the grid at pixel centres
(detectron2 ``_do_paste_mask``), bilinear, zero outside the box, threshold >= 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) [x, y, w, h] -> (N, 4) [x0, y0, x1, y1]."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def expand_boxes(boxes: torch.Tensor, ratio: float) -> torch.Tensor:
    """Scale (N, 4) xyxy boxes by ``ratio`` about their centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (ratio / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def _window(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel window holding every pixel that bilinear sampling inside ``box`` can touch."""
    x0, y0, x1, y1 = box
    return (max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0),
            min(math.ceil(x1) + 1, width), min(math.ceil(y1) + 1, height))


def crop_mask(mask: np.ndarray, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """Resample a full-image mask into a ``size`` x ``size`` grid over ``box`` (xyxy).

    mask: (H, W) uint8/bool/float. Returns (size, size) float32 in [0, 1]. Only the window
    around the box is converted, so the cost does not grow with the image.
    """
    h, w = mask.shape
    wx0, wy0, wx1, wy1 = _window(box, h, w)
    if wx1 <= wx0 or wy1 <= wy0:  # box entirely outside the image
        return torch.zeros(size, size)
    win = torch.from_numpy(np.ascontiguousarray(mask[wy0:wy1, wx0:wx1], dtype=np.float32))
    roi = torch.tensor([[0.0, box[0] - wx0, box[1] - wy0, box[2] - wx0, box[3] - wy0]], dtype=torch.float32)
    return roi_align(win[None, None], roi, size, spatial_scale=1.0, sampling_ratio=0, aligned=True)[0, 0]


def crop_masks(masks: list[np.ndarray], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """One mask per box: N x (H, W) and (N, 4) xyxy -> (N, 1, size, size)."""
    out = torch.zeros(len(masks), 1, size, size)
    for i, (m, b) in enumerate(zip(masks, boxes.tolist())):
        out[i, 0] = crop_mask(m, b, size)
    return out


def paste_probs_in_box(grid: torch.Tensor, box: tuple[float, float, float, float], height: int,
                       width: int) -> tuple[torch.Tensor, int, int]:
    """Resample (S, S) probabilities over ``box`` onto the pixels of a (height, width) image.

    Returns (probs, x0, y0): (h, w) float32 probabilities of the image region that the box can
    touch and its top-left corner; every pixel outside it is 0. Pixel centres j + 0.5 are
    mapped into [x0, x1] and sampled bilinearly, zero outside the box (detectron2 convention).
    """
    wx0, wy0, wx1, wy1 = _window(box, height, width)
    if wx1 <= wx0 or wy1 <= wy0:
        return torch.zeros(0, 0), 0, 0
    x0, y0, x1, y1 = box
    xs = (torch.arange(wx0, wx1, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    ys = (torch.arange(wy0, wy1, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid_xy = torch.stack([gx, gy], dim=-1)[None]
    prob = F.grid_sample(grid[None, None].float(), grid_xy, mode="bilinear", align_corners=False)[0, 0]
    return prob, wx0, wy0


def paste_mask_in_box(grid: torch.Tensor, box: tuple[float, float, float, float], height: int,
                      width: int, threshold: float = 0.5) -> tuple[np.ndarray, int, int]:
    """:func:`paste_probs_in_box` thresholded at ``threshold``: (h, w) uint8, x0, y0."""
    prob, x0, y0 = paste_probs_in_box(grid, box, height, width)
    return (prob >= threshold).numpy().astype(np.uint8), x0, y0


def paste_mask(grid: torch.Tensor, box: tuple[float, float, float, float], height: int, width: int,
               threshold: float = 0.5) -> np.ndarray:
    """Like :func:`paste_mask_in_box` but returns the full (height, width) uint8 mask."""
    full = np.zeros((height, width), np.uint8)
    crop, x0, y0 = paste_mask_in_box(grid, box, height, width, threshold)
    full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return full
