"""The exported network (see :mod:`refine_cli.onnx_export`) run by onnxruntime behind the
:class:`~refine_cli.refiner.ImageRefiner` interface, so `run --weights X.onnx` and the library
API use it exactly like the torch :class:`~refine_cli.refiner.Refiner`."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

import numpy as np
import torch

from .model.checkpoint import CheckpointError
from .model.config import RefineMaskConfig
from .onnx_export import CONFIG_KEY, INPUT_NAMES, QUALITY_NAME
from .refiner import ImageRefiner


def providers(device: str) -> list[str]:
    """onnxruntime providers for ``device``: "cpu"; "cuda" (CUDA provider required); "auto" (CUDA when present)."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise CheckpointError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                              "(pip install onnxruntime-gpu)")
    return (["CUDAExecutionProvider"] if cuda and device != "cpu" else []) + ["CPUExecutionProvider"]


def session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
    """An onnxruntime InferenceSession on ``path``; CheckpointError when onnxruntime is missing or the file
    is not a loadable ONNX model. ``threads``: intra-op threads (None: onnxruntime's default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError("ONNX weights need onnxruntime: pip install 'refine-masks[onnx]'") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(os.fspath(path), opts, providers=providers(device))
    except CheckpointError:
        raise
    except Exception as e:  # onnxruntime raises its own types for missing, corrupt or foreign files
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{os.fspath(path)}: not a loadable ONNX model ({reason})") from e


class OnnxRefiner(ImageRefiner):
    """An exported RefineMask in onnxruntime; all of an image's RoIs go through one session call."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        if not os.path.isfile(path):
            raise CheckpointError(f"no ONNX model at {os.fspath(path)}")
        self.session = session(path, device, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in meta:
            raise CheckpointError(f"{os.fspath(path)}: not a refine-masks ONNX export (no {CONFIG_KEY!r} metadata; "
                                  "make one with `refine-masks export`)")
        self.cfg = RefineMaskConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.has_quality = QUALITY_NAME in self.outputs

    def probabilities(self, x: torch.Tensor, rois: torch.Tensor, grids: torch.Tensor,
                      timer=nullcontext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """See :meth:`ImageRefiner.probabilities`."""
        feed = {name: np.ascontiguousarray(t.numpy()) for name, t in zip(INPUT_NAMES, (x, rois, grids))}
        with timer("network"):
            out = self.session.run(self.outputs, feed)
        return torch.from_numpy(out[0]), torch.from_numpy(out[1]) if self.has_quality else None
