"""Detector adapters against the real output structures: a torchvision Mask R-CNN forward, and
detectron2 / Ultralytics objects rebuilt here with those libraries' attribute layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from refine_cli.adapters import refine_detectron2, refine_torchvision, refine_ultralytics, unletterbox
from refine_cli.api import MaskRefiner
from refine_cli.refiner import Refiner

from .conftest import blobs, random_head_model

H, W = 96, 128


@pytest.fixture(scope="module")
def refiner() -> MaskRefiner:
    return MaskRefiner(Refiner(random_head_model()))


def test_torchvision_maskrcnn_output(refiner):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    # random weights score every class near 1/91: threshold 0 keeps detections; small input size for CPU
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=96, max_size=128,
                                  box_score_thresh=0.0, box_detections_per_img=3).eval()
    image, _, _ = blobs(H, W)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        output = model([x])[0]
    assert output["masks"].shape[1:] == (1, H, W) and len(output["boxes"]) > 0
    got = refine_torchvision(refiner, x, output)
    assert set(got) == set(output) and got["boxes"] is output["boxes"] and got["scores"] is output["scores"]
    assert got["masks"].shape == output["masks"].shape and got["masks"].dtype == output["masks"].dtype
    want = refiner.refine(image, output["boxes"].numpy(), output["masks"][:, 0].numpy() >= 0.5)
    np.testing.assert_array_equal(got["masks"][:, 0].numpy(), want.astype(np.float32))


class Boxes:
    """detectron2.structures.Boxes: an (N, 4) xyxy ``tensor``."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]


class Instances:
    """detectron2.structures.Instances: ``image_size`` plus per-instance fields of equal length,
    set and read as attributes, kept in ``_fields``; constructed as Instances(image_size, **fields)."""

    def __init__(self, image_size: tuple[int, int], **kwargs):
        self._image_size = image_size
        self._fields = {}
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def __setattr__(self, name, value):
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name):
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name, value):
        if self._fields and len(value) != len(self):
            raise ValueError("Adding a field of length {} to a Instances of length {}".format(len(value), len(self)))
        self._fields[name] = value

    def get_fields(self) -> dict:
        return self._fields

    def __len__(self) -> int:
        return len(next(iter(self._fields.values()))) if self._fields else 0


def test_detectron2_instances(refiner):
    image, boxes, masks = blobs(H, W)
    inst = Instances((H, W), pred_boxes=Boxes(torch.from_numpy(boxes)), scores=torch.tensor([0.9, 0.8, 0.7]),
                     pred_classes=torch.tensor([1, 2, 3]), pred_masks=torch.from_numpy(masks))
    got = refine_detectron2(refiner, image, inst)
    assert type(got) is Instances and got is not inst and got.image_size == (H, W)
    assert got.scores is inst.scores and got.pred_classes is inst.pred_classes and got.pred_boxes is inst.pred_boxes
    assert inst.pred_masks.numpy().tolist() == masks.tolist()  # the input is left as it was
    assert got.pred_masks.dtype == torch.bool
    np.testing.assert_array_equal(got.pred_masks.numpy(), refiner.refine(image, boxes, masks))
    with pytest.raises(ValueError, match="image_size"):
        refine_detectron2(refiner, image, Instances((H + 1, W), pred_boxes=Boxes(torch.from_numpy(boxes)),
                                                    pred_masks=torch.from_numpy(masks)))


class BaseTensor:
    """ultralytics.engine.results.BaseTensor: ``data`` and ``orig_shape``."""

    def __init__(self, data, orig_shape):
        self.data, self.orig_shape = data, orig_shape


class UBoxes(BaseTensor):
    @property
    def xyxy(self):
        return self.data[:, :4]


class Masks(BaseTensor):
    pass


class Results:
    """ultralytics.engine.results.Results: orig_img (BGR), orig_shape, boxes (N, 6) and masks."""

    def __init__(self, orig_img, boxes, masks):
        self.orig_img, self.orig_shape = orig_img, orig_img.shape[:2]
        self.boxes = UBoxes(boxes, self.orig_shape)
        self.masks = Masks(masks, self.orig_shape) if masks is not None else None


def letterbox(masks: np.ndarray, new: tuple[int, int]) -> np.ndarray:
    """Ultralytics' LetterBox for (N, H, W) masks: scale to fit ``new`` (h, w), centre, pad."""
    n, h, w = masks.shape
    gain = min(new[0] / h, new[1] / w)
    nh, nw = round(h * gain), round(w * gain)
    dh, dw = (new[0] - nh) / 2, (new[1] - nw) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    out = np.zeros((n, *new), np.float32)
    for i, m in enumerate(masks):
        out[i, top:top + nh, left:left + nw] = cv2.resize(m.astype(np.float32), (nw, nh)) >= 0.5
    return out


def test_ultralytics_results(refiner):
    image, boxes, masks = blobs(H, W)
    small = letterbox(masks, (64, 64))  # 96x128 -> 48x64 in a padded 64x64 square
    boxes6 = torch.from_numpy(np.concatenate([boxes, [[0.9, 0], [0.8, 1], [0.7, 2]]], 1).astype(np.float32))
    res = Results(np.ascontiguousarray(image[..., ::-1]), boxes6, torch.from_numpy(small))
    coarse = unletterbox(small, H, W)
    assert coarse.shape == masks.shape
    assert all((a & b).sum() / (a | b).sum() > 0.85 for a, b in zip(coarse, masks))  # 2x down and back up
    got = refine_ultralytics(refiner, res)
    assert type(got) is Results and type(got.masks) is Masks and got.boxes is res.boxes
    assert res.masks.data.shape == (3, 64, 64)  # the input keeps its letterboxed masks
    assert got.masks.data.shape == (3, H, W) and got.masks.orig_shape == (H, W)
    np.testing.assert_array_equal(got.masks.data.numpy(), refiner.refine(image, boxes, coarse).astype(np.float32))
    empty = Results(res.orig_img, boxes6[:0], None)
    assert refine_ultralytics(refiner, empty).masks is None
