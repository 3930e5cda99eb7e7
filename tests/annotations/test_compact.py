"""The export's reader: the same Dataset and the same errors as ``read_annotation_file``.

``read_annotations_compact`` (``detect.py``) decides the format once, from the file's head
(``streamed.scan_file``: scanned in chunks by ``jsonscan``); a Datumaro or COCO file is then
read by its streamed reader, each item read back from the file when asked; anything else is
read whole and kept pickled. Whatever it meets, its result or its error must be the
whole-file reader's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd.annotations import jsonscan
from smaskd.annotations.detect import read_annotation_file, read_annotations_compact
from smaskd.annotations.rebuilt import CompactItems, RebuiltItems
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
    """The dataset or the error, the items' first pass included (it checks Datumaro items)."""
    try:
        dataset = fn(path, **kw)
        for _ in dataset.items:
            pass
        return dataset, None
    except InputError as e:
        return None, (type(e), str(e))


def check_same(path: Path, streamed: bool | None = None, **kw) -> None:
    """Same result or error; ``streamed`` also says which way the file must have been read."""
    full, full_err = outcome(read_annotation_file, path, **kw)
    compact, compact_err = outcome(read_annotations_compact, path, **kw)
    assert full_err == compact_err
    if full is not None:
        assert isinstance(compact.items, RebuiltItems)
        if streamed is not None:
            assert (not isinstance(compact.items, CompactItems)) == streamed
        same_dataset(full, compact)
        # a second pass reads the file again (same_dataset empties what it compared)
        same_dataset(read_annotation_file(path, **kw), compact)


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


COCO = {
    "info": {"description": "x"},
    "categories": [{"id": 2, "name": "bus"}, {"id": 1, "name": "car", "color": "#010203"}],
    "images": [{"id": 1, "file_name": "a.jpg", "width": 5, "height": 4},
               {"id": "two", "file_name": "sub/b.png", "width": 5, "height": 4},
               {"id": 3, "file_name": "c.jpg"}],
    "annotations": [
        {"id": 0, "image_id": "two", "category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 2]]},
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2],
         "attributes": {"rotation": 10}, "iscrowd": 0},
        {"id": 6, "image_id": "two", "category_id": 2,
         "segmentation": {"counts": [3, 2, 15], "size": [4, 5]}},
        {"id": 7, "image_id": 1, "category_id": 1,
         "segmentation": [[0, 0, 3, 0, 3, 2], [4, 4, 5, 4, 5, 5]]},
    ],
}


def _coco(**changes) -> str:
    return json.dumps({**COCO, **changes})


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
    json.dumps({**DOC, "items": DOC["items"]}) .replace('"items": [', '"items" : [ ', 1),
    '{"items": ' + json.dumps(DOC["items"]) + ', "\\u0069tems": [], "categories": {}}',
    json.dumps({**DOC, "annotations": [{"a": 1}]})[:-1] + ', "x": NaN}',
    json.dumps({**DOC, "annotations": [{"a": 1}]}).replace('{"a": 1}', '{"a": 1 "b"}'),
    json.dumps({**DOC, "annotations": [{"a": 1}]}),  # a list nobody reads, well formed
    _coco(items=[{"a": 1}]).replace('{"a": 1}', '{"a": NaN}'),
    _coco(),
    json.dumps(COCO, indent=1),
    _coco(annotations=[]),
    {k: v for k, v in COCO.items() if k != "annotations"} and json.dumps(
        {k: v for k, v in COCO.items() if k != "annotations"}),
    _coco(images=COCO["images"] + [COCO["images"][0]]),  # duplicate image id
    _coco(images=COCO["images"] + [{"id": 9, "file_name": "a.png"}]),  # same item id
    _coco(annotations=COCO["annotations"] + [{"id": 8, "image_id": 4, "category_id": 1,
                                               "bbox": [0, 0, 1, 1]}]),  # no such image
    _coco(annotations=COCO["annotations"] + [{"id": 8, "image_id": 1, "category_id": 7,
                                               "bbox": [0, 0, 1, 1]}]),  # no such category
    _coco(annotations=COCO["annotations"] + [{"id": 8, "image_id": 1, "category_id": 1,
        "segmentation": {"counts": [3, 2, 15], "size": [5, 4]}}]),  # RLE size differs
    _coco(annotations=[1]),
    _coco(images=[[1]]),
    _coco().replace('"images"', '"\\u0069mages"'),
    _coco()[:-1] + ', "images": []}',
    json.dumps(list(COCO["annotations"])),  # a results list
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


