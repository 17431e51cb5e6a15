"""The gallery in a real headless browser (Chromium): the images load, and a click target opens the viewer."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from .test_visualize import invoke, scene  # noqa: F401 (scene is a fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")


def screenshot(url: str, path) -> np.ndarray:
    """(H, W, 3) RGB of ``url`` in a 1200x1200 headless window."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1200", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(int)


def scene_pixels(shot: np.ndarray) -> int:
    """Pixels of the test images' gradient (R 50-130, G 100-160, B ~60, see make_image): drawn images, not icons."""
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    return int(np.count_nonzero((r >= 50) & (r <= 130) & (g >= 100) & (g <= 160) & (np.abs(b - 60) <= 4)))


def overlay_pixels(shot: np.ndarray) -> int:
    """Dark grey pixels (15-45): the viewer's backdrop over the light page, and the crops' caption bars."""
    return int(np.count_nonzero((shot.max(axis=-1) <= 45) & (shot.min(axis=-1) >= 15)
                                & (np.ptp(shot, axis=-1) <= 4)))


def test_gallery_renders_its_images_and_opens_the_viewer(scene, tmp_path):  # noqa: F811
    assert invoke(scene).exit_code == 0
    page = (scene["out"] / "index.html").resolve().as_uri()
    index = screenshot(page, tmp_path / "index.png")
    # Two tiles and two crop strips of the gradient images: far more than any text or swatch would give.
    assert scene_pixels(index) > 100_000
    viewer = screenshot(page + "#view-1", tmp_path / "viewer.png")
    # Image 1 (160x120) fills the window's width: 1200x900 px of it, the backdrop around.
    assert scene_pixels(viewer) > 600_000
    assert overlay_pixels(viewer) > overlay_pixels(index) + 100_000
