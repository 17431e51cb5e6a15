"""weights/subset_set.py: the first images of a set, optionally by mask count, with all their annotations."""

from __future__ import annotations

import json

from .conftest import load_script


def _gt() -> dict:
    """Images 1..4 with 0, 2, 1 and 3 non-crowd masks; image 2 also has a crowd region."""
    square = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]
    anns = [{"id": k, "image_id": i, "iscrowd": 0, "segmentation": square} for k, i in enumerate([2, 2, 3, 4, 4, 4])]
    anns.append({"id": 99, "image_id": 2, "iscrowd": 1, "segmentation": square})
    return {"info": {"v": 1}, "images": [{"id": i} for i in (1, 2, 3, 4)], "annotations": anns, "categories": []}


def test_first_images_keep_order_fields_and_crowd_regions():
    sub = load_script("weights/subset_set.py")
    out = sub.subset(_gt(), 2)
    assert [im["id"] for im in out["images"]] == [1, 2] and out["info"] == {"v": 1}
    assert sorted(a["id"] for a in out["annotations"]) == [0, 1, 99]
    by_masks = sub.subset(_gt(), 5, masks=(2, 3))
    assert [im["id"] for im in by_masks["images"]] == [2, 4]  # the crowd region is not a mask
    assert len(by_masks["annotations"]) == 6


def test_command_writes_the_subset(tmp_path, monkeypatch):
    sub = load_script("weights/subset_set.py")
    (tmp_path / "gt.json").write_text(json.dumps(_gt()))
    monkeypatch.setattr("sys.argv", ["subset_set.py", str(tmp_path / "gt.json"), str(tmp_path / "o.json"),
                                     "--count", "1", "--masks", "1-1"])
    sub.main()
    assert [im["id"] for im in json.loads((tmp_path / "o.json").read_text())["images"]] == [3]
