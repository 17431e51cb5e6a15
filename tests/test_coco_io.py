"""coco_io: predictions parsing/validation, image lookup, mask decode/encode, atomic writes."""

import json
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from refine_cli.coco_io import (
    InputError,
    decode_mask,
    encode_mask,
    encode_mask_in_box,
    find_image,
    group_by_image,
    mask_box,
    read_predictions,
    write_json_atomic,
)

H, W = 30, 40
# A concave (L-shaped) polygon so rasterisation details matter.
POLYGON = [5.0, 4.0, 30.0, 4.0, 30.0, 12.0, 14.0, 12.0, 14.0, 25.0, 5.0, 25.0]


def write(path, document):
    path.write_text(json.dumps(document))
    return path


def result(image_id=1, **fields):
    return {"image_id": image_id, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, **fields}


def polygon_mask():
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([POLYGON], H, W)))


# ---------------------------------------------------------------- read_predictions


def test_results_list(tmp_path):
    records = [result(1), result(2), result(1)]
    predictions = read_predictions(write(tmp_path / "p.json", records))
    assert predictions.document == records
    assert predictions.records == records
    assert predictions.images == {}
    assert predictions.path == tmp_path / "p.json"


def test_dataset_dict_uses_its_annotations_and_images(tmp_path):
    document = {
        "images": [{"id": 7, "file_name": "a.jpg", "height": 10, "width": 20}],
        "annotations": [result(7)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    predictions = read_predictions(write(tmp_path / "d.json", document))
    assert isinstance(predictions.document, dict)
    assert predictions.records is predictions.document["annotations"]  # same objects, edits show in document
    assert predictions.images == {7: document["images"][0]}


def test_images_json_overrides_dataset_images(tmp_path):
    document = {"images": [{"id": 7, "file_name": "a.jpg"}], "annotations": [result(7)]}
    other = {"images": [{"id": 7, "file_name": "b.jpg", "height": 1, "width": 2}], "annotations": []}
    predictions = read_predictions(write(tmp_path / "d.json", document), write(tmp_path / "gt.json", other))
    assert predictions.images[7]["file_name"] == "b.jpg"


def test_images_json_with_results_list(tmp_path):
    gt = {"images": [{"id": 3, "file_name": "x.png", "height": 5, "width": 6}]}
    predictions = read_predictions(write(tmp_path / "p.json", [result(3)]), write(tmp_path / "gt.json", gt))
    assert predictions.images == {3: gt["images"][0]}


def test_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"image_id": 1,\n   "score": }\n]')
    with pytest.raises(InputError, match=r"bad\.json: invalid JSON at line 3, column 13"):
        read_predictions(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.json: cannot read file"):
        read_predictions(tmp_path / "missing.json")


@pytest.mark.parametrize("document", [{"results": []}, 42, "text", None])
def test_wrong_top_level(tmp_path, document):
    with pytest.raises(InputError, match=r"top\.json: .*annotations"):
        read_predictions(write(tmp_path / "top.json", document))


BAD_RECORDS = [
    ("not a record", r"record 2: must be an object"),
    ({"bbox": [1, 2, 3, 4]}, r"record 2: 'image_id' missing"),
    (result("12"), r"record 2: 'image_id' must be an integer, got str '12'"),
    (result(12.0), r"record 2: 'image_id' must be an integer, got float"),
    (result(True), r"record 2: 'image_id' must be an integer, got bool"),
    (result(None), r"record 2: 'image_id' must be an integer, got NoneType"),
    (result(bbox=[1, 2, 3]), r"record 2: 'bbox' must be 4 numbers"),
    (result(bbox=[1, 2, 3, "4"]), r"record 2: 'bbox' must be 4 numbers"),
    (result(bbox=None), r"record 2: 'bbox' must be 4 numbers"),
    (result(bbox=[1, 2, 3, float("nan")]), r"record 2: 'bbox' must be 4 numbers"),
    (result(score="0.9"), r"record 2: 'score' must be a number"),
    (result(score=None), r"record 2: 'score' must be a number"),
    (result(score=False), r"record 2: 'score' must be a number"),
    (result(segmentation="abc"), r"record 2: segmentation must be polygons .* or an RLE dict"),
    (result(segmentation=[1, 2, 3, 4, 5, 6]), r"record 2: segmentation must be polygons"),
    (result(segmentation=[[1, 2, 3, "x", 5, 6]]), r"record 2: segmentation must be polygons"),
    (result(segmentation={"counts": "abc"}), r"record 2: RLE segmentation needs 'size'"),
    (result(segmentation={"size": [2, 2], "counts": 5}), r"record 2: RLE segmentation needs 'size'"),
]


@pytest.mark.parametrize("bad, message", BAD_RECORDS)
@pytest.mark.parametrize("as_dataset", [False, True])
def test_bad_record_names_file_and_index(tmp_path, bad, message, as_dataset):
    records = [result(1), result(2), bad, result(3)]
    document = {"annotations": records} if as_dataset else records
    with pytest.raises(InputError, match=r"preds\.json: " + message):
        read_predictions(write(tmp_path / "preds.json", document))


def test_valid_optional_fields(tmp_path):
    records = [
        {"image_id": 1},  # bbox, score and segmentation are all optional
        result(2, segmentation=None),
        result(3, segmentation=[]),
        result(4, segmentation=[POLYGON, [1, 1, 2, 2]]),
        result(5, segmentation={"size": [2, 2], "counts": "04"}),
        result(6, segmentation={"size": [2, 2], "counts": [4]}),
        result(7, bbox=[0.5, 1, 2.25, 3], score=1),
    ]
    assert len(read_predictions(write(tmp_path / "ok.json", records)).records) == 7


@pytest.mark.parametrize(
    "images, message",
    [
        ([{"id": "1", "file_name": "a.jpg"}], r"image 0: 'id' must be an integer"),
        ([{"id": 1}], r"image 0: 'file_name' must be a string"),
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], r"image 1: duplicate image id 1"),
        ([{"id": 1, "file_name": "a.jpg", "height": 0, "width": 3}], r"image 0: 'height' must be a positive"),
    ],
)
def test_bad_images_json(tmp_path, images, message):
    gt = write(tmp_path / "gt.json", {"images": images})
    with pytest.raises(InputError, match=r"gt\.json: " + message):
        read_predictions(write(tmp_path / "p.json", [result(1)]), gt)


