"""The ``refine-masks eval`` command."""

from __future__ import annotations

from pathlib import Path

import click

from refine_cli.options import FiniteFloat


@click.command("eval")
@click.option(
    "--gt",
    "gt_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="COCO instances JSON with the ground truth; only its images are evaluated.",
)
@click.argument("predictions", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the metrics to this JSON file.",
)
@click.option("--per-category", is_flag=True, help="Add a per-category AP / Boundary AP table.")
@click.option("--by-quality", is_flag=True,
              help="Add mean IoU per bin of the refiner's quality estimate ('refine_quality', from "
                   "`run --write-quality`); records of the files are matched by position.")
@click.option(
    "--dilation-ratio",
    type=FiniteFloat(min=0, min_open=True, max=1),
    default=0.02,
    show_default=True,
    help="Boundary width as a fraction of the image diagonal.",
)
@click.pass_context
def eval_command(ctx, gt_path, predictions, json_path, per_category, by_quality, dilation_ratio):
    """Compare mask AP and Boundary AP of COCO result files (PREDICTIONS).

    Each file is a list of COCO result records (image_id, category_id, score,
    segmentation as RLE or polygons) or a COCO dataset with 'annotations'.
    Differences are shown against the first file.
    """
    # Imported here, not at the top, so that `refine-masks --help` does not load pycocotools and rich.
    from rich.console import Console

    from refine_cli.coco_io import write_json_atomic
    from refine_cli.console import progress_bar
    from refine_cli.evaluate.coco_eval import EvalInputError, evaluate, render_tables

    try:
        with progress_bar() as bar:
            task = bar.add_task("evaluating (mask AP, Boundary AP per file)", total=2 * len(predictions), rate="")
            metrics = evaluate(gt_path, list(predictions), dilation_ratio=dilation_ratio, per_category=per_category,
                               by_quality=by_quality, on_step=lambda: bar.update(task, advance=1))
    except EvalInputError as e:
        click.echo(f"error: {e}", err=True)
        ctx.exit(2)
    render_tables(metrics, Console())
    if json_path is not None:
        try:
            write_json_atomic(json_path, metrics)
        except OSError as e:
            click.echo(f"error: {json_path}: cannot write: {e.strerror}", err=True)
            ctx.exit(2)
