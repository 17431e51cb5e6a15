"""`refine-masks merge`: join the parts of a `run --shard K/N` into exactly the unsharded output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .coco_io import InputError
from .shard import group_images, read_manifest
from .stream_json import RecordIndex, index_records, iter_records, write_document


def merge_parts(predictions: Path, parts: list[Path], output: Path) -> int:
    """Write ``output`` from the N parts of ``predictions``; -> the number of records.

    Refused with an InputError naming the part: a part of another input or another N, two parts of
    one shard, a missing shard, a part whose records are not its shard's records.
    """
    index = index_records(predictions)
    by_shard = _check_manifests(index, parts)
    n = len(by_shard)
    groups = group_images(index.image_ids)
    shard_of_group = np.arange(len(groups)) % n  # as shard.shard_images assigns them (0-based here)
    shard_of_record = np.empty(len(index), np.int64)
    shard_of_record[groups.order] = np.repeat(shard_of_group, np.diff(groups.starts))
    expected = np.bincount(shard_of_record, minlength=n)
    streams = []
    for k in range(n):
        part = by_shard[k + 1]
        part_index = index_records(part)
        if len(part_index) != expected[k]:
            raise InputError(f"{part}: {len(part_index)} records, but shard {k + 1}/{n} of {predictions} "
                             f"has {expected[k]}")
        streams.append((part, iter_records(part_index, range(len(part_index)))))
    write_document(output, index.head, _interleave(index, shard_of_record, streams))
    return len(index)


def _check_manifests(index: RecordIndex, parts: list[Path]) -> dict[int, Path]:
    """-> shard K -> its part, every K of 1..N present once, all of ``index``'s input."""
    by_shard: dict[int, Path] = {}
    n = None
    for part in parts:
        manifest = read_manifest(part)
        k = manifest["shard"]
        if manifest["input_sha256"] != index.sha256:
            raise InputError(f"{part}: a part of another input, not of {index.path}")
        if n is not None and manifest["of"] != n:
            raise InputError(f"{part}: shard {k}/{manifest['of']}, but {by_shard[next(iter(by_shard))]} "
                             f"is one of {n}")
        n = manifest["of"]
        if k in by_shard:
            raise InputError(f"{part}: shard {k}/{n} twice (also {by_shard[k]})")
        by_shard[k] = part
    missing = [k for k in range(1, (n or 0) + 1) if k not in by_shard]
    if missing:
        raise InputError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {n} "
                         f"missing: pass all {n} parts of {index.path}")
    return by_shard


def _interleave(index: RecordIndex, shard_of_record: np.ndarray,
                streams: list[tuple[Path, Iterator[dict]]]) -> Iterator[dict]:
    """The input's records in input order, each taken from its shard's part (which holds them in order)."""
    taken = [0] * len(streams)
    for i, k in enumerate(shard_of_record):
        part, records = streams[k]
        record = next(records)
        if record.get("image_id") != index.image_ids[i]:
            raise InputError(f"{part}: record {taken[k]}: image_id {record.get('image_id')}, but the input's "
                             f"record {i} has {index.image_ids[i]}: not a part of this input")
        taken[k] += 1
        yield record
