"""Shared fixtures: tiny models and checkpoints made in code, paths to ../shared data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from refine_cli.model.checkpoint import save_checkpoint
from refine_cli.model.config import tiny_config
from refine_cli.model.refinemask import RefineMask

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_script(relative: str) -> ModuleType:
    """Import a repo script that is not part of the package (bench/, weights/) by its path."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_model() -> RefineMask:
    torch.manual_seed(0)
    return RefineMask(tiny_config()).eval()


def box_filling_model() -> RefineMask:
    """A tiny model whose every stage predicts foreground everywhere: the refined mask is the
    expanded box. Lets CLI tests see segmentations replaced without a trained checkpoint."""
    torch.manual_seed(0)
    model = RefineMask(tiny_config(box_expand=1.0))
    with torch.no_grad():
        for conv in model.head.logits:
            conv.weight.zero_()
            conv.bias.fill_(6.0)
    return model.eval()


@pytest.fixture
def box_checkpoint(tmp_path) -> Path:
    path = tmp_path / "box.pt"
    save_checkpoint(path, box_filling_model())
    return path


def random_head_model() -> RefineMask:
    """A tiny model whose residual logit convs are random: its masks differ from the coarse input
    (the zero-initialised head would hand the coarse masks back), so refiners can be compared."""
    torch.manual_seed(0)
    model = RefineMask(tiny_config())
    with torch.no_grad():
        for conv in model.head.logits:
            conv.weight.normal_(0, 1.0)
        model.head.prior_scale.fill_(0.5)
    return model.eval()


def blobs(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured (H, W, 3) uint8 image with 3 elliptic objects: image, (3, 4) xyxy boxes, (3, H, W) bool masks."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    boxes, masks = [], []
    for cx, cy, rx, ry in ((0.3, 0.4, 0.15, 0.2), (0.65, 0.55, 0.25, 0.3), (0.8, 0.2, 0.08, 0.1)):
        m = ((xx - cx * width) / (rx * width)) ** 2 + ((yy - cy * height) / (ry * height)) ** 2 <= 1
        image[m] = rng.integers(150, 255, 3, dtype=np.uint8)
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        masks.append(m)
    return image, np.array(boxes, np.float32), np.stack(masks)
