"""`refine-masks run` end to end on a tiny dataset made in code, and every kind of bad input."""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO

from refine_cli.cli import main
from refine_cli.coco_io import encode_mask


def _square(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture
def dataset(tmp_path):
    """Two images (one grayscale) and five records mixing RLE, polygons, a box-only record and extra fields."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "000000000001.jpg"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "2.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
    records = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 20], "score": 0.9,
         "segmentation": encode_mask(_square(60, 80, 15, 12, 35, 28)), "extra": {"keep": [1, 2]}},
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.8,
         "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]},
        {"image_id": 1, "category_id": 3, "bbox": [50, 30, 20, 20], "score": 0.3},
        {"image_id": 2, "category_id": 1, "score": 0.7,
         "segmentation": encode_mask(_square(48, 64, 30, 20, 50, 40))},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 80, 60], "score": 0.5, "iscrowd": 1,
         "segmentation": encode_mask(_square(60, 80, 0, 0, 80, 60))},
    ]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records))
    return path, images, records


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)], catch_exceptions=False)


def test_run_refines_and_keeps_everything_else(dataset, box_checkpoint, tmp_path):
    path, images, records = dataset
    out = tmp_path / "out.json"
    res = _run(path, images, "-o", out, "--weights", box_checkpoint, "--device", "cpu")
    assert res.exit_code == 0, res.output
    refined = json.loads(out.read_text())
    assert len(refined) == len(records)
    for before, after in zip(records, refined):
        assert {k: v for k, v in before.items() if k != "segmentation"} == \
               {k: v for k, v in after.items() if k != "segmentation"}
    # The box-filling model turns each refinable record into its (clipped) box.
    assert refined[0]["segmentation"] != records[0]["segmentation"]
    assert isinstance(refined[0]["segmentation"]["counts"], str)
    assert refined[2]["segmentation"]["size"] == [60, 80]  # box-only record got a mask
    assert refined[4] == records[4]  # crowd kept as it came
    from pycocotools import mask as mask_utils
    m = mask_utils.decode(refined[2]["segmentation"])
    assert m[30:50, 50:70].all() and m.sum() == 400
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 60, "width": 80}, {"id": 2, "height": 48, "width": 64}],
                  "annotations": [], "categories": [{"id": i} for i in (1, 2, 3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        # loadRes takes the bbox branch for all records when the first has one: drop the box-less record.
        assert len(gt.loadRes([r for r in refined if "bbox" in r]).anns) == 4
    assert "instances refined" in res.output and "crowd region" in res.output


def test_default_output_name_and_overwrite_guard(dataset, box_checkpoint):
    path, images, _ = dataset
    assert _run(path, images, "--weights", box_checkpoint).exit_code == 0
    assert path.with_name("pred.refined.json").exists()
    res = _run(path, images, "-o", path, "--weights", box_checkpoint)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert _run(path, images, "-o", path, "--weights", box_checkpoint, "--overwrite").exit_code == 0


def test_score_threshold_and_update_bbox(dataset, box_checkpoint, tmp_path):
    path, images, records = dataset
    out = tmp_path / "o.json"
    assert _run(path, images, "-o", out, "--weights", box_checkpoint, "--score-thr", "0.75",
                "--update-bbox").exit_code == 0
    refined = json.loads(out.read_text())
    assert refined[2] == records[2] and refined[3] == records[3]  # below threshold: unchanged
    assert refined[0]["bbox"] == [10.0, 10.0, 30.0, 20.0]  # box-filling model: mask box == box


def test_missing_weights_names_the_path(dataset, tmp_path):
    path, images, _ = dataset
    res = _run(path, images, "--weights", tmp_path / "nope.pt")
    assert res.exit_code == 2 and "nope.pt" in res.output and "Traceback" not in res.output


def _write(tmp_path, records, name="bad.json"):
    p = tmp_path / name
    p.write_text(records if isinstance(records, str) else json.dumps(records))
    return p


@pytest.mark.parametrize("content, message", [
    ("[{\"image_id\": 1,", "bad.json"),
    ("\"just a string\"", "bad.json"),
    ([{"image_id": 1, "bbox": [1, 1, 5, 5]}, {"bbox": [1, 1, 5, 5]}], "record 1"),
    ([{"image_id": 99, "bbox": [1, 1, 5, 5]}], "image_id 99"),
    ([{"image_id": 1, "bbox": [1, 1, 5, 5], "segmentation": encode_mask(np.ones((10, 10), np.uint8))}],
     "record 0"),
])
def test_bad_input_is_one_line_exit_2(dataset, box_checkpoint, tmp_path, content, message):
    _, images, _ = dataset
    out = tmp_path / "never.json"
    res = _run(_write(tmp_path, content), images, "-o", out, "--weights", box_checkpoint)
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()  # nothing half-written


def test_unreadable_image_errors_or_is_skipped(dataset, box_checkpoint, tmp_path):
    path, images, records = dataset
    (images / "2.png").write_bytes(b"not a png")
    res = _run(path, images, "-o", tmp_path / "o.json", "--weights", box_checkpoint)
    assert res.exit_code == 2 and "2.png" in res.output
    res = _run(path, images, "-o", tmp_path / "o.json", "--weights", box_checkpoint, "--skip-missing")
    assert res.exit_code == 0 and "image missing or unreadable" in res.output
    refined = json.loads((tmp_path / "o.json").read_text())
    assert refined[1] == records[1] and refined[3] == records[3]


def test_missing_image_skipped_with_flag(dataset, box_checkpoint, tmp_path):
    path, images, records = dataset
    recs = records + [{"image_id": 5, "bbox": [1, 1, 4, 4], "score": 1.0}]
    res = _run(_write(tmp_path, recs, "p.json"), images, "-o", tmp_path / "o.json", "--weights", box_checkpoint,
               "--skip-missing")
    assert res.exit_code == 0
    assert json.loads((tmp_path / "o.json").read_text())[-1] == recs[-1]


@pytest.mark.parametrize("record, reason", [
    ({"image_id": 1, "bbox": [5, 5, 0, 10]}, "zero or negative box"),
    ({"image_id": 1, "bbox": [5, 5, -3, 10]}, "zero or negative box"),
    ({"image_id": 1, "bbox": [500, 500, 10, 10]}, "box outside the image"),
    ({"image_id": 1, "bbox": [5, 5, 10, 10], "segmentation": encode_mask(np.zeros((60, 80), np.uint8))},
     "empty coarse mask"),
    ({"image_id": 1, "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 10, 10]]}, "empty coarse mask"),
    ({"image_id": 1}, "no box and no mask"),
])
def test_degenerate_records_are_kept_and_counted(dataset, box_checkpoint, tmp_path, record, reason):
    _, images, _ = dataset
    out = tmp_path / "o.json"
    res = _run(_write(tmp_path, [record]), images, "-o", out, "--weights", box_checkpoint)
    assert res.exit_code == 0, res.output
    assert reason in res.output
    assert json.loads(out.read_text()) == [record]


def test_zero_records_and_duplicates(dataset, box_checkpoint, tmp_path):
    _, images, records = dataset
    out = tmp_path / "o.json"
    assert _run(_write(tmp_path, []), images, "-o", out, "--weights", box_checkpoint).exit_code == 0
    assert json.loads(out.read_text()) == []
    dup = [records[0], records[0]]
    assert _run(_write(tmp_path, dup, "d.json"), images, "-o", out, "--weights", box_checkpoint).exit_code == 0
    a, b = json.loads(out.read_text())
    assert a == b and a["segmentation"] != records[0]["segmentation"]


def test_dataset_dict_input_uses_its_images_table(dataset, box_checkpoint, tmp_path):
    _, images, records = dataset
    doc = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 60, "width": 80}],
           "annotations": [records[0]], "categories": []}
    out = tmp_path / "o.json"
    assert _run(_write(tmp_path, doc), images, "-o", out, "--weights", box_checkpoint).exit_code == 0
    written = json.loads(out.read_text())
    assert written["images"] == doc["images"] and len(written["annotations"]) == 1
    doc["images"][0]["height"] = 61
    res = _run(_write(tmp_path, doc), images, "-o", out, "--weights", box_checkpoint)
    assert res.exit_code == 2 and "images table" in res.output


def test_help_and_version():
    runner = CliRunner()
    assert "refine" in runner.invoke(main, ["run", "--help"]).output.lower()
    assert runner.invoke(main, ["--version"]).output.strip().endswith("0.1.0")