def test_images_json_without_images_list(tmp_path):
    with pytest.raises(InputError, match=r"gt\.json: .*'images' list"):
        read_predictions(write(tmp_path / "p.json", [result(1)]), write(tmp_path / "gt.json", [1, 2]))


def test_group_by_image_keeps_first_appearance_order():
    records = [result(5), result(2), result(5), result(9), result(2)]
    groups = group_by_image(records)
    assert list(groups) == [5, 2, 9]
    assert groups == {5: [0, 2], 2: [1, 4], 9: [3]}


# ---------------------------------------------------------------- find_image


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_image_prefers_file_name(tmp_path):
    wanted = touch(tmp_path / "sub" / "photo.png")
    touch(tmp_path / "photo.png")
    touch(tmp_path / "000000000042.jpg")
    touch(tmp_path / "42.jpg")
    images = {42: {"id": 42, "file_name": "sub/photo.png"}}
    assert find_image(42, tmp_path, images) == wanted


def test_find_image_falls_back_to_file_name_basename(tmp_path):
    wanted = touch(tmp_path / "photo.png")
    touch(tmp_path / "000000000042.jpg")
    images = {42: {"id": 42, "file_name": "val2017/photo.png"}}
    assert find_image(42, tmp_path, images) == wanted


def test_find_image_then_coco_name(tmp_path):
    wanted = touch(tmp_path / "000000000042.jpg")
    touch(tmp_path / "42.jpg")
    images = {42: {"id": 42, "file_name": "gone.jpg"}}
    assert find_image(42, tmp_path, images) == wanted
    assert find_image(42, tmp_path, {}) == wanted


def test_find_image_then_plain_id_any_extension_case(tmp_path):
    touch(tmp_path / "42.txt")
    touch(tmp_path / "420.jpg")
    touch(tmp_path / "42.PnG")
    assert find_image(42, tmp_path, {}) == tmp_path / "42.PnG"
    touch(tmp_path / "42.Jpeg")  # "42.Jpeg" sorts before "42.PnG"
    assert find_image(42, tmp_path, {}) == tmp_path / "42.Jpeg"
    touch(tmp_path / "42.BMP")
    assert find_image(42, tmp_path, {}) == tmp_path / "42.BMP"


def test_find_image_ignores_directories_and_missing(tmp_path):
    (tmp_path / "42.jpg").mkdir()
    assert find_image(42, tmp_path, {}) is None
    assert find_image(7, tmp_path, {7: {"id": 7, "file_name": "nope.jpg"}}) is None


# ---------------------------------------------------------------- decode_mask


