"""Quality gate: shapes, checkpoint round trip, what training it teaches, `run --write-quality`,
`train-gate` end to end and `eval --by-quality`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.coco_io import encode_mask
from refine_cli.model.checkpoint import load_checkpoint, save_checkpoint
from refine_cli.model.config import tiny_config
from refine_cli.model.quality_gate import QualityGate, roi_log_size
from refine_cli.model.refinemask import RefineMask
from refine_cli.train.gate import (
    GateCache,
    attach_gate,
    build_cache,
    calibrated_keep_threshold,
    coarse_iou,
    load_cache,
    lowest_clean_estimate,
    save_cache,
    train_gate,
)
from refine_cli.train.simulate import simulate

from .conftest import blobs, random_head_model
from .test_run import dataset  # noqa: F401  (fixture)
from .test_train import tiny_set  # noqa: F401  (fixture)


def _disc(n: int, size: int = 112) -> torch.Tensor:
    """(n, 1, size, size) discs of varying radius, 1 inside."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = torch.linspace(20, 45, n)[:, None, None]
    return (((yy - 56) ** 2 + (xx - 56) ** 2) < r ** 2).float()[:, None]


def test_gate_shapes_and_untrained_gate_trusts_the_cascade():
    gate = QualityGate(8)
    coarse, refined = _disc(3), _disc(3).flip(-1)
    g, q = gate(coarse, refined, torch.zeros(3, 3, 112, 112), torch.zeros(3, 2))
    assert g.shape == (3, 1, 112, 112) and q.shape == (3,)
    assert torch.all(g > 0.9) and torch.all((q > 0) & (q < 1))


def test_roi_log_size():
    rois = torch.tensor([[0, 10, 20, 10 + np.e, 20 + np.e ** 2], [0, 5, 5, 5, 5]], dtype=torch.float32)
    assert torch.allclose(roi_log_size(rois), torch.tensor([[1.0, 2.0], [0.0, 0.0]]), atol=1e-5)


def test_gated_model_blends_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = RefineMask(tiny_config(quality_gate=True, gate_channels=4)).eval()
    images = torch.rand(1, 3, 128, 160) * 255
    rois = torch.tensor([[0, 10, 10, 80, 90], [0, 40, 30, 150, 120]], dtype=torch.float32)
    coarse = _disc(2)
    feats = model.extract(images)
    with torch.no_grad():
        model.gate.instance[2].bias.fill_(-30.0)  # gate closed: the coarse mask comes back as it was
    probs, quality = model.refine_with_quality(feats, rois, coarse)
    assert torch.allclose(probs, coarse, atol=1e-6) and quality.shape == (2,)
    assert not torch.allclose(model.cascade_probs(feats, rois, coarse), coarse, atol=1e-3)
    path = tmp_path / "g.pt"
    save_checkpoint(path, model)
    loaded, _ = load_checkpoint(path)
    assert loaded.gate is not None and torch.equal(loaded.refine(loaded.extract(images), rois, coarse), probs)


def _cache(coarse, refined, gt, mode=None, images: int = 1) -> GateCache:
    n = len(coarse)
    q = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    return GateCache(q(coarse), q(refined), q(gt), torch.zeros(n, 3, 112, 112, dtype=torch.int8),
                     torch.zeros(n, 2), torch.zeros(n, dtype=torch.long) if mode is None else mode,
                     torch.arange(n) % images)


def test_training_teaches_the_gate_whom_to_trust():
    """Half the instances: a clean coarse disc and a cascade output that shifted it (keep the coarse);
    the other half: a disc with a notch cut out and a cascade output that is right (take the refined).
    The notch is what tells the two apart."""
    gt = _disc(64)
    shifted = gt.roll(6, dims=-1)
    notched = gt.clone()
    notched[..., 40:72, 56:] = 0
    coarse = torch.cat([gt[:32], notched[32:]])
    refined = torch.cat([shifted[:32], gt[32:]])
    cache = _cache(coarse, refined, gt)
    model = attach_gate(RefineMask(tiny_config(gate_channels=8)))

    def blend_iou():
        with torch.no_grad():
            c, r, g, rgb, ls = cache.batch(torch.arange(64))
            gate, quality = model.gate(c, r, rgb, ls)
            return coarse_iou(gate * r + (1 - gate) * c, g), quality

    before, _ = blend_iou()
    train_gate(model, cache, steps=120, batch_size=16, lr=5e-3)
    after, quality = blend_iou()
    assert after[:32].mean() > 0.99 > before[:32].mean()  # clean inputs come back unchanged
    assert after[32:].mean() > 0.99  # and broken ones still get the cascade's fix
    # the quality estimate follows the coarse masks' true IoU (1 for clean, lower for notched)
    assert quality[:32].mean() > quality[32:].mean() + 0.05


