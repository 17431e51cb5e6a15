"""Start a checkpoint on another backbone: ImageNet weights for the new backbone, every other tensor
kept from the old checkpoint where its shape still fits, the FPN's lateral 1x1 convs fresh.

    python weights/swap_backbone.py runs/c1_half.pt runs/l2_init.pt --backbone efficientnet_lite2

The laterals are the only layers that read the backbone's taps, so they are the only ones whose
input changes meaning; the FPN's 3x3 output convs, the semantic branch and the cascade see the
laterals' GroupNorm-ed 64 channels as before and keep what they learned. The quality gate is left
out (it was fitted to the old cascade's outputs; ``train-gate`` fits a new one). Then ``train --init``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from refine_cli.model.backbone import BACKBONES
from refine_cli.model.checkpoint import load_checkpoint, save_checkpoint
from refine_cli.model.config import RefineMaskConfig
from refine_cli.model.refinemask import RefineMask

# Not taken from the old checkpoint: the new backbone (ImageNet), its laterals (fresh), the gate (left out).
_NOT_KEPT = ("backbone.body.", "backbone.fpn.inner_blocks.", "gate.")


def swapped(old: RefineMask, backbone: str, seed: int) -> RefineMask:
    """``old``'s weights on ``backbone`` (ImageNet init), fresh laterals, no gate."""
    cfg = RefineMaskConfig.from_dict({**old.cfg.to_dict(), "backbone": backbone, "quality_gate": False})
    torch.manual_seed(seed)  # the fresh laterals' init
    model = RefineMask(cfg)
    model.backbone.load_pretrained()
    state = model.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if not k.startswith(_NOT_KEPT)}
    misfit = [k for k, v in kept.items() if state[k].shape != v.shape]
    if misfit:
        raise SystemExit(f"shapes differ beyond the backbone and laterals: {misfit[:3]}")
    model.load_state_dict({**state, **kept})
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--backbone", choices=[b for b in BACKBONES if b.startswith("efficientnet")], required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--half", action="store_true", help="store fp16 tensors (half the size, for a device trip)")
    args = parser.parse_args()
    old, ckpt = load_checkpoint(args.checkpoint)
    model = swapped(old, args.backbone, args.seed)
    meta = {"swapped_from": {"checkpoint": str(args.checkpoint), "backbone": old.cfg.backbone,
                             "seed": args.seed, "meta": ckpt.get("meta", {})}}
    save_checkpoint(args.out, model, meta=meta, half=args.half)
    print(f"{args.out}: {old.cfg.backbone} -> {args.backbone}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
