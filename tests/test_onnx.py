"""ONNX export and the onnxruntime refiner: RoiAlign's coordinate mode, dynamic shapes, `run` equality, errors."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision.ops import roi_align

from refine_cli import load_refiner
from refine_cli.api import MaskRefiner
from refine_cli.cli import main
from refine_cli.coco_io import encode_mask
from refine_cli.model.checkpoint import save_checkpoint
from refine_cli.refiner import Refiner

from .conftest import blobs, random_head_model

onnx = pytest.importorskip("onnx", reason="needs the [onnx] extra")
ort = pytest.importorskip("onnxruntime", reason="needs the [onnx] extra")

from refine_cli.onnx_runtime import OnnxRefiner  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`refine-masks export` of a tiny random-head checkpoint: (onnx path, checkpoint path, command output)."""
    tmp = tmp_path_factory.mktemp("onnx")
    ckpt, path = tmp / "tiny.pt", tmp / "tiny.onnx"
    save_checkpoint(ckpt, random_head_model())
    res = CliRunner().invoke(main, ["export", str(path), "--weights", str(ckpt), "--opset", "17"])
    assert res.exit_code == 0, res.output
    return path, ckpt, res.output


def test_onnx_roialign_half_pixel_is_torchvision_aligned():
    """ONNX RoiAlign with coordinate_transformation_mode=half_pixel equals roi_align(aligned=True),
    output_half_pixel (aligned=False) does not: the mode the exporter must write."""
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(1, 3, 20, 24, generator=g)
    rois = torch.tensor([[0, 1.3, 2.2, 9.7, 15.1], [0, 0.2, 0.4, 3.1, 2.9], [0, 5.5, 5.5, 23.0, 19.0]])
    want = roi_align(feat, rois, 7, spatial_scale=0.5, sampling_ratio=2, aligned=True).numpy()
    got = {}
    for mode in ("half_pixel", "output_half_pixel"):
        node = onnx.helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=7, output_width=7,
                                     sampling_ratio=2, spatial_scale=0.5, coordinate_transformation_mode=mode)
        graph = onnx.helper.make_graph(
            [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None),
                          onnx.helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, None),
                          onnx.helper.make_tensor_value_info("idx", onnx.TensorProto.INT64, None)],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 16)])
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got[mode] = sess.run(None, {"x": feat.numpy(), "rois": rois[:, 1:].numpy(), "idx": np.zeros(3, np.int64)})[0]
    np.testing.assert_allclose(got["half_pixel"], want, atol=1e-6)
    assert np.abs(got["output_half_pixel"] - want).max() > 1e-2


def test_export_is_dynamic_and_uses_half_pixel(exported):
    path, _, output = exported
    # export's own check at a second image size and instance count
    assert re.search(r"onnxruntime matches torch to \S+ in probability", output)
    assert not list(path.parent.glob(".*.tmp"))
    proto = onnx.load(str(path))
    modes = [a.s for n in proto.graph.node if n.op_type == "RoiAlign" for a in n.attribute
             if a.name == "coordinate_transformation_mode"]
    assert len(modes) >= 4 and set(modes) == {b"half_pixel"}  # 4 FPN levels + semantic + RGB crops
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["image"][2:] == ["height", "width"] and dims["rois"][0] == dims["coarse"][0] == "instances"


@pytest.mark.parametrize("h, w, n", [(96, 128, 3), (150, 90, 1), (60, 200, 3)])
def test_onnx_refiner_matches_torch(exported, h, w, n):
    path, _, _ = exported
    image, boxes, masks = blobs(h, w, seed=h)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)[:n]
    coarse = list(masks[:n])
    want = Refiner(random_head_model()).refine_image(image, xywh, coarse)
    got = OnnxRefiner(path).refine_image(image, xywh, coarse)
    for (a, ax, ay), (b, bx, by) in zip(want, got):
        assert (ax, ay) == (bx, by) and a.shape == b.shape
        assert np.count_nonzero(a != b) <= 0.001 * max(np.count_nonzero(a), 1)
    assert OnnxRefiner(path).refine_image(image, xywh[:0], []) == []


