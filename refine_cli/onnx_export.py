"""`refine-masks export`: the whole RefineMask network (backbone, FPN, semantic branch, RoI head)
as one ONNX graph with a dynamic image size and instance count.

Pre- and post-processing (resize, coarse-mask crops, paste) stay outside the graph and are shared
with the torch path (:class:`~refine_cli.refiner.ImageRefiner`). The graph's RoiAlign nodes use
``coordinate_transformation_mode="half_pixel"``, ONNX's name for torchvision's ``aligned=True``
(opset >= 16). The checkpoint's config travels in the model's metadata under :data:`CONFIG_KEY`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .model.checkpoint import load_checkpoint
from .model.refinemask import RefineMask

CONFIG_KEY = "refine_masks_config"
INPUT_NAMES = ("image", "rois", "coarse")
OUTPUT_NAME = "probs"
QUALITY_NAME = "quality"  # a second output where the checkpoint has a quality gate
MIN_OPSET = 16  # RoiAlign's coordinate_transformation_mode (half_pixel = aligned=True) is opset 16


class ExportError(Exception):
    """The export cannot be made or does not reproduce the torch network; the message says why."""


class _Network(nn.Module):
    """image (1, 3, H, W) float in [0, 255], H and W multiples of the config's size_divisibility;
    rois (N, 5) [0, x0, y0, x1, y1] in its pixels; coarse (N, 1, S, S) in [0, 1]
    -> probs (N, 1, S, S), S the last stage size, and with a quality gate its (N,) estimate
    (``RefineMask.refine_with_quality``)."""

    def __init__(self, model: RefineMask):
        super().__init__()
        self.model = model
        self.output_names = [OUTPUT_NAME] + ([QUALITY_NAME] if model.gate is not None else [])

    def forward(self, image: torch.Tensor, rois: torch.Tensor, coarse: torch.Tensor):
        probs, quality = self.model.refine_with_quality(self.model.extract(image), rois, coarse)
        return probs if quality is None else (probs, quality)


def example_inputs(model: RefineMask, height: int, width: int, n: int = 8,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random network inputs of an (height, width) input image: (1, 3, H, W), (N, 5), (N, 1, S, S).

    Box sides range from 1/32 to 9/10 of the image, so the RoIs fall on every FPN level of an
    image the size of the config's input (a trace must see each level's branch).
    """
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=g) * 255
    side = torch.logspace(-5, -0.15, n, base=2)[:, None] * torch.tensor([width, height])
    x0 = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - side)
    rois = torch.cat([torch.zeros(n, 1), x0, x0 + side], dim=1)
    size = model.cfg.stage_sizes[-1]
    coarse = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
    return image, rois, coarse


def _input_size(model: RefineMask, aspect: float) -> tuple[int, int]:
    """A (height, width) network input of the config's scale rule for a width/height ``aspect``."""
    cfg, d = model.cfg, model.cfg.size_divisibility
    h = cfg.short_side
    w = min(round(h * aspect), cfg.max_size)
    return -(-h // d) * d, -(-w // d) * d


def export_model(model: RefineMask, out: str | os.PathLike, opset: int = 17) -> float:
    """Write ``model`` (left in eval mode) as ONNX to ``out`` (atomically) and check it with onnxruntime.

    Traced at a 4:3 input and checked at a different (3:2) size and instance count, so a shape
    baked into the trace shows up here. Returns the check's largest |probability difference|.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: RoiAlign needs opset >= {MIN_OPSET} for torchvision's aligned=True")
    try:
        import onnx
    except ImportError:
        raise ExportError("export needs the onnx package: pip install 'refine-masks[onnx]'") from None
    out = Path(out)
    # eval on the wrapper: the exporter restores the wrapper's mode afterwards, recursively
    net = _Network(model.float()).eval()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():  # the tracer's notes on Python ints; checked numerically below
            warnings.simplefilter("ignore")
            torch.onnx.export(net, example_inputs(model, *_input_size(model, 4 / 3)), str(tmp), dynamo=False,
                              opset_version=opset, input_names=list(INPUT_NAMES), output_names=net.output_names,
                              dynamic_axes={"image": {2: "height", 3: "width"}, "rois": {0: "instances"},
                                            "coarse": {0: "instances"},
                                            **{name: {0: "instances"} for name in net.output_names}})
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {CONFIG_KEY: json.dumps(model.cfg.to_dict())})
        onnx.save(proto, str(tmp))
        diff = check_export(net, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def check_export(net: nn.Module, path: str | os.PathLike, tolerance: float = 1e-3) -> float:
    """Largest |difference| of any output (probabilities, quality estimate) between onnxruntime on
    ``path`` and ``net`` on a 3:2 input with 13 RoIs; raises ExportError above ``tolerance``."""
    from .onnx_runtime import session

    model = net.model
    inputs = example_inputs(model, *_input_size(model, 3 / 2), n=13, seed=1)
    with torch.inference_mode():
        want = net(*inputs)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    got = session(path).run(net.output_names, dict(zip(INPUT_NAMES, (t.numpy() for t in inputs))))
    diff = max(float(abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if not diff <= tolerance:
        raise ExportError(f"the ONNX graph differs from torch by {diff:.2g} in probability (> {tolerance}); "
                          "not written")
    return diff


def export_checkpoint(weights: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> float:
    """:func:`export_model` of a checkpoint file (raises CheckpointError for a bad one)."""
    model, _ = load_checkpoint(weights)
    return export_model(model, out, opset)
