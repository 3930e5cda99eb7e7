"""Annotation files read for an export without holding them: memory flat in the item count.

An export touches each item twice (plan, render) and never needs two at once. So the file
is scanned once in chunks (:mod:`smaskd.annotations.jsonscan`), every element of its big
lists is parsed and checked once, in file order, exactly as the whole-file reader would
(same errors, same warnings), and what stays is a few offsets per item. A Datumaro file is
checked by the first iteration over its items (the export's plan); COCO's annotations must
all be seen before an item is whole, so COCO is checked while it is read. Each later
access reads the item's bytes back and parses them again: parsing one item costs less than
keeping all of them, and ``Dataset.items`` stays a random-access sequence.

A file changed while the export runs is an ``InputError`` (each element's CRC-32 is
compared on every read), never a mix of two versions in one archive.

Whenever the scan or the first pass meets anything it does not expect, the whole-file
reader (:func:`~smaskd.annotations.detect.read_annotation_file`) reads the file instead and
reports the problem in its usual words. One difference remains: a Datumaro file's items are
checked one at a time, so an error in an early item is reported before a syntax error in a
later one (the whole-file reader parses everything first); either way the file is refused.
"""

from __future__ import annotations

import json
import os
import weakref
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
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
    subset_from_coco_name,
)
from smaskd.annotations.datumaro import datumaro_item, datumaro_items
from smaskd.annotations.detect import datumaro_subset, read_annotation_doc
from smaskd.annotations.jsonload import DEFAULT_MAX_DEPTH, At, refuse_constant
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

__all__ = ["Fallback", "RebuiltItems", "read_streamed"]

_LIST_KEYS = ("items", "images", "annotations")  # Datumaro's, COCO's two
_USED_LISTS = {"datumaro": ("items",), "coco": ("images", "annotations")}  # the first required


class Fallback(Exception):
    """The streamed read gave up; read the file whole."""


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
            raise InputError("the file changed while it was being converted", self.source)
        return json.loads(data, parse_constant=refuse_constant)

    def close(self) -> None:
        self._closer()


def read_streamed(path: Path, fmt: str, name: str | PurePath, source: str, max_bytes: int,
                  whole: Callable[[], object], max_instances: int | None = None) -> Dataset:
    """A Datumaro or COCO file as a ``Dataset`` of :class:`RebuiltItems`; else ``Fallback``.

    ``whole()`` reads the file whole, raising that reader's error: a Datumaro file's items
    are first checked as the export plans them, after this returns, and an item the streamed
    parse is unsure of is reported in the whole-file reader's words.
    """
    if fmt not in ("auto", "datumaro", "coco"):
        raise Fallback
    file = _OpenFile(path, source)
    try:
        scanned = scan_top_level_lists(file.fd, _LIST_KEYS, max_bytes, DEFAULT_MAX_DEPTH)
        if scanned is None or not scanned.lists:
            raise Fallback
        head = _parse_head(scanned.head, tuple(scanned.lists))
        if any(head.get(key) != [] for key in scanned.lists):
            raise Fallback
        header = read_annotation_doc(head, fmt, name)  # labels, and every check of the rest
        used = _USED_LISTS.get(header.source_format, ())
        if not used or used[0] not in scanned.lists:
            raise Fallback
        for key, spans in scanned.lists.items():
            if key not in used:  # emptied from the head but read by nobody: still must parse
                for _ in _checked_elements(file, spans, np.zeros(len(spans.starts), np.uint32)):
                    pass
        if header.source_format == "datumaro":
            return _read_datumaro(file, scanned, header, name, source, whole, max_instances)
        return _read_coco(file, scanned, header, head, source, max_instances)
    except BaseException:
        file.close()
        raise


def _parse(data: bytes, hook: Callable | None = None) -> Any:
    try:
        return json.loads(data, parse_constant=refuse_constant, object_pairs_hook=hook)
    except Exception:  # syntax, NaN, recursion, huge integers: the whole-file reader words it
        raise Fallback from None


def _parse_head(head: bytes, keys: tuple[str, ...]) -> dict:
    """The head parsed, refused if a key we emptied is there twice (json keeps the last)."""
    top: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        top[:] = [pairs]  # the outermost object closes last
        return dict(pairs)

    doc = _parse(head, hook)
    if not isinstance(doc, dict) or not top:
        raise Fallback
    names = [k for k, _ in top[0]]
    if any(names.count(key) > 1 for key in keys):
        raise Fallback
    return doc


def _checked_elements(file: _OpenFile, spans: ListSpans, crcs: np.ndarray) -> Iterator[Any]:
    """The elements parsed in file order, each one's CRC-32 noted for the later reads."""
    for i, data in enumerate(iter_elements(file.fd, spans)):
        if data is None:
            raise Fallback
        crcs[i] = zlib.crc32(data)
        yield _parse(data)


def _counted(entries: Iterator[Any], max_instances: int | None) -> Iterator[Any]:
    """Datumaro items, refused before their annotations are built when there are too many."""
    for entry in entries:
        if max_instances is not None and isinstance(entry, dict):
            anns = entry.get("annotations")
            if isinstance(anns, list) and len(anns) > max_instances:
                raise too_many_instances(len(anns), max_instances, str(entry.get("id")))
        yield entry


def _read_datumaro(file: _OpenFile, scanned: ScannedDocument, header: Dataset,
                   name: str | PurePath, source: str, whole: Callable[[], object],
                   max_instances: int | None = None) -> Dataset:
    spans = scanned.lists["items"]
    crcs = np.zeros(len(spans.starts), dtype=np.uint32)
    subset = datumaro_subset(name)
    n_labels = len(header.labels)

    def first_pass() -> Iterator[Item]:
        try:
            yield from datumaro_items(
                _counted(_checked_elements(file, spans, crcs), max_instances), source, subset,
                n_labels, header.warnings)
        except Fallback:
            whole()  # raises the whole-file reader's error for this file
            raise InputError("the file changed while it was being converted", source) from None

    def build(i: int) -> Item:
        return datumaro_item(file.element(spans, crcs, i), source, i, subset, n_labels, [])

    items = RebuiltItems(len(crcs), build, file, first_pass())
    return Dataset(header.labels, items, "datumaro", header.warnings)  # type: ignore[arg-type]


def _read_coco(file: _OpenFile, scanned: ScannedDocument, header: Dataset, head: dict,
               source: str, max_instances: int | None = None) -> Dataset:
    """COCO: images checked in order, then annotations, as ``read_coco``; grouped by image.

    What stays per image is its span; per annotation its span and its image's index, so an
    item is its image entry plus its annotations (in file order) read back.
    """
    root = At(source)
    subset = subset_from_coco_name(source)
    labels, label_of = coco_labels(head, root)
    background = resolve_background(labels)
    images = scanned.lists["images"]
    image_crcs = np.zeros(len(images.starts), dtype=np.uint32)
    index_of: dict[Any, int] = {}
    frame: list[tuple[str, str, int | None, int | None]] = []  # what an annotation's check needs
    checked = coco_images(_checked_elements(file, images, image_crcs), root, subset)
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
    for k, ann in enumerate(_checked_elements(file, anns, ann_crcs) if anns else ()):
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
