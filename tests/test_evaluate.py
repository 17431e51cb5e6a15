"""Tests for refine_cli.evaluate: boundaries, mask AP / Boundary AP, input errors, the eval command."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console

from refine_cli.evaluate import (
    EvalInputError,
    boundary_width,
    evaluate,
    mask_to_boundary,
    render_tables,
)
from refine_cli.evaluate.boundary import rle_to_boundary_rle
from refine_cli.evaluate.command import eval_command

COCO_EXAMPLE = Path(__file__).parents[1].parent / "shared" / "data" / "coco_val_example" / "instances.json"
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)

# pycocotools' decode trips a numpy 2 deprecation on every call; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# ------------------------------------------------------------------ helpers


def encode(mask: np.ndarray, counts_as_str: bool = True) -> dict:
    """(H, W) 0/1 array -> compressed RLE (counts as str, like JSON result files)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if counts_as_str:
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def box_mask(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """(H, W) uint8 mask with ones in rows y0:y1, columns x0:x1."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def synthetic_gt(masks: list, height: int = 400, width: int = 400, crowd: tuple = ()) -> dict:
    """One-image COCO GT dict, category 1, with the given (H, W) masks as annotations."""
    annotations = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": encode(m),
            "area": float(m.sum()),
            "iscrowd": int(i in crowd),
        }
        for i, m in enumerate(masks)
    ]
    return {
        "images": [{"id": 1, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }


def result(mask: np.ndarray, score: float = 1.0, image_id: int = 1, category_id: int = 1) -> dict:
    return {"image_id": image_id, "category_id": category_id, "score": score, "segmentation": encode(mask)}


def reference_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Slow definition: a mask pixel is boundary iff some pixel within Chebyshev
    distance d is background or outside the image. (H, W) -> (H, W) uint8."""
    padded = np.pad(mask, d, constant_values=0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * d + 1, 2 * d + 1))
    return (mask.astype(bool) & (windows.min(axis=(2, 3)) == 0)).astype(np.uint8)


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blobby random (H, W) 0/1 mask, often touching the image edge, with speckles."""
    coarse = rng.random((height // 6 + 1, width // 6 + 1)) > 0.55
    mask = np.kron(coarse, np.ones((6, 6), dtype=np.uint8))[:height, :width].astype(np.uint8)
    mask ^= (rng.random((height, width)) > 0.97).astype(np.uint8)
    return mask


@pytest.fixture(scope="module")
def coco_example() -> dict:
    if not COCO_EXAMPLE.exists():
        pytest.skip(f"real COCO example GT not found at {COCO_EXAMPLE}")
    with open(COCO_EXAMPLE) as f:
        return json.load(f)


# ---------------------------------------------------------------- boundaries


def test_boundary_width_follows_image_diagonal():
    assert boundary_width(480, 640) == 16  # diagonal 800
    assert boundary_width(400, 400) == 11  # diagonal 565.7
    assert boundary_width(10, 10) == 1  # never below one pixel


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_mask_to_boundary_matches_slow_reference(seed, d):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, 37, 53)
    expected = reference_boundary(mask, d)
    np.testing.assert_array_equal(mask_to_boundary(mask, d), expected)


@pytest.mark.parametrize("seed", range(6))
def test_box_crop_boundary_equals_full_image(seed):
    rng = np.random.default_rng(100 + seed)
    height, width, d = 60, 80, int(rng.integers(1, 6))
    mask = np.zeros((height, width), dtype=np.uint8)
    # A blob somewhere inside the image; odd seeds push it against an image edge.
    y0, x0 = (0, int(rng.integers(0, 40))) if seed % 2 else (int(rng.integers(5, 30)), int(rng.integers(5, 40)))
    mask[y0 : y0 + 25, x0 : x0 + 30] = random_mask(rng, 25, 30)[: height - y0, : width - x0]
    got = mask_utils.decode(rle_to_boundary_rle(encode(mask, counts_as_str=False), d))
    np.testing.assert_array_equal(got, reference_boundary(mask, d))


def test_boundary_of_empty_mask_is_empty():
    empty = np.zeros((20, 30), dtype=np.uint8)
    assert mask_utils.decode(rle_to_boundary_rle(encode(empty), 3)).sum() == 0


def test_thin_object_is_all_boundary():
    bar = box_mask(400, 400, 100, 50, 110, 350)  # 10 px thick, d = 11
    np.testing.assert_array_equal(mask_to_boundary(bar, boundary_width(400, 400)), bar)


# ------------------------------------------------------------- AP semantics


def test_gt_as_predictions_scores_100(coco_example):
    predictions = [dict(a, score=1.0) for a in coco_example["annotations"] if not a["iscrowd"]]
    gt_before, predictions_before = copy.deepcopy(coco_example), copy.deepcopy(predictions)
    metrics = evaluate(coco_example, [predictions])
    (file,) = metrics["files"]
    assert all(v == pytest.approx(100.0) for v in file["segm"].values()), file["segm"]
    assert all(v == pytest.approx(100.0) for v in file["boundary"].values()), file["boundary"]
    assert metrics["num_images"] == 33 and metrics["num_gt"] == 372
    # Neither the GT nor the prediction records were touched.
    assert coco_example == gt_before and predictions == predictions_before


class _FullImageBoundaryEval(COCOeval):
    """Reference Boundary AP the way boundary-iou-api computes it: full-image
    boundaries of every mask, min(mask IoU, boundary IoU) for non-crowd GT."""

    def __init__(self, coco_gt, coco_dt, dilation_ratio=0.02):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.dilation_ratio = dilation_ratio

    def _boundary(self, ann):
        img = self.cocoGt.imgs[ann["image_id"]]
        d = boundary_width(img["height"], img["width"], self.dilation_ratio)
        return encode(mask_to_boundary(mask_utils.decode(ann["segmentation"]), d), counts_as_str=False)

    def computeIoU(self, imgId, catId):
        gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gts and not dts:
            return []
        dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")][: self.params.maxDets[-1]]
        crowd = [int(g["iscrowd"]) for g in gts]
        ious = mask_utils.iou([d["segmentation"] for d in dts], [g["segmentation"] for g in gts], crowd)
        if len(ious) == 0:
            return ious
        b = mask_utils.iou([self._boundary(d) for d in dts], [self._boundary(g) for g in gts], crowd)
        non_crowd = ~np.asarray(crowd, dtype=bool)
        ious[:, non_crowd] = np.minimum(ious[:, non_crowd], b[:, non_crowd])
        return ious


def _perturbed_predictions(gt: dict, seed: int) -> list:
    """GT masks shifted / eroded / dilated at random, with random scores and some duplicates."""
    rng = np.random.default_rng(seed)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    records = []
    for ann in gt["annotations"]:
        mask = coco.annToMask(ann)
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(1, 4))
            kernel = np.ones((2 * k + 1, 2 * k + 1), dtype=np.uint8)
            op = rng.integers(0, 3)
            moved = cv2.erode(mask, kernel) if op == 0 else cv2.dilate(mask, kernel) if op == 1 else mask
            moved = np.roll(moved, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
            records.append(result(moved, float(rng.random()), ann["image_id"], ann["category_id"]))
    return records


def test_matches_pycocotools_and_full_image_reference(coco_example):
    predictions = _perturbed_predictions(coco_example, seed=0)
    metrics = evaluate(coco_example, [predictions])
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(coco_example)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
    references = {"segm": COCOeval(coco_gt, coco_dt, "segm"), "boundary": _FullImageBoundaryEval(coco_gt, coco_dt)}
    for name, reference in references.items():
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
        expected = [reference.stats[i] * 100 for i in (0, 1, 2, 3, 4, 5, 8)]
        assert list(metrics["files"][0][name].values()) == pytest.approx(expected, abs=1e-9), name
    # The perturbation hurts boundaries more than masks: the metric is not vacuous.
    assert metrics["files"][0]["boundary"]["AP"] < metrics["files"][0]["segm"]["AP"] - 5


def test_thin_band_error_hurts_boundary_ap_only():
    gt_mask = box_mask(400, 400, 150, 150, 250, 250)  # 100 x 100, d = 11
    eroded = box_mask(400, 400, 153, 153, 247, 247)  # 3 px thinner on every side
    mask_iou = eroded.sum() / gt_mask.sum()
    assert mask_iou == pytest.approx(0.8836)
    # Rings of width 11: GT ring 100^2-78^2, prediction ring 94^2-72^2, overlap 94^2-78^2.
    boundary_iou = (94**2 - 78**2) / ((100**2 - 78**2) + (94**2 - 72**2) - (94**2 - 78**2))
    assert boundary_iou == pytest.approx(0.5714, abs=1e-4)

    (file,) = evaluate(synthetic_gt([gt_mask]), [[result(eroded)]])["files"]
    # One GT, one detection: AP = share of the 10 IoU thresholds the IoU reaches.
    assert file["segm"]["AP"] == pytest.approx(100 * np.mean(IOU_THRESHOLDS <= mask_iou))  # 80
    assert file["boundary"]["AP"] == pytest.approx(100 * np.mean(IOU_THRESHOLDS <= boundary_iou))  # 20
    assert file["segm"]["AP75"] == pytest.approx(100.0) and file["boundary"]["AP75"] == 0.0
    assert file["boundary"]["AP"] < file["segm"]["AP"] - 50


def test_thin_objects_boundary_ap_equals_mask_ap():
    gt_bar = box_mask(400, 400, 100, 50, 110, 350)
    shifted = box_mask(400, 400, 102, 50, 112, 350)  # IoU 8/12
    (file,) = evaluate(synthetic_gt([gt_bar]), [[result(shifted)]])["files"]
    assert file["segm"]["AP"] == pytest.approx(40.0)
    assert file["boundary"] == pytest.approx(file["segm"])


def test_crowd_region_absorbs_detections_with_mask_iou():
    person = box_mask(400, 400, 20, 20, 120, 120)
    crowd = box_mask(400, 400, 200, 100, 390, 390)
    inside_crowd = box_mask(400, 400, 250, 200, 300, 250)  # small box deep inside the crowd region
    gt = synthetic_gt([person, crowd], crowd=(1,))
    gt["annotations"][1]["segmentation"] = {"size": [400, 400], "counts": _uncompressed_counts(crowd)}
    predictions = [result(person, 0.5), result(inside_crowd, 0.9)]

    (file,) = evaluate(gt, [predictions])["files"]
    # The higher-scored detection sits on the crowd region: ignored, not a false positive.
    # With boundary IoU against the crowd it would not match and AP would drop to ~50.
    assert file["segm"]["AP"] == pytest.approx(100.0)
    assert file["boundary"]["AP"] == pytest.approx(100.0)

    (no_crowd,) = evaluate(synthetic_gt([person]), [predictions])["files"]
    assert no_crowd["segm"]["AP"] < 60 and no_crowd["boundary"]["AP"] < 60


def _uncompressed_counts(mask: np.ndarray) -> list:
    """Column-major run lengths of a (H, W) mask, starting with a background run."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0] + counts


