"""`refine-masks eval`: COCO mask AP and Boundary AP of prediction files.

The names below load on first use (PEP 562): the CLI imports ``evaluate.command`` for ``--help``, and
that must not pull in pycocotools, numpy and OpenCV through this package's ``__init__``.
"""

from importlib import import_module

_HOMES = {
    "EvalInputError": "coco_eval",
    "evaluate": "coco_eval",
    "render_tables": "coco_eval",
    "boundary_width": "boundary",
    "mask_to_boundary": "boundary",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
