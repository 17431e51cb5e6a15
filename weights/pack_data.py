"""Re-encode COCO-format training sets small enough to travel to a GPU machine (64 MiB per call).

    python weights/pack_data.py OUT_DIR SET_DIR [SET_DIR ...] [--short-side 480] [--quality 80]

Each set becomes OUT_DIR/<set name>/{instances.json.gz, images/*.webp}: images with at least one
non-crowd mask, shrunk so the shorter side is at most --short-side (train jitters the shorter
side in 416-544 px, so little is lost) and stored as WebP; every mask is resized with the image
and stored as compressed RLE, and the annotations are gzipped (train_gpu.sh unpacks them). Crowd
annotations are dropped (train ignores them); image fields such as ``annotation_complete`` are
kept. Deterministic: the same inputs and OpenCV build give the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

import cv2
import numpy as np

from refine_cli.coco_io import decode_mask, encode_mask, mask_box
from refine_cli.images import load_image
from refine_cli.train.data import annotation_file, trainable_annotations


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) 0/1 -> (h, w) 0/1 by area averaging, then >= 0.5 (what a resized image shows)."""
    if mask.shape == (size[1], size[0]):
        return mask
    return (cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)


def pack_set(root: Path, out: Path, short_side: int, quality: int) -> tuple[int, int]:
    """Write one packed set; returns (images written, bytes of image data)."""
    data = json.loads(annotation_file(root).read_text())
    by_image = trainable_annotations(data)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns, nbytes = [], [], 0
    for im in data["images"]:
        if im["id"] not in by_image:
            continue
        image = load_image(root / "images" / im["file_name"])
        h, w = image.shape[:2]
        scale = min(1.0, short_side / min(h, w))
        size = (max(round(w * scale), 1), max(round(h * scale), 1))
        if scale < 1.0:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        name = Path(im["file_name"]).with_suffix(".webp").as_posix()
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"{root / 'images' / im['file_name']}: WebP encoding failed")
        path = out / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.tobytes())
        nbytes += buf.size
        images.append({**im, "file_name": name, "width": size[0], "height": size[1]})
        for a in by_image[im["id"]]:
            mask = resize_mask(decode_mask(a, h, w, where=f"{root}: ann {a.get('id')}"), size)
            box = mask_box(mask) or [0.0, 0.0, 0.0, 0.0]  # a sliver can vanish when shrunk
            anns.append({**a, "segmentation": encode_mask(mask), "bbox": box, "area": float(mask.sum())})
    packed = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    tmp = out / "instances.json.gz.tmp"
    tmp.write_bytes(gzip.compress(json.dumps({**packed, "images": images, "annotations": anns}).encode(), mtime=0))
    os.replace(tmp, out / "instances.json.gz")
    return len(images), nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("sets", type=Path, nargs="+")
    ap.add_argument("--short-side", type=int, default=480)
    ap.add_argument("--quality", type=int, default=80, help="WebP quality, 1-100")
    args = ap.parse_args()
    for root in args.sets:
        n, nbytes = pack_set(root, args.out / root.name, args.short_side, args.quality)
        print(f"{root.name}: {n} images, {nbytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
