"""Training samples: COCO-format sets -> (image, RoIs, coarse crops, GT crops, semantic target)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..boxes import crop_masks
from ..coco_io import decode_mask, mask_box
from ..images import load_image
from ..inputs import to_input
from ..model.config import RefineMaskConfig
from ..refiner import coarse_inputs
from .simulate import simulate

# Strength of the realistic mode's noise, drawn per instance around the evaluation's 0.25 (training and the gate).
REALISTIC_NOISE = (0.1, 0.35)
DEFAULT_MODE_PROBS = {"resolution": 0.4, "realistic": 0.35, "polygon": 0.1, "box": 0.15}


@dataclass
class ImageEntry:
    path: Path
    height: int
    width: int
    anns: list[dict]  # non-crowd annotations with a segmentation
    complete: bool  # every object of the image is annotated


def parse_set(spec: str) -> tuple[Path, int]:
    """'DIR' or 'DIR*K' -> (DIR, K): K repeats of the set's images per epoch (oversampling)."""
    root, star, times = spec.rpartition("*")
    if star and times.isdigit() and int(times) >= 1:
        return Path(root), int(times)
    return Path(spec), 1


def annotation_file(root: Path) -> Path:
    """A set's ``instances.json``, or the only other ``*.json`` beside ``images/``."""
    ann_file = root / "instances.json"
    if ann_file.exists():
        return ann_file
    candidates = sorted(p for p in root.glob("*.json") if p.name != "provenance.json")
    if len(candidates) != 1:
        raise FileNotFoundError(f"{root}: no instances.json (found {[p.name for p in candidates]})")
    return candidates[0]


def trainable_annotations(data: dict) -> dict[int, list[dict]]:
    """A COCO dict's non-crowd annotations with a segmentation, by image id (crowd regions are ignored)."""
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0) and a.get("segmentation"):
            by_image.setdefault(a["image_id"], []).append(a)
    return by_image


def load_sets(specs: list[str | Path]) -> list[ImageEntry]:
    """Read each COCO-format set (``instances.json`` or the only ``*.json`` beside ``images/``).

    A spec ``DIR*K`` lists that set's images K times.
    """
    entries = []
    for spec in specs:
        root, times = parse_set(str(spec))
        data = json.loads(annotation_file(root).read_text())
        by_image = trainable_annotations(data)
        for im in data["images"]:
            if im["id"] in by_image:
                entries += [ImageEntry(root / "images" / im["file_name"], im["height"], im["width"],
                                       by_image[im["id"]], bool(im.get("annotation_complete", True)))] * times
    return entries


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by U(0.75, 1.25)."""
    x = image.astype(np.float32)
    x = x * rng.uniform(0.75, 1.25)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.75, 1.25) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * rng.uniform(0.75, 1.25) + gray
    return np.clip(x, 0, 255).astype(np.uint8)


class RefineDataset(Dataset):
    """One item per image: up to ``max_instances`` instances, each with ``copies`` simulated coarse masks.

    Deterministic: item i of epoch e draws from ``default_rng([seed, e, i])``.
    """

    def __init__(self, entries: list[ImageEntry], cfg: RefineMaskConfig, *, seed: int = 0,
                 max_instances: int = 12, copies: int = 3, min_area: float = 64.0,
                 mode_probs: dict[str, float] | None = None, realistic_noise=REALISTIC_NOISE):
        self.entries, self.cfg, self.seed, self.copies = entries, cfg, seed, copies
        # A range of noise around the evaluation's 0.25: the head sees a continuum from nearly
        # clean to badly wrong masks and has to judge each from the image, not from the mode.
        self.realistic_noise = realistic_noise
        self.max_instances, self.min_area = max_instances, min_area
        # Scale jitter around the inference scale: 416-544 px for the default 480.
        self.short_sides = (cfg.short_side * 13 / 15, cfg.short_side * 17 / 15)
        probs = mode_probs or DEFAULT_MODE_PROBS
        self.modes, self.probs = list(probs), np.array(list(probs.values())) / sum(probs.values())
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        e, cfg = self.entries[i], self.cfg
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = colour_jitter(load_image(e.path), rng)
        h, w = image.shape[:2]
        masks = [decode_mask(a, h, w, where=f"{e.path.name}: ann {a.get('id')}") for a in e.anns]
        flip = rng.random() < 0.5
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
            masks = [np.ascontiguousarray(m[:, ::-1]) for m in masks]
        union = np.zeros((h, w), np.uint8)
        for m in masks:
            union |= m
        keep = [k for k, m in enumerate(masks) if m.sum() >= self.min_area]
        keep = list(rng.permutation(keep)[: self.max_instances])
        gts, boxes, coarse = [], [], []
        for k in keep:
            gt_box = np.array(mask_box(masks[k]))
            # Several simulations per instance: head supervision is cheap next to the image's backbone pass.
            for _ in range(self.copies):
                mode = self.modes[rng.choice(len(self.modes), p=self.probs)]
                c, box = simulate(masks[k], gt_box, mode, rng, noise=rng.uniform(*self.realistic_noise))
                gts.append(masks[k]), boxes.append(box), coarse.append(c)
        scale = rng.uniform(*self.short_sides) / min(h, w)
        scale = min(scale, cfg.max_size / max(h, w))
        x = to_input(image, scale, cfg.size_divisibility)[0]
        sem = self._semantic(union, scale, x.shape)
        frames, grids = coarse_inputs(np.array(boxes).reshape(-1, 4), coarse, cfg.box_expand, cfg.stage_sizes[-1])
        return {
            "image": x,
            "rois": frames * scale,
            "coarse": grids,
            "gt": crop_masks(gts, frames, cfg.stage_sizes[-1]),
            "sem_target": sem,
            "sem_weight": torch.tensor(float(e.complete)),
        }

    @staticmethod
    def _semantic(union: np.ndarray, scale: float, shape) -> torch.Tensor:
        """Union of instance masks at 1/4 of the padded input: (1, H'/4, W'/4) in [0, 1]."""
        h, w = union.shape
        nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
        m = cv2.resize(union.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
        m = F.pad(torch.from_numpy(m), (0, shape[2] - nw, 0, shape[1] - nh))
        return F.avg_pool2d(m[None, None], 4)[0]


def collate(items: list[dict]) -> dict:
    """Pad images (and semantic targets) to the largest in the batch; give RoIs their batch index."""
    hmax = max(it["image"].shape[1] for it in items)
    wmax = max(it["image"].shape[2] for it in items)
    images, sems, rois = [], [], []
    for b, it in enumerate(items):
        _, h, w = it["image"].shape
        images.append(F.pad(it["image"], (0, wmax - w, 0, hmax - h)))
        sems.append(F.pad(it["sem_target"], (0, wmax // 4 - w // 4, 0, hmax // 4 - h // 4)))
        rois.append(torch.cat([torch.full((len(it["rois"]), 1), float(b)), it["rois"]], dim=1))
    return {
        "images": torch.stack(images),
        "rois": torch.cat(rois),
        "coarse": torch.cat([it["coarse"] for it in items]),
        "gt": torch.cat([it["gt"] for it in items]),
        "sem_target": torch.stack(sems),
        "sem_weight": torch.stack([it["sem_weight"] for it in items]),
    }
