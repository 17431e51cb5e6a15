"""`refine-masks eval`: COCO mask AP and Boundary AP of prediction files."""

from refine_cli.evaluate.boundary import boundary_width, mask_to_boundary
from refine_cli.evaluate.coco_eval import EvalInputError, evaluate, render_tables

__all__ = ["EvalInputError", "boundary_width", "evaluate", "mask_to_boundary", "render_tables"]
