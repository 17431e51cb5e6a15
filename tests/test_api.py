"""Library API: load_refiner / MaskRefiner.refine give `run`'s masks, numpy <-> torch, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refine_cli import load_refiner
from refine_cli.api import MaskRefiner
from refine_cli.cli import main
from refine_cli.coco_io import decode_mask, encode_mask, find_image, read_predictions
from refine_cli.engine import refine_predictions
from refine_cli.images import load_image
from refine_cli.model.checkpoint import save_checkpoint
from refine_cli.refiner import Refiner

from .conftest import blobs, random_head_model

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coco_val"
H, W = 96, 128


@pytest.fixture
def refiner() -> MaskRefiner:
    return MaskRefiner(Refiner(random_head_model()))


def _xywh(box):
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def test_api_gives_runs_masks(refiner, tmp_path):
    image, boxes, masks = blobs(H, W)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "7.png"), image[..., ::-1])
    empty = np.zeros((H, W), bool)
    # the three blobs with masks, one box-only, one empty mask and one zero-size box (both kept by run)
    records = [{"image_id": 7, "bbox": _xywh(b), "segmentation": encode_mask(m.astype(np.uint8))}
               for b, m in zip(boxes, masks)]
    records += [{"image_id": 7, "bbox": _xywh(boxes[1])},
                {"image_id": 7, "bbox": _xywh(boxes[0]), "segmentation": encode_mask(empty.astype(np.uint8))},
                {"image_id": 7, "bbox": [10, 10, 0, 5], "segmentation": encode_mask(masks[2].astype(np.uint8))}]
    (tmp_path / "pred.json").write_text(json.dumps(records))
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, refiner.engine.model)
    res = CliRunner().invoke(main, ["run", str(tmp_path / "pred.json"), str(tmp_path / "images"), "-o",
                                    str(tmp_path / "out.json"), "--weights", str(ckpt), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    by_run = [decode_mask(r, H, W, where="") for r in json.loads((tmp_path / "out.json").read_text())]

    all_boxes = np.concatenate([boxes, boxes[[1, 0]], [[10, 10, 10, 15]]]).astype(np.float32)
    with_masks = refiner.refine(image, all_boxes, np.stack([*masks, empty, empty, masks[2]]))
    assert with_masks.shape == (6, H, W) and with_masks.dtype == bool
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(with_masks[i], by_run[i] != 0, err_msg=f"record {i}")
    assert not np.array_equal(with_masks[:3], masks)  # the random head does change them
    box_only = refiner.refine(image, boxes[1:2])
    np.testing.assert_array_equal(box_only[0], by_run[3] != 0)
    assert box_only[0].any()


def test_torch_in_torch_out(refiner):
    image, boxes, masks = blobs(H, W)
    want = refiner.refine(image, boxes, masks)
    got = refiner.refine(torch.from_numpy(image), torch.from_numpy(boxes), torch.from_numpy(masks.astype(np.uint8)))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bool and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), want)
    assert refiner.refine(image, boxes[:0], masks[:0]).shape == (0, H, W)


@pytest.mark.parametrize("change, message", [
    (lambda i, b, m: (i[..., :2], b, m), "image: expected (H, W, 3) uint8"),
    (lambda i, b, m: (i.astype(np.float32), b, m), "image: expected (H, W, 3) uint8"),
    (lambda i, b, m: (i, b[:, :3], m), "boxes: expected (N, 4)"),
    (lambda i, b, m: (i, b * np.nan, m), "boxes: not all finite"),
    (lambda i, b, m: (i, b, m[:2]), "masks: expected (N, H, W)"),
    (lambda i, b, m: (i, b, m[:, :-1]), "masks: expected (N, H, W)"),
    (lambda i, b, m: (i, b.tolist(), m), "boxes: expected a numpy array or a torch tensor"),
])
def test_bad_input_is_one_clear_error(refiner, change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        refiner.refine(*change(*blobs(H, W)))


def test_load_refiner_checks_the_device(monkeypatch):
    with pytest.raises(ValueError, match="device: expected"):
        load_refiner(device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: no CUDA device"):
        load_refiner(device="cuda")
    assert load_refiner(device="auto").engine.device.type == "cpu"


def test_run_names_the_device_it_cannot_use(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, ["run", str(EXAMPLE / "predictions.json"), str(EXAMPLE / "images"),
                                    "-o", str(tmp_path / "out.json"), "--device", "cuda"])
    assert res.exit_code == 2 and "--device cuda: no CUDA device is available" in res.output
    assert not (tmp_path / "out.json").exists()


def test_shipped_weights_match_run_on_an_example_image():
    """load_refiner() (the shipped weights) on one example image equals run's engine on its records."""
    preds = read_predictions(EXAMPLE / "predictions.json")
    refiner = load_refiner(threads=2)
    # the first image where the quality gate sends a record to the cascade (good ones it keeps as they are)
    for image_id in dict.fromkeys(r["image_id"] for r in preds.records):
        records = [r for r in preds.records if r["image_id"] == image_id][:6]
        image = load_image(find_image(image_id, EXAMPLE / "images", preds.images))
        h, w = image.shape[:2]
        coarse = np.stack([decode_mask(r, h, w, where="") for r in records])
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in records)], np.float32)
        got = refiner.refine(image, boxes, coarse)
        if (got != (coarse != 0)).any():
            break
    else:
        pytest.fail("the shipped gate kept every example mask")
    preds.records[:] = records
    refine_predictions(preds, EXAMPLE / "images", refiner.engine)
    for i, r in enumerate(records):
        np.testing.assert_array_equal(got[i], decode_mask(r, h, w, where="") != 0)
