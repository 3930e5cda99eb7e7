"""Annotation files read for an export: items held compactly, so memory does not grow with them.

An export touches each item twice (plan, render) and never needs two at once, so the items
are kept pickled (about the size of their JSON) and unpickled when asked for, instead of
as live objects (~6x their JSON). A Datumaro file is also *parsed* one item at a time
(:mod:`smaskd.annotations.jsonsplit`), so its full parse tree never exists either: the peak
is the file's bytes plus one item. COCO and LabelMe files are parsed whole (COCO groups
annotations by image across the file), then compacted.

Results and errors are those of :func:`~smaskd.annotations.detect.read_annotation_file`:
whenever the item-by-item parse meets anything it does not expect, the file is read whole
by that function instead, which reports the problem in its usual words.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import overload

from smaskd.annotations.datumaro import datumaro_items
from smaskd.annotations.detect import read_annotation_doc, read_annotation_file
from smaskd.annotations.jsonload import (
    DEFAULT_MAX_BYTES,
    check_json_bytes,
    read_json_file,
    refuse_constant,
)
from smaskd.annotations.jsonsplit import split_list_member
from smaskd.errors import InputError
from smaskd.model import Dataset, Item

__all__ = ["CompactItems", "read_annotations_compact"]


class CompactItems(Sequence[Item]):
    """A sequence of items stored pickled; every access returns a fresh ``Item``."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._blobs: list[bytes] = []
        for item in items:
            self.append(item)

    def append(self, item: Item) -> None:
        self._blobs.append(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def __len__(self) -> int:
        return len(self._blobs)

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [pickle.loads(b) for b in self._blobs[index]]
        return pickle.loads(self._blobs[index])

    def __iter__(self) -> Iterator[Item]:
        for blob in self._blobs:
            yield pickle.loads(blob)


class _Fallback(Exception):
    """The item-by-item parse gave up; read the file whole."""


def _datumaro_subset(name: str | PurePath) -> str:
    """The default subset ``read_annotation_doc`` derives from ``annotations/<subset>.json``."""
    path = PurePath(name)
    return path.stem if path.parent.name == "annotations" and path.stem else "default"


def _split_read(data: bytes, fmt: str, name: str | PurePath, source: str) -> Dataset:
    body, quotes, brackets = check_json_bytes(data, source)
    split = split_list_member(body, quotes, brackets, "items")
    if split is None:
        raise _Fallback
    head_bytes, spans = split
    try:
        head = json.loads(head_bytes, parse_constant=refuse_constant)
    except Exception:  # syntax, NaN, recursion: the whole-file parser words it
        raise _Fallback from None
    if not isinstance(head, dict) or head.get("items") != []:
        # "items" spelled with escapes (or twice) elsewhere in the head: json keeps the last
        # one, so the split list may not be the one the whole-document reader would read.
        raise _Fallback
    header = read_annotation_doc(head, fmt, name)  # labels, and every check of the rest
    if header.source_format != "datumaro":
        raise _Fallback

    def entries() -> Iterator[object]:
        for start, end in spans:
            try:
                entry = json.loads(body[start:end], parse_constant=refuse_constant)
            except Exception:
                raise _Fallback from None
            yield entry

    items = CompactItems(datumaro_items(entries(), source, _datumaro_subset(name),
                                        len(header.labels), header.warnings))
    return Dataset(header.labels, items, "datumaro", header.warnings)


def read_annotations_compact(
    path: Path, fmt: str = "auto", *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Dataset:
    """:func:`read_annotation_file` with ``items`` as :class:`CompactItems`."""
    path = Path(path)
    source = PurePath(name or path).name or str(name or path)
    if fmt in ("auto", "datumaro"):
        data = read_json_file(path, max_bytes, source)
        try:
            return _split_read(data, fmt, name or path, source)
        except (_Fallback, InputError):
            pass  # the whole-file read below reports the problem exactly as it always has
        del data
    dataset = read_annotation_file(path, fmt, name=name, max_bytes=max_bytes)
    dataset.items = CompactItems(dataset.items)  # type: ignore[assignment]
    return dataset
