"""Repository hygiene the issue asked for: README outputs ignored by git, visualize split by job."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import REPO


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_readme_outputs_are_ignored():
    # The README's commands write refined.json and viz/ in the repository root.
    paths = ["refined.json", "viz/index.html", "viz/crops/01_image1_record0.png"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == paths


def test_visualize_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (REPO / "refine_cli" / "visualize").glob("*.py")}
    assert {"selection.py", "drawing.py", "gallery.py", "html_page.py", "command.py"} <= sizes.keys()
    assert max(sizes.values()) < 300, sizes
