"""`run --engine ray`: Ray Data actors refine, this process journals and writes: the bytes of one process.

The Ray tests start a local instance with 2 CPUs (each run starts and stops its own); they are skipped
only where the `ray` extra is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.journal import Journal
from refine_cli.model.config import DEFAULT_WEIGHTS
from refine_cli.refiner import Refiner

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coco_val"
# Four example images (2, 8, 2 and 6 records); the third one's records all fall below --score-thr.
IMAGE_IDS = (377575, 126107, 269314, 261888)
BELOW = 269314
ARGS = ("--weights", DEFAULT_WEIGHTS, "--device", "cpu", "--threads", "1", "--score-thr", "0.3",
        "--write-quality", "--update-bbox")
NEEDS_RAY = "the `ray` extra is not installed (pip install 'refine-masks[ray]')"


@pytest.fixture
def example_subset(tmp_path):
    """18 example records of 4 images, interleaved, with a crowd record, a box-only one and low scores."""
    records = [r for r in json.loads((EXAMPLE / "predictions.json").read_text()) if r["image_id"] in IMAGE_IDS]
    records = records[::2] + records[1::2]  # the images' records interleaved in the file
    for n, r in enumerate(records):
        r["score"] = 0.1 if r["image_id"] == BELOW else (0.2 if n % 7 == 3 else 0.9)
        r["note"] = f"r{n} é"
    records[1]["iscrowd"] = 1
    del records[5]["segmentation"]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records))
    return path


def _run(*args, catch=False):
    return CliRunner().invoke(main, ["run", *map(str, args)], catch_exceptions=catch)


def _reference(path, tmp_path):
    out = tmp_path / "single.json"
    res = _run(path, EXAMPLE / "images", "-o", out, *ARGS)
    assert res.exit_code == 0, res.output
    return out.read_bytes()


def _no_network_here(monkeypatch):
    """This process must only journal and write: refining an image here fails the run."""

    def refuse(*args, **kwargs):
        raise AssertionError("the driver ran the network")

    monkeypatch.setattr(Refiner, "refine_image_with_quality", refuse)


def _spy_tasks(monkeypatch):
    """The positions of the images handed to the Ray engine, per run."""
    import refine_cli.ray_engine as ray_engine

    runs = []
    original = ray_engine._refine_on_ray

    def spy(tasks, *args):
        runs.append([])

        def seen():
            for task in tasks:
                runs[-1].append(task.position)
                yield task

        return original(seen(), *args)

    monkeypatch.setattr(ray_engine, "_refine_on_ray", spy)
    return runs


def test_ray_options_need_engine_ray(example_subset, tmp_path):
    for flag, value in (("--ray-address", "auto"), ("--workers", "2")):
        res = _run(example_subset, EXAMPLE / "images", "-o", tmp_path / "o.json", flag, value)
        assert res.exit_code == 2 and f"{flag} needs --engine ray" in res.output
        assert not (tmp_path / "o.json").exists()


def test_engine_ray_without_ray_names_the_extra(example_subset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, installed or not
    res = _run(example_subset, EXAMPLE / "images", "-o", tmp_path / "o.json", "--engine", "ray")
    assert res.exit_code == 2
    assert "pip install 'refine-masks[ray]'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.json.journal").exists()


def test_two_ray_workers_write_the_single_process_bytes(example_subset, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    reference = _reference(example_subset, tmp_path)
    refined = [r for r in json.loads(reference) if "refine_quality" in r]
    assert len(refined) >= 8  # the comparison covers masks the network changed, not only copied records
    _no_network_here(monkeypatch)
    runs = _spy_tasks(monkeypatch)
    out = tmp_path / "ray.json"
    res = _run(example_subset, EXAMPLE / "images", "-o", out, *ARGS, "--engine", "ray", "--workers", "2")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == reference
    assert runs == [[0, 1, 2, 3]]
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert not (tmp_path / "ray.json.journal").exists()


def test_sigterm_stops_a_ray_run_that_resumes(example_subset, tmp_path, monkeypatch):
    """ray.init puts its own SIGTERM handler in this process; run's must win (exit 143, journal kept)."""
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    reference = _reference(example_subset, tmp_path)
    out, journal = tmp_path / "ray.json", tmp_path / "ray.json.journal"
    runs = _spy_tasks(monkeypatch)
    original = Journal.finish_image

    def terminate_at_the_third(self, *args):
        if self.done.sum() == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(Journal, "finish_image", terminate_at_the_third)
    res = _run(example_subset, EXAMPLE / "images", "-o", out, *ARGS, "--engine", "ray", "--workers", "2")
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert "--resume" in res.output and "Traceback" not in res.output
    assert journal.exists() and not out.exists() and not ray.is_initialized()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.setattr(Journal, "finish_image", original)
    _no_network_here(monkeypatch)
    res = _run(example_subset, EXAMPLE / "images", "-o", out, *ARGS, "--engine", "ray", "--workers", "2",
               "--resume")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == reference
    # Image positions follow first appearance in the file. The image without refinable records is
    # journalled first (no worker needed), then the others in order: SIGTERM came after it and the first.
    order = list(dict.fromkeys(r["image_id"] for r in json.loads(example_subset.read_text())))
    done = {order.index(BELOW), 0 if order[0] != BELOW else 1}
    assert runs[0] == [0, 1, 2, 3] and sorted(runs[1]) == sorted(set(range(4)) - done)
    assert not journal.exists()


def test_a_worker_reports_bad_input_and_a_foreign_predictions_file(example_subset, box_checkpoint):
    """What an actor hands back, called here without Ray: bad input as an error for the driver to raise."""
    import numpy as np

    from refine_cli.engine import ImageOptions, RefinerSpec, open_input
    from refine_cli.ray_engine import _Worker

    index, _ = open_input(example_subset)
    first = [i for i in range(len(index)) if index.image_ids[i] == index.image_ids[0]]
    image = EXAMPLE / "images" / f"{int(index.image_ids[0]):012d}.jpg"
    task = {"position": 0, "image_id": int(index.image_ids[0]), "path": str(image), "expected": None,
            "records": [(i, int(index.offsets[i]), int(index.lengths[i])) for i in first]}
    spec, size = RefinerSpec(str(box_checkpoint)), example_subset.stat().st_size

    def call(worker, **changes):
        batch = {"position": np.array([0]), "task": np.array([json.dumps({**task, **changes})], dtype=object)}
        out = worker(batch)
        assert list(out["position"]) == [0]
        return json.loads(out["result"][0])

    worker = _Worker(spec, str(example_subset), size, ImageOptions())
    good = call(worker)
    assert good["counts"]["images"] == 1 and {i for i, _ in good["patches"]} <= set(first)
    assert "but the images table says 1x1" in call(worker, expected={"height": 1, "width": 1})["error"]
    foreign = _Worker(spec, str(example_subset), size + 1, ImageOptions())
    assert "not the driver's" in call(foreign)["error"]


def test_an_address_where_no_cluster_answers_fails_at_once(example_subset, tmp_path):
    pytest.importorskip("ray", reason=NEEDS_RAY)
    out = tmp_path / "o.json"
    res = _run(example_subset, EXAMPLE / "images", "-o", out, *ARGS, "--engine", "ray", "--ray-address", "127.0.0.1:1")
    assert res.exit_code == 2 and "--ray-address 127.0.0.1:1: no Ray cluster answers there" in res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "o.json.journal").exists()  # nothing done, nothing to resume
