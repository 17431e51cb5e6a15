"""The journal of a run: finished images and their refined masks, appended beside the output, so a run
stopped by Ctrl-C, SIGTERM or a crash continues where it stopped (`run --resume`).

One JSON line per refined record ({"record": i, "patch": {...}}), then one line closing the image
({"image": g, ...its counts}). An image's lines go out in one write: an image counts as done only when
its closing line is complete, and a resumed run cuts off whatever follows the last one (a torn write).
The header names the input (sha256) and every option that changes the output, so a journal is never
continued by a run that would write something else. The refined masks live only here until the output
is assembled, which keeps the run's memory flat in the number of records.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .coco_io import InputError, atomic_output

_VERSION = 1


class Journal:
    def __init__(self, path: Path, n_records: int, n_images: int):
        self.path = path
        self.done = np.zeros(n_images, bool)  # by image position (the input is pinned by the header)
        self.patch_offset = np.full(n_records, -1, np.int64)  # byte offset of a record's patch line, -1: none
        self.patch_length = np.zeros(n_records, np.int32)
        self.totals = Counter()  # summed counts of the done images ("refined", "changed_pixels", "decoded", reasons)
        self.end = 0
        self._append = None
        self._read = None

    @classmethod
    def open(cls, path: Path, identity: dict, n_records: int, n_images: int, resume: bool) -> Journal:
        """Start a journal, or with ``resume`` continue the one at ``path`` (a fresh one if there is none).

        Raises InputError when a journal exists and ``resume`` is off (never reused silently), or when
        it was written by a run of another input or other options.
        """
        journal = cls(path, n_records, n_images)
        header = json.dumps({"journal": _VERSION, **identity}, sort_keys=True)
        if path.exists() and not resume:
            raise InputError(f"{path}: journal of an unfinished run; pass --resume to continue it, "
                             "or delete it to start over")
        if path.exists():
            journal._load(header)
        else:
            with atomic_output(path) as f:
                f.write(header + "\n")
            journal.end = len(header) + 1
        journal._append = open(path, "r+b")
        journal._append.truncate(journal.end)  # a torn last image, if the run died while writing it
        journal._append.seek(journal.end)
        return journal

    def _load(self, header: str) -> None:
        with open(self.path, "rb") as f:
            first = f.readline()
            if first.rstrip(b"\n").decode("utf-8", "replace") != header:
                raise InputError(f"{self.path}: journal of a run with another input or other options "
                                 f"(it has {first[:200].decode('utf-8', 'replace').strip()}); "
                                 "delete it to start over")
            offset = self.end = len(first)
            pending = []
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    entry = json.loads(line)
                except ValueError:
                    break
                if "record" in entry:
                    pending.append((entry["record"], offset, len(line)))
                else:
                    self._commit(entry, pending)
                    pending = []
                    self.end = offset + len(line)
                offset += len(line)

    def _commit(self, entry: dict, patches: list[tuple[int, int, int]]) -> None:
        self.done[entry["image"]] = True
        for index, offset, length in patches:
            self.patch_offset[index], self.patch_length[index] = offset, length
        self.totals.update(entry["counts"])

    def finish_image(self, position: int, patches: list[tuple[int, dict]], counts: dict[str, int]) -> None:
        """Record image ``position`` as done with its (record index, patch) pairs and its counts."""
        lines = [json.dumps({"record": int(i), "patch": patch}) for i, patch in patches]
        lines.append(json.dumps({"image": int(position), "counts": counts}))
        located, offset = [], self.end
        for (index, _), line in zip(patches, lines):
            located.append((index, offset, len(line) + 1))  # json.dumps is ASCII: characters are bytes
            offset += len(line) + 1
        blob = "\n".join(lines) + "\n"
        self._append.write(blob.encode("ascii"))
        # Flushed, not fsynced: what reaches the OS survives the process being killed or crashing;
        # an fsync per image would cost more than small images take to refine.
        self._append.flush()
        self.end += len(blob)
        self._commit({"image": position, "counts": counts}, located)

    def patch(self, index: int) -> dict | None:
        """The fields refined for record ``index`` ({"segmentation": ..., maybe "bbox"}), None if unchanged."""
        if self.patch_offset[index] < 0:
            return None
        if self._read is None:
            self._read = open(self.path, "rb")
        self._read.seek(int(self.patch_offset[index]))
        return json.loads(self._read.read(int(self.patch_length[index])))["patch"]

    def close(self) -> None:
        for f in (self._append, self._read):
            if f is not None:
                f.close()
        self._append = self._read = None

    def remove(self) -> None:
        """After the output is written: the run is complete, nothing is left to resume."""
        self.close()
        self.path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """Fingerprint of a file (the weights) for the header: a journal must not outlive a change of model."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