def test_build_cache_holds_every_simulation(tiny_set):  # noqa: F811
    from refine_cli.train.data import load_sets
    from refine_cli.train.gate import GATE_SIMULATIONS

    torch.manual_seed(0)
    model = RefineMask(tiny_config())
    entries = load_sets([tiny_set])
    cache = build_cache(model, entries, seed=0)
    assert len(cache) == 6 * len(GATE_SIMULATIONS)  # 2 images x 3 instances
    perfect = cache.mode == 0
    c, _, g, _, _ = cache.batch(torch.nonzero(perfect).squeeze(1))
    assert torch.all(coarse_iou(c, g) == 1.0)  # the GT mask on the GT box
    assert cache.image.tolist() == [0] * 18 + [1] * 18  # which image each instance is from
    again = build_cache(model, entries, seed=0)
    assert torch.equal(cache.refined, again.refined) and torch.equal(cache.coarse, again.coarse)
    path = tiny_set / "cache.pt"
    save_cache(path, cache, {"seed": 0})
    assert torch.equal(load_cache(path, {"seed": 0}).rgb, cache.rgb)
    assert load_cache(path, {"seed": 1}) is None  # made from other inputs: rebuilt, not reused


def test_perfect_simulation_is_the_gt_mask():
    gt = np.zeros((40, 50), np.uint8)
    gt[10:30, 5:25] = 1
    mask, box = simulate(gt, np.array([5.0, 10.0, 20.0, 20.0]), "perfect", np.random.default_rng(0), box_sigma=0)
    assert np.array_equal(mask, gt) and np.allclose(box, [5, 10, 20, 20])


@pytest.fixture
def gated_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "gated.pt"
    save_checkpoint(path, RefineMask(tiny_config(quality_gate=True, gate_channels=4)).eval())
    return path


def test_run_write_quality(dataset, gated_checkpoint, box_checkpoint, tmp_path):  # noqa: F811
    path, images, records = dataset
    out = tmp_path / "out.json"
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(out), "--weights",
                                    str(gated_checkpoint), "--device", "cpu", "--write-quality"])
    assert res.exit_code == 0, res.output
    refined = json.loads(out.read_text())
    with_q = [r for r in refined if "refine_quality" in r]
    assert len(with_q) == 4  # every record but the crowd region goes through the model
    assert all(0.0 <= r["refine_quality"] <= 1.0 for r in with_q)
    assert not any("refine_quality" in r for r in refined if r.get("iscrowd"))
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(out), "--weights",
                                    str(box_checkpoint), "--device", "cpu", "--write-quality"])
    assert res.exit_code == 2 and "has no quality gate" in res.output


