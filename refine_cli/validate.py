"""`run`'s checks before the model loads: everything about the inputs and the output that does not need
the network, so a bad last record or an unwritable output fails in seconds instead of after the job."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .coco_io import InputError, check_mask, find_image, missing_image
from .images import header_size
from .stream_json import RecordIndex, iter_records


def check_output(output: Path) -> None:
    """The output file can be created: its folder exists and accepts a new file (probed, then removed).

    A probe rather than os.access: access() says yes to root on a read-only mount and knows nothing of
    quotas or ACLs; creating the file is what write_json_atomic will do.
    """
    folder = output.parent  # (an existing directory as the output itself is refused by click's dir_okay=False)
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise InputError(f"{output}: output folder {folder} {what}")
    probe = folder / f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise InputError(f"{output}: cannot write in {folder} ({e.strerror or e})") from None
    probe.unlink()


def check_inputs(index: RecordIndex, image_table: dict[int, dict], images_dir: Path, skip_missing: bool) -> None:
    """Every image found (or --skip-missing) and every mask consistent with its image's size.

    ``index`` (stream_json.index_records) has already checked each record's types and finite numbers.
    Records are read back one at a time, so memory does not grow with the file. An image's size comes
    from the images table and from the file header (both when both exist, and they must agree); masks of
    an image whose size cannot be known without decoding are left to the engine.
    """
    sizes: dict[int, tuple[int, int] | None] = {}
    for i, record in enumerate(iter_records(index, range(len(index)))):
        image_id = record["image_id"]
        if image_id not in sizes:
            path = find_image(image_id, images_dir, image_table)
            if path is None and not skip_missing:
                raise missing_image(index.path, i, image_id, images_dir)
            sizes[image_id] = _image_size(index.path, image_table.get(image_id, {}), image_id, path)
        if sizes[image_id] is not None:
            check_mask(record, *sizes[image_id], where=f"{index.path}: record {i}")


def _image_size(source: Path, entry: dict, image_id: int, path: Path | None) -> tuple[int, int] | None:
    table = (entry["height"], entry["width"]) if "height" in entry and "width" in entry else None
    header = header_size(path) if path is not None else None
    if table and header and table != header:
        # The same words as the engine's check after decoding, which stays for files Pillow cannot parse.
        raise InputError(f"{source}: image {image_id} ({path}) is {header[0]}x{header[1]} but the images "
                         f"table says {table[0]}x{table[1]}")
    return table or header