def _rebuilt(path: Path, keys: tuple[str, ...]):
    with open(path, "rb") as fh:
        doc = jsonscan.scan_top_level_lists(fh.fileno(), keys, 1 << 30, 512)
        if doc is None:
            return None
        rebuilt = json.loads(doc.head)
        for key, spans in doc.lists.items():
            elements = list(jsonscan.iter_elements(fh.fileno(), spans))
            if None in elements:  # something between the objects: the reader falls back
                return key
            rebuilt[key] = [json.loads(e) for e in elements]
        return rebuilt


@settings(max_examples=80, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab[]{}\"\\,: ", max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["items", "x", "ids", "item", "images"]), inner, max_size=3),
    max_leaves=12), st.integers(1, 9), st.sampled_from([None, 0, 2]))
def test_the_scan_finds_exactly_the_top_level_lists(value, chunk, indent):
    """Its parts reassemble the document the parser reads, whatever the chunk edges cut."""
    doc = {"a": value, "items": [{"k": value}, {}, {"items": value}]} if not isinstance(
        value, dict) else {**value, "items": [{"v": value}]}
    body = (json.dumps(doc, indent=indent) + " \n").encode()
    original = jsonscan.CHUNK
    jsonscan.CHUNK = chunk  # tiny chunks: quotes, escapes and brackets across every edge
    try:
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".json") as fh:
            fh.write(body)
            fh.flush()
            rebuilt = _rebuilt(Path(fh.name), ("items", "images"))
            parsed = json.loads(body)
            if rebuilt is None or isinstance(rebuilt, str):
                # in doubt only when a scanned list holds more than objects
                lists = [parsed[k] for k in ("items", "images") if isinstance(parsed.get(k), list)]
                assert any(not isinstance(e, dict) for lst in lists for e in lst)
            else:
                assert rebuilt == parsed
    finally:
        jsonscan.CHUNK = original


def test_an_escaped_quote_across_a_chunk_edge(tmp_path, monkeypatch):
    """A backslash run that ends one chunk escapes the quote that starts the next."""
    path = _write(tmp_path, json.dumps({"x": "a\\\\\\\"]}", "items": [{"k": "\\"}, {}]}))
    for chunk in range(1, 12):
        monkeypatch.setattr(jsonscan, "CHUNK", chunk)
        assert _rebuilt(path, ("items",)) == json.loads(path.read_bytes())


def test_datumaro_and_coco_files_are_streamed(tmp_path):
    check_same(_write(tmp_path, json.dumps(DOC)), streamed=True)
    check_same(_write(tmp_path, json.dumps(COCO)), streamed=True)
    no_annotations = {k: v for k, v in COCO.items() if k != "annotations"}
    check_same(_write(tmp_path, json.dumps(no_annotations)), streamed=True)
    check_same(_write(tmp_path, _coco(annotations=[])), streamed=True)


def test_a_file_changed_during_the_export_is_refused(tmp_path):
    path = _write(tmp_path, json.dumps(DOC))
    dataset = read_annotations_compact(path)
    assert not isinstance(dataset.items, CompactItems)
    assert [i.id for i in dataset.items] == ["a", "b"]  # the first pass, as an export plans
    path.write_bytes(path.read_bytes().replace(b'"b"', b'"c"'))  # same size, other bytes
    assert dataset.items[0].id == "a"
    with pytest.raises(InputError, match="changed while it was being converted"):
        dataset.items[1]


