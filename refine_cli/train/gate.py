"""Training the quality gate on a frozen cascade: cache the cascade's outputs once, then fit the gate.

The gate's inputs (coarse crop, cascade output, RGB crop, RoI size) do not change while the cascade
is frozen, so each simulated instance costs one backbone share and one head pass, not one per step.
The cache holds every instance under each simulation mode, including perfect masks on the GT box
and on a jittered box: the inputs on which refining must change (almost) nothing.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import crop_masks
from ..coco_io import decode_mask, mask_box
from ..images import load_image
from ..inputs import input_scale, to_input
from ..model.checkpoint import torch_save_atomic
from ..model.quality_gate import QualityGate, roi_log_size
from ..model.refinemask import RefineMask
from ..refiner import coarse_inputs
from .data import REALISTIC_NOISE, ImageEntry
from .simulate import simulate

# (mode, box jitter) per simulated copy of every instance. Perfect masks come twice: on the GT box
# (a perfect detector) and on a jittered box (a good mask from a detector with ordinary boxes).
GATE_SIMULATIONS = (("perfect", 0.0), ("perfect", 0.03), ("polygon", 0.03), ("resolution", 0.03),
                    ("realistic", 0.03), ("box", 0.03))
# Bumped when GateCache gains a field: a cache of an older layout is rebuilt, not misread.
CACHE_FORMAT = 2


@dataclass
class GateCache:
    """N cached instances at S x S (S = the last stage size), stored compactly.

    coarse, refined, gt: (N, 1, S, S) uint8 (probability x 255); rgb: (N, 3, S, S) int8 (normalised
    crop x 127); log_size: (N, 2) float32; mode: (N,) index into GATE_SIMULATIONS; image: (N,) index of
    the training image the instance is from (calibration holds out whole images).
    """

    coarse: torch.Tensor
    refined: torch.Tensor
    gt: torch.Tensor
    rgb: torch.Tensor
    log_size: torch.Tensor
    mode: torch.Tensor
    image: torch.Tensor

    def __len__(self) -> int:
        return len(self.coarse)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Field name -> tensor, not copied (``dataclasses.asdict`` deep-copies every tensor)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def subset(self, idx: torch.Tensor) -> GateCache:
        """The instances ``idx`` (indices or a boolean mask) as a cache of their own."""
        return GateCache(**{name: t[idx] for name, t in self.tensors().items()})

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Float tensors of instances ``idx``: coarse, refined, gt in [0, 1], rgb normalised, log_size."""
        return (self.coarse[idx].float() / 255, self.refined[idx].float() / 255, self.gt[idx].float() / 255,
                self.rgb[idx].float() / 127, self.log_size[idx])


def _key_text(key: dict) -> str:
    return json.dumps({**key, "cache_format": CACHE_FORMAT}, sort_keys=True)


def save_cache(path: str | os.PathLike, cache: GateCache, key: dict) -> None:
    """Write ``cache`` with the ``key`` it was made from (atomically: temp file + rename)."""
    torch_save_atomic({"key": _key_text(key), **cache.tensors()}, path)


def load_cache(path: str | os.PathLike, key: dict) -> GateCache | None:
    """The cache at ``path`` if it was made from ``key`` in this layout, else None (it is then rebuilt)."""
    data = torch.load(path, weights_only=True)
    if data.pop("key", None) != _key_text(key):
        return None
    return GateCache(**data)


def _quantise(x: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    return (x * scale).round().to(dtype)


@torch.inference_mode()
def build_cache(model: RefineMask, entries: list[ImageEntry], seed: int, min_area: float = 64.0,
                progress=None) -> GateCache:
    """Run the frozen cascade on every instance of ``entries`` under each of GATE_SIMULATIONS.

    Images at the inference scale (no augmentation); entry i draws from ``default_rng([seed, i])``
    (a set listed K times gives K different simulations of each instance).
    """
    cfg, size = model.cfg, model.cfg.stage_sizes[-1]
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(GateCache)}
    for i, e in enumerate(entries):
        rng = np.random.default_rng([seed, i])
        image = load_image(e.path)
        h, w = image.shape[:2]
        masks = [decode_mask(a, h, w, where=f"{e.path.name}: ann {a.get('id')}") for a in e.anns]
        masks = [m for m in masks if m.sum() >= min_area]
        gts, boxes, coarse, modes = [], [], [], []
        for m in masks:
            gt_box = np.array(mask_box(m), dtype=np.float64)
            for k, (mode, sigma) in enumerate(GATE_SIMULATIONS):
                c, box = simulate(m, gt_box, mode, rng, box_sigma=sigma, noise=rng.uniform(*REALISTIC_NOISE))
                gts.append(m), boxes.append(box), coarse.append(c), modes.append(k)
        if gts:
            scale = input_scale(h, w, cfg.short_side, cfg.max_size)
            feats = model.extract(to_input(image, scale, cfg.size_divisibility))
            frames, grids = coarse_inputs(np.array(boxes).reshape(-1, 4), coarse, cfg.box_expand, size)
            rois = torch.cat([torch.zeros(len(frames), 1), frames * scale], dim=1)
            parts["coarse"].append(_quantise(grids, 255, torch.uint8))
            parts["refined"].append(_quantise(model.cascade_probs(feats, rois, grids), 255, torch.uint8))
            parts["gt"].append(_quantise(crop_masks(gts, frames, size), 255, torch.uint8))
            parts["rgb"].append(_quantise(model.rgb_crop(feats, rois).clamp(-1, 1), 127, torch.int8))
            parts["log_size"].append(roi_log_size(rois))
            parts["mode"].append(torch.tensor(modes))
            parts["image"].append(torch.full((len(modes),), i))
        if progress:
            progress(i + 1, len(entries))
    return GateCache(**{k: torch.cat(v) for k, v in parts.items()})


