"""Datumaro and COCO files read for an export without holding them: memory flat in the items.

An export touches each item twice (plan, render) and never needs two at once. So the file
is scanned once in chunks (:mod:`smaskd.annotations.jsonscan`): :func:`scan_file` gives the
document's top level with its big lists emptied (the *head*, from which
:mod:`smaskd.annotations.detect` decides the format) and where each list element lies. The
reader of the decided format then parses and checks every element once, in file order, with
the format's own per-element functions (same errors, same warnings as for a parsed
document), and keeps a few offsets per item. A Datumaro file is checked by the first
iteration over its items (the export's plan); COCO's annotations must all be seen before an
item is whole, so COCO is checked while it is read. Each later access reads the item's bytes
back and parses them again: parsing one item costs less than keeping all of them, and
``Dataset.items`` stays a random-access sequence.

A file changed while the export runs is an ``InputError`` (each element's CRC-32 is
compared on every read), never a mix of two versions in one archive.

Nothing here falls back to another reader. A file whose top level is not plain (see
``jsonscan``) gets no head, and detect reads it whole. An element or a gap between elements
that does not parse is a syntax error: only then is the file parsed whole, by
:func:`~smaskd.annotations.jsonload.load_json_bytes`, to say where, in the words every JSON
error has (line and column). Because items are checked as they are read, a file with both
a content error and a later syntax error is refused for whichever comes first in the file.
"""

from __future__ import annotations

import json
import os
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smaskd.annotations.coco import (
    append_coco_annotation,
    coco_annotation_image,
    coco_image,
    coco_images,
    coco_labels,
    coco_reserved_ids,
    finish_coco_item,
    read_coco,
)
from smaskd.annotations.datumaro import datumaro_item, datumaro_items, read_datumaro
from smaskd.annotations.jsonload import (
    DEFAULT_MAX_DEPTH,
    At,
    expect_dict,
    load_json_bytes,
    refuse_constant,
)
from smaskd.annotations.jsonscan import (
    ListSpans,
    ScannedDocument,
    iter_elements,
    scan_top_level_lists,
)
from smaskd.annotations.rebuilt import RebuiltItems
from smaskd.errors import InputError
from smaskd.geometry.limits import too_many_instances
from smaskd.model import Dataset, Item, resolve_background

__all__ = ["STREAMED", "ScannedFile", "counted_items", "read_coco_streamed",
           "read_datumaro_streamed", "scan_file"]

_LIST_KEYS = ("items", "images", "annotations")  # Datumaro's, COCO's two
#: The formats read here, and the lists each one reads (the first one it needs to stream).
STREAMED = {"datumaro": ("items",), "coco": ("images", "annotations")}


class _Unparsable(Exception):
    """An element or the head did not parse."""


