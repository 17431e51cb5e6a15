"""`run --resume` after a crash or SIGTERM, and `run --shard K/N` + `merge`: byte-identical to one plain run."""

from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.coco_io import encode_mask
from refine_cli.refiner import Refiner

N_IMAGES = 6


@pytest.fixture
def interleaved(tmp_path):
    """Six images whose records are interleaved in the file, some below 0.5, one crowd, one box-only."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for image_id in range(1, N_IMAGES + 1):
        cv2.imwrite(str(images / f"{image_id}.png"), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    for n in range(3 * N_IMAGES):
        image_id = n % N_IMAGES + 1
        mask = np.zeros((40, 56), np.uint8)
        x, y = 2 + n, 3 + n % 7
        mask[y:y + 12, x:x + 15] = 1
        records.append({"image_id": image_id, "category_id": 1 + n % 3, "bbox": [x, y, 15, 12],
                        "score": round(0.2 + 0.8 * (n % 5) / 4, 3), "segmentation": encode_mask(mask),
                        "note": f"r{n} é"})
    records[4]["iscrowd"] = 1
    del records[7]["segmentation"]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records, indent=1))
    return path, images


def _run(*args, catch=False):
    return CliRunner().invoke(main, [*map(str, args)], catch_exceptions=catch)


def _reference(path, images, checkpoint, tmp_path, *extra):
    out = tmp_path / "reference.json"
    res = _run("run", path, images, "-o", out, "--weights", checkpoint, *extra)
    assert res.exit_code == 0, res.output
    return out.read_bytes()


def _calls(monkeypatch, on_call=None):
    """Count network passes (one per image with refinable records); on_call(n) runs before each."""
    calls = []
    original = Refiner.refine_image_with_quality

    def spy(self, *args, **kwargs):
        calls.append(1)
        if on_call:
            on_call(len(calls))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Refiner, "refine_image_with_quality", spy)
    return calls


def test_resume_after_a_crash_writes_the_uninterrupted_bytes(interleaved, box_checkpoint, tmp_path, monkeypatch):
    path, images = interleaved
    reference = _reference(path, images, box_checkpoint, tmp_path)
    out, journal = tmp_path / "out.json", tmp_path / "out.json.journal"

    def crash(n):
        if n == 4:
            raise RuntimeError("simulated crash")

    _calls(monkeypatch, crash)
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint, catch=True)
    assert isinstance(res.exception, RuntimeError)
    assert journal.exists() and not out.exists()
    # A torn write at the moment of the crash: the resumed run must cut it off, not trust it.
    with open(journal, "ab") as f:
        f.write(b'{"record": 0, "patch": {"segmentation": {"size": [40, 56], "coun')
    monkeypatch.undo()
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint)
    assert res.exit_code == 2 and "--resume" in res.output and not out.exists()  # never reused silently
    calls = _calls(monkeypatch)
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint, "--resume")
    assert res.exit_code == 0, res.output
    assert len(calls) == N_IMAGES - 3  # the three images done before the crash are not refined again
    assert out.read_bytes() == reference
    assert not journal.exists()


def test_sigterm_ends_like_ctrl_c_and_resumes(interleaved, box_checkpoint, tmp_path, monkeypatch):
    path, images = interleaved
    reference = _reference(path, images, box_checkpoint, tmp_path, "--update-bbox")
    out = tmp_path / "out.json"

    def terminate(n):
        if n == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    _calls(monkeypatch, terminate)
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint, "--update-bbox")
    assert res.exit_code == 128 + signal.SIGTERM
    assert "--resume" in res.output and "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".out.json.*.tmp"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is not left behind
    monkeypatch.undo()
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint, "--update-bbox", "--resume")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == reference


def test_resume_refuses_a_journal_of_other_options(interleaved, box_checkpoint, tmp_path, monkeypatch):
    path, images = interleaved
    out = tmp_path / "out.json"
    def ctrl_c(n):
        # The KeyboardInterrupt Ctrl-C becomes, raised directly: an os.kill(SIGINT) here once let the
        # run finish (exit 0) in a fresh-venv CI run, and the signal's delivery is not what this tests.
        if n == 2:
            raise KeyboardInterrupt

    _calls(monkeypatch, ctrl_c)
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint)
    assert res.exit_code == 128 + signal.SIGINT
    monkeypatch.undo()
    res = _run("run", path, images, "-o", out, "--weights", box_checkpoint, "--resume", "--score-thr", "0.5")
    assert res.exit_code == 2 and "other options" in res.output and "out.json.journal" in res.output


def test_images_without_refinable_records_are_not_decoded(interleaved, box_checkpoint, tmp_path, monkeypatch):
    path, images = interleaved
    records = json.loads(path.read_text())
    for r in records:
        r["score"] = 0.9 if r["image_id"] == 2 else 0.1
    path.write_text(json.dumps(records))
    import refine_cli.engine as engine
    loaded = []
    original = engine.load_image
    monkeypatch.setattr(engine, "load_image", lambda p: loaded.append(p.name) or original(p))
    res = _run("run", path, images, "-o", tmp_path / "o.json", "--weights", box_checkpoint, "--score-thr", "0.5")
    assert res.exit_code == 0, res.output
    assert loaded == ["2.png"]
    written = json.loads((tmp_path / "o.json").read_text())
    assert [r for r in written if r["image_id"] != 2] == [r for r in records if r["image_id"] != 2]


@pytest.mark.parametrize("dataset_dict", [False, True])
def test_three_shards_merge_into_the_unsharded_bytes(interleaved, box_checkpoint, tmp_path, dataset_dict):
    path, images = interleaved
    if dataset_dict:
        document = {"info": {"v": 1}, "images": [{"id": i, "file_name": f"{i}.png"} for i in range(1, 7)],
                    "annotations": json.loads(path.read_text()), "categories": []}
        path.write_text(json.dumps(document))
    reference = _reference(path, images, box_checkpoint, tmp_path)
    records = json.loads(reference)
    records = records["annotations"] if dataset_dict else records
    parts, seen = [], []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}.json"
        assert _run("run", path, images, "-o", part, "--weights", box_checkpoint, "--shard", f"{k}/3").exit_code == 0
        written = json.loads(part.read_text())
        held = written["annotations"] if dataset_dict else written
        assert held == [r for r in records if r in held]  # the shard's records, in input order
        assert {r["image_id"] for r in held} == {k, k + 3}  # every 3rd image in order of appearance
        seen += [r["image_id"] for r in held]
        parts.append(part)
    assert sorted(seen) == sorted(r["image_id"] for r in records)  # disjoint and complete
    merged = tmp_path / "merged.json"
    res = _run("merge", path, parts[2], parts[0], parts[1], "-o", merged)
    assert res.exit_code == 0, res.output
    assert merged.read_bytes() == reference


def test_merge_refuses_missing_overlapping_and_foreign_parts(interleaved, box_checkpoint, tmp_path):
    path, images = interleaved
    parts = []
    for k in (1, 2):
        parts.append(tmp_path / f"part{k}.json")
        assert _run("run", path, images, "-o", parts[-1], "--weights", box_checkpoint, "--shard", f"{k}/2").exit_code == 0
    out = tmp_path / "merged.json"

    def refused(*args):
        res = _run("merge", *args, "-o", out)
        assert res.exit_code == 2 and "Traceback" not in res.output and not out.exists()
        return res.output

    assert "shard 2 of 2 missing" in refused(path, parts[0])
    assert "twice" in refused(path, parts[0], parts[0], parts[1])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(path.read_text())[:-1]))
    assert "another input" in refused(other, *parts)
    assert "not a part written by `run --shard`" in refused(path, parts[0], path)
    held = json.loads(parts[1].read_text())
    parts[1].write_text(json.dumps(held[:-1]))
    assert "part2.json" in refused(path, *parts) and "records" in refused(path, *parts)
    held[0]["image_id"] = 1
    parts[1].write_text(json.dumps(held))
    assert "not a part of this input" in refused(path, *parts)


@pytest.mark.parametrize("value", ["0/3", "4/3", "2", "a/b"])
def test_bad_shard_is_a_usage_error(interleaved, box_checkpoint, value):
    path, images = interleaved
    res = _run("run", path, images, "--weights", box_checkpoint, "--shard", value)
    assert res.exit_code == 2 and "--shard" in res.output
