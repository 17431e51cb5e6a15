"""Progress when stderr is not a terminal: plain lines while the work runs, for run, visualize and eval."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from rich.console import Console

import refine_cli.console
from refine_cli.cli import main
from refine_cli.console import LogProgress, progress_bar

from .test_run import dataset  # noqa: F401 (a fixture)


def _log(interval: float):
    console = Console(record=True, width=200, force_terminal=False, file=open("/dev/null", "w"))
    return console, LogProgress(console, interval)


def test_lines_at_the_interval_and_a_closing_one():
    console, bar = _log(3600)
    with bar:
        task = bar.add_task("refining images", total=4, rate="")
        for n in range(4):
            bar.update(task, advance=1, rate=f"{n + 1} inst")
    # The first update is shown at once; the hour-long interval holds back the rest until the end.
    assert console.export_text().splitlines() == [
        "refining images: 1/4 (25%) 1 inst, elapsed 0:00, ETA 0:00",
        "refining images: 4/4 (100%) 4 inst, elapsed 0:00",
    ]


def test_every_update_with_a_zero_interval_and_no_closing_line_on_error():
    console, bar = _log(0)
    try:
        with bar:
            task = bar.add_task("training steps", total=None, rate="")
            bar.update(task, completed=5, total=10, rate="loss 0.500")
            bar.update(task, completed=7)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert console.export_text().splitlines() == [
        "training steps: 5/10 (50%) loss 0.500, elapsed 0:00, ETA 0:00",
        "training steps: 7/10 (70%) loss 0.500, elapsed 0:00, ETA 0:00",
    ]


def test_progress_bar_picks_log_lines_off_a_terminal():
    # CliRunner and pytest give stderr no terminal: the case of `run ... 2> log`.
    assert isinstance(progress_bar(), LogProgress)


def test_redirected_run_reports_each_image_before_the_summary(dataset, box_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(refine_cli.console, "LOG_INTERVAL_S", 0.0)
    path, images, _ = dataset
    res = CliRunner().invoke(main, ["run", str(path), str(images), "-o", str(tmp_path / "o.json"),
                                    "--weights", str(box_checkpoint)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    # (a first "0/2" line may come when the run knows how many images are left to do)
    progress = [i for i, line in enumerate(lines) if line.startswith("refining images: ") and " 0/" not in line]
    assert re.match(r"refining images: 1/2 \(50%\) \d+ rec, [\d.]+ rec/s, elapsed \d+:\d\d, ETA \d+:\d\d$",
                    lines[progress[0]]), lines
    assert lines[progress[1]].startswith("refining images: 2/2 (100%)")
    assert progress[-1] < next(i for i, line in enumerate(lines) if "instances refined" in line)


def test_redirected_eval_reports_each_evaluation(tmp_path, monkeypatch):
    monkeypatch.setattr(refine_cli.console, "LOG_INTERVAL_S", 0.0)
    gt = {"images": [{"id": 1, "height": 20, "width": 20}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0,
                           "bbox": [2, 2, 4, 4], "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "p.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 1.0,
                                                  "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}]))
    res = CliRunner().invoke(main, ["eval", "--gt", str(tmp_path / "gt.json"), str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "evaluating (mask AP, Boundary AP per file): 1/2 (50%)" in res.stderr
    assert "evaluating (mask AP, Boundary AP per file): 2/2 (100%)" in res.stderr
