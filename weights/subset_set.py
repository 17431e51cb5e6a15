"""Write a COCO-format GT restricted to the first images of a set's list (optionally by mask count).

    python weights/subset_set.py GT.json OUT.json --count N [--masks MIN-MAX]

Keeps the image table's order and every annotation of a kept image (crowd regions too);
``--masks`` keeps only images with MIN..MAX masks that train uses (non-crowd, with a segmentation). Used by measure.sh and memorise.sh.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refine_cli.coco_io import write_json_atomic
from refine_cli.train.data import trainable_annotations


def subset(gt: dict, count: int, masks: tuple[int, int] | None = None) -> dict:
    """The first ``count`` images of ``gt`` (those with ``masks`` non-crowd masks if given) and their annotations."""
    by_image = trainable_annotations(gt)
    images = [im for im in gt["images"]
              if masks is None or masks[0] <= len(by_image.get(im["id"], ())) <= masks[1]][:count]
    ids = {im["id"] for im in images}
    return {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt")
    parser.add_argument("out")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--masks", help="MIN-MAX non-crowd masks per image")
    args = parser.parse_args()
    masks = tuple(int(v) for v in args.masks.split("-")) if args.masks else None
    write_json_atomic(args.out, subset(json.loads(Path(args.gt).read_text()), args.count, masks))


if __name__ == "__main__":
    main()
