"""Checkpoint = {"format", "config", "state_dict", "meta"}, loadable with ``weights_only=True``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .config import RefineMaskConfig
from .refinemask import RefineMask

FORMAT = "refine-masks/1"


class CheckpointError(Exception):
    """The file is not a usable refine-masks checkpoint; the message says why."""


def save_checkpoint(path: str | os.PathLike, model: RefineMask, meta: dict | None = None,
                    half: bool = False, extra: dict | None = None) -> None:
    """Write atomically (temp file + rename). ``half`` stores float tensors as fp16 (shipping size)."""
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": state, "meta": meta or {}}
    ckpt.update(extra or {})
    torch_save_atomic(ckpt, path)


def torch_save_atomic(obj: object, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside ``path``, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
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
        raise CheckpointError(f"{path}: {_why_unloadable(path, e)}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a refine-masks checkpoint (expected format {FORMAT!r})")
    try:
        # Checkpoints from before roi_sampling_ratio existed were trained with adaptive sampling.
        cfg = RefineMaskConfig.from_dict({"roi_sampling_ratio": 0, **ckpt["config"], **(overrides or {})})
        model = RefineMask(cfg)
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        _check_fit(state, model.state_dict(), path)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{path}: config and weights do not match ({_one_line(e)})") from e
    return model.eval(), ckpt


def _why_unloadable(path: Path, error: Exception) -> str:
    """One line on why torch.load failed, in place of torch's paragraphs.

    Those paragraphs advise ``weights_only=False``, i.e. executing whatever the file pickled: never the
    fix for a weights file, which holds only tensors and plain data.
    """
    unsafe = re.search(r"GLOBAL (\S+)", str(error))
    if unsafe:
        return f"holds a pickled Python object ({unsafe.group(1)}), not only tensors; not loaded, for safety"
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if zipped:
        return f"damaged or truncated torch file ({_one_line(error)})"
    return "not a torch checkpoint (corrupt, truncated, or another format)"


def _check_fit(state: dict, expected: dict, path: Path) -> None:
    """Missing, unexpected and wrongly shaped tensors counted in one line (load_state_dict lists every key)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        example = (missing or unexpected or reshaped)[0]
        raise CheckpointError(f"{path}: config and weights do not match: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(reshaped)} wrongly shaped tensors "
                              f"(first: {example!r})")


def _one_line(error: Exception) -> str:
    """The first sentence of an exception's message, at most 120 characters."""
    lines = str(error).strip().splitlines()
    line = re.split(r"(?<=\.)\s", lines[0])[0] if lines else type(error).__name__
    return line if len(line) <= 120 else line[:117] + "..."
