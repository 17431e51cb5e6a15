"""`run` fails before the model loads: output location, mask sizes and counts, non-finite options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import refine_cli.model.checkpoint
from refine_cli.cli import main
from refine_cli.coco_io import encode_mask

from .conftest import REPO

EXAMPLE = REPO / "examples" / "coco_val"


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load weights fails the test: these errors must come before the model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input error was reported")
    monkeypatch.setattr(refine_cli.model.checkpoint, "load_checkpoint", refuse)


@pytest.fixture
def scene(tmp_path):
    """Two 60x80 PNGs and two valid RLE records."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for image_id in (1, 2):
        cv2.imwrite(str(images / f"{image_id}.png"), np.full((60, 80, 3), 90, np.uint8))
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 10:40] = 1
    records = [{"image_id": i, "bbox": [10, 10, 30, 20], "score": 0.9, "segmentation": encode_mask(mask)}
               for i in (1, 2)]
    return tmp_path, images, records


def _run(tmp_path, images, document, *extra):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(document))
    args = ["run", str(path), str(images), "--weights", str(tmp_path / "w.pt"), *map(str, extra)]
    return CliRunner().invoke(main, args)


def _one_error_line(res, *words):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    for word in words:
        assert word in res.output, res.output


def test_missing_output_folder(scene, no_model):
    tmp_path, images, records = scene
    res = _run(tmp_path, images, records, "-o", tmp_path / "nope" / "out.json")
    _one_error_line(res, "nope", "does not exist")
    assert ".tmp" not in res.output


def test_output_folder_is_a_file(scene, no_model):
    tmp_path, images, records = scene
    (tmp_path / "file").write_text("")
    _one_error_line(_run(tmp_path, images, records, "-o", tmp_path / "file" / "out.json"), "is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder(scene, no_model):
    tmp_path, images, records = scene
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _one_error_line(_run(tmp_path, images, records, "-o", locked / "out.json"), "cannot write in")


def test_rle_size_of_the_last_record_against_the_image_header(scene, no_model):
    tmp_path, images, records = scene
    records[-1]["segmentation"] = encode_mask(np.zeros((61, 80), np.uint8))
    res = _run(tmp_path, images, records, "-o", tmp_path / "out.json")
    _one_error_line(res, "record 1", "[61, 80]", "[60, 80]")


def test_rle_size_against_the_images_table(scene, no_model):
    """Image 3 has no file (--skip-missing): only the table knows its size, and that is enough."""
    tmp_path, images, records = scene
    records.append({"image_id": 3, "segmentation": encode_mask(np.zeros((61, 80), np.uint8))})
    table = tmp_path / "images.json"
    table.write_text(json.dumps({"images": [{"id": 3, "file_name": "3.png", "height": 61, "width": 81}]}))
    res = _run(tmp_path, images, records, "-o", tmp_path / "out.json", "--images-json", table, "--skip-missing")
    _one_error_line(res, "record 2", "[61, 80] != image size [61, 81]")


def test_images_table_contradicting_the_header(scene, no_model):
    tmp_path, images, records = scene
    doc = {"images": [{"id": 1, "file_name": "1.png", "height": 60, "width": 80},
                      {"id": 2, "file_name": "2.png", "height": 50, "width": 80}], "annotations": records}
    _one_error_line(_run(tmp_path, images, doc, "-o", tmp_path / "out.json"), "image 2", "50x80")


def test_corrupt_counts_of_the_last_record(scene, no_model):
    tmp_path, images, records = scene
    records[-1]["segmentation"] = {"size": [60, 80], "counts": [10, 20]}
    _one_error_line(_run(tmp_path, images, records, "-o", tmp_path / "out.json"), "record 1", "corrupt RLE")


def test_odd_polygon_of_the_last_record(scene, no_model):
    tmp_path, images, records = scene
    records[-1]["segmentation"] = [[1, 2, 3, 4, 5, 6, 7]]
    _one_error_line(_run(tmp_path, images, records, "-o", tmp_path / "out.json"), "record 1", "odd number")


_REQUIRED = {"run": ["p.json", "images"], "visualize": ["p.json", "images", "--refined", "r.json", "-o", "viz"],
             "eval": ["--gt", "gt.json", "p.json"], "train": ["--data", "d", "--out", "o.pt"]}


@pytest.mark.parametrize("command, option", [
    ("run", "--score-thr"), ("run", "--box-expand"), ("visualize", "--score-thr"), ("eval", "--dilation-ratio"),
    ("train", "--lr"), ("train", "--ema"),
])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_option_values_are_refused(command, option, value):
    res = CliRunner().invoke(main, [command, *_REQUIRED[command], option, value])
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output, res.output
    # An infinity outside a bounded range is refused as out of range instead; nan is outside no range.
    assert "not a finite number" in res.output or value != "nan", res.output


def test_example_with_a_bad_last_record_fails_in_seconds_without_torch(tmp_path):
    """The issue's case: the shipped example, last record's RLE one row too tall, output folder fine."""
    records = json.loads((EXAMPLE / "predictions.json").read_text())
    h, w = records[-1]["segmentation"]["size"]
    records[-1]["segmentation"] = encode_mask(np.zeros((h + 1, w), np.uint8))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(records))
    code = ("import sys; from refine_cli.cli import main\n"
            "try: main(sys.argv[1:])\n"
            "except SystemExit as e: print('torch' in sys.modules, e.code)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "run", str(pred), str(EXAMPLE / "images"),
                          "-o", str(tmp_path / "out.json")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert time.perf_counter() - start < 10
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
    assert f"record {len(records) - 1}" in out.stderr and "mask size" in out.stderr


def test_a_write_failure_at_the_end_names_the_output_not_a_temp_file(scene, box_checkpoint, monkeypatch):
    """The folder can vanish during the job: the one line names the output the user asked for."""
    import refine_cli.engine

    def vanished(path, head, records):
        raise FileNotFoundError(2, "No such file or directory", f"{path}.1234.tmp")
    monkeypatch.setattr(refine_cli.engine, "write_document", vanished)
    tmp_path, images, records = scene
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records))
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(tmp_path / "out.json"),
                                    "--weights", str(box_checkpoint)])
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and lines == [f"error: {tmp_path / 'out.json'}: cannot write (No such file or directory)"]