def test_cli_run_onnx_equals_run_torch(exported, tmp_path):
    out, ckpt, _ = exported
    image, boxes, masks = blobs(96, 128)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "1.png"), image[..., ::-1])
    records = [{"image_id": 1, "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                "segmentation": encode_mask(m.astype(np.uint8))} for b, m in zip(boxes, masks)]
    (tmp_path / "p.json").write_text(json.dumps(records))
    outs = {}
    for weights in (ckpt, out):
        outs[weights.suffix] = tmp_path / f"r{weights.suffix}.json"
        res = CliRunner().invoke(main, ["run", str(tmp_path / "p.json"), str(tmp_path / "images"), "-o",
                                        str(outs[weights.suffix]), "--weights", str(weights), "--device", "cpu",
                                        "--threads", "2"])
        assert res.exit_code == 0, res.output
    assert json.loads(outs[".pt"].read_text()) == json.loads(outs[".onnx"].read_text())
    assert json.loads(outs[".pt"].read_text()) != records


def test_load_refiner_runs_an_onnx_export(exported):
    path, _, _ = exported
    image, boxes, masks = blobs(96, 128)
    via_onnx = load_refiner(path, threads=2)
    assert isinstance(via_onnx.engine, OnnxRefiner)
    want = MaskRefiner(Refiner(random_head_model())).refine(image, boxes, masks)
    assert np.count_nonzero(via_onnx.refine(image, boxes, masks) != want) <= 0.001 * np.count_nonzero(want)


def test_cli_errors_are_one_line(exported, tmp_path):
    path, ckpt, _ = exported
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(tmp_path / "m.bin"), "--weights", str(ckpt)])
    assert res.exit_code == 2 and "must end in .onnx" in res.output
    res = runner.invoke(main, ["export", str(tmp_path / "m.onnx"), "--weights", str(ckpt), "--opset", "15"])
    assert res.exit_code == 2 and "--opset" in res.output
    res = runner.invoke(main, ["export", str(tmp_path / "m.onnx"), "--weights", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "no checkpoint at" in res.output and "Traceback" not in res.output
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    (tmp_path / "images").mkdir()
    (tmp_path / "p.json").write_text("[]")
    for weights, message in ((bogus, "not a loadable ONNX model"), (foreign, "not a refine-masks ONNX export"),
                             (tmp_path / "missing.onnx", "no ONNX model at")):
        res = runner.invoke(main, ["run", str(tmp_path / "p.json"), str(tmp_path / "images"), "--weights",
                                   str(weights)])
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1


def test_gated_export_gives_the_estimate_and_keeps_the_same_masks(tmp_path):
    """A gated checkpoint exports its quality estimate as a second output, so the ONNX refiner keeps
    exactly the instances the torch one keeps (``gate_keep_above`` travels in the metadata)."""
    from refine_cli.train.gate import attach_gate

    model = attach_gate(random_head_model())
    with torch.no_grad():
        model.gate.instance[0].weight.normal_(0, 1.0)  # estimates that differ between instances
    image, boxes, masks = blobs(96, 128)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    _, want_q = Refiner(model).refine_image_with_quality(image, xywh, list(masks))
    low, mid = sorted(want_q)[:2]
    assert mid - low > 1e-3
    model.cfg.gate_keep_above = (low + mid) / 2  # keeps two instances of the three, clear of rounding
    ckpt, path = tmp_path / "gated.pt", tmp_path / "gated.onnx"
    save_checkpoint(ckpt, model.eval())
    res = CliRunner().invoke(main, ["export", str(path), "--weights", str(ckpt)])
    assert res.exit_code == 0, res.output
    onnx_refiner = OnnxRefiner(path)
    assert onnx_refiner.has_quality and [o.name for o in onnx_refiner.session.get_outputs()] == ["probs", "quality"]
    want, want_q = Refiner(model).refine_image_with_quality(image, xywh, list(masks))
    got, got_q = onnx_refiner.refine_image_with_quality(image, xywh, list(masks))
    assert np.allclose(got_q, want_q, atol=1e-4)
    assert [r is None for r in got] == [r is None for r in want] == [q > low for q in want_q]
