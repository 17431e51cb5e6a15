"""`refine-masks train` smoke test: a tiny config on a two-image set made in code."""

from __future__ import annotations

import csv
import json
import re

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.coco_io import encode_mask
from refine_cli.model.checkpoint import load_checkpoint
from refine_cli.model.config import tiny_config


@pytest.fixture
def tiny_set(tmp_path):
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(2):
        h, w = 96, 128
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for k in range(3):
            m = np.zeros((h, w), np.uint8)
            cx, cy = int(rng.integers(25, 100)), int(rng.integers(20, 75))
            cv2.ellipse(m, (cx, cy), (int(rng.integers(10, 22)), int(rng.integers(8, 18))), 30.0 * k, 0, 360, 1, -1)
            img[m > 0] = (200, 120 + 40 * k, 60)  # objects stand out: the net can learn their edges
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                         "area": int(m.sum()), "segmentation": encode_mask(m)})
        cv2.imwrite(str(root / "images" / f"{i + 1}.png"), img[:, :, ::-1])
        images.append({"id": i + 1, "file_name": f"{i + 1}.png", "height": h, "width": w})
    (root / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "blob"}]}))
    return root


def _train(root, out, *extra):
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in tiny_config().to_dict().items()}
    args = ["train", "--data", str(root), "--val", str(root), "--out", str(out), "--epochs", "100",
            "--lr", "3e-3", "--workers", "0", "--no-pretrained", "--config", json.dumps(cfg), *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _losses(path):
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_train_loss_falls_and_checkpoint_round_trips(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    res = _train(tiny_set, out, "--max-steps", "40", "--val-every", "20")
    assert res.exit_code == 0, res.output
    # stderr is no terminal here, as in a log: progress comes as lines (the first step's at once, the end's).
    assert re.search(r"^training steps: 1/40 \(2%\) stage0 \d", res.output, re.M), res.output
    assert re.search(r"^training steps: 40/40 \(100%\)", res.output, re.M), res.output
    losses = _losses(out.with_suffix(".csv"))
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    model, ckpt = load_checkpoint(out)
    assert model.cfg == tiny_config()
    assert ckpt["meta"]["best"]["step"] in (20, 40)
    assert set(ckpt["meta"]["best"]["metrics"]) == {"resolution", "realistic"}
    assert ckpt["meta"]["environment"]["numpy"] == np.__version__


def test_train_resume_continues_where_it_stopped(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    assert _train(tiny_set, out, "--max-steps", "6").exit_code == 0
    res = _train(tiny_set, out, "--max-steps", "10", "--resume", str(out.with_suffix(".last.pt")))
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output
    with open(out.with_suffix(".csv")) as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 11))
    # The tiny config given again is the run's own; a changed field is refused, not ignored.
    changed = _train(tiny_set, out, "--max-steps", "12", "--resume", str(out.with_suffix(".last.pt")),
                     "--config", '{"bar_train_width": 3}')
    assert changed.exit_code == 2 and "bar_train_width" in changed.output and "Traceback" not in changed.output


def test_train_config_must_be_a_json_object(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"),
                                    "--config", "5"])
    assert res.exit_code == 2 and "JSON object" in res.output


def test_train_bad_data_dir_is_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m.pt"),
                                    "--no-pretrained"])
    assert res.exit_code == 2 and "none" in res.output and "Traceback" not in res.output


def test_train_init_starts_from_checkpoint_weights_with_fresh_schedule(tiny_set, tmp_path):
    first = tmp_path / "a.pt"
    assert _train(tiny_set, first, "--max-steps", "4").exit_code == 0
    second = tmp_path / "b.pt"
    res = _train(tiny_set, second, "--max-steps", "2", "--init", str(first.with_suffix(".last.pt")))
    assert res.exit_code == 0, res.output
    with open(second.with_suffix(".csv")) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2]  # a new run, not a resumed one
    changed = tmp_path / "c.pt"
    res = _train(tiny_set, changed, "--max-steps", "2", "--init", str(first), "--config", '{"bar_train_width": 3}')
    assert res.exit_code == 0, res.output
    assert load_checkpoint(changed)[0].cfg.bar_train_width == 3  # --config changes the init checkpoint's config
    both = _train(tiny_set, second, "--init", str(first), "--resume", str(first))
    assert both.exit_code == 2 and "not both" in both.output


def test_load_sets_repeats_a_set_given_as_dir_times_k(tiny_set):
    from pathlib import Path

    from refine_cli.train.data import load_sets, parse_set

    assert parse_set("a/b*3") == (Path("a/b"), 3)
    assert parse_set("odd*name") == (Path("odd*name"), 1)
    once, thrice = load_sets([tiny_set]), load_sets([f"{tiny_set}*3"])
    assert len(thrice) == 3 * len(once) and [e.path for e in thrice[::3]] == [e.path for e in once]