def test_empty_results_give_zeros_and_images_without_predictions_are_misses():
    square = box_mask(100, 100, 10, 10, 60, 60)
    gt = synthetic_gt([square], 100, 100)
    gt["images"].append({"id": 2, "height": 100, "width": 100})
    gt["annotations"].append(dict(gt["annotations"][0], id=2, image_id=2))

    empty, half = evaluate(gt, [[], [result(square, image_id=1)]])["files"]
    assert set(empty["segm"].values()) == {0.0} and set(empty["boundary"].values()) == {0.0}
    assert half["segm"]["AR100"] == pytest.approx(50.0) and half["boundary"]["AR100"] == pytest.approx(50.0)


def test_segmentation_formats_and_dataset_dict_agree():
    masks = [box_mask(200, 300, 10, 10, 80, 90), box_mask(200, 300, 100, 150, 190, 290)]
    gt = synthetic_gt(masks, 200, 300)
    preds = [box_mask(200, 300, 12, 8, 80, 92), box_mask(200, 300, 104, 150, 186, 290)]
    variants = {
        "str": [result(m, 0.9) for m in preds],
        "bytes": [dict(result(m, 0.9), segmentation=encode(m, counts_as_str=False)) for m in preds],
        "uncompressed": [
            dict(result(m, 0.9), segmentation={"size": [200, 300], "counts": _uncompressed_counts(m)}) for m in preds
        ],
        "polygon": [dict(result(m, 0.9), segmentation=[_box_polygon(m)]) for m in preds],
        "dataset": {
            "images": gt["images"],
            "annotations": [{k: v for k, v in result(m).items() if k != "score"} for m in preds],
        },
        # What an in-process caller (the training loop) may hand over.
        "numpy scalars": [dict(result(m), score=np.float32(0.9), image_id=np.int64(1)) for m in preds],
    }
    files = evaluate(gt, list(variants.values()), names=list(variants))["files"]
    assert [f["name"] for f in files] == list(variants)
    for f in files[1:]:
        assert f["segm"] == pytest.approx(files[0]["segm"]) and f["boundary"] == pytest.approx(files[0]["boundary"])
    assert 0 < files[0]["boundary"]["AP"] < files[0]["segm"]["AP"] < 100


