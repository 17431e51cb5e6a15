"""Images grouped in order of first appearance, split into N disjoint deterministic shards, and the
manifest that tells `merge` which shard of which input a part file holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coco_io import InputError, write_json_atomic


@dataclass
class ImageGroups:
    """Records grouped by image: image ``g`` (in order of first appearance) is ``ids[g]`` and owns the
    record indices ``order[starts[g]:starts[g + 1]]`` (ascending). numpy throughout: a few bytes per record."""

    ids: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def records(self, g: int) -> np.ndarray:
        return self.order[self.starts[g]:self.starts[g + 1]]


def group_images(image_ids: np.ndarray) -> ImageGroups:
    unique, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first, kind="stable")
    group_of_unique = np.empty(len(unique), np.int64)
    group_of_unique[by_appearance] = np.arange(len(unique))
    group = group_of_unique[inverse.reshape(-1)]
    order = np.argsort(group, kind="stable")
    starts = np.concatenate(([0], np.cumsum(np.bincount(group, minlength=len(unique)))))
    return ImageGroups(ids=unique[by_appearance], order=order, starts=starts)


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" (1 <= K <= N) -> (K, N); ValueError with the reason otherwise."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"expected K/N, e.g. 2/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_images(n_images: int, k: int, n: int) -> np.ndarray:
    """Image positions of shard K of N: every N-th image in order of appearance, so shards are
    disjoint, cover every image, and balance by image count whatever the order of the file."""
    return np.arange(k - 1, n_images, n)


def manifest_path(part: Path) -> Path:
    return part.with_name(part.name + ".shard.json")


def write_manifest(part: Path, k: int, n: int, input_sha256: str, n_records: int) -> None:
    """Beside the part: what `merge` checks before trusting it (a COCO results list has no room for it)."""
    write_json_atomic(manifest_path(part), {"shard": k, "of": n, "input_sha256": input_sha256, "records": n_records})


def read_manifest(part: Path) -> dict:
    path = manifest_path(part)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{part}: no {path.name} beside it: not a part written by `run --shard`") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable shard manifest ({exc})") from exc
    if not (isinstance(manifest, dict) and {"shard", "of", "input_sha256", "records"} <= manifest.keys()):
        raise InputError(f"{path}: not a shard manifest")
    return manifest


def sharded_output_name(output: Path, k: int, n: int) -> Path:
    """Default part name: refined.json -> refined.shard-2-of-8.json."""
    return output.with_name(f"{output.stem}.shard-{k}-of-{n}{output.suffix}")

