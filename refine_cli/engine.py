"""The record loop of `run`: one image at a time through the refiner, records kept but for their masks."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .coco_io import (
    BoxMask,
    InputError,
    Predictions,
    decode_mask,
    encode_mask_in_box,
    find_image,
    group_by_image,
    image_table,
    load_json,
    mask_box,
    missing_image,
)
from .images import ImageReadError, load_image
from .journal import Journal
from .shard import ImageGroups, group_images, shard_images, write_manifest
from .stream_json import RecordIndex, index_records, iter_records, write_document

if TYPE_CHECKING:  # only types here; validate imports this module before torch is worth loading
    from .refiner import ImageRefiner, Refiner

# Why a record is written back unchanged (counted in the summary).
SKIP_CROWD = "crowd region"
SKIP_SCORE = "below --score-thr"
SKIP_EMPTY = "empty coarse mask"
SKIP_NO_BOX = "no box and no mask"
SKIP_DEGENERATE = "zero or negative box"
SKIP_OUTSIDE = "box outside the image"
SKIP_IMAGE = "image missing or unreadable (--skip-missing)"
SKIP_REFINED_EMPTY = "refined mask empty (coarse kept)"
SKIP_GATE = "judged good by the quality gate (--keep-above)"

# Timing hook: ``timer(stage)`` wraps each stage of the work (the bench's time split). The stages are
# "decode", "masks in", "paste+encode", "diff stats" here and "masks in", "resize", "backbone", "head",
# "paste+encode" in Refiner.refine_image. The default, nullcontext, costs nothing.
Timer = Callable[[str], AbstractContextManager]

# Images prepared ahead of the network: one hides loading behind it, and memory stays at two images.
_PREFETCH = 1


@dataclass
class Summary:
    images: int = 0
    refined: int = 0
    skipped: Counter = field(default_factory=Counter)
    changed_pixels: int = 0  # sum over refined instances of |refined XOR coarse|
    seconds: float = 0.0

    @property
    def mean_changed_pixels(self) -> float:
        return self.changed_pixels / self.refined if self.refined else 0.0

    def add(self, other: Summary) -> None:
        self.images += other.images
        self.refined += other.refined
        self.skipped.update(other.skipped)
        self.changed_pixels += other.changed_pixels

    def counts(self) -> dict[str, int]:
        """The counts as one flat dict (what the journal stores per image); inverse of from_counts."""
        return {"images": self.images, "refined": self.refined, "changed_pixels": self.changed_pixels,
                **self.skipped}

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> Summary:
        counts = dict(counts)
        return cls(images=counts.pop("images", 0), refined=counts.pop("refined", 0),
                   changed_pixels=counts.pop("changed_pixels", 0), skipped=Counter(counts))


def resolve_images(preds: Predictions, images_dir: Path, skip_missing: bool) -> dict[int, Path | None]:
    """image_id -> file for every image with records; missing ones fail up front (before any work)."""
    paths = {}
    for image_id, indices in group_by_image(preds.records).items():
        paths[image_id] = find_image(image_id, images_dir, preds.images)
        if paths[image_id] is None and not skip_missing:
            raise missing_image(preds.path, indices[0], image_id, images_dir)
    return paths


def _box(record: dict, mask: BoxMask | None, height: int, width: int) -> tuple[list[float] | None, str | None]:
    """The record's xywh box (its own, else the mask's tight box) or the reason it cannot be refined."""
    box = record.get("bbox")
    if box is None:
        if mask is None:
            return None, SKIP_NO_BOX
        box = mask.box()
    x, y, w, h = box
    if not (w > 0 and h > 0):
        return None, SKIP_DEGENERATE
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return None, SKIP_OUTSIDE
    return list(box), None


def _changed(coarse: BoxMask | None, crop: np.ndarray, x0: int, y0: int) -> int:
    """|refined XOR coarse| when the refined mask is ``crop`` at (x0, y0) and zero elsewhere."""
    if coarse is None:
        return int(np.count_nonzero(crop))
    h, w = crop.shape
    window = coarse[y0:y0 + h, x0:x0 + w]
    return int(np.count_nonzero(window != crop) + coarse.area - np.count_nonzero(window))


def refine_predictions(preds: Predictions, images_dir: Path, refiner: Refiner, *, score_thr: float = 0.0,
                       update_bbox: bool = False, skip_missing: bool = False, write_quality: bool = False,
                       on_image: Callable[[int], None] | None = None, timer: Timer = nullcontext) -> Summary:
    """Replace the segmentation of every refinable record of ``preds`` in place (records held in memory;
    `run` streams files with :func:`refine_file` instead).

    Images are decoded one at a time and their masks dropped after encoding. ``on_image(n_records)``
    is called after each image; ``timer`` (see Timer) times the stages. ``write_quality``: also set
    ``refine_quality`` (the gate's estimate of the coarse mask's IoU with the truth) on every record
    that went through the model.
    """
    start = time.perf_counter()
    summary = Summary()
    paths = resolve_images(preds, Path(images_dir), skip_missing)
    for image_id, indices in group_by_image(preds.records).items():
        todo = []
        for index in indices:
            reason = _skip_before_image(preds.records[index], score_thr)
            if reason:
                summary.skipped[reason] += 1
            else:
                todo.append((index, preds.records[index]))
        if todo:
            prepared = _prepare_image(preds.path, paths[image_id], preds.images.get(image_id), image_id, todo,
                                      skip_missing, timer)
            for index, patch in _refine_prepared(prepared, refiner, update_bbox, write_quality, timer):
                preds.records[index].update(patch)
            summary.add(prepared.summary)
        if on_image:
            on_image(len(indices))
    summary.seconds = time.perf_counter() - start
    return summary


def _skip_before_image(record: dict, score_thr: float) -> str | None:
    """Why a record is kept without looking at its image (the index pass of refine_file applies the same rule)."""
    if record.get("iscrowd", 0):
        return SKIP_CROWD
    if record.get("score", 1.0) < score_thr:
        return SKIP_SCORE
    return None


@dataclass
class _Prepared:
    """One image ready for the network: its decoded pixels and coarse masks, and what it already skipped."""

    summary: Summary
    image: np.ndarray | None = None
    todo: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    coarse: list[BoxMask | None] = field(default_factory=list)


def _prepare_image(source: Path, path: Path | None, expected: dict | None, image_id: int,
                   records: list[tuple[int, dict]], skip_missing: bool, timer: Timer = nullcontext) -> _Prepared:
    """Load the image and decode the coarse masks of ``records`` (all past _skip_before_image)."""
    prepared = _Prepared(Summary())
    summary = prepared.summary
    if path is None:
        summary.skipped[SKIP_IMAGE] += len(records)
        return prepared
    try:
        with timer("decode"):
            image = load_image(path)
    except ImageReadError as e:
        if not skip_missing:
            raise InputError(f"{source}: record {records[0][0]}: {e}") from e
        summary.skipped[SKIP_IMAGE] += len(records)
        return prepared
    summary.images += 1
    height, width = image.shape[:2]
    if expected and (expected.get("height"), expected.get("width")) not in ((height, width), (None, None)):
        raise InputError(f"{source}: image {image_id} ({path}) is {height}x{width} but the images table "
                         f"says {expected.get('height')}x{expected.get('width')}")
    prepared.image = image
    for index, record in records:
        with timer("masks in"):
            full = decode_mask(record, height, width, where=f"{source}: record {index}", contiguous=False)
            # Only one full-image mask exists at a time: memory stays flat in the instances per image.
            mask = None if full is None else BoxMask.of(full)
        if mask is not None and not mask.area:
            summary.skipped[SKIP_EMPTY] += 1
            continue
        box, reason = _box(record, mask, height, width)
        if reason:
            summary.skipped[reason] += 1
            continue
        prepared.todo.append(index), prepared.boxes.append(box), prepared.coarse.append(mask)
    return prepared


def _refine_prepared(prepared: _Prepared, refiner: Refiner, update_bbox: bool, write_quality: bool = False,
                     timer: Timer = nullcontext) -> list[tuple[int, dict]]:
    """Run the network on a prepared image -> (record index, new fields) of every record it changes:
    the refined ones, and with ``write_quality`` every one that went through the network."""
    if prepared.image is None:
        return []
    image, summary = prepared.image, prepared.summary
    height, width = image.shape[:2]
    results, qualities = refiner.refine_image_with_quality(
        image, np.array(prepared.boxes, np.float32).reshape(-1, 4), prepared.coarse, timer=timer)
    patches = []
    for index, mask, result, quality in zip(prepared.todo, prepared.coarse, results, qualities):
        patch = {}
        if result is None:
            summary.skipped[SKIP_GATE] += 1
        elif result[0].any():
            crop, x0, y0 = result
            with timer("paste+encode"):
                patch["segmentation"] = encode_mask_in_box(crop, x0, y0, height, width)
            if update_bbox:
                x, y, w, h = mask_box(crop)
                patch["bbox"] = [x + x0, y + y0, w, h]
            summary.refined += 1
            with timer("diff stats"):
                summary.changed_pixels += _changed(mask, crop, x0, y0)
        else:
            summary.skipped[SKIP_REFINED_EMPTY] += 1
        if write_quality:
            patch["refine_quality"] = round(quality, 4)
        if patch:
            patches.append((index, patch))
    return patches


# ---------------------------------------------------------------- files (what `run` calls)


@dataclass(frozen=True)
class RefinerSpec:
    """How `run` loads its refiner, as plain data: an engine that refines in other processes (Ray actors)
    loads the same one in each. ``device``: "cpu" or "cuda" for a checkpoint; for ONNX weights as
    given to --device ("auto" picks onnxruntime's CUDA provider when it has one)."""

    weights: str
    device: str = "cpu"
    batch_size: int = 64
    precision: str = "auto"
    threads: int | None = None
    box_expand: float | None = None  # None: the checkpoint's
    keep_above: float | None = None  # None: the checkpoint's

    def load(self) -> ImageRefiner:
        """-> the refiner (torch's threads set to ``threads`` in this process); CheckpointError for bad weights."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        weights = Path(self.weights)
        if weights.suffix == ".onnx":
            from .onnx_runtime import OnnxRefiner

            refiner = OnnxRefiner(weights, self.device, self.threads)
        else:
            from .model.checkpoint import load_checkpoint
            from .refiner import Refiner

            model, _ = load_checkpoint(weights)
            refiner = Refiner(model, self.device, self.batch_size, self.precision)
        if self.box_expand:
            refiner.cfg.box_expand = self.box_expand
        if self.keep_above is not None:
            refiner.cfg.gate_keep_above = self.keep_above
        return refiner


@dataclass(frozen=True)
class ImageOptions:
    """The options of `run` that decide what refining one image gives (the engines pass them on)."""

    skip_missing: bool = False
    update_bbox: bool = False
    write_quality: bool = False


@dataclass
class ImageTask:
    """One image of a predictions file to refine, as plain data (an engine may ship it to another process).

    ``records``: (record index, byte offset, byte length) in the file of each of its records past
    _skip_before_image; ``path``: its image file (None: missing, with --skip-missing); ``expected``:
    its entry of the images table, if any.
    """

    position: int
    image_id: int
    path: str | None
    expected: dict | None
    records: list[tuple[int, int, int]]


# A generator of (image position, (record index, patch) pairs, counts), one per image, in any order;
# closed by refine_file when it stops early (an error, Ctrl-C), which runs the engine's clean-up.
ImageResults = Generator[tuple[int, list[tuple[int, dict]], dict[str, int]], None, None]


def prepare_task(task: ImageTask, f, source: Path, options: ImageOptions) -> _Prepared:
    """Read ``task``'s records from ``f`` (the predictions file ``source``, opened "rb"), load its image
    and decode their coarse masks. Records are parsed from the same bytes whichever process reads them."""
    records = []
    for i, offset, length in task.records:
        f.seek(offset)
        records.append((i, json.loads(f.read(length))))
    if not records:
        return _Prepared(Summary())
    path = None if task.path is None else Path(task.path)
    return _prepare_image(source, path, task.expected, task.image_id, records, options.skip_missing)


def refine_prepared(prepared: _Prepared, refiner: Refiner, options: ImageOptions
                    ) -> tuple[list[tuple[int, dict]], dict[str, int]]:
    """The network on a prepared image -> (its (record index, patch) pairs, its counts): what the
    journal keeps of an image, whichever engine refined it."""
    patches = _refine_prepared(prepared, refiner, options.update_bbox, options.write_quality)
    return patches, prepared.summary.counts()


def refine_tasks(tasks: Iterable[ImageTask], source: Path, refiner: Refiner, options: ImageOptions) -> ImageResults:
    """The single-process engine: ``tasks`` in order in this process. A thread loads the next image and
    decodes its coarse masks while the network runs on the current one."""
    tasks = iter(tasks)
    with open(source, "rb") as f, ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:

        def submit(task: ImageTask) -> tuple[ImageTask, Future]:
            return task, pool.submit(prepare_task, task, f, source, options)

        ahead = deque(submit(t) for t in islice(tasks, _PREFETCH))
        try:
            while ahead:
                task, future = ahead.popleft()
                prepared = future.result()
                ahead.extend(submit(t) for t in islice(tasks, 1))
                patches, counts = refine_prepared(prepared, refiner, options)
                yield task.position, patches, counts
        finally:
            for _, future in ahead:  # after an error or Ctrl-C: load no further image
                future.cancel()


# An engine: (tasks, predictions file, options) -> results of every task (see ImageResults).
# Tasks come lazily (one per image not yet journalled); an engine may list them all up front.
Engine = Callable[[Iterator[ImageTask], Path, ImageOptions], ImageResults]


def refine_file(index: RecordIndex, groups: ImageGroups, positions: np.ndarray, images_dir: Path,
                image_table: dict[int, dict], refiner: Refiner | None, journal: Journal, *, score_thr: float = 0.0,
                update_bbox: bool = False, skip_missing: bool = False, write_quality: bool = False,
                on_image: Callable[[int], None] | None = None, engine: Engine | None = None) -> Summary:
    """Refine the images at ``positions`` of ``groups`` not yet done in ``journal``, each finished into it.

    Only records past _skip_before_image are read back from the file (the index decided the rest), and
    images without any are not decoded. ``engine`` (default: :func:`refine_tasks` with ``refiner``,
    in this process) refines the images; this process journals each as its result comes back, in
    whatever order. Every image must exist unless ``skip_missing``: a missing one is an InputError
    before any work. -> the summary of the images at ``positions`` (journalled ones included);
    ``on_image(n_records)`` is called after each image done now.
    """
    start = time.perf_counter()
    positions = np.asarray(positions)
    paths = {}
    for g in positions:
        image_id = int(groups.ids[g])
        paths[g] = find_image(image_id, images_dir, image_table)
        if paths[g] is None and not skip_missing:
            raise missing_image(index.path, groups.records(g)[0], image_id, images_dir)
    keep = ~index.crowd & (index.score >= score_thr)

    def tasks() -> Iterator[ImageTask]:
        for g in positions:
            if journal.done[g]:
                continue
            image_id = int(groups.ids[g])
            records = [(int(i), int(index.offsets[i]), int(index.lengths[i])) for i in groups.records(g) if keep[i]]
            yield ImageTask(position=int(g), image_id=image_id, path=None if paths[g] is None else str(paths[g]),
                            expected=image_table.get(image_id), records=records)

    options = ImageOptions(skip_missing=skip_missing, update_bbox=update_bbox, write_quality=write_quality)
    if engine is None:
        def engine(tasks, source, options):
            return refine_tasks(tasks, source, refiner, options)
    results = engine(tasks(), index.path, options)
    try:
        for g, patches, counts in results:
            journal.finish_image(g, patches, counts)
            if on_image:
                on_image(len(groups.records(g)))
    finally:
        results.close()  # the engine's clean-up (cancel prefetch, stop Ray) runs now, not at garbage collection
    summary = Summary.from_counts(journal.totals)
    in_shard = np.concatenate([groups.records(g) for g in positions]) if len(positions) else np.zeros(0, np.int64)
    summary.skipped[SKIP_CROWD] += int(index.crowd[in_shard].sum())
    summary.skipped[SKIP_SCORE] += int((~index.crowd[in_shard] & (index.score[in_shard] < score_thr)).sum())
    summary.skipped = +summary.skipped  # drop zero counts: the table lists only reasons that occurred
    summary.seconds = time.perf_counter() - start
    return summary


def refined_records(index: RecordIndex, indices: np.ndarray, journal: Journal) -> Iterator[dict]:
    """The records at ``indices`` (ascending) as the output holds them: each journalled patch applied."""
    for i, record in zip(indices, iter_records(index, indices)):
        patch = journal.patch(i)
        if patch:
            record.update(patch)  # existing keys keep their place, new ones go last, as in refine_predictions
        yield record


def open_input(predictions: Path, images_json: Path | None = None) -> tuple[RecordIndex, dict[int, dict]]:
    """Index a predictions file (validating every record) -> (index, image table: --images-json's, the
    dataset dict's own, or empty)."""
    index = index_records(predictions)
    if images_json is not None:
        return index, image_table(load_json(images_json), str(images_json))
    if "images" in dict(index.head or ()):
        return index, image_table(dict(index.head), str(predictions))
    return index, {}


def refine_to_file(index: RecordIndex, image_table_: dict[int, dict], images_dir: Path, output: Path,
                   refiner: Refiner, settings: dict, *, score_thr: float = 0.0, update_bbox: bool = False,
                   skip_missing: bool = False, write_quality: bool = False, resume: bool = False,
                   shard: tuple[int, int] | None = None, on_start: Callable[[int], None] | None = None,
                   on_image: Callable[[int], None] | None = None, engine: Engine | None = None
                   ) -> tuple[Summary, int]:
    """`run` from file to file (``index``, ``image_table_`` from :func:`open_input`): refine the (shard's)
    images into a journal beside the output, then write the output from the input and the journal and
    drop the journal.

    ``settings``: the options that change the output besides these arguments (weights, batch size, ...),
    which the journal must match to be resumed. ``on_start(n_images)`` gets the number of images left.
    ``engine``: see :func:`refine_file` (the journal, resume, shard and the write are the same for every one).
    -> (summary, number of records written).
    """
    groups = group_images(index.image_ids)
    positions = shard_images(len(groups), *shard) if shard else np.arange(len(groups))
    identity = {**settings, "input_sha256": index.sha256, "score_thr": score_thr, "update_bbox": update_bbox,
                "skip_missing": skip_missing, "write_quality": write_quality, "shard": list(shard) if shard else None}
    journal = Journal.open(journal_path(output), identity, len(index), len(groups), resume)
    try:
        if on_start:
            on_start(int((~journal.done[positions]).sum()))
        summary = refine_file(index, groups, positions, images_dir, image_table_, refiner, journal,
                              score_thr=score_thr, update_bbox=update_bbox, skip_missing=skip_missing,
                              write_quality=write_quality, on_image=on_image, engine=engine)
        records = np.sort(np.concatenate([groups.records(g) for g in positions])) if len(positions) \
            else np.zeros(0, np.int64)
        write_document(output, index.head, refined_records(index, records, journal))
        if shard:
            write_manifest(output, *shard, index.sha256, len(records))
    except InputError:
        # Bad input fails again on every resume; fixing it changes the input or the options, which
        # the journal would refuse anyway. Interrupts and crashes keep it.
        journal.remove()
        raise
    finally:
        journal.close()
    journal.remove()
    return summary, len(records)


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")
