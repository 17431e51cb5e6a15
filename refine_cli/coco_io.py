"""COCO results I/O: read and validate predictions, find images, decode/encode masks, write JSON atomically."""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pycocotools.mask as mask_utils

_IMAGE_EXTENSIONS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")


class InputError(Exception):
    """Bad input; the one-line message names the file and, when relevant, the record index."""


@dataclass
class Predictions:
    """A parsed predictions file.

    ``document`` is the JSON exactly as parsed (a results list, or a dataset dict);
    ``records`` are the result dicts in input order (the same objects as in
    ``document``); ``images`` maps image_id -> COCO image entry ({"id", "file_name",
    "height", "width", ...}) or is empty when no image list was available.
    """

    path: Path
    document: list | dict
    records: list[dict]
    images: dict[int, dict]


# ---------------------------------------------------------------- reading


def read_predictions(path: str | os.PathLike, images_json: str | os.PathLike | None = None) -> Predictions:
    """Parse and validate a COCO results JSON (a list of results, or a dataset dict with "annotations").

    Checked per record: it is a dict; "image_id" is present and an int (strictly:
    not a float, string or bool); "bbox", when present, is 4 finite numbers;
    "score", when present, is a finite number; "segmentation", when present and
    not null/[], is polygons (lists of numbers) or an RLE dict ("size" [h, w] and
    "counts" str or int list). RLE contents and sizes are checked by decode_mask.
    The image table comes from ``images_json`` if given, else from the dataset
    dict's own "images", else is empty. Raises InputError naming file and record.
    """
    name = os.fspath(path)
    document = load_json(name)
    records = _records_of(document, name)
    for index, record in enumerate(records):
        check_record(record, f"{name}: record {index}")
    if images_json is not None:
        images_name = os.fspath(images_json)
        images = image_table(load_json(images_name), images_name)
    elif isinstance(document, dict) and "images" in document:
        images = image_table(document, name)
    else:
        images = {}
    return Predictions(path=Path(path), document=document, records=records, images=images)


def load_json(name: str) -> object:
    """Parse a JSON file; every failure becomes an InputError naming the file (and line/column for syntax)."""
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    try:
        # json.loads on bytes detects UTF-8/16/32 and skips a UTF-8 BOM.
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _records_of(document: object, name: str) -> list[dict]:
    """The result records of a parsed document; a dataset dict's "annotations" list is returned as is (same object)."""
    if isinstance(document, list):
        records = document
    elif isinstance(document, dict) and isinstance(document.get("annotations"), list):
        records = document["annotations"]
    elif isinstance(document, dict):
        raise InputError(f"{name}: a dict document needs an 'annotations' list (COCO dataset format)")
    else:
        raise InputError(
            f"{name}: top level must be a list of results or a dict with 'annotations', got {type_name(document)}"
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"{name}: record {index}: must be an object, got {type_name(record)}")
    return records


def check_record(record: dict, where: str) -> None:
    """Validate the fields later stages rely on; raises InputError prefixed with ``where``."""
    if "image_id" not in record:
        raise InputError(f"{where}: 'image_id' missing")
    if not _is_int(record["image_id"]):
        raise InputError(f"{where}: 'image_id' must be an integer, got {_describe(record['image_id'])}")
    if "bbox" in record:
        bbox = record["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise InputError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {_describe(bbox)}")
    if "score" in record and not _is_number(record["score"]):
        raise InputError(f"{where}: 'score' must be a number, got {_describe(record['score'])}")
    _segmentation_kind(record.get("segmentation"), where)


def image_table(document: object, name: str) -> dict[int, dict]:
    """image_id -> image entry from a dataset dict's "images" list; ids must be unique ints, file_name a string."""
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise InputError(f"{name}: expected a dict with an 'images' list (COCO dataset format)")
    table: dict[int, dict] = {}
    for index, image in enumerate(images):
        where = f"{name}: image {index}"
        if not isinstance(image, dict):
            raise InputError(f"{where}: must be an object, got {type_name(image)}")
        if not _is_int(image.get("id")):
            raise InputError(f"{where}: 'id' must be an integer, got {_describe(image.get('id'))}")
        if not isinstance(image.get("file_name"), str):
            raise InputError(f"{where}: 'file_name' must be a string, got {_describe(image.get('file_name'))}")
        for key in ("height", "width"):
            if key in image and not (_is_int(image[key]) and image[key] > 0):
                raise InputError(f"{where}: '{key}' must be a positive integer, got {_describe(image[key])}")
        if image["id"] in table:
            raise InputError(f"{where}: duplicate image id {image['id']}")
        table[image["id"]] = image
    return table