def uncompressed_counts(mask):
    """COCO uncompressed RLE counts of a 0/1 mask (column-major runs, starting with a possibly empty 0-run)."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


def test_polygon_and_rle_forms_decode_to_same_mask():
    expected = polygon_mask()
    assert 100 < expected.sum() < H * W and expected[0, 0] == 0
    compressed = mask_utils.encode(np.asfortranarray(expected))
    uncompressed = uncompressed_counts(expected)
    assert len(uncompressed) > 10
    forms = [
        [POLYGON],
        {"size": [H, W], "counts": compressed["counts"]},  # bytes
        {"size": [H, W], "counts": compressed["counts"].decode("ascii")},  # str (as in JSON)
        {"size": [H, W], "counts": uncompressed},
    ]
    for segmentation in forms:
        mask = decode_mask({"segmentation": segmentation}, H, W, where="p.json: record 0")
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected)


def test_uncompressed_rle_starting_with_foreground():
    mask = np.zeros((3, 4), np.uint8)
    mask[0, 0] = mask[2, 3] = 1
    counts = uncompressed_counts(mask)
    assert counts[0] == 0
    decoded = decode_mask({"segmentation": {"size": [3, 4], "counts": counts}}, 3, 4, where="w")
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("segmentation", [None, []])
def test_no_segmentation_is_none(segmentation):
    assert decode_mask({"segmentation": segmentation}, H, W, where="w") is None
    assert decode_mask({}, H, W, where="w") is None


def test_degenerate_polygon_parts_ignored():
    mask = decode_mask({"segmentation": [[1, 1, 8, 8], POLYGON, [3, 3]]}, H, W, where="w")
    np.testing.assert_array_equal(mask, polygon_mask())


def test_only_degenerate_parts_give_empty_mask():
    mask = decode_mask({"segmentation": [[1, 1, 8, 8], [3, 3]]}, H, W, where="w")
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and not mask.any()


def test_odd_polygon_is_an_error():
    with pytest.raises(InputError, match=r"p\.json: record 4: polygon 1 has an odd number"):
        decode_mask({"segmentation": [POLYGON, [1, 1, 5, 1, 5]]}, H, W, where="p.json: record 4")


@pytest.mark.parametrize("counts", ["04", [4]])
def test_size_mismatch(counts):
    with pytest.raises(InputError, match=r"^p\.json: record 3: mask size \[2, 2\] != image size \[2, 3\]$"):
        decode_mask({"segmentation": {"size": [2, 2], "counts": counts}}, 2, 3, where="p.json: record 3")


@pytest.mark.parametrize(
    "counts",
    [
        "",  # no runs
        "02",  # covers 2 of 4 pixels: pycocotools would return uninitialised memory
        "0a",  # truncated: continuation bit set on the last character
        "0\x01",  # character below '0'
        "0\x7f",  # character above 'o'
        "0zzzzzzzzzz0",  # absurdly long number
        "04\u00e9",  # non-ASCII
        "0;T0",  # decodes to a negative run
        [1, 2],  # sum too small
        [1, 2, 3],  # sum too large
        [5, -1],
        [2, 2.0],
    ],
)
def test_corrupt_rle(counts):
    segmentation = {"size": [2, 2], "counts": counts}
    with pytest.raises(InputError, match=r"^p\.json: record 0: corrupt RLE"):
        decode_mask({"segmentation": segmentation}, 2, 2, where="p.json: record 0")


def test_random_masks_round_trip_through_validation():
    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = rng.integers(1, 25, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        decoded = decode_mask({"segmentation": encode_mask(mask)}, h, w, where="w")
        np.testing.assert_array_equal(decoded, mask)


def test_large_runs_decode():
    mask = np.zeros((3000, 2500), np.uint8)
    mask[2999, 2499] = 1
    mask[0, 0] = 1
    decoded = decode_mask({"segmentation": encode_mask(mask)}, 3000, 2500, where="w")
    np.testing.assert_array_equal(decoded, mask)


# ---------------------------------------------------------------- mask_box / encode


def test_mask_box_matches_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(100):
        mask = np.zeros((H, W), np.uint8)
        x0, y0 = rng.integers(0, W), rng.integers(0, H)
        x1, y1 = rng.integers(x0, W), rng.integers(y0, H)
        mask[y0 : y1 + 1, x0 : x1 + 1] = rng.random((y1 - y0 + 1, x1 - x0 + 1)) < 0.3
        mask[y0, x0] = mask[y1, x1] = 1
        expected = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).tolist()
        box = mask_box(mask)
        assert box == expected == [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]
        assert all(type(v) is float for v in box)


def test_mask_box_empty():
    assert mask_box(np.zeros((H, W), np.uint8)) is None


@pytest.mark.parametrize("dtype", [np.uint8, bool])
def test_encode_mask_round_trip(dtype):
    mask = polygon_mask().astype(dtype)
    rle = encode_mask(mask)
    assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
    json.dumps(rle)  # must be plain JSON types
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, mask.astype(np.uint8))


def test_encode_mask_accepts_non_contiguous_input():
    mask = polygon_mask()
    view = np.ascontiguousarray(mask.T).T  # Fortran-ordered
    assert encode_mask(view) == encode_mask(mask)
    assert encode_mask(mask[::2, ::3]) == encode_mask(np.ascontiguousarray(mask[::2, ::3]))


def full_mask(crop, x0, y0, height, width):
    mask = np.zeros((height, width), np.uint8)
    mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return mask


def test_encode_mask_in_box_random():
    rng = np.random.default_rng(3)
    for _ in range(500):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        crop = (rng.random((h, w)) < rng.choice([0.1, 0.5, 0.9])).astype(np.uint8)
        expected = encode_mask(full_mask(crop, x0, y0, height, width))
        assert encode_mask_in_box(crop, x0, y0, height, width) == expected, (height, width, x0, y0, h, w)


@pytest.mark.parametrize("fill", [0, 1, "random"])
@pytest.mark.parametrize(
    "height, width, x0, y0, h, w",
    [
        (1, 1, 0, 0, 1, 1),  # 1x1 image
        (12, 9, 0, 0, 12, 9),  # crop is the whole image
        (12, 9, 0, 0, 4, 3),  # top-left corner
        (12, 9, 6, 8, 4, 3),  # bottom-right corner: touches the last pixel
        (12, 9, 2, 0, 12, 5),  # full height: column ends meet the next column starts
        (12, 9, 0, 5, 2, 9),  # full width
        (12, 9, 8, 0, 12, 1),  # last column, full height
        (12, 9, 3, 11, 1, 4),  # last row
        (1, 7, 2, 0, 1, 3),  # single-row image
        (7, 1, 0, 2, 3, 1),  # single-column image
    ],
)
def test_encode_mask_in_box_edges(height, width, x0, y0, h, w, fill):
    rng = np.random.default_rng(h * 100 + w)
    crop = (rng.random((h, w)) < 0.5).astype(np.uint8) if fill == "random" else np.full((h, w), fill, np.uint8)
    expected = encode_mask(full_mask(crop, x0, y0, height, width))
    assert encode_mask_in_box(crop, x0, y0, height, width) == expected


def test_encode_mask_in_box_bool_crop():
    crop = np.array([[True, False], [True, True]])
    assert encode_mask_in_box(crop, 1, 1, 4, 3) == encode_mask(full_mask(crop.astype(np.uint8), 1, 1, 4, 3))


# ---------------------------------------------------------------- write_json_atomic


def test_write_json_atomic_writes(tmp_path):
    path = tmp_path / "out.json"
    document = [{"image_id": 1, "score": np.float32(0.25), "counts": "abc"}]
    write_json_atomic(path, document)
    assert json.loads(path.read_text()) == [{"image_id": 1, "score": 0.25, "counts": "abc"}]
    write_json_atomic(str(path), {"replaced": True})
    assert json.loads(path.read_text()) == {"replaced": True}
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("bad", [object(), float("nan"), np.zeros(2)])
def test_write_json_atomic_failure_keeps_old_file_and_no_temp(tmp_path, bad):
    path = tmp_path / "out.json"
    path.write_text('{"old": 1}')
    # The bad value comes late so that a partial temp file has been written before the error.
    document = [{"i": i, "pad": "x" * 100} for i in range(1000)] + [{"bad": bad}]
    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(path, document)
    assert path.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["out.json"]


def test_write_json_atomic_replace_failure_cleans_up(tmp_path):
    target = tmp_path / "out.json"
    target.mkdir()
    (target / "keep").write_text("x")  # os.replace cannot put a file over a non-empty directory
    with pytest.raises(OSError):
        write_json_atomic(target, [1])
    assert sorted(os.listdir(tmp_path)) == ["out.json"]
    assert (target / "keep").read_text() == "x"


def test_write_json_atomic_respects_umask(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic(path, [])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- BoxMask


def test_box_mask_slices_like_the_full_mask():
    from refine_cli.boxes import crop_mask
    from refine_cli.coco_io import BoxMask

    rng = np.random.default_rng(0)
    full = np.zeros((30, 40), np.uint8)
    full[5:17, 9:31] = rng.integers(0, 2, (12, 22), dtype=np.uint8)
    full[5, 9] = full[16, 30] = 1  # the tight box is exactly rows 5..16, cols 9..30
    boxed = BoxMask.of(np.asfortranarray(full))
    assert boxed.crop.shape == (12, 22) and boxed.area == full.sum() and boxed.box() == [9.0, 5.0, 22.0, 12.0]
    for y0, y1, x0, x1 in [(0, 30, 0, 40), (7, 9, 0, 12), (0, 4, 0, 40), (16, 30, 30, 40), (10, 10, 3, 8)]:
        assert np.array_equal(boxed[y0:y1, x0:x1], full[y0:y1, x0:x1])
    box = (3.2, 4.7, 28.9, 20.1)
    assert (crop_mask(boxed, box, 28) == crop_mask(full, box, 28)).all()
    empty = BoxMask.of(np.zeros((30, 40), np.uint8))
    assert empty.area == 0 and empty.box() is None and not empty[0:30, 0:40].any()

