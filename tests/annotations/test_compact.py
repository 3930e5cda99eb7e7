"""The export's compact reader: the same Dataset and the same errors as ``read_annotation_file``.

``read_annotations_compact`` parses a Datumaro file item by item (``jsonsplit``) and keeps
items pickled; whatever it meets, its result or its error must be the whole-file reader's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd.annotations.compact import CompactItems, read_annotations_compact
from smaskd.annotations.detect import read_annotation_file
from smaskd.annotations.jsonload import check_json_bytes
from smaskd.annotations.jsonsplit import split_list_member
from smaskd.errors import InputError
from smaskd.model import BitmapMask
from tests.conftest import CORPUS, GOLDEN, corpus_available


def same_dataset(a, b) -> None:
    assert (a.labels, a.source_format, a.warnings) == (b.labels, b.source_format, b.warnings)
    assert len(a.items) == len(b.items)
    for x, y in zip(a.items, b.items):
        assert len(x.annotations) == len(y.annotations)
        for p, q in zip(x.annotations, y.annotations):
            if isinstance(p.shape, BitmapMask):  # arrays: no == on the dataclass
                assert (p.shape.left, p.shape.top) == (q.shape.left, q.shape.top)
                assert np.array_equal(p.shape.bitmap, q.shape.bitmap)
                p, q = dataclasses.replace(p, shape=None), dataclasses.replace(q, shape=None)
            assert p == q
        x.annotations = y.annotations = []
        assert x == y


def outcome(fn, path: Path, **kw):
    try:
        return fn(path, **kw), None
    except InputError as e:
        return None, (type(e), str(e))


def check_same(path: Path, **kw) -> None:
    full, full_err = outcome(read_annotation_file, path, **kw)
    compact, compact_err = outcome(read_annotations_compact, path, **kw)
    assert full_err == compact_err
    if full is not None:
        assert isinstance(compact.items, CompactItems)
        same_dataset(full, compact)


def corpus_json() -> list[Path]:
    if not corpus_available():
        return []
    files = [p for p in CORPUS.rglob("*.json") if GOLDEN not in p.parents]
    return sorted(files + list(GOLDEN.glob("s*/input/annotations.json")))


@pytest.mark.parametrize("path", corpus_json(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_files_read_the_same(path):
    check_same(path)


DOC = {
    "dm_format_version": "1.0",
    "categories": {"label": {"labels": [{"name": "car"}, {"name": "bus"}]},
                   "mask": {"colormap": [{"label_id": 0, "r": 1, "g": 2, "b": 3}]}},
    "items": [
        {"id": "a", "subset": "train", "image": {"size": [4, 5]},
         "annotations": [{"id": 1, "type": "polygon", "label_id": 0,
                          "points": [0, 0, 3, 0, 3, 2.5]},
                         {"id": 2, "type": "bbox", "label_id": 1, "bbox": [1, 1, 2, 2],
                          "attributes": {"rotation": 10, "[x]": "{\"}"}}]},
        {"id": "b", "image": {"size": [4, 5]}, "annotations": []},
    ],
}


def _write(tmp_path: Path, text: str | bytes, name: str = "in.json") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize("text", [
    json.dumps(DOC),
    json.dumps(DOC, indent=2),
    "\ufeff" + json.dumps(DOC),
    json.dumps({**DOC, "items": []}),
    json.dumps({"items": DOC["items"], "categories": DOC["categories"]}),  # labels after items
    json.dumps(DOC).replace('"items"', '"items" ', 1),
    json.dumps(DOC) + json.dumps(DOC)[:0],
    json.dumps({**DOC, "items": DOC["items"] + [DOC["items"][0]]}),  # duplicate id
    json.dumps(DOC).replace("2.5", "NaN"),
    json.dumps(DOC).replace("2.5", "2.5,"),  # syntax error inside an item
    json.dumps(DOC).replace('"label_id": 1', '"label_id": 7'),  # error inside an item
    json.dumps({**DOC, "items": [1, 2]}),
    json.dumps({**DOC, "items": [[DOC["items"][0]]]}),
    json.dumps({**DOC, "items": DOC["items"], "images": []}),  # not Datumaro any more
    '{"items": [], "items": ' + json.dumps(DOC["items"]) + ', "categories": {}}',
    json.dumps({"nested": {"items": DOC["items"]}, "items": []}),
    json.dumps([DOC]),
    json.dumps(DOC).replace('"id": "b"', '"id": "b\\"items\\""'),
])
def test_edge_documents_read_the_same(tmp_path, text):
    check_same(_write(tmp_path, text))


def test_subset_from_the_file_name_and_an_explicit_format(tmp_path):
    d = tmp_path / "annotations"
    d.mkdir()
    doc = {**DOC, "items": [{k: v for k, v in DOC["items"][1].items()}]}
    path = _write(d, json.dumps(doc), "val.json")
    check_same(path)
    check_same(path, fmt="datumaro")
    check_same(path, fmt="coco")
    check_same(path, name="renamed.json")
    assert read_annotations_compact(path).items[0].subset == "val"


def test_depth_and_encoding_errors_are_the_usual_ones(tmp_path):
    check_same(_write(tmp_path, '{"items": [' + "[" * 600 + "]" * 600 + "]}"))
    check_same(_write(tmp_path, b'{"items": [{"id": "\xff"}]}'))
    check_same(_write(tmp_path, "\ufeff".encode("utf-16") + b"{}"))
    check_same(_write(tmp_path, b""))


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab[]{}\"\\,:", max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["items", "x", "ids", "item"]), inner, max_size=3),
    max_leaves=12))
def test_split_finds_exactly_the_top_level_list(value):
    """When the splitter answers, its parts reassemble the document the parser reads."""
    doc = {"a": value, "items": [{"k": value}, {}, {"items": value}]} if not isinstance(
        value, dict) else {**value, "items": [{"v": value}]}
    body = json.dumps(doc).encode()
    split = split_list_member(*check_json_bytes(body), "items")
    assert split is not None
    head, spans = split
    rebuilt = json.loads(head)
    rebuilt["items"] = [json.loads(body[s:e]) for s, e in spans]
    assert rebuilt == json.loads(body)


def test_an_escaped_second_items_key_falls_back_to_the_whole_document(tmp_path) -> None:
    """``"items": [A, B], "\\u0069tems": [C]``: json keeps the last key, so must we."""
    from smaskd.annotations.compact import read_annotations_compact
    from smaskd.annotations.detect import read_annotation_file

    item = '{{"id": "{}", "annotations": [], "image": {{"size": [4, 4]}}}}'
    text = ('{"categories": {"label": {"labels": []}}, "items": [' + item.format("a") + ", "
            + item.format("b") + '], "\\u0069tems": [' + item.format("c") + "]}")
    path = tmp_path / "default.json"
    path.write_text(text)
    whole = [i.id for i in read_annotation_file(path).items]
    assert whole == ["c"]
    assert [i.id for i in read_annotations_compact(path).items] == whole
