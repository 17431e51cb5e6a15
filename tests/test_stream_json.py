"""stream_json: the index pass reads what json.load reads, the writer writes what json.dump writes."""

from __future__ import annotations

import json

import pytest

from refine_cli import stream_json
from refine_cli.coco_io import InputError, write_json_atomic
from refine_cli.stream_json import index_records, iter_records, write_document

RECORDS = [{"image_id": i % 4, "bbox": [1.5, 2, 3e-7, 4], "score": 1 / (i + 1), "name": "é✓" * (i % 3),
            "segmentation": [[1, 2, 3, 4, 5, 6]], "n": 10 ** (i % 20)} for i in range(30)]
DOCUMENTS = [RECORDS, [], {"annotations": []},
             {"info": {"a": "ü"}, "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": RECORDS, "x": None}]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    """7-byte reads put a chunk boundary inside every token, multi-byte character and number."""
    monkeypatch.setattr(stream_json, "_CHUNK", 7)


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("style", ["compact", "indented", "bom"])
def test_index_reads_every_record_and_writer_matches_json_dump(tmp_path, document, style):
    text = json.dumps(document, indent=2, ensure_ascii=False) if style == "indented" else json.dumps(document)
    path = tmp_path / "in.json"
    path.write_bytes((b"\xef\xbb\xbf" if style == "bom" else b"") + text.encode())
    index = index_records(path)
    records = document if isinstance(document, list) else document["annotations"]
    assert list(iter_records(index, range(len(index)))) == records
    assert index.image_ids.tolist() == [r["image_id"] for r in records]
    write_document(tmp_path / "a.json", index.head, iter_records(index, range(len(index))))
    write_json_atomic(tmp_path / "b.json", document)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


@pytest.mark.parametrize("text, message", [
    ('[{"image_id": 1},', "line 1, column 18"),
    ('[{"image_id": 1}]  x', "Extra data"),
    ('[{"image_id": 1}\n {"image_id": 2}]', "line 2, column 2: Expecting ',' delimiter"),
    ('"s"', "got a string"),
    ('{"images": []}', "'annotations'"),
    ('{"annotations": [], "annotations": []}', "one 'annotations' list"),
    ('[{"image_id": 1}, 3]', "record 1: must be an object"),
    ('[{"image_id": 1}, {"image_id": 1.0}]', "record 1: 'image_id' must be an integer"),
])
def test_bad_files_name_the_place(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match="bad.json") as err:
        index_records(path)
    assert message in str(err.value)


def test_not_utf8_is_one_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"image_id": 1, "x": "\xff"}]')
    with pytest.raises(InputError, match="not UTF-8"):
        index_records(path)
