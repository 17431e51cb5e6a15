"""A corrupt, foreign or mismatched weights file is one line naming the file, without torch's advice."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.model.checkpoint import save_checkpoint

from .conftest import box_filling_model


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def _truncated(path):
    save_checkpoint(path, box_filling_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled_object(path):
    torch.save({"format": "refine-masks/1", "when": datetime.datetime(2020, 1, 1)}, path)


def _random_tensors(path):
    torch.save({"format": "refine-masks/1", "config": {}, "state_dict": {"w": torch.randn(3, 3)}, "meta": {}}, path)


@pytest.mark.parametrize("make, words", [
    (_random_bytes, ["not a torch checkpoint"]),
    (_truncated, ["damaged or truncated"]),
    (_pickled_object, ["datetime.datetime", "not loaded"]),
    (_random_tensors, ["do not match", "unexpected"]),
])
def test_bad_weights_file_is_one_line(tmp_path, make, words):
    images = tmp_path / "images"
    images.mkdir()
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([]))
    weights = tmp_path / "w.pt"
    make(weights)
    res = CliRunner().invoke(main, ["run", str(pred), str(images), "-o", str(tmp_path / "o.json"),
                                    "--weights", str(weights)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and str(weights) in lines[0], res.output
    assert "weights_only" not in res.output and "Traceback" not in res.output
    for word in words:
        assert word in res.output, res.output
