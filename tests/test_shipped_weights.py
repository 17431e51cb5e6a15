"""The README's first command: the shipped weights refine the shipped example, and measurably improve it;
their quality gate keeps perfect masks nearer the truth than the cascade alone."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from refine_cli.cli import main
from refine_cli.evaluate import evaluate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coco_val"


def test_shipped_weights_improve_the_shipped_example(tmp_path):
    out = tmp_path / "refined.json"
    res = CliRunner().invoke(main, ["run", str(EXAMPLE / "predictions.json"), str(EXAMPLE / "images"),
                                    "-o", str(out), "--threads", "2"])
    assert res.exit_code == 0, res.output
    gt = json.loads((EXAMPLE / "instances.json").read_text())
    coarse, refined = json.loads((EXAMPLE / "predictions.json").read_text()), json.loads(out.read_text())
    assert len(refined) == len(coarse)
    coarse_m, refined_m = evaluate(gt, [coarse, refined], names=["coarse", "refined"])["files"]
    # The example's coarse masks are blobby (realistic mode): 59.7 mask AP, 46.2 Boundary AP; the
    # shipped weights (gate c1x4k, which refines only the 29 masks it judges worst) reach 63.6 / 50.1.
    # A broken or swapped checkpoint lands near or below coarse.
    assert refined_m["segm"]["AP"] > coarse_m["segm"]["AP"] + 2.5
    assert refined_m["boundary"]["AP"] > coarse_m["boundary"]["AP"] + 2.5


def test_shipped_gate_keeps_perfect_masks_closer_than_the_cascade_alone():
    """GT masks on GT boxes of 4 example images: the shipped keep rule stays nearer the GT than the
    soft blend alone, and that nearer than the cascade alone."""
    import numpy as np

    from refine_cli.coco_io import decode_mask
    from refine_cli.images import load_image
    from refine_cli.model.checkpoint import load_checkpoint
    from refine_cli.refiner import Refiner

    model, _ = load_checkpoint(EXAMPLE.parents[1] / "weights" / "refinemask_effl0.pt")
    assert model.gate is not None
    gt = json.loads((EXAMPLE / "instances.json").read_text())
    images = gt["images"][:4]

    def mean_iou(refiner):
        ious = []
        for im in images:
            anns = [a for a in gt["annotations"] if a["image_id"] == im["id"] and not a.get("iscrowd")]
            masks = [decode_mask(a, im["height"], im["width"], where="gt") for a in anns]
            image = load_image(EXAMPLE / "images" / im["file_name"])
            results = refiner.refine_image(image, np.array([a["bbox"] for a in anns], np.float32), masks)
            for m, result in zip(masks, results):
                full = m.copy()  # kept by the gate's threshold: the input mask as it came
                if result is not None:
                    crop, x0, y0 = result
                    full[:] = 0
                    full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
                ious.append((full & m).sum() / max((full | m).sum(), 1))
        return float(np.mean(ious))

    gated = mean_iou(Refiner(model))
    keep_above = model.cfg.gate_keep_above
    model.cfg.gate_keep_above = 1.0  # the soft blend alone
    blended = mean_iou(Refiner(model))
    model.gate = None
    assert keep_above < 1.0 and gated > blended > mean_iou(Refiner(model)) and gated > 0.99
