"""What a training run ran on, stored in the checkpoint it writes.

The gate's training is deterministic on one machine (two runs give identical tensors), yet the same
command under other library versions (a rebuilt cache, other float kernels) ends at other weights of
the same loss, and another keep threshold (weights/README.md). Recording the versions lets a
reproduction compare like with like.
"""

from __future__ import annotations

import platform
from importlib import metadata

# Distributions whose numerics reach the weights: tensors, image decode and resampling, RLE.
PACKAGES = ("torch", "torchvision", "numpy", "opencv-python-headless", "pycocotools", "pillow")


def environment() -> dict[str, str]:
    """Python, machine and the version of each of PACKAGES (absent ones left out)."""
    env = {"python": platform.python_version(), "machine": platform.machine()}
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return env
