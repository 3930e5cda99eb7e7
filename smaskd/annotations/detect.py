"""Which annotation JSON a file is, decided by its content, and the one entry point to read it.

Names lie (``annotations.json`` is COCO from one tool and Datumaro from another, and the daemon
renames claimed files), so the format comes from the top-level keys:

=================  ===========================================================
``datumaro``       object with an ``items`` list (plus ``categories``/``infos``)
``coco``           object with an ``images`` list; or a non-empty list of
                   ``{"image_id", "segmentation"|"bbox"}`` (a COCO *results* list)
``labelme``        object with a ``shapes`` list and no ``tracks``
``cvat``           a CVAT task bundle: ``{"task", "meta", "labels", "annotations"}``
                   (the REST payloads of one task, :mod:`smaskd.annotations.cvat`)
CVAT REST JSON     ``{"version", "tags", "shapes", "tracks"}`` or ``{"task"|"job": {id: ...}}``
                   alone: refused — it names labels by database id and has no frame sizes
                   or image names; the task bundle carries those beside it
CVAT REST list     ``{"count", "next", "previous", "results"}``: refused, not annotations
=================  ===========================================================

An explicit ``fmt`` skips detection, but a file that clearly is another format is still
refused with both names, because reading COCO as LabelMe only produces a confusing error.

Decided once, read once. :func:`read_annotations_compact` (the export's read) decides from
the file's *head*, its top level with the big lists emptied (:func:`~smaskd.annotations.
streamed.scan_file`: a scan in chunks, memory flat), and hands the file to exactly one
reader: Datumaro and COCO instances are streamed (:mod:`smaskd.annotations.streamed`), the
rest is read whole with the format's reader, its items kept pickled. A file whose top level
is not plain (a list, a key twice, bytes or syntax the scan refuses) is parsed whole first,
and decided on that; its reader is then the whole-document one, whose errors name the place.
No reader hands a file back to another.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePath
from typing import Any

from smaskd.annotations.coco import read_coco, subset_from_coco_name
from smaskd.annotations.cvat import bundle_to_dataset, is_bundle
from smaskd.annotations.datumaro import read_datumaro
from smaskd.annotations.jsonload import DEFAULT_MAX_BYTES, At, expect_list, load_json_file
from smaskd.annotations.labelme import read_labelme
from smaskd.annotations.rebuilt import CompactItems, RebuiltItems
from smaskd.annotations.streamed import (
    STREAMED,
    read_coco_streamed,
    read_datumaro_streamed,
    scan_file,
)
from smaskd.errors import InputError
from smaskd.model import Dataset

__all__ = [
    "FORMATS",
    "datumaro_subset",
    "decide_format",
    "read_annotation_doc",
    "read_annotation_file",
    "read_annotations_compact",
]

FORMATS = ("coco", "cvat", "datumaro", "labelme")

_CVAT_REST = (
    "this is CVAT's REST API annotations JSON (tags/shapes/tracks per task or job) alone; it "
    "names labels only by database id and has no image names or frame sizes. Save the task "
    "bundle instead: one JSON object with the task, its data meta, its labels and these "
    "annotations (README, 'From CVAT'), or export the task from CVAT as 'Datumaro 1.0'"
)
_CVAT_LIST = (
    "this is a CVAT REST API listing (count/next/previous/results, e.g. labels, tasks or "
    "jobs), not annotations"
)
_UNKNOWN = (
    "unrecognised annotation JSON: expected COCO instances (images/annotations/categories), "
    "a COCO results list, Datumaro JSON (items/categories) or LabelMe JSON (shapes/imagePath)"
)


def _is_cvat_annotations(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("shapes"), list)
        and ("tracks" in value or ("tags" in value and "imagePath" not in value))
    )


def _sniff(doc: Any) -> str:
    """One of FORMATS, or 'cvat-rest', 'cvat-list', 'empty-list', 'unknown'."""
    if isinstance(doc, list):
        if not doc:
            return "empty-list"
        first = doc[0]
        if (
            isinstance(first, dict)
            and "image_id" in first
            and ("segmentation" in first or "bbox" in first)
        ):
            return "coco"
        return "unknown"
    if not isinstance(doc, dict):
        return "unknown"
    if is_bundle(doc):
        return "cvat"
    if _is_cvat_annotations(doc):
        return "cvat-rest"
    if isinstance(doc.get("items"), list) and "images" not in doc and "shapes" not in doc:
        return "datumaro"
    if isinstance(doc.get("images"), list) and "shapes" not in doc:
        return "coco"
    if isinstance(doc.get("shapes"), list):
        return "labelme"
    tables = [doc.get(k) for k in ("task", "job") if k in doc]
    if tables and set(doc) <= {"task", "job"} and all(isinstance(t, dict) for t in tables):
        entries = [v for t in tables for v in t.values()]  # type: ignore[union-attr]
        if entries and all(_is_cvat_annotations(v) for v in entries):
            return "cvat-rest"
    if {"count", "results"} <= set(doc) and isinstance(doc.get("results"), list):
        return "cvat-list"
    return "unknown"


#: The key that makes each format, and what the format calls the list it holds.
_LIST_KEYS = (("images", "COCO instances"), ("items", "Datumaro"), ("shapes", "LabelMe"))


def _refuse(kind: str, doc: Any, source: str) -> InputError:
    """The error for a document that is none of FORMATS.

    A document with a format's own key holding the wrong type (``"images": {}``,
    ``"items": 5``, ``"shapes": null``) is almost that format: name the key and what it holds,
    as the reader would have, rather than calling the whole file unrecognised.
    """
    if kind == "unknown" and isinstance(doc, dict):
        for key, fmt in _LIST_KEYS:
            if key in doc and not isinstance(doc[key], list):
                try:
                    expect_list(doc[key], At(source).key(key))
                except InputError as e:
                    return InputError(f"{e.message} ({fmt} JSON keeps its {key} in a list)",
                                      e.where)
    return InputError(_refusal(kind, doc), source)


def _refusal(kind: str, doc: Any) -> str:
    if kind == "cvat-rest":
        return _CVAT_REST
    if kind == "cvat-list":
        return _CVAT_LIST
    if kind == "empty-list":
        return "the JSON is an empty list: no annotations to convert"
    if not isinstance(doc, (dict, list)):
        return f"{_UNKNOWN}; the top level is not an object but {type(doc).__name__}"
    return _UNKNOWN


def datumaro_subset(name: str | PurePath) -> str:
    """Datumaro's layout ``annotations/<subset>.json`` names the subset; else ``default``."""
    path = PurePath(name)
    return path.stem if path.parent.name == "annotations" and path.stem else "default"


