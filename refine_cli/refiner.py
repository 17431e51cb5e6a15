"""Batched refinement of one image's instances: the numeric core that `run` and validation share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from .boxes import crop_masks, expand_boxes, paste_mask_in_box, xywh_to_xyxy
from .inputs import input_scale, to_input
from .model.config import PRECISIONS, RefineMaskConfig
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


def kept_by_gate(qualities: Sequence[float | None], coarse: Sequence[np.ndarray | None],
                 keep_above: float) -> list[bool]:
    """Per instance: is its estimated coarse IoU above ``keep_above``? Those keep the detector's
    mask as it came (not its 112x112 resample): a mask judged that good is likelier to lose than to
    gain from any change. Box-only records have no mask to keep."""
    return [q is not None and m is not None and q > keep_above for q, m in zip(qualities, coarse)]


def resolve_device(name: str) -> str:
    """"cpu" or "cuda" for the device name ``name`` ("auto": CUDA when torch sees a GPU); ValueError
    for another name, or for "cuda" without a GPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"expected 'cpu', 'cuda' or 'auto', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("no CUDA device is available")
    return name


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bfloat16 autocast on ``device``.

    "auto" is bf16 on CUDA and fp32 on CPU, where bf16 is slower without AMX units.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


class ImageRefiner:
    """Pre- and post-processing around a network that maps one image's RoIs to mask probabilities.

    Subclasses set ``cfg`` (a :class:`RefineMaskConfig`) and implement :meth:`probabilities`:
    :class:`Refiner` (torch) and ``onnx_runtime.OnnxRefiner`` (onnxruntime).
    """

    cfg: RefineMaskConfig
    has_quality: bool = False  # whether probabilities() returns the quality gate's estimate

    def refine_image(self, image: np.ndarray, boxes_xywh: np.ndarray, coarse: Sequence[np.ndarray | None],
                     timer: Callable[[str], AbstractContextManager] = nullcontext
                     ) -> list[tuple[np.ndarray, int, int] | None]:
        """Refine N instances of one image.

        image: (H, W, 3) uint8 RGB; boxes_xywh: (N, 4) valid boxes (w, h > 0); coarse: N full-image
        (H, W) uint8 masks, or None for box-only records. Returns per instance (crop, x0, y0):
        the binary refined mask on the pixels its expanded box covers (see ``paste_mask_in_box``),
        or None where the quality gate keeps the input mask (see :func:`kept_by_gate`).
        ``timer(stage)`` wraps each stage (engine.Timer names them).
        """
        return self.refine_image_with_quality(image, boxes_xywh, coarse, timer)[0]

    @torch.inference_mode()
    def refine_image_with_quality(self, image: np.ndarray, boxes_xywh: np.ndarray,
                                  coarse: Sequence[np.ndarray | None],
                                  timer: Callable[[str], AbstractContextManager] = nullcontext
                                  ) -> tuple[list[tuple[np.ndarray, int, int] | None], list[float | None]]:
        """:meth:`refine_image` plus the quality gate's per-instance estimate of each coarse mask's
        IoU with the truth (None for every instance when the network gives no estimate)."""
        h, w = image.shape[:2]
        if len(coarse) == 0:
            return [], []
        cfg = self.cfg
        with timer("masks in"):
            frames, grids = coarse_inputs(boxes_xywh, coarse, cfg.box_expand, cfg.stage_sizes[-1])
        with timer("resize"):
            scale = input_scale(h, w, cfg.short_side, cfg.max_size)
            x = to_input(image, scale, cfg.size_divisibility)
        rois = torch.cat([torch.zeros(len(frames), 1), frames * scale], dim=1)
        probs, quality = self.probabilities(x, rois, grids, timer)
        qualities = quality.tolist() if quality is not None else [None] * len(probs)
        keep = kept_by_gate(qualities, coarse, cfg.gate_keep_above)
        with timer("paste+encode"):
            results = [None if k else paste_mask_in_box(p, tuple(f), h, w)
                       for p, f, k in zip(probs[:, 0], frames.tolist(), keep)]
        return results, qualities

    def probabilities(self, x: torch.Tensor, rois: torch.Tensor, grids: torch.Tensor,
                      timer: Callable[[str], AbstractContextManager] = nullcontext
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network on one image: x (1, 3, H', W') input (see ``to_input``), rois (N >= 1, 5) in its
        pixels, grids (N, 1, S, S) coarse crops -> (N, 1, S, S) float32 probabilities on the CPU and
        the (N,) quality estimate (None without a gate)."""
        raise NotImplementedError


class Refiner(ImageRefiner):
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
        self.has_quality = model.gate is not None

    def autocast(self):
        """Context for every model call: bf16 autocast when enabled, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def probabilities(self, x: torch.Tensor, rois: torch.Tensor, grids: torch.Tensor,
                      timer: Callable[[str], AbstractContextManager] = nullcontext
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """See :meth:`ImageRefiner.probabilities`; RoIs in chunks of ``batch_size``."""
        x = x.to(self.device, memory_format=torch.channels_last)
        with timer("backbone"), self.autocast():
            feats = self.model.extract(x)
        rois = rois.to(self.device)
        probs, qualities = [], []
        for start in range(0, len(rois), self.batch_size):
            sl = slice(start, start + self.batch_size)
            with timer("head"), self.autocast():
                prob, quality = self.model.refine_with_quality(feats, rois[sl], grids[sl].to(self.device))
            probs.append(prob.float().cpu())
            qualities.append(None if quality is None else quality.float().cpu())
        return torch.cat(probs), None if qualities[0] is None else torch.cat(qualities)
