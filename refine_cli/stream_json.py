"""Predictions files too big to hold as Python objects: one pass indexes every record by byte offset,
records are then read back one at a time, and the output document is written record by record.

The index costs a few dozen bytes per record (numpy arrays) instead of the ~1 KiB a parsed record
dict takes, so memory stays flat in the number of records while the time stays linear.
"""

from __future__ import annotations

import array
import codecs
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coco_io import JSON_OPTIONS, InputError, atomic_output, check_record, type_name

_CHUNK = 1 << 20  # bytes read per refill: large enough that refills cost nothing next to parsing
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


@dataclass
class RecordIndex:
    """Where each record of a predictions file lies, and the fields the run decides on before reading it.

    ``head`` is None for a results list; for a dataset dict it holds its (key, value) pairs in order,
    with None in place of the "annotations" list. ``score`` is 1.0 where a record has none.
    ``sha256`` fingerprints the whole file (journals and shard parts name the input by it).
    """

    path: Path
    head: list[tuple[str, object]] | None
    offsets: np.ndarray
    lengths: np.ndarray
    image_ids: np.ndarray
    score: np.ndarray
    crowd: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, f, index: int) -> dict:
        """Record ``index``, parsed again from the file ``f`` (opened "rb" on ``path``)."""
        f.seek(int(self.offsets[index]))
        return json.loads(f.read(int(self.lengths[index])))


