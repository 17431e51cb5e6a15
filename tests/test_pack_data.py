"""weights/pack_data.py: training sets shrunk for the trip to a GPU machine stay trainable and true to the GT."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from refine_cli.coco_io import decode_mask, encode_mask
from refine_cli.images import load_image
from refine_cli.train.data import load_sets

from .conftest import load_script


@pytest.fixture(scope="module")
def pack():
    return load_script("weights/pack_data.py")


def _packed_json(out: Path) -> bytes:
    return gzip.decompress((out / "instances.json.gz").read_bytes())


def _make_set(root: Path) -> np.ndarray:
    """Image 1 (200x300): a disc (RLE), a square (polygon) and a crowd region; image 2: no masks."""
    (root / "images").mkdir(parents=True)
    img = np.full((200, 300, 3), 40, np.uint8)
    disc = np.zeros((200, 300), np.uint8)
    cv2.circle(disc, (100, 90), 50, 1, -1)
    img[disc > 0] = (220, 160, 40)
    cv2.imwrite(str(root / "images" / "a.jpg"), img[:, :, ::-1])
    cv2.imwrite(str(root / "images" / "b.jpg"), img[:, :, ::-1])
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": encode_mask(disc)},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[200.0, 100.0, 280.0, 100.0, 280.0, 180.0, 200.0, 180.0]]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": encode_mask(disc)},
    ]
    images = [{"id": 1, "file_name": "a.jpg", "height": 200, "width": 300, "annotation_complete": False},
              {"id": 2, "file_name": "b.jpg", "height": 200, "width": 300}]
    (root / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return disc


def test_pack_shrinks_images_and_masks_together_and_stays_loadable(pack, tmp_path):
    disc = _make_set(tmp_path / "src")
    n, nbytes = pack.pack_set(tmp_path / "src", tmp_path / "out", short_side=100, quality=80)
    assert n == 1 and nbytes > 0  # the image without masks is left out
    data = json.loads(_packed_json(tmp_path / "out"))
    (im,) = data["images"]
    assert (im["file_name"], im["height"], im["width"], im["annotation_complete"]) == ("a.webp", 100, 150, False)
    assert load_image(tmp_path / "out" / "images" / "a.webp").shape == (100, 150, 3)
    assert [a["id"] for a in data["annotations"]] == [1, 2]  # the crowd region is dropped
    small_disc = decode_mask(data["annotations"][0], 100, 150, where="test")
    expected = cv2.resize(disc, (150, 100), interpolation=cv2.INTER_AREA)
    assert (small_disc != expected).mean() < 0.01
    square = decode_mask(data["annotations"][1], 100, 150, where="test")
    assert abs(int(square.sum()) - 41 * 41) < 0.1 * 41 * 41 and data["annotations"][1]["bbox"][0] == 100
    # What train reads once train_gpu.sh has unpacked the annotations.
    (tmp_path / "out" / "instances.json").write_bytes(_packed_json(tmp_path / "out"))
    (entry,) = load_sets([tmp_path / "out"])
    assert (entry.height, entry.width, len(entry.anns), entry.complete) == (100, 150, 2, False)


def test_pack_is_deterministic_and_keeps_small_images(pack, tmp_path):
    _make_set(tmp_path / "src")
    for out in ("o1", "o2"):
        pack.pack_set(tmp_path / "src", tmp_path / out, short_side=480, quality=80)
    for name in ("instances.json.gz", "images/a.webp"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()
    (im,) = json.loads(_packed_json(tmp_path / "o1"))["images"]
    assert (im["height"], im["width"]) == (200, 300)  # never enlarged
