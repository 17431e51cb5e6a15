"""Checkpoint = {"format", "config", "state_dict", "meta"}, loadable with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import RefineMaskConfig
from .refinemask import RefineMask

FORMAT = "refine-masks/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "refinemask_effl0.pt"  # the shipped checkpoint


class CheckpointError(Exception):
    """The file is not a usable refine-masks checkpoint; the message says why."""


def save_checkpoint(path: str | os.PathLike, model: RefineMask, meta: dict | None = None,
                    half: bool = False, extra: dict | None = None) -> None:
    """Write atomically (temp file + rename). ``half`` stores float tensors as fp16 (shipping size)."""
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": state, "meta": meta or {}}
    ckpt.update(extra or {})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu", overrides: dict | None = None
                    ) -> tuple[RefineMask, dict]:
    """-> (model in eval mode, checkpoint dict). Raises CheckpointError on any mismatch.

    ``overrides``: config fields to change (e.g. the BAR widths before fine-tuning); the stored
    weights must still fit the changed config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a refine-masks checkpoint (expected format {FORMAT!r})")
    try:
        # Checkpoints from before roi_sampling_ratio existed were trained with adaptive sampling.
        cfg = RefineMaskConfig.from_dict({"roi_sampling_ratio": 0, **ckpt["config"], **(overrides or {})})
        model = RefineMask(cfg)
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: config and weights do not match ({e})") from e
    return model.eval(), ckpt