def index_records(path: str | os.PathLike) -> RecordIndex:
    """Parse and validate a predictions file (as coco_io.read_predictions does) keeping only its index.

    Raises InputError naming the file and, for a bad record, its index; JSON syntax errors give
    the line and column.
    """
    name = os.fspath(path)
    try:
        f = open(name, "rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    with f:
        reader = _Reader(f, name)
        columns = {"offsets": array.array("q"), "lengths": array.array("q"), "image_ids": array.array("q"),
                   "score": array.array("d"), "crowd": array.array("b")}

        def add(index: int, record: object, start: int, end: int) -> None:
            where = f"{name}: record {index}"
            if not isinstance(record, dict):
                raise InputError(f"{where}: must be an object, got {type_name(record)}")
            check_record(record, where)
            columns["offsets"].append(start)
            columns["lengths"].append(end - start)
            columns["image_ids"].append(record["image_id"])
            columns["score"].append(record.get("score", 1.0))
            columns["crowd"].append(bool(record.get("iscrowd", 0)))

        head = _read_document(reader, add)
    arrays = {key: np.frombuffer(column, dtype=column.typecode).copy() for key, column in columns.items()}
    arrays["crowd"] = arrays["crowd"].astype(bool)
    return RecordIndex(path=Path(path), head=head, sha256=reader.sha256.hexdigest(), **arrays)


def write_document(path: str | os.PathLike, head: list[tuple[str, object]] | None,
                   records: Iterable[dict]) -> None:
    """Atomically write a results list (``head`` None) or a dataset dict with ``records`` as its
    "annotations", byte for byte what coco_io.write_json_atomic writes for the same document."""
    with atomic_output(path) as f:
        if head is None:
            _write_list(f, records)
            return
        f.write("{")
        for position, (key, value) in enumerate(head):
            f.write(", " if position else "")
            f.write(json.dumps(key) + ": ")
            if key == "annotations":
                _write_list(f, records)
            else:
                f.write(json.dumps(value, **JSON_OPTIONS))
        f.write("}")


def _write_list(f, records: Iterable[dict]) -> None:
    f.write("[")
    for position, record in enumerate(records):
        f.write(", " if position else "")
        f.write(json.dumps(record, **JSON_OPTIONS))
    f.write("]")


def _read_document(reader: _Reader, add) -> list[tuple[str, object]] | None:
    """Walk the top level, calling ``add(index, record, start, end)`` per record; -> the head (see RecordIndex)."""
    reader.skip_whitespace()
    first = reader.peek()
    head = None
    if first == "[":
        _read_records(reader, add)
    elif first == "{":
        head = _read_dict(reader, add)
    else:
        value, _, _ = reader.value()
        raise InputError(f"{reader.name}: top level must be a list of results or a dict with 'annotations', "
                         f"got {type_name(value)}")
    reader.skip_whitespace()
    if reader.peek():
        reader.syntax_error("Extra data")
    return head


def _read_dict(reader: _Reader, add) -> list[tuple[str, object]]:
    reader.expect("{")
    head: list[tuple[str, object]] = []
    reader.skip_whitespace()
    if reader.peek() == "}":
        reader.expect("}")
    else:
        while True:
            reader.skip_whitespace()
            if reader.peek() != '"':
                reader.syntax_error("Expecting property name enclosed in double quotes")
            key, _, _ = reader.value()
            reader.skip_whitespace()
            reader.expect(":")
            reader.skip_whitespace()
            if key == "annotations" and reader.peek() == "[" and all(k != key for k, _ in head):
                _read_records(reader, add)
                head.append((key, None))
            else:
                head.append((key, reader.value()[0]))
            reader.skip_whitespace()
            if reader.peek() == "}":
                reader.expect("}")
                break
            reader.expect(",")
    keys = [key for key, _ in head]
    # json.loads keeps the last of duplicate keys; a second "annotations" would silently drop the streamed one.
    if keys.count("annotations") != 1 or dict(head)["annotations"] is not None:
        raise InputError(f"{reader.name}: a dict document needs one 'annotations' list (COCO dataset format)")
    return head


def _read_records(reader: _Reader, add) -> None:
    reader.expect("[")
    reader.skip_whitespace()
    if reader.peek() == "]":
        reader.expect("]")
        return
    index = 0
    while True:
        reader.skip_whitespace()
        record, start, end = reader.value()
        add(index, record, start, end)
        index += 1
        reader.skip_whitespace()
        if reader.peek() == "]":
            reader.expect("]")
            return
        reader.expect(",", "Expecting ',' delimiter")


class _Reader:
    """A UTF-8 JSON text read in chunks: values are parsed with json's own scanner (raw_decode), positions
    are tracked in bytes (for the index) and in lines/columns (for error messages)."""

    def __init__(self, f, name: str):
        self.f, self.name = f, name
        self.sha256 = hashlib.sha256()
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.byte_pos = 0  # file offset of buf[pos]
        self.line, self.column = 1, 1  # of buf[0]
        self._fill()
        if self.buf.startswith("\ufeff"):  # json.loads on bytes skips a UTF-8 BOM too
            self._advance(1)

    def _fill(self, size: int = _CHUNK) -> bool:
        """Append the next ``size`` bytes to the buffer (dropping what was consumed); False at end of file."""
        if self.eof:
            return False
        data = self.f.read(size)
        self.sha256.update(data)
        self.eof = not data
        try:
            text = self.decoder.decode(data, final=self.eof)
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.name}: not UTF-8 text ({exc.reason} near byte "
                             f"{self.f.tell() - len(data) + exc.start})") from exc
        consumed = self.buf[:self.pos]
        newlines = consumed.count("\n")
        self.line += newlines
        self.column = len(consumed) - consumed.rfind("\n") if newlines else self.column + len(consumed)
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        return not self.eof

    def _advance(self, n: int) -> None:
        text = self.buf[self.pos:self.pos + n]
        self.byte_pos += n if text.isascii() else len(text.encode("utf-8"))
        self.pos += n

    def peek(self) -> str:
        """The next character, '' at end of file."""
        while self.pos >= len(self.buf):
            if not self._fill():
                return ""
        return self.buf[self.pos]

    def skip_whitespace(self) -> None:
        while self.peek() in _WHITESPACE and self.peek():
            end = self.pos
            while end < len(self.buf) and self.buf[end] in _WHITESPACE:
                end += 1
            self._advance(end - self.pos)

    def expect(self, char: str, message: str | None = None) -> None:
        if self.peek() != char:
            self.syntax_error(message or f"Expecting '{char}'")
        self._advance(1)

    def value(self) -> tuple[object, int, int]:
        """Parse the value at the current position -> (value, start byte, end byte)."""
        size = _CHUNK
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # A value cut by the chunk boundary fails like a broken one: only at end of file is it broken.
                # Each retry parses the value again from its start, so the refill doubles: linear time
                # even for a value of many chunks (a big "images" table).
                if self._fill(size):
                    size *= 2
                    continue
                self._raise(exc.msg, exc.pos)
            # A number at the very end of the buffer may go on in the next chunk.
            if end == len(self.buf) and self._fill(size):
                continue
            start = self.byte_pos
            self._advance(end - self.pos)
            return value, start, self.byte_pos

    def syntax_error(self, message: str) -> None:
        self.peek()
        self._raise(message, self.pos)

    def _raise(self, message: str, pos: int) -> None:
        before = self.buf[:pos]
        newlines = before.count("\n")
        line = self.line + newlines
        column = pos - before.rfind("\n") if newlines else self.column + pos
        raise InputError(f"{self.name}: invalid JSON at line {line}, column {column}: {message}")


def iter_records(index: RecordIndex, indices: Iterable[int]) -> Iterator[dict]:
    """The records at ``indices`` (ascending indices read the file front to back)."""
    with open(index.path, "rb") as f:
        for i in indices:
            yield index.read(f, i)

