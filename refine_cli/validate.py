"""`run`'s checks before the model loads: everything about the inputs and the output that does not need
the network, so a bad last record or an unwritable output fails in seconds instead of after the job."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .coco_io import InputError, Predictions, check_mask, group_by_image
from .engine import resolve_images
from .images import header_size


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


def check_inputs(preds: Predictions, images_dir: Path, skip_missing: bool) -> None:
    """Every image found (or --skip-missing) and every mask consistent with its image's size.

    read_predictions has already checked each record's types and finite numbers. An image's size comes
    from the images table and from the file header (both when both exist, and they must agree); masks of
    an image whose size cannot be known without decoding are left to the engine.
    """
    paths = resolve_images(preds, images_dir, skip_missing)
    for image_id, indices in group_by_image(preds.records).items():
        size = _image_size(preds, image_id, paths[image_id])
        if size is None:
            continue
        for index in indices:
            check_mask(preds.records[index], *size, where=f"{preds.path}: record {index}")


def _image_size(preds: Predictions, image_id: int, path: Path | None) -> tuple[int, int] | None:
    entry = preds.images.get(image_id, {})
    table = (entry["height"], entry["width"]) if "height" in entry and "width" in entry else None
    header = header_size(path) if path is not None else None
    if table and header and table != header:
        # The same words as the engine's check after decoding, which stays for files Pillow cannot parse.
        raise InputError(f"{preds.path}: image {image_id} ({path}) is {header[0]}x{header[1]} but the images "
                         f"table says {table[0]}x{table[1]}")
    return table or header