def decide_format(doc: Any, fmt: str, source: str) -> str:
    """The format to read ``doc`` (a parsed document, or a file's head) as: the one decision.

    ``fmt`` is the caller's (``auto``: by content); a refusal names ``source``.
    """
    _check_fmt(fmt)
    kind = _sniff(doc)
    if fmt == "auto":
        if kind not in FORMATS:
            raise _refuse(kind, doc, source)
        return kind
    if kind in FORMATS and kind != fmt:
        raise InputError(f"format {fmt!r} was requested, but the content is {kind} JSON", source)
    if kind in ("cvat-rest", "cvat-list", "empty-list"):
        raise InputError(_refusal(kind, doc), source)
    return fmt


def _check_fmt(fmt: str) -> None:
    if fmt not in (*FORMATS, "auto"):
        raise InputError(f"unknown annotation format {fmt!r}; expected auto|{'|'.join(FORMATS)}")


def _source(name: str | PurePath) -> str:
    return PurePath(name).name or str(name)


def read_annotation_doc(
    doc: Any, fmt: str = "auto", name: str | PurePath = "annotations.json"
) -> Dataset:
    """Read an already-parsed document; ``name`` is the file name (or path) it came from.

    The name only names things: errors (``name: items[3]...``), the subset of
    ``annotations/<subset>.json`` and ``instances_<subset>.json`` (and COCO's other names, see
    :func:`~smaskd.annotations.coco.subset_from_coco_name`), and a LabelMe item without
    ``imagePath``. It never chooses the format.
    """
    return _read_as(doc, decide_format(doc, fmt, _source(name)), name)