def test_train_gate_command_writes_a_gated_checkpoint(tiny_set, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    save_checkpoint(init, RefineMask(tiny_config()), meta={"recipe": "x"})
    out = tmp_path / "gated.pt"
    res = CliRunner().invoke(main, ["train-gate", "--init", str(init), "--data", str(tiny_set), "--out", str(out),
                                    "--steps", "5", "--batch-size", "4", "--calibration-folds", "3"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    model, ckpt = load_checkpoint(out)
    assert model.cfg.quality_gate and model.gate is not None
    assert ckpt["meta"]["recipe"] == "x" and ckpt["meta"]["gate"]["instances"] == 36
    # the versions the gate was trained under: a reproduction elsewhere can tell why it differs
    assert torch.__version__.startswith(ckpt["meta"]["gate"]["environment"]["torch"])
    # 3 folds of the 2 images: the empty fold is skipped, each other's lowest clean estimate recorded
    assert ckpt["meta"]["gate"]["calibration_folds"] == 3
    fold_lowest = ckpt["meta"]["gate"]["fold_lowest_clean_estimate"]
    assert len(fold_lowest) == 2 and model.cfg.gate_keep_above <= min(fold_lowest)
    base, _ = load_checkpoint(init)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items() if k in base.state_dict())
    res = CliRunner().invoke(main, ["train-gate", "--init", str(tmp_path / "nope.pt"), "--data", str(tiny_set),
                                    "--out", str(out)])
    assert res.exit_code == 2 and "nope.pt" in res.output


def _square(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_eval_by_quality_bins_records_and_scores_their_iou(tmp_path):
    gt = {"images": [{"id": 1, "height": 40, "width": 40}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0,
                           "bbox": [0, 0, 10, 10], "segmentation": encode_mask(_square(40, 40, 0, 0, 10, 10))},
                          {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 400.0,
                           "bbox": [20, 20, 20, 20], "segmentation": encode_mask(_square(40, 40, 20, 20, 40, 40))},
                          {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 25.0,
                           "bbox": [0, 30, 5, 5], "segmentation": encode_mask(_square(40, 40, 0, 30, 5, 35))},
                          {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 25.0,
                           "bbox": [30, 0, 5, 5], "segmentation": encode_mask(_square(40, 40, 30, 0, 35, 5))}]}
    coarse = [{"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": encode_mask(_square(40, 40, 0, 0, 10, 5))},
              {"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": encode_mask(_square(40, 40, 20, 20, 40, 40))}]
    refined = [dict(coarse[0], segmentation=encode_mask(_square(40, 40, 0, 0, 10, 10)), refine_quality=0.3),
               dict(coarse[1], refine_quality=0.97), dict(coarse[1])]  # the last one kept without the network
    coarse.append(dict(coarse[1]))
    paths = []
    for name, data in (("gt", gt), ("coarse", coarse), ("refined", refined)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    out = tmp_path / "m.json"
    # the GT file given as a third "prediction" has other records: scored for AP, left out of the bins
    res = CliRunner().invoke(main, ["eval", "--gt", str(paths[0]), str(paths[1]), str(paths[2]), str(paths[0]),
                                    "--by-quality", "--json", str(out)])
    assert res.exit_code == 0, res.output
    by_q = json.loads(out.read_text())["by_quality"]
    assert by_q["files"] == [str(paths[1]), str(paths[2])]
    rows = by_q["rows"]
    assert [r["bin"] for r in rows] == [[0.0, 0.5], [0.95, 1.0]] and [r["n"] for r in rows] == [1, 1]  # not 3
    assert rows[0]["iou"] == pytest.approx([0.5, 1.0]) and rows[1]["iou"] == pytest.approx([1.0, 1.0])
    assert "refine_quality" in res.output
    res = CliRunner().invoke(main, ["eval", "--gt", str(paths[0]), str(paths[1]), "--by-quality"])
    assert res.exit_code == 2 and "write-quality" in res.output


def _confident_gate_checkpoint(path, keep_above: float):
    """A tiny gated model whose estimate is 1 for every instance (quality logit +30), and whose
    cascade changes masks (random logit convs), saved with ``gate_keep_above``."""
    model = attach_gate(random_head_model())
    model.cfg.gate_keep_above = keep_above
    with torch.no_grad():
        model.gate.instance[2].bias.copy_(torch.tensor([30.0, 30.0]))
    save_checkpoint(path, model.eval())
    return path


def test_kept_by_gate_needs_a_mask_and_an_estimate_above_the_threshold():
    from refine_cli.refiner import kept_by_gate

    m = np.ones((2, 2), np.uint8)
    assert kept_by_gate([0.9, 0.9, 0.5, None, 1.0], [m, None, m, m, m], 0.8) == [True, False, False, False, True]
    assert kept_by_gate([1.0], [m], 1.0) == [False]  # 1 keeps nothing, even a saturated estimate


def test_run_keeps_masks_the_gate_judges_good(dataset, box_checkpoint, tmp_path):  # noqa: F811
    path, images, records = dataset
    ckpt = _confident_gate_checkpoint(tmp_path / "sure.pt", keep_above=0.5)
    out = tmp_path / "out.json"
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(out), "--weights", str(ckpt),
                                    "--device", "cpu", "--write-quality"])
    assert res.exit_code == 0, res.output
    assert "quality gate" in res.output
    refined = json.loads(out.read_text())
    for before, after in zip(records, refined):
        if "segmentation" in before:  # kept exactly as it came, polygons included
            assert after["segmentation"] == before["segmentation"]
    box_only = refined[2]
    assert "segmentation" in box_only and box_only["refine_quality"] == 1.0  # no mask to keep: refined
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(out), "--weights", str(ckpt),
                                    "--device", "cpu", "--keep-above", "1"])
    assert res.exit_code == 0, res.output
    refined = json.loads(out.read_text())
    assert refined[0]["segmentation"] != records[0]["segmentation"]  # every mask refined
    assert isinstance(refined[1]["segmentation"], dict)  # the polygon became an RLE
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(out), "--weights",
                                    str(box_checkpoint), "--device", "cpu", "--keep-above", "0.9"])
    assert res.exit_code == 2 and "has no quality gate" in res.output