def test_an_escaped_second_items_key_falls_back_to_the_whole_document(tmp_path) -> None:
    """``"items": [A, B], "\\u0069tems": [C]``: json keeps the last key, so must we."""
    from smaskd.annotations.detect import read_annotation_file, read_annotations_compact

    item = '{{"id": "{}", "annotations": [], "image": {{"size": [4, 4]}}}}'
    text = ('{"categories": {"label": {"labels": []}}, "items": [' + item.format("a") + ", "
            + item.format("b") + '], "\\u0069tems": [' + item.format("c") + "]}")
    path = tmp_path / "default.json"
    path.write_text(text)
    whole = [i.id for i in read_annotation_file(path).items]
    assert whole == ["c"]
    assert [i.id for i in read_annotations_compact(path).items] == whole


def test_the_first_pass_is_the_check_and_an_access_after_it_finishes_it(tmp_path):
    bad = {**DOC, "items": DOC["items"] + [{"id": "c", "annotations": [
        {"id": 1, "type": "bbox", "label_id": 9, "bbox": [0, 0, 1, 1]}]}]}
    path = _write(tmp_path, json.dumps(bad))
    dataset = read_annotations_compact(path)  # labels are checked here, items on first pass
    first = iter(dataset.items)
    assert next(first).id == "a"
    first.close()  # left early (an export that failed elsewhere): the rest still gets checked
    with pytest.raises(InputError, match="label_id 9 is out of range"):
        dataset.items[0]
    with pytest.raises(InputError, match="label_id 9 is out of range"):
        list(dataset.items)


def test_a_syntax_error_found_on_the_first_pass_is_the_whole_file_readers(tmp_path):
    text = json.dumps(DOC).replace('"id": "b"', '"id": "b" "x"')
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as whole:
        read_annotation_file(path)
    assert "line 1 column" in str(whole.value)
    dataset = read_annotations_compact(path)
    with pytest.raises(InputError) as streamed:
        list(dataset.items)
    assert str(streamed.value) == str(whole.value)


def test_a_failed_first_pass_closes_the_file(tmp_path):
    import gc
    bad = {**DOC, "items": [{"id": "c", "annotations": [
        {"id": 1, "type": "bbox", "label_id": 9, "bbox": [0, 0, 1, 1]}]}]}
    path = _write(tmp_path, json.dumps(bad))
    before = len(os.listdir("/proc/self/fd"))
    gc.disable()
    try:
        for _ in range(20):
            with pytest.raises(InputError):
                list(read_annotations_compact(path).items)
        assert len(os.listdir("/proc/self/fd")) <= before + 1
    finally:
        gc.enable()


@pytest.mark.parametrize("text", [
    json.dumps(DOC),
    json.dumps(DOC).replace('"id": "b"', '"id": "b" "x"'),  # a syntax error in the last item
    json.dumps(DOC).replace('"label_id": 1', '"label_id": 7'),  # a content error in an item
    json.dumps({**DOC, "items": [DOC["items"][0], 5]}),  # an item that is no object
    _coco(),
    _coco(images=COCO["images"] + [COCO["images"][0]]),  # duplicate image id
    _coco(annotations=[1]),
    json.dumps({"shapes": [], "imagePath": "a.png", "imageHeight": 2, "imageWidth": 2}),
    json.dumps(list(COCO["annotations"])),  # a results list: read whole
])
def test_the_format_is_decided_once_and_one_reader_reads(tmp_path, monkeypatch, text):
    """The export's read decides the format once, from the file's head (or the whole document
    when the head cannot be had), and the reader it picks reports every error itself: no
    reader hands the file to another, which then decides again."""
    from smaskd.annotations import detect

    decisions = []
    sniff = detect._sniff
    monkeypatch.setattr(detect, "_sniff", lambda doc: decisions.append(1) or sniff(doc))
    path = _write(tmp_path, text)
    outcome(read_annotations_compact, path)
    assert len(decisions) == 1