class _OpenFile:
    """The input, open for the dataset's lifetime (a later rename or unlink cannot swap it)."""

    def __init__(self, path: Path, source: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.source = source
        self._closer = weakref.finalize(self, os.close, self.fd)

    def element(self, spans: ListSpans, crcs: np.ndarray, i: int) -> Any:
        """Element ``i`` parsed again, refused if its bytes are not the ones checked first."""
        start, end = int(spans.starts[i]), int(spans.ends[i])
        data = os.pread(self.fd, end - start, start)
        if zlib.crc32(data) != int(crcs[i]):
            raise self.changed()
        return json.loads(data, parse_constant=refuse_constant)

    def parsed_whole(self) -> Any:
        """The file parsed whole, for an error path only: a syntax error raised with its line
        and column (:func:`~smaskd.annotations.jsonload.load_json_bytes`), as for any JSON."""
        return load_json_bytes(os.pread(self.fd, os.fstat(self.fd).st_size, 0), self.source,
                               DEFAULT_MAX_DEPTH)

    def changed(self) -> InputError:
        return InputError("the file changed while it was being converted", self.source)

    def close(self) -> None:
        self._closer()


@dataclass(slots=True)
class ScannedFile:
    """A file whose top level is one plain object: its head parsed, its lists located."""

    file: _OpenFile
    scanned: ScannedDocument
    head: dict  # the document with every list in ``scanned.lists`` emptied

    def close(self) -> None:
        self.file.close()


def scan_file(path: Path, source: str, max_bytes: int) -> ScannedFile | None:
    """The top level of ``path`` when it is plainly one object; else None (read it whole).

    None for a top level that is not an object (a COCO results list), a key twice, bytes or
    syntax the scan or the head's parse does not accept, or a file that cannot be opened:
    the whole-file read then reports the problem in its usual words. With no list found, the
    head is the whole document.
    """
    try:
        file = _OpenFile(path, source)
    except OSError:
        return None
    try:
        scanned = scan_top_level_lists(file.fd, _LIST_KEYS, max_bytes, DEFAULT_MAX_DEPTH)
        if scanned is not None:
            head = _parse_head(scanned.head, tuple(scanned.lists))
            if all(head.get(key) == [] for key in scanned.lists):
                return ScannedFile(file, scanned, head)
    except (OSError, _Unparsable):
        pass
    file.close()
    return None


def read_datumaro_streamed(scan: ScannedFile, source: str, subset: str,
                           max_instances: int | None = None) -> Dataset:
    """A Datumaro file as a ``Dataset`` of :class:`RebuiltItems`, items checked on first pass.

    ``subset`` is the one its name gives (``annotations/<subset>.json``).
    """
    try:
        header = read_datumaro(scan.head, source, subset)  # labels, and every check of the rest
        _parse_unused(scan, STREAMED["datumaro"])
        return _read_datumaro(scan.file, scan.scanned, header, source, subset, max_instances)
    except BaseException:
        scan.close()
        raise


def read_coco_streamed(scan: ScannedFile, source: str, subset: str,
                       max_instances: int | None = None) -> Dataset:
    """A COCO instances file as a ``Dataset`` of :class:`RebuiltItems`, checked as it is read.

    ``subset`` is the one its name gives (``instances_<subset>.json``).
    """
    try:
        header = read_coco(scan.head, source, subset)  # labels, and every check of the rest
        _parse_unused(scan, STREAMED["coco"])
        return _read_coco(scan.file, scan.scanned, header, scan.head, source, subset,
                          max_instances)
    except BaseException:
        scan.close()
        raise


def _parse_unused(scan: ScannedFile, used: tuple[str, ...]) -> None:
    """Lists emptied from the head but read by nobody must still parse."""
    for key, spans in scan.scanned.lists.items():
        if key not in used:
            zeros = np.zeros(len(spans.starts), np.uint32)
            for _ in _checked_elements(scan.file, spans, zeros, key, read=False):
                pass


def _parse(data: bytes, hook: Callable | None = None) -> Any:
    try:
        return json.loads(data, parse_constant=refuse_constant, object_pairs_hook=hook)
    except Exception:  # syntax, NaN, recursion, huge integers: jsonload words it
        raise _Unparsable from None


def _parse_head(head: bytes, keys: tuple[str, ...]) -> dict:
    """The head parsed, refused if a key we emptied is there twice (json keeps the last)."""
    top: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        top[:] = [pairs]  # the outermost object closes last
        return dict(pairs)

    doc = _parse(head, hook)
    if not isinstance(doc, dict) or not top:
        raise _Unparsable
    names = [k for k, _ in top[0]]
    if any(names.count(key) > 1 for key in keys):
        raise _Unparsable  # json keeps the last of two: the whole-file read does it
    return doc


def _checked_elements(file: _OpenFile, spans: ListSpans, crcs: np.ndarray, key: str,
                      read: bool = True) -> Iterator[Any]:
    """The elements of list ``key`` parsed in file order, each one's CRC-32 noted for the later
    reads. What does not parse, in an element or between two, is located in the whole file;
    what parses there but is no object is refused as the format's reader refuses it (``read``:
    a list nobody reads may hold anything)."""
    for i, data in enumerate(iter_elements(file.fd, spans)):
        if data is None:  # not white space and one comma between two objects
            _not_objects(file, key, read)
            return
        crcs[i] = zlib.crc32(data)
        try:
            yield _parse(data)
        except _Unparsable:
            file.parsed_whole()  # raises the syntax error
            raise file.changed() from None


def _not_objects(file: _OpenFile, key: str, read: bool) -> None:
    doc = file.parsed_whole()  # raises the syntax error, if that is what it is
    values = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(values, list) or all(isinstance(v, dict) for v in values):
        raise file.changed()
    if read:  # every reader's first check of an element, for the first that fails it
        first = next(i for i, v in enumerate(values) if not isinstance(v, dict))
        expect_dict(values[first], At(file.source).key(key).index(first))


def counted_items(entries: Iterator[Any], max_instances: int | None) -> Iterator[Any]:
    """Datumaro items, refused before their annotations are built when there are too many
    (also how an export zip's document is checked: containers.py)."""
    for entry in entries:
        if max_instances is not None and isinstance(entry, dict):
            anns = entry.get("annotations")
            if isinstance(anns, list) and len(anns) > max_instances:
                raise too_many_instances(len(anns), max_instances, str(entry.get("id")))
        yield entry


def _read_datumaro(file: _OpenFile, scanned: ScannedDocument, header: Dataset, source: str,
                   subset: str, max_instances: int | None = None) -> Dataset:
    spans = scanned.lists["items"]
    crcs = np.zeros(len(spans.starts), dtype=np.uint32)
    n_labels = len(header.labels)

    def first_pass() -> Iterator[Item]:
        yield from datumaro_items(
            counted_items(_checked_elements(file, spans, crcs, "items"), max_instances), source, subset,
            n_labels, header.warnings)

    def build(i: int) -> Item:
        return datumaro_item(file.element(spans, crcs, i), source, i, subset, n_labels, [])

    items = RebuiltItems(len(crcs), build, file, first_pass())
    return Dataset(header.labels, items, "datumaro", header.warnings)  # type: ignore[arg-type]


def _read_coco(file: _OpenFile, scanned: ScannedDocument, header: Dataset, head: dict,
               source: str, subset: str, max_instances: int | None = None) -> Dataset:
    """COCO: images checked in order, then annotations, as ``read_coco``; grouped by image.

    What stays per image is its span; per annotation its span and its image's index, so an
    item is its image entry plus its annotations (in file order) read back.
    """
    root = At(source)
    labels, label_of = coco_labels(head, root)
    background = resolve_background(labels)
    images = scanned.lists["images"]
    image_crcs = np.zeros(len(images.starts), dtype=np.uint32)
    index_of: dict[Any, int] = {}
    frame: list[tuple[str, str, int | None, int | None]] = []  # what an annotation's check needs
    checked = coco_images(_checked_elements(file, images, image_crcs, "images"), root, subset)
    for i, (image_id, item) in enumerate(checked):
        index_of[image_id] = i
        frame.append((item.id, item.subset, item.height, item.width))

    anns = scanned.lists.get("annotations")  # absent: images without annotations
    count = 0 if anns is None else len(anns.starts)
    ann_crcs = np.zeros(count, dtype=np.uint32)
    ann_image = np.zeros(count, dtype=np.int32)
    per_image = [0] * len(frame)  # counted as they come: 10⁶ on one image stop at the limit
    limit = count if max_instances is None else max_instances
    anns_at = root.key("annotations")
    for k, ann in enumerate(_checked_elements(file, anns, ann_crcs, "annotations")
                           if anns else ()):
        at = anns_at.index(k)
        ann, i = coco_annotation_image(ann, at, index_of)
        item_id, item_subset, height, width = frame[i]
        per_image[i] += 1
        if per_image[i] > limit:
            raise too_many_instances(f"more than {limit}", limit, item_id)
        append_coco_annotation(Item(item_id, item_subset, height, width), ann, label_of, at)
        ann_image[k] = i
    del index_of, frame
    order = np.argsort(ann_image, kind="stable").astype(np.int32)
    bounds = np.searchsorted(ann_image[order], np.arange(len(image_crcs) + 1))
    del ann_image

    def build(i: int) -> Item:
        img, at = file.element(images, image_crcs, i), root.key("images").index(i)
        _, item = coco_image(img, at, subset)
        for k in order[bounds[i]:bounds[i + 1]].tolist():
            assert anns is not None  # an annotation of image i exists
            ann = file.element(anns, ann_crcs, k)  # a dict: checked in the first pass
            append_coco_annotation(item, ann, label_of, anns_at.index(k))
        return finish_coco_item(item, coco_reserved_ids(img, at), background)

    return Dataset(header.labels, RebuiltItems(len(image_crcs), build, file),  # type: ignore[arg-type]
                   "coco", header.warnings)