def test_train_bf16_autocast_runs_on_cpu(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    res = _train(tiny_set, out, "--max-steps", "3", "--precision", "bf16")
    assert res.exit_code == 0, res.output
    assert all(np.isfinite(_losses(out.with_suffix(".csv"))))


def _body_params(model):
    return {k: v.clone() for k, v in model.backbone.body.state_dict().items() if v.is_floating_point()}


def test_train_backbone_from_trains_only_the_coarse_layers_and_resume_keeps_them(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    res = _train(tiny_set, out, "--max-steps", "3", "--val-every", "100", "--train-backbone-from", "16")
    assert res.exit_code == 0, res.output
    init = _body_params(load_checkpoint(out.with_suffix(".last.pt"))[0])
    res = _train(tiny_set, out, "--max-steps", "6", "--val-every", "100", "--resume", str(out.with_suffix(".last.pt")))
    assert res.exit_code == 0, res.output  # the optimiser state fits: the same parameters train
    after = _body_params(load_checkpoint(out.with_suffix(".last.pt"))[0])
    changed = {k for k in init if not torch.equal(init[k], after[k])}
    # Lite0's blocks 5-10 run at stride 16 and 11-15 at 32; the stem and blocks 0-4 at 2 to 8.
    trained = {f"_blocks.{i}." for i in range(5, 16)}
    assert changed and all(any(k.startswith(p) for p in trained) for k in changed)
    assert not any("running" in k for k in changed)  # BatchNorm statistics stay fixed
    frozen = [k for k in init if k.startswith(("_conv_stem", "_blocks.0.", "_blocks.4."))]
    assert frozen and not changed & set(frozen)


def test_backbone_lr_scales_the_backbone_group_and_resume_keeps_it(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    args = ("--val-every", "100", "--train-backbone-from", "16", "--lr", "1e-3")
    res = _train(tiny_set, out, "--max-steps", "3", *args, "--backbone-lr", "0.25")
    assert res.exit_code == 0, res.output
    last = out.with_suffix(".last.pt")

    def initial_lrs():
        return [g["initial_lr"] for g in torch.load(last, weights_only=False)["optimizer"]["param_groups"]]

    assert initial_lrs() == pytest.approx([1e-3, 2.5e-4])
    # Resuming without --backbone-lr keeps the run's factor (its optimiser state has two groups).
    res = _train(tiny_set, out, "--max-steps", "5", *args, "--resume", str(last))
    assert res.exit_code == 0, res.output
    assert initial_lrs() == pytest.approx([1e-3, 2.5e-4])


def test_backbone_lr_without_a_trained_backbone_is_a_usage_error(tiny_set, tmp_path):
    res = _train(tiny_set, tmp_path / "m.pt", "--max-steps", "1", "--backbone-lr", "0.5")
    assert res.exit_code == 2 and "--train-backbone-from" in res.output


def test_backbone_modules_from_stride():
    from refine_cli.model.backbone import EfficientNetLite, ResNetTaps

    lite = EfficientNetLite()
    blocks = list(lite._blocks)
    assert [blocks.index(m) for m in lite.modules_from(32)] == [11, 12, 13, 14, 15]
    assert [blocks.index(m) for m in lite.modules_from(4)] == list(range(1, 16))
    assert len(lite.modules_from(2)) == 2 + 16  # stem conv + BN, every block
    resnet = ResNetTaps("resnet18")
    assert resnet.modules_from(16) == [resnet.body.layer3, resnet.body.layer4]


def test_train_ema_validates_and_saves_the_average_and_resume_keeps_it(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    res = _train(tiny_set, out, "--max-steps", "4", "--val-every", "4", "--ema", "0.5")
    assert res.exit_code == 0, res.output
    best, ckpt = load_checkpoint(out)
    assert ckpt["meta"]["best"]["step"] == 4
    last = torch.load(out.with_suffix(".last.pt"), weights_only=True)
    raw, ema = last["state_dict"], last["ema"]
    assert int(ema["n_averaged"]) == 4
    trained = [k for k, v in best.state_dict().items() if k.startswith("head.") and v.is_floating_point()]
    # The saved best is the average (a 0.5-decay mean of steps 1-4), not the step-4 weights.
    assert all(torch.equal(best.state_dict()[k], ema[f"module.{k}"]) for k in trained)
    assert any(not torch.equal(best.state_dict()[k], raw[k]) for k in trained)
    res = _train(tiny_set, out, "--max-steps", "6", "--val-every", "100", "--resume", str(out.with_suffix(".last.pt")))
    assert res.exit_code == 0, res.output
    assert int(torch.load(out.with_suffix(".last.pt"), weights_only=True)["ema"]["n_averaged"]) == 6
    assert _train(tiny_set, out, "--ema", "1.0").exit_code == 2


def test_val_rank_puts_checkpoints_that_keep_good_masks_first():
    from refine_cli.train.loop import keeps_good_masks, val_rank

    def metrics(res_ap, res_bap, real_ap):
        return {"resolution": {"coarse": {"AP": 96.7, "BAP": 89.7}, "refined": {"AP": res_ap, "BAP": res_bap}},
                "realistic": {"coarse": {"AP": 63.3, "BAP": 50.5}, "refined": {"AP": real_ap, "BAP": 60.0}}}

    keeps, loses_ap, loses_bap = metrics(96.7, 90.0, 73.0), metrics(96.6, 90.0, 76.0), metrics(97.0, 89.6, 76.0)
    assert keeps_good_masks(keeps) and not keeps_good_masks(loses_ap) and not keeps_good_masks(loses_bap)
    assert val_rank(keeps) > val_rank(loses_ap) and val_rank(keeps) > val_rank(loses_bap)
    assert val_rank(metrics(96.8, 90.0, 74.0)) > val_rank(keeps)  # among those that keep: the higher score
    assert val_rank(loses_ap) > val_rank(metrics(96.0, 90.0, 75.0))  # among those that lose: the same


def test_train_keep_last_writes_the_last_validated_weights(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    res = _train(tiny_set, out, "--max-steps", "4", "--val-every", "1", "--ema", "0.5", "--keep", "last")
    assert res.exit_code == 0, res.output
    kept, ckpt = load_checkpoint(out)
    assert ckpt["meta"]["best"]["step"] == 4
    ema = torch.load(out.with_suffix(".last.pt"), weights_only=True)["ema"]
    assert all(torch.equal(v, ema[f"module.{k}"]) for k, v in kept.state_dict().items() if k.startswith("head."))
    assert _train(tiny_set, out, "--keep", "first").exit_code == 2