def test_library_api_hands_kept_masks_back(tmp_path):
    from refine_cli.api import load_refiner

    image, boxes, masks = blobs(64, 80)
    keep = load_refiner(_confident_gate_checkpoint(tmp_path / "sure.pt", keep_above=0.5))
    assert np.array_equal(keep.refine(image, boxes, masks), masks)
    refine_all = load_refiner(_confident_gate_checkpoint(tmp_path / "all.pt", keep_above=1.0))
    assert not np.array_equal(refine_all.refine(image, boxes, masks), masks)


def test_keep_threshold_is_the_lowest_clean_estimate():
    from refine_cli.train.gate import GATE_SIMULATIONS

    n = 4 * len(GATE_SIMULATIONS)
    mode = torch.arange(n) % len(GATE_SIMULATIONS)
    clean = torch.tensor([GATE_SIMULATIONS[int(m)][0] in ("perfect", "polygon") for m in mode])
    # an estimate read off log_size: clean instances 0.5237..0.9, the rest 0.1 (which must not count)
    estimate = torch.where(clean, torch.linspace(0.9, 0.5237, n), torch.full((n,), 0.1))
    gt = (_disc(n) * 255).to(torch.uint8)
    cache = GateCache(coarse=gt, refined=gt, gt=gt, rgb=torch.zeros(n, 3, 112, 112, dtype=torch.int8),
                      log_size=torch.stack([estimate, estimate], 1), mode=mode, image=torch.zeros(n, dtype=torch.long))

    def gate(coarse, refined, rgb, log_size):
        return torch.ones_like(coarse), log_size[:, 0]

    lowest = float(estimate[clean].min())
    assert lowest_clean_estimate(gate, cache, chunk=5) == lowest
    # without calibration folds: the gate's own lowest clean estimate, floored
    threshold, folds = calibrated_keep_threshold(SimpleNamespace(gate=gate), cache, 0, steps=1, batch_size=1,
                                                 lr=0.0, seed=0)
    assert threshold == np.floor(lowest * 1000) / 1000 < lowest and folds == []


def test_calibration_folds_hold_out_whole_images(monkeypatch):
    """Each fold's gate is trained without the images it then estimates; the threshold is below every
    estimate, in-sample and held-out."""
    import refine_cli.train.gate as gate_module

    gt = _disc(24)
    notched = gt.clone()
    notched[..., 40:72, 56:] = 0
    mode = torch.arange(24) % 2 * 4  # perfect (clean) and realistic, alternating
    cache = _cache(torch.where(mode[:, None, None, None] == 0, gt, notched), gt, gt, mode, images=4)
    model = attach_gate(RefineMask(tiny_config(gate_channels=4)))
    train_gate(model, cache, steps=10, batch_size=8, lr=5e-3)
    trained_on = []
    fit = gate_module.train_gate

    def spy(m, c, **kw):
        trained_on.append(set(c.image.tolist()))
        return fit(m, c, **kw)

    monkeypatch.setattr(gate_module, "train_gate", spy)
    threshold, per_fold = calibrated_keep_threshold(model, cache, 2, steps=10, batch_size=8, lr=5e-3, seed=0)
    assert trained_on == [{1, 3}, {0, 2}]  # fold k leaves out the images with index % 2 == k
    assert len(per_fold) == 2
    in_sample = lowest_clean_estimate(model.gate, cache)
    assert threshold == np.floor(min([in_sample, *per_fold]) * 1000) / 1000
    # the first fold's estimate is what a gate trained on images 1 and 3 gives the clean masks of 0 and 2
    fold0 = attach_gate(RefineMask(tiny_config(gate_channels=4)))
    fit(fold0, cache.subset(cache.image % 2 == 1), steps=10, batch_size=8, lr=5e-3, seed=0)
    assert per_fold[0] == pytest.approx(lowest_clean_estimate(fold0.gate, cache.subset(cache.image % 2 == 0)))
