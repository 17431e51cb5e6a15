"""bench/run_bench.py is a script, not a test; its FLOP accounting and peak-RSS reading are checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/run_bench.py")


def test_model_cost_counts_backbone_and_head(bench, tiny_model, tmp_path):
    records = json.loads((REPO / "examples" / "coco_val" / "predictions.json").read_text())
    case = bench.Case("example", bench.write_records(tmp_path / "p.json", bench.first_images(records, 2)),
                      REPO / "examples" / "coco_val" / "images")
    cost = bench.model_cost(case, tiny_model)
    written = json.loads(case.predictions.read_text())
    assert cost.per_image == pytest.approx(len(written) / len({r["image_id"] for r in written}))
    assert cost.extract_gflop > 0 and cost.head_gflop > 0
    assert cost.floor == pytest.approx(1 + cost.per_image * cost.head_gflop / cost.extract_gflop)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")
def test_peak_rss_is_the_childs_own_not_the_bench_process(bench, tmp_path):
    ballast = np.ones(2**26)  # 512 MiB held by this process while the child runs
    status = Path("/proc/self/status").read_text().splitlines()
    own = int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) / 1024
    peak, how = bench.cli_peak_rss_mib(["--help"], tmp_path)
    assert how == "VmHWM" and 0 < peak < own - 256, (peak, own)
    # os.wait4's ru_maxrss of the same kind of child reports at least this process's RSS: why VmHWM is used
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert os.wait4(proc.pid, 0)[2].ru_maxrss / 1024 > own - 256
    del ballast


def test_instrumented_pass_times_every_stage_of_the_engine_and_matches_e2e(bench, tiny_model, tmp_path):
    """The split comes from the engine's own hooks: every stage is timed, and the output is run's."""
    from refine_cli.refiner import Refiner

    records = json.loads((REPO / "examples" / "coco_val" / "predictions.json").read_text())
    case = bench.Case("example", bench.write_records(tmp_path / "p.json", bench.first_images(records, 1)),
                      REPO / "examples" / "coco_val" / "images")
    refiner = Refiner(tiny_model)
    _, _, e2e_records = bench.e2e_pass(case, refiner, tmp_path / "e2e.json")
    stages, records = bench.instrumented_pass(case, refiner, tmp_path / "split.json")
    assert set(stages) == set(bench.STAGES) and all(seconds > 0 for seconds in stages.values())
    assert records == e2e_records
