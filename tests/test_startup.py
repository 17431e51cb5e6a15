"""`--help` and `--version` load none of the heavy libraries, and come back within the issue's 1.5 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .conftest import REPO

HEAVY = ("torch", "torchvision", "numpy", "cv2", "pycocotools", "rich", "PIL")

_PROBE = ("import sys\nfrom refine_cli.cli import main\n"
          "try: main(sys.argv[1:])\n"
          f"except SystemExit: print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["train", "--help"],
                                  ["eval", "--help"], ["visualize", "--help"]])
def test_help_imports_no_heavy_library(args):
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stderr.strip() == "[]", out.stderr
    assert out.stdout.strip()


def test_help_within_the_bar():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "refine_cli", "--help"], check=True, capture_output=True, timeout=60,
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.perf_counter() - start < 1.5