def coarse_iou(coarse: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binarised (N, 1, S, S) coarse and GT crops: (N,), 1 where both are empty."""
    c, g = coarse >= 0.5, gt >= 0.5
    inter = (c & g).sum(dim=(1, 2, 3)).float()
    union = (c | g).sum(dim=(1, 2, 3)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def gate_loss(gate_out: tuple[torch.Tensor, torch.Tensor], coarse, refined, gt,
              quality_weight: float = 0.1) -> dict[str, torch.Tensor]:
    """BCE of the blended mask against the GT crop, plus BCE of the quality estimate against the
    coarse mask's IoU. The blend's gradient lives only where coarse and refined differ: the gate
    learns whom to trust exactly where the choice matters."""
    gate, quality = gate_out
    blend = (gate * refined + (1 - gate) * coarse).clamp(1e-6, 1 - 1e-6)
    return {"mask": F.binary_cross_entropy(blend, (gt >= 0.5).float()),
            "quality": quality_weight * F.binary_cross_entropy(quality, coarse_iou(coarse, gt))}


def train_gate(model: RefineMask, cache: GateCache, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
               seed: int = 0, progress=None) -> dict:
    """Fit ``model.gate`` on ``cache`` (AdamW, cosine to 1 %); the rest of the model is untouched.

    Returns the mean losses of the last 10 % of steps and the seconds taken.
    """
    gate = model.gate
    gate.train()
    opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    start, tail = time.perf_counter(), []
    for step in range(steps):
        idx = torch.randint(len(cache), (batch_size,), generator=gen)
        coarse, refined, gt, rgb, log_size = cache.batch(idx)
        losses = gate_loss(gate(coarse, refined, rgb, log_size), coarse, refined, gt)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - max(steps // 10, 1):
            tail.append({k: float(v.detach()) for k, v in losses.items()})
        if progress:
            progress(step + 1, steps, {k: float(v.detach()) for k, v in losses.items()})
    gate.eval()
    return {**{k: float(np.mean([t[k] for t in tail])) for k in tail[0]}, "seconds": time.perf_counter() - start}


@torch.inference_mode()
def lowest_clean_estimate(gate: QualityGate, cache: GateCache, chunk: int = 512) -> float:
    """The lowest estimate ``gate`` gives any clean simulation of ``cache`` (perfect and polygon masks:
    the cascade only ever loses on them); 1.0 if there is none."""
    clean = [k for k, (mode, _) in enumerate(GATE_SIMULATIONS) if mode in ("perfect", "polygon")]
    idx = torch.nonzero(torch.isin(cache.mode, torch.tensor(clean)))[:, 0]
    lowest = 1.0
    for start in range(0, len(idx), chunk):
        coarse, refined, _, rgb, log_size = cache.batch(idx[start:start + chunk])
        lowest = min(lowest, float(gate(coarse, refined, rgb, log_size)[1].min()))
    return lowest


def _floor3(x: float) -> float:
    return float(np.floor(x * 1000) / 1000)


def calibrated_keep_threshold(model: RefineMask, cache: GateCache, folds: int, *, steps: int, batch_size: int,
                              lr: float, seed: int, progress=None) -> tuple[float, list[float]]:
    """The keep threshold: just below (floored to 3 decimals) the lowest estimate of any clean training
    simulation, by ``model.gate`` and, for each of ``folds`` folds of the training images (image index
    mod ``folds``), by a gate trained as ``model``'s was on the other images.

    Refining only what looks worse than every clean training mask trades part of the gain on blobby
    masks for leaving good masks alone, the order of priorities of a refiner run on an unknown
    detector. A gate estimates the clean masks of its own training images higher than those of new
    images, so the in-sample lowest can leave new good masks (thin and tiny objects most) just under it.
    -> (threshold, the lowest held-out clean estimate of each fold that holds an image);
    ``progress(fold, step, steps)`` reports each fold's training.
    """
    lowest = [lowest_clean_estimate(model.gate, cache)]
    per_fold = []
    for fold in range(folds):
        held = cache.image % folds == fold
        if not held.any():  # fewer images than folds
            continue
        fold_model = attach_gate(copy.deepcopy(model), seed)
        train_gate(fold_model, cache.subset(~held), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                   progress=progress and (lambda i, n, _, fold=fold: progress(fold, i, n)))
        per_fold.append(lowest_clean_estimate(fold_model.gate, cache.subset(held)))
    return _floor3(min(lowest + per_fold)), per_fold


def attach_gate(model: RefineMask, seed: int = 0) -> RefineMask:
    """Give ``model`` a freshly initialised gate (``quality_gate`` on in its config), in place."""
    model.cfg = replace(model.cfg, quality_gate=True)
    model.head.cfg = model.cfg
    with torch.random.fork_rng():  # seeded init without touching the caller's random stream
        torch.manual_seed(seed)
        model.gate = QualityGate(model.cfg.gate_channels)
    return model