def _segmentation_kind(segmentation: object, where: str) -> str | None:
    """Classify a segmentation as "rle", "polygons" or None (no mask: absent, null or []); else InputError."""
    if segmentation is None or segmentation == []:
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        size_ok = isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)
        if size_ok and isinstance(counts, (str, bytes, list)):
            return "rle"
        raise InputError(f"{where}: RLE segmentation needs 'size' [h, w] and 'counts' (string or list)")
    if isinstance(segmentation, list) and all(
        isinstance(part, list) and all(_is_number(v) for v in part) for part in segmentation
    ):
        return "polygons"
    raise InputError(
        f"{where}: segmentation must be polygons (a list of [x0, y0, x1, y1, ...] lists) or an RLE dict, "
        f"got {_describe(segmentation)}"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    # NaN/Infinity are accepted by Python's json parser but are not JSON and break box/mask math.
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _describe(value: object) -> str:
    """Short type-and-value text for messages, e.g. "str '12'"."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


# ---------------------------------------------------------------- lookup


def group_by_image(records: list[dict]) -> dict[int, list[int]]:
    """image_id -> indices of its records, keys in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(record["image_id"], []).append(index)
    return groups


def find_image(image_id: int, images_dir: Path, images: dict[int, dict]) -> Path | None:
    """Locate the file of ``image_id`` under ``images_dir``, or None.

    Tried in order: the image table's file_name (relative to images_dir, then its
    basename), the COCO name ``{id:012d}.jpg``, then ``{id}.{ext}`` for the usual
    image extensions in any letter case (the first existing name in sorted order).
    """
    return next((path for path in _candidate_paths(image_id, Path(images_dir), images) if path.is_file()), None)


def missing_image(source: str | os.PathLike, record: int, image_id: int, images_dir: Path,
                  skippable: bool = True) -> InputError:
    """The error for a record whose image find_image cannot locate (``skippable``: name --skip-missing)."""
    hint = "; --skip-missing keeps such records unchanged" if skippable else ""
    return InputError(f"{os.fspath(source)}: record {record}: no image for image_id {image_id} in {images_dir} "
                      f"(tried the images table, {image_id:012d}.jpg and {image_id}.*{hint})")


def _candidate_paths(image_id: int, images_dir: Path, images: dict[int, dict]) -> Iterator[Path]:
    """find_image's candidates, best first; lazy so a hit on file_name costs no further path building."""
    file_name = images.get(image_id, {}).get("file_name")
    if file_name:
        yield images_dir / file_name
        yield images_dir / Path(file_name).name
    yield images_dir / f"{image_id:012d}.jpg"
    # Probing every letter-case spelling (80 stats) instead of listing the directory keeps
    # a lookup O(1) in the folder size, which matters when called once per image of a big set.
    for name in sorted(_case_variants(image_id)):
        yield images_dir / name


def _case_variants(image_id: int) -> set[str]:
    """Every "{id}.{ext}" spelling whose extension matches _IMAGE_EXTENSIONS case-insensitively."""
    return {
        f"{image_id}." + "".join(letters)
        for ext in _IMAGE_EXTENSIONS
        for letters in itertools.product(*((c.lower(), c.upper()) for c in ext))
    }


# ---------------------------------------------------------------- masks


def decode_mask(record: dict, height: int, width: int, *, where: str, contiguous: bool = True) -> np.ndarray | None:
    """The record's segmentation as a (height, width) uint8 0/1 mask, or None when it has none.

    The mask is C-contiguous (what OpenCV needs), or with ``contiguous=False`` column-major as
    pycocotools decodes it: the C copy is twice the cost of the decode itself, and callers that
    only slice windows out of the mask do not need it.

    Accepts compressed RLE (counts str or bytes), uncompressed RLE (counts list) and
    polygons; polygon parts with fewer than 3 points are ignored (all-zero mask
    when none is left). Raises InputError (prefixed with ``where``) when the RLE
    size differs from (height, width), the RLE counts are corrupt or a polygon
    part has an odd number of coordinates.
    """
    segmentation = record.get("segmentation")
    kind = _segmentation_kind(segmentation, where)
    if kind is None:
        return None
    if kind == "polygons":
        rle = _polygons_to_rle(segmentation, height, width, where)
    else:
        rle = _checked_rle(segmentation, height, width, where)
    mask = mask_utils.decode(rle)
    return np.ascontiguousarray(mask) if contiguous else mask


def check_mask(record: dict, height: int, width: int, *, where: str) -> None:
    """Raise InputError where decode_mask would, without decoding: RLE size and counts, polygon parts.

    Lets `run` reject a bad mask in its last record before the first image is refined.
    """
    segmentation = record.get("segmentation")
    kind = _segmentation_kind(segmentation, where)
    if kind == "rle":
        _checked_rle(segmentation, height, width, where)
    elif kind == "polygons":
        _check_polygon_parts(segmentation, where)


def _check_polygon_parts(polygons: list[list[float]], where: str) -> None:
    for index, part in enumerate(polygons):
        if len(part) % 2:
            raise InputError(f"{where}: polygon {index} has an odd number of coordinates ({len(part)})")


def _polygons_to_rle(polygons: list[list[float]], height: int, width: int, where: str) -> dict:
    """Rasterise polygon parts (pycocotools' rasteriser, the one COCO eval uses) into one compressed RLE."""
    _check_polygon_parts(polygons, where)
    parts = [part for part in polygons if len(part) >= 6]
    if not parts:
        return mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))


