"""Image -> network input: resize by the config's scale rule, pad to the FPN stride."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def input_scale(height: int, width: int, short_side: int, max_size: int) -> float:
    """Scale that brings the shorter side to ``short_side`` without the longer passing ``max_size``."""
    return min(short_side / min(height, width), max_size / max(height, width))


def to_input(image: np.ndarray, scale: float, divisibility: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H', W') float32 in [0, 255], resized by ``scale`` and
    zero-padded at the bottom/right to a multiple of ``divisibility``."""
    h, w = image.shape[:2]
    nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    ph, pw = -nh % divisibility, -nw % divisibility
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x
