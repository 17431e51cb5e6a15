"""refine-masks: re-predict instance masks at 112x112 with a RefineMask head.

Library use: ``from refine_cli import load_refiner`` (see :mod:`refine_cli.api`); detector
outputs: :mod:`refine_cli.adapters`.
"""

__version__ = "0.1.0"

_API = ("load_refiner", "MaskRefiner")


def __getattr__(name: str):
    """``load_refiner`` and ``MaskRefiner`` import torch on first use, not with the package."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
