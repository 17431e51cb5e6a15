"""``refine-masks visualize``; heavy imports wait for the call so that ``--help`` stays instant."""

from __future__ import annotations

from pathlib import Path

import click

from ..options import FiniteFloat


@click.command("visualize")
@click.argument("coarse", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", type=click.Path(file_okay=False, path_type=Path))
@click.option("--refined", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="`run`'s output for COARSE (same records in the same order).")
@click.option("--gt", "gt_path", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO instances JSON: GT contours, IoU vs GT and category names.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created; files of the same name are replaced).")
@click.option("--images-json", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO JSON whose 'images' map image ids to file names.")
@click.option("--score-thr", type=FiniteFloat(), default=0.5, show_default=True,
              help="Draw only records scoring at least this (records without a score always).")
@click.option("--max-images", type=click.IntRange(min=1), default=50, show_default=True,
              help="Draw at most this many images (the first in record order).")
@click.option("--image-id", "image_ids", type=int, multiple=True, help="Draw only this image (repeatable).")
@click.option("--top-changed", type=click.IntRange(min=0), default=8, show_default=True,
              help="Zoomed crops of the K instances whose mask changed most (1 - IoU).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def visualize_command(coarse, images, refined, gt_path, output, images_json, score_thr, max_images, image_ids,
                      top_changed, debug):
    """Draw COARSE vs --refined masks on the images in IMAGES, with zoomed crops and an HTML gallery."""
    from ..coco_io import InputError, read_predictions
    from ..console import err_console, fail, progress_bar
    from .gallery import draw_gallery
    from .html_page import summary_line
    from .selection import plan_images

    if not images.is_dir():
        fail(f"{images}: not a directory of images")
    try:
        coarse_preds = read_predictions(coarse, images_json)
        refined_preds = read_predictions(refined)
        gt = read_predictions(gt_path) if gt_path else None
        plan = plan_images(coarse_preds, refined_preds, images, score_thr=score_thr, max_images=max_images,
                           image_ids=set(image_ids))
        with progress_bar() as bar:
            task = bar.add_task("drawing images", total=len(plan.indices), rate="")
            drawn = [0]

            def on_image(n: int) -> None:
                drawn[0] += n
                bar.update(task, advance=1, rate=f"{drawn[0]} inst")

            gallery = draw_gallery(plan, coarse_preds, refined_preds, gt, output, top_changed=top_changed,
                                   on_image=on_image)
    except (InputError, OSError) as e:
        fail(str(e), debug)
    err_console.print(f"{summary_line(gallery, plan)} -> {output / 'index.html'}", markup=False, highlight=False,
                      soft_wrap=True)