def test_gt_boundaries_are_computed_once_per_call(monkeypatch):
    import refine_cli.evaluate.coco_eval as coco_eval

    calls = []
    real = coco_eval.rle_to_boundary_rle
    monkeypatch.setattr(coco_eval, "rle_to_boundary_rle", lambda rle, d: calls.append(d) or real(rle, d))
    masks = [box_mask(300, 300, 10 + 70 * i, 10, 60 + 70 * i, 90) for i in range(4)]
    predictions = [result(m) for m in masks]
    evaluate(synthetic_gt(masks, 300, 300), [predictions, predictions])
    # 4 GT boundaries shared by both files, plus 4 detection boundaries per file.
    assert len(calls) == 4 + 2 * 4


def _box_polygon(mask: np.ndarray) -> list:
    """Polygon x, y list tracing the outer pixel edges of a box mask."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def test_per_category_reports_each_gt_category():
    gt = synthetic_gt([box_mask(200, 200, 10, 10, 90, 90), box_mask(200, 200, 100, 100, 190, 190)], 200, 200)
    gt["categories"].append({"id": 2, "name": "other"})
    gt["categories"].append({"id": 3, "name": "absent"})
    gt["annotations"][1]["category_id"] = 2
    # The "other" object is detected, but labelled "thing".
    predictions = [result(box_mask(200, 200, 10, 10, 90, 90)), result(box_mask(200, 200, 100, 100, 190, 190))]
    (file,) = evaluate(gt, [predictions], per_category=True)["files"]
    assert set(file["per_category"]) == {"thing", "other"}  # no GT for "absent"
    assert file["per_category"]["thing"] == {"segm_AP": pytest.approx(100.0), "boundary_AP": pytest.approx(100.0)}
    assert file["per_category"]["other"] == {"segm_AP": 0.0, "boundary_AP": 0.0}


# ------------------------------------------------------------------- errors


@pytest.fixture
def small_gt() -> dict:
    return synthetic_gt([box_mask(50, 60, 5, 5, 30, 40)], 50, 60)


def _records(n: int = 5) -> list:
    return [result(box_mask(50, 60, 5, 5, 30, 40), 0.5) for _ in range(n)]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_id", 999, "image_id 999 is not in the ground truth"),
        ("category_id", 7, "category_id 7 is not in the ground truth"),
        ("score", "high", "score must be a finite number"),
        (
            "segmentation",
            {"size": [10, 10], "counts": "abc"},
            r"segmentation size \[10, 10\] does not match the image \(50, 60\)",
        ),
    ],
)
def test_bad_record_names_file_and_index(small_gt, tmp_path, field, value, message):
    records = _records()
    records[3][field] = value
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(records))
    with pytest.raises(EvalInputError, match=rf"preds\.json: record 3: {message}"):
        evaluate(small_gt, [path])


def test_missing_field_is_reported(small_gt):
    records = _records()
    del records[2]["score"]
    with pytest.raises(EvalInputError, match=r"predictions\[0\]: record 2: missing field 'score'"):
        evaluate(small_gt, [records])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"image_id": 1,', "malformed JSON"),
        ('"just a string"', "expected a list of result records"),
        ('{"images": []}', "expected a list of result records"),
    ],
)
def test_bad_file_is_reported(small_gt, tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(EvalInputError, match=rf"bad\.json: {message}"):
        evaluate(small_gt, [_records(), path])


# ------------------------------------------------------------------ command


@pytest.fixture
def cli_files(tmp_path, small_gt) -> dict:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(small_gt))
    coarse, refined = tmp_path / "coarse.json", tmp_path / "refined.json"
    coarse.write_text(json.dumps([result(box_mask(50, 60, 7, 7, 30, 40))]))
    refined.write_text(json.dumps([result(box_mask(50, 60, 5, 5, 30, 40))]))
    return {"gt": gt, "coarse": coarse, "refined": refined}


def test_command_writes_json_and_shows_deltas(cli_files, tmp_path):
    out = tmp_path / "metrics.json"
    args = ["--gt", cli_files["gt"], cli_files["coarse"], cli_files["refined"], "--json", out, "--per-category"]
    run = CliRunner().invoke(eval_command, [str(a) for a in args])
    assert run.exit_code == 0, run.output
    metrics = json.loads(out.read_text())
    assert [f["name"] for f in metrics["files"]] == [str(cli_files["coarse"]), str(cli_files["refined"])]
    assert metrics["files"][1]["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["files"][0]["segm"]["AP"] < 100.0
    assert "Δ" in run.stdout and "Per-category" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.json", "gt.json", "metrics.json", "refined.json"]


def test_command_input_error_exits_2_with_one_line(cli_files):
    records = [json.loads(cli_files["refined"].read_text())[0] for _ in range(13)]
    records[12]["category_id"] = 42
    cli_files["refined"].write_text(json.dumps(records))
    args = ["--gt", cli_files["gt"], cli_files["coarse"], cli_files["refined"]]
    run = CliRunner().invoke(eval_command, [str(a) for a in args])
    assert run.exit_code == 2
    assert run.stderr == f"error: {cli_files['refined']}: record 12: category_id 42 is not in the ground truth\n"
    assert run.stdout == ""


def test_command_missing_file_exits_2(cli_files, tmp_path):
    run = CliRunner().invoke(eval_command, ["--gt", str(cli_files["gt"]), str(tmp_path / "nope.json")])
    assert run.exit_code == 2
    assert run.stderr.count("\n") == 1 and "nope.json: cannot read" in run.stderr


def test_render_tables_has_delta_columns():
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    metrics = {
        "files": [
            {"name": "coarse.json", "segm": dict.fromkeys(keys, 30.0), "boundary": dict.fromkeys(keys, 20.0)},
            {"name": "refined.json", "segm": dict.fromkeys(keys, 31.5), "boundary": dict.fromkeys(keys, 24.25)},
        ],
        "num_images": 3,
        "num_gt": 7,
        "dilation_ratio": 0.02,
    }
    console = Console(record=True, width=200)
    render_tables(metrics, console)
    text = console.export_text()
    assert "Δ refined.json" in text
    assert "+1.50" in text and "+4.25" in text
    assert "boundary AP75" in text
