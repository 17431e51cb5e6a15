"""Batched refinement of one image's instances: the numeric core that `run` and validation share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .boxes import crop_masks, expand_boxes, paste_mask_in_box, xywh_to_xyxy
from .inputs import input_scale, to_input
from .model.refinemask import RefineMask


def box_grid(boxes: torch.Tensor, frames: torch.Tensor, size: int) -> torch.Tensor:
    """Coarse input for box-only records: 1 where a grid cell centre of ``frames`` lies in ``boxes``.

    boxes, frames: (N, 4) xyxy. Returns (N, 1, size, size).
    """
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = frames[:, 0:1] + t * (frames[:, 2:3] - frames[:, 0:1])  # (N, size)
    ys = frames[:, 1:2] + t * (frames[:, 3:4] - frames[:, 1:2])
    inx = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])
    iny = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])
    return (iny[:, :, None] & inx[:, None, :]).float()[:, None]


def coarse_inputs(boxes_xywh: np.ndarray, coarse: Sequence[np.ndarray | None], box_expand: float,
                  size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and coarse grids of N instances, as training and inference both feed the head.

    boxes_xywh: (N, 4); coarse: N full-image (H, W) masks, or None for box-only records.
    Returns frames (N, 4) xyxy (boxes scaled by ``box_expand``) and grids (N, 1, size, size).
    """
    boxes = xywh_to_xyxy(torch.as_tensor(np.asarray(boxes_xywh, np.float32)).reshape(-1, 4))
    frames = expand_boxes(boxes, box_expand)
    grids = box_grid(boxes, frames, size)
    have = [i for i, m in enumerate(coarse) if m is not None]
    if have:
        grids[have] = crop_masks([coarse[i] for i in have], frames[have], size)
    return frames, grids


PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bfloat16 autocast on ``device``.

    "auto" is bf16 on CUDA and fp32 on CPU, where bf16 is slower without AMX units.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


class Refiner:
    """Runs a :class:`RefineMask` over images: backbone once per image, RoIs in chunks.

    ``precision`` (see :func:`uses_bf16`): under bf16 the convolutions run in bfloat16
    autocast and the stage logits are fused in fp32.
    """

    def __init__(self, model: RefineMask, device: torch.device | str = "cpu", batch_size: int = 64,
                 precision: str = "auto"):
        self.device = torch.device(device)
        self.bf16 = uses_bf16(precision, self.device)  # checks precision before the model is touched
        # NHWC is the layout oneDNN (CPU) and cuDNN convolutions run fastest in: on the bench's
        # 2-core CPU it cut backbone and head time by about a third.
        self.model = model.eval().to(device, memory_format=torch.channels_last)
        self.batch_size = batch_size
        self.cfg = model.cfg

    def autocast(self):
        """Context for every model call: bf16 autocast when enabled, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def refine_image(self, image: np.ndarray, boxes_xywh: np.ndarray,
                     coarse: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, int, int]]:
        """Refine N instances of one image.

        image: (H, W, 3) uint8 RGB; boxes_xywh: (N, 4) valid boxes (w, h > 0); coarse: N full-image
        (H, W) uint8 masks (arrays, or coco_io.BoxMask: only windows are sliced out of them), or None
        for box-only records. Returns per instance (crop, x0, y0):
        the binary refined mask on the pixels its expanded box covers (see ``paste_mask_in_box``).
        """
        h, w = image.shape[:2]
        if len(coarse) == 0:
            return []
        cfg = self.cfg
        frames, grids = coarse_inputs(boxes_xywh, coarse, cfg.box_expand, cfg.stage_sizes[-1])
        scale = input_scale(h, w, cfg.short_side, cfg.max_size)
        x = to_input(image, scale, cfg.size_divisibility).to(self.device, memory_format=torch.channels_last)
        with self.autocast():
            feats = self.model.extract(x)
        rois = torch.cat([torch.zeros(len(frames), 1), frames * scale], dim=1).to(self.device)
        results = []
        for start in range(0, len(frames), self.batch_size):
            sl = slice(start, start + self.batch_size)
            with self.autocast():
                probs = self.model.refine(feats, rois[sl], grids[sl].to(self.device))
            probs = probs.float().cpu()
            for prob, frame in zip(probs[:, 0], frames[sl].tolist()):
                results.append(paste_mask_in_box(prob, tuple(frame), h, w))
        return results
