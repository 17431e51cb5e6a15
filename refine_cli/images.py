"""Image decoding: any file OpenCV can read -> (H, W, 3) uint8 RGB."""

from __future__ import annotations

import os

import cv2
import numpy as np

# IMREAD_COLOR makes every input 3-channel BGR (gray replicated, alpha dropped,
# palette expanded) and applies the EXIF orientation; IMREAD_ANYDEPTH keeps
# 16-bit samples so we can scale them ourselves instead of letting OpenCV
# truncate (v >> 8). IMREAD_UNCHANGED is avoided on purpose: it skips EXIF.
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


class ImageReadError(Exception):
    """An image file is missing, empty or cannot be decoded; str() names the file and the reason."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB.

    Returns an (H, W, 3) uint8 array in RGB order, already rotated according to
    its EXIF Orientation tag (as PIL's ``exif_transpose`` does). Grayscale is
    replicated to 3 channels, alpha is dropped, palette images are expanded and
    16-bit samples are scaled to 8 bits with ``v // 257`` (65535 -> 255).
    Raises ImageReadError for a missing, empty, unreadable or undecodable file.
    """
    data = _read_bytes(path)
    try:
        image = cv2.imdecode(data, _DECODE_FLAGS)
    except cv2.error as exc:
        raise ImageReadError(f"{os.fspath(path)}: cannot decode image ({_first_line(exc)})") from exc
    if image is None:
        raise ImageReadError(f"{os.fspath(path)}: cannot decode image (corrupt or unsupported format)")
    image = _to_uint8(image, path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_bytes(path: str | os.PathLike) -> np.ndarray:
    """The whole file as a 1-D uint8 array; np.fromfile rather than cv2.imread so non-ASCII paths work."""
    name = os.fspath(path)
    try:
        data = np.fromfile(name, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{name}: file not found") from exc
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    return data


def _to_uint8(image: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 -> (H, W, 3) uint8; other sample types are refused."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # // 257 maps 0..65535 exactly onto 0..255 (257 * 255 == 65535).
        return (image // 257).astype(np.uint8)
    raise ImageReadError(f"{os.fspath(path)}: unsupported sample type {image.dtype} (only 8- and 16-bit images)")


def _first_line(exc: Exception) -> str:
    """OpenCV errors are multi-line with source locations; keep the message short."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


# EXIF orientations 5-8 rotate by 90 degrees, so the decoded image is the header's size transposed.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) that ``load_image`` will return, read from the file header only; None when unsure.

    Reads a few hundred bytes instead of decoding, so `run` can check every mask size against its image
    before the model starts. None (the check waits for the decode) for files Pillow cannot parse and for
    non-JPEG files with a rotating EXIF tag, where OpenCV's handling of the tag is not certain.
    """
    from PIL import Image  # only `run`'s up-front checks need Pillow

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            jpeg = image.format == "JPEG"
    except (OSError, ValueError, SyntaxError):  # UnidentifiedImageError is an OSError
        return None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return (width, height) if jpeg else None
    return height, width
