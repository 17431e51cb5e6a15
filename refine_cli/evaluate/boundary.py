"""Mask boundaries for Boundary IoU (Cheng et al., CVPR 2021).

The boundary of a mask is the set of mask pixels within ``d`` pixels
(Chebyshev distance) of a background pixel or of the image edge, where ``d``
is a fixed fraction of the image diagonal. This matches ``mask_to_boundary``
of the official boundary-iou-api pixel for pixel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pycocotools.mask as mask_utils

_KERNEL = np.ones((3, 3), dtype=np.uint8)


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary width ``d`` in pixels for an image of ``height`` x ``width``.

    ``d = max(1, round(dilation_ratio * diagonal))``, e.g. 16 px for 640x480.
    """
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def mask_to_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Inner boundary of a binary mask.

    Args:
        mask: (H, W) uint8 array of 0/1.
        d: boundary width in pixels (>= 1).

    Returns:
        (H, W) uint8 array of 0/1: ``mask`` minus its erosion by a
        (2d+1) x (2d+1) square.
    """
    h, w = mask.shape
    # The 1-px zero border makes pixels near the image edge count as boundary
    # (an object cut by the image edge has a boundary there too).
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL, iterations=d)[1 : h + 1, 1 : w + 1]
    return mask - eroded


def rle_to_boundary_rle(rle: dict, d: int) -> dict:
    """Boundary of a compressed-RLE mask, as a compressed RLE of the same size.

    The erosion runs on the mask's tight bounding-box crop only. That is exact:
    ``mask_to_boundary`` treats everything outside its input as background,
    and everything outside the box *is* background (or outside the image,
    which the full-image computation treats as background as well).

    Args:
        rle: compressed RLE ``{"size": [H, W], "counts": ...}``.
        d: boundary width in pixels.

    Returns:
        Compressed RLE ``{"size": [H, W], "counts": bytes}`` of the boundary.
    """
    h, w = rle["size"]
    boundary = np.zeros((h, w), dtype=np.uint8, order="F")
    x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
    if bw > 0 and bh > 0:
        crop = np.ascontiguousarray(mask_utils.decode(rle)[y : y + bh, x : x + bw])
        boundary[y : y + bh, x : x + bw] = mask_to_boundary(crop, d)
    return mask_utils.encode(boundary)