def _read_as(doc: Any, fmt: str, name: str | PurePath) -> Dataset:
    """``doc`` read by the reader of ``fmt`` (decided), as a whole document."""
    path = PurePath(name)
    source = _source(name)
    if fmt == "coco":
        return read_coco(doc, source, subset_from_coco_name(source))
    if fmt == "datumaro":
        return read_datumaro(doc, source, datumaro_subset(path))
    if fmt == "cvat":
        if not isinstance(doc, dict):
            raise InputError("a CVAT task bundle is a JSON object (task, meta, labels, "
                             "annotations)", source)
        return bundle_to_dataset(doc, source)
    return read_labelme(doc, source, posixpath.splitext(source)[0] or "item")


def read_annotation_file(
    path: Path, fmt: str = "auto", *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Dataset:
    """Load ``path`` whole, safely, and read it as ``fmt`` (``auto``: decided by content).

    ``name`` is the file's original name when ``path`` is a renamed copy (the daemon's claim
    adds a job-id prefix); it is used for messages and for subsets derived from the name.
    Every item is held; an export reads with :func:`read_annotations_compact` instead.
    """
    path = Path(path)
    doc = load_json_file(path, max_bytes=max_bytes, name=name or path.name)
    return read_annotation_doc(doc, fmt, name or path)


def read_annotations_compact(
    path: Path, fmt: str = "auto", *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    max_instances: int | None = None,
) -> Dataset:
    """The export's read of ``path``: the format decided once, then one reader (module doc).

    The same dataset and errors as :func:`read_annotation_file`, its items rebuilt per
    access (:class:`~smaskd.annotations.rebuilt.RebuiltItems`), so memory does not grow with
    them. ``max_instances``: a COCO image or Datumaro item with more annotations is refused
    (``LimitError``) as soon as the streamed read has counted that many, before the rest is
    checked: an image with 10⁶ shapes is refused in about a second, not minutes. A Datumaro
    file's items are checked by the first pass over them (the export's plan), so an error
    in an item is raised then.
    """
    _check_fmt(fmt)
    path = Path(path)
    name_or_path = name or path
    source = _source(name_or_path)
    scan = scan_file(path, source, max_bytes)
    if scan is None:  # not plainly one object: parsed whole, its errors located there
        doc = load_json_file(path, max_bytes=max_bytes, name=name or path.name)
        fmt = decide_format(doc, fmt, source)
    else:
        try:
            fmt = decide_format(scan.head, fmt, source)
        except BaseException:
            scan.close()
            raise
        if fmt in STREAMED and STREAMED[fmt][0] in scan.scanned.lists:
            read = read_datumaro_streamed if fmt == "datumaro" else read_coco_streamed
            subset = (datumaro_subset(PurePath(name_or_path)) if fmt == "datumaro"
                      else subset_from_coco_name(source))
            return read(scan, source, subset, max_instances)
        scan.close()
        doc = (scan.head if not scan.scanned.lists  # the head is the whole document
               else load_json_file(path, max_bytes=max_bytes, name=name or path.name))
    dataset = _read_as(doc, fmt, name_or_path)
    if not isinstance(dataset.items, RebuiltItems):  # a CVAT bundle expands tracks per frame
        dataset.items = CompactItems(dataset.items)  # type: ignore[assignment]
    return dataset