def _checked_rle(rle: dict, height: int, width: int, where: str) -> dict:
    """A validated compressed RLE dict (counts bytes) for pycocotools.

    pycocotools does not check that the runs cover the image exactly: too few
    leave uninitialised memory in the decoded mask, so the counts are parsed and
    summed here first.
    """
    size = list(rle["size"])
    if size != [height, width]:
        raise InputError(f"{where}: mask size {size} != image size {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise InputError(f"{where}: corrupt RLE: counts must be non-negative integers")
        _check_total(sum(counts), height, width, where)
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    if isinstance(counts, str):
        if not counts.isascii():
            raise InputError(f"{where}: corrupt RLE: counts string has non-ASCII characters")
        counts = counts.encode("ascii")
    _check_total(int(_rle_string_counts(counts, where).sum()), height, width, where)
    return {"size": size, "counts": counts}


def _check_total(total: int, height: int, width: int, where: str) -> None:
    if total != height * width:
        raise InputError(f"{where}: corrupt RLE: runs cover {total} pixels, image has {height * width}")


def _rle_string_counts(raw: bytes, where: str) -> np.ndarray:
    """Run lengths (int64) of a COCO compressed counts string, decoded like pycocotools' rleFrString.

    Each number is little-endian 5-bit groups stored as chr(48 + group), bit 0x20
    meaning "more groups follow" and bit 0x10 of the last group the sign; runs
    from index 3 on are stored as the difference to the run two places before.
    """
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return chars
    if chars.min() < 0 or chars.max() > 63:
        raise InputError(f"{where}: corrupt RLE: counts string has characters outside '0'..'o'")
    ends = np.flatnonzero((chars & 0x20) == 0)
    if ends.size == 0 or ends[-1] != chars.size - 1:
        raise InputError(f"{where}: corrupt RLE: counts string is truncated")
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.arange(chars.size) - np.repeat(starts, ends - starts + 1)
    if group.max() > 6:  # 7 groups = 35 bits, already more than a uint32 run needs
        raise InputError(f"{where}: corrupt RLE: run length too large")
    values = np.add.reduceat((chars & 0x1F) << (5 * group), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (group[ends][negative] + 1))
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0:
        raise InputError(f"{where}: corrupt RLE: negative run length")
    return runs


def mask_box(mask: np.ndarray) -> list[float] | None:
    """Tight COCO [x, y, w, h] box of an (H, W) binary mask, as pycocotools toBbox (w = x1 - x0 + 1); None if empty."""
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    x0, x1, y0, y1 = columns[0], columns[-1], rows[0], rows[-1]
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


@dataclass
class BoxMask:
    """An (H, W) 0/1 mask kept as the crop of its tight box, so a mask costs memory in proportion to
    its instance, not its image: an image's many coarse masks stay small while it is refined.

    ``mask[y0:y1, x0:x1]`` returns the same array as slicing the full mask (what boxes.crop_mask and
    the engine do with coarse masks); ``area`` counts its pixels.
    """

    crop: np.ndarray
    x0: int
    y0: int
    shape: tuple[int, int]
    area: int

    @classmethod
    def of(cls, mask: np.ndarray) -> BoxMask:
        box = mask_box(mask)
        if box is None:
            return cls(np.zeros((0, 0), mask.dtype), 0, 0, mask.shape, 0)
        x, y, w, h = (int(v) for v in box)
        crop = np.ascontiguousarray(mask[y:y + h, x:x + w])
        return cls(crop, x, y, mask.shape, int(np.count_nonzero(crop)))

    def box(self) -> list[float] | None:
        """Tight [x, y, w, h] box, as mask_box of the full mask."""
        h, w = self.crop.shape
        return [float(self.x0), float(self.y0), float(w), float(h)] if self.area else None

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        ya, yb, _ = rows.indices(self.shape[0])
        xa, xb, _ = cols.indices(self.shape[1])
        out = np.zeros((max(yb - ya, 0), max(xb - xa, 0)), self.crop.dtype)
        h, w = self.crop.shape
        top, bottom = max(ya, self.y0), min(yb, self.y0 + h)
        left, right = max(xa, self.x0), min(xb, self.x0 + w)
        if bottom > top and right > left:
            out[top - ya:bottom - ya, left - xa:right - xa] = \
                self.crop[top - self.y0:bottom - self.y0, left - self.x0:right - self.x0]
        return out


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) 0/1 (uint8 or bool) mask -> {"size": [H, W], "counts": str} compressed COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_mask_in_box(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """RLE of a (height, width) mask that is zero except ``crop`` at rows y0:y0+h, cols x0:x0+w.

    ``crop`` is an (h, w) 0/1 array lying fully inside the image. The result equals
    ``encode_mask`` of the full mask, but only crop-sized arrays are allocated: the
    full image in column-major order is, per column, zeros / crop column / zeros,
    so every value change lies inside a crop column and the runs are the gaps
    between those change positions.
    """
    h, w = crop.shape
    # A zero row above and below each crop column turns "crop starts/ends with 1" into visible changes.
    padded = np.zeros((w, h + 2), dtype=np.uint8)
    padded[:, 1:-1] = crop.T != 0
    column, row = np.nonzero(padded[:, 1:] != padded[:, :-1])
    # The change before crop row `row` of crop column `column`, as a column-major pixel index.
    changes = (x0 + column.astype(np.int64)) * height + y0 + row
    # A crop spanning the full height can end one column with 1 and start the next with 1:
    # the two changes coincide (an empty 0-run), which a real RLE never contains.
    repeated = np.flatnonzero(changes[1:] == changes[:-1])
    keep = np.ones(changes.size, dtype=bool)
    keep[repeated] = keep[repeated + 1] = False
    changes = changes[keep]
    total = height * width
    # A change at the very end of the image (last pixel is 1) closes the final run, it starts no new one.
    changes = changes[changes < total]
    counts = np.diff(np.concatenate(([0], changes, [total])))
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


# ---------------------------------------------------------------- writing


def write_json_atomic(path: str | os.PathLike, document: object) -> None:
    """Write ``document`` as JSON so that ``path`` is either the old file or the complete new one.

    NaN/Infinity are refused (they are not JSON); numpy scalars are written as Python numbers.
    """
    with atomic_output(path) as f:
        json.dump(document, f, **JSON_OPTIONS)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file that becomes ``path`` only when the block ends without error.

    The text goes to a temp file in the same directory (same filesystem, so the
    final os.replace is atomic), is fsynced, then renamed onto ``path``. On any
    error (Ctrl-C included) the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide permissions, like a plain open() would;
    # tempfile.mkstemp would leave the output readable by its owner only.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _numpy_scalar(value: object) -> object:
    """json.dump fallback: numpy scalars (e.g. a float32 score) become Python numbers; anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# How every output is serialised; the streaming writer uses the same options so its bytes equal json.dump's.
JSON_OPTIONS = {"allow_nan": False, "default": _numpy_scalar}
