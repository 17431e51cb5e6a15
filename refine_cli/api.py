"""Library entry: refine masks held in memory, with the same numbers as `refine-masks run`.

    from refine_cli import load_refiner
    refiner = load_refiner()                      # the shipped weights, CPU
    refined = refiner.refine(image, boxes, masks)  # (H, W, 3) uint8, (N, 4) xyxy, (N, H, W) -> (N, H, W) bool
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .engine import RefinerSpec
from .model.config import DEFAULT_WEIGHTS
from .refiner import ImageRefiner, resolve_device


class MaskRefiner:
    """Refines one image's instances at a time; see :meth:`refine`. Made by :func:`load_refiner`."""

    def __init__(self, engine: ImageRefiner):
        self.engine = engine

    def refine(self, image, boxes, masks=None):
        """Refined masks of N instances of one image.

        image: (H, W, 3) uint8 RGB. boxes: (N, 4) float [x0, y0, x1, y1] in pixels. masks: (N, H, W)
        bool/uint8 coarse masks (nonzero = object), or None to refine from the boxes alone.
        numpy arrays or torch tensors (any device). Returns (N, H, W) bool: a numpy array, or a
        torch tensor on the device of ``masks`` (else ``boxes``) when that input is a tensor.

        Instances that `run` would write back unchanged come back unchanged (their coarse mask,
        all False when box-only): an empty coarse mask, a zero-size box or one outside the image,
        an instance whose refined mask is empty, and one the quality gate judges good enough (its
        estimate above the checkpoint's ``gate_keep_above``). Raises ValueError for inputs of the
        wrong shape or type.
        """
        like = masks if masks is not None else boxes
        image, boxes = _numpy(image, "image"), _numpy(boxes, "boxes").astype(np.float32, copy=False)
        masks = None if masks is None else _numpy(masks, "masks")
        _check(image, boxes, masks)
        h, w = image.shape[:2]
        n = len(boxes)
        out = np.zeros((n, h, w), bool) if masks is None else masks != 0
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        todo = [i for i in range(n) if _refinable(xywh[i], h, w) and (masks is None or out[i].any())]
        coarse = [None if masks is None else masks[i] for i in todo]
        for i, result in zip(todo, self.engine.refine_image(image, xywh[todo], coarse)):
            if result is not None and result[0].any():
                crop, x0, y0 = result
                out[i] = False
                out[i, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop != 0
        return torch.from_numpy(out).to(like.device) if isinstance(like, torch.Tensor) else out


def _numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{name}: expected a numpy array or a torch tensor, got {type(value).__name__}")


def _check(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None) -> None:
    """ValueError naming the first input whose shape or type is wrong."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected (N, 4) xyxy, got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes: not all finite")
    if masks is not None and masks.shape != (len(boxes), *image.shape[:2]):
        raise ValueError(f"masks: expected (N, H, W) = {(len(boxes), *image.shape[:2])} for {len(boxes)} boxes "
                         f"on a {image.shape[0]}x{image.shape[1]} image, got {masks.shape}")


def _refinable(box: np.ndarray, height: int, width: int) -> bool:
    """`run`'s rule: a box of positive size that overlaps the image (xywh)."""
    x, y, w, h = box
    return w > 0 and h > 0 and x < width and y < height and x + w > 0 and y + h > 0


def load_refiner(weights: str | os.PathLike | None = None, device: str = "cpu",
                 threads: int | None = None) -> MaskRefiner:
    """A :class:`MaskRefiner` on ``weights`` (None: the shipped checkpoint; a .onnx file from
    `refine-masks export` runs in onnxruntime), loaded as `run` loads it. ``device``: "cpu", "cuda"
    or "auto". ``threads``: CPU threads (``torch.set_num_threads``, process-wide: pre- and
    post-processing run in torch either way; onnxruntime: also the session's intra-op threads).
    Raises CheckpointError for a missing or unusable file, ValueError for an unknown or unavailable
    device.
    """
    weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if weights.suffix != ".onnx":
        try:
            device = resolve_device(device)
        except ValueError as e:
            raise ValueError(f"device: {e}") from None
    return MaskRefiner(RefinerSpec(str(weights), device, threads=threads).load())
