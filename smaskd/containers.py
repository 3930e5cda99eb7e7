"""Zips that carry annotation files, and what a dropped file is, from its content.

A zip is not one format: CVAT's exports and backups are zips *of* annotation files, and a
Segmentation Mask zip is the masks themselves. What a zip is comes from its directory (the
names inside, never the zip's own name):

==================  ==========================================================  ===========
masks               ``labelmap.txt``, ``SegmentationClass/``,                    import
                    ``SegmentationObject/`` or ``ImageSets/`` (at the top or
                    under one folder)
CVAT export zip     ``annotations/instances_<subset>.json`` ("COCO 1.0") or     export
                    ``annotations/<subset>.json`` ("Datumaro 1.0"); ``images/``
                    and everything else beside them ignored
CVAT task backup    ``task.json`` + ``annotations.json`` at the top              export
any other zip       read as masks: the mask reader says what is missing         import
==================  ==========================================================  ===========

Each annotation file of an export zip is read exactly as the same file on its own would
be (:func:`smaskd.annotations.detect.read_annotation_doc`, format by content, the subset
from the member's name), so a zip exports like its JSON. Several subsets are one dataset:
their items in archive order, labels joined by name. The zip is vetted by
:class:`~smaskd.safezip.SafeZip` before a byte is decompressed; ``images/`` is never read.

A zip whose directory cannot be read (still being written, or truncated) has no kind.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from smaskd.errors import InputError, SmaskdError
from smaskd.model import Annotation, Dataset, Item

__all__ = [
    "ZipKind",
    "annotation_members",
    "classify_zip_names",
    "is_zip",
    "is_zip_head",
    "read_annotation_zip",
    "sniff_file",
]

Kind = Literal["annotations", "masks"]
ZipKind = Literal["masks", "export", "backup"]

_MASK_MARKERS = {"SegmentationClass", "SegmentationObject", "ImageSets"}
_BACKUP = {"task.json", "annotations.json"}
#: What to read of a head to tell JSON from a zip (a BOM and some whitespace fit).
SNIFF_BYTES = 64


def is_zip_head(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p]


def _is_annotation_json(parts: list[str]) -> bool:
    """``annotations/<x>.json``, at the top or under one folder."""
    return (len(parts) in (2, 3) and parts[-2] == "annotations"
            and parts[-1].lower().endswith(".json") and not parts[-1].startswith("."))


def classify_zip_names(names: Iterable[str]) -> ZipKind:
    """``masks`` | ``export`` | ``backup`` from the member names (see the module table)."""
    export = False
    top: set[str] = set()
    for name in names:
        parts = _parts(name)
        if not parts:
            continue
        if parts[-1] == "labelmap.txt" and len(parts) <= 2:
            return "masks"
        if parts[0] in _MASK_MARKERS or (len(parts) > 1 and parts[1] in _MASK_MARKERS):
            return "masks"
        export = export or _is_annotation_json(parts)
        if len(parts) == 1:
            top.add(parts[0])
    if export:
        return "export"
    if _BACKUP <= top:
        return "backup"
    return "masks"


def _zip_kind(fh: BinaryIO) -> ZipKind | None:
    """The kind of the zip open as ``fh``, from its central directory; None: no directory."""
    import zipfile

    from smaskd.zipdir import find_directory, records

    try:
        return classify_zip_names(rec.name for rec in records(fh, find_directory(fh)))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _json_head(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1] in (b"{", b"[")


def is_zip(fh: BinaryIO) -> bool:
    """Whether the open file is to be read as a zip: by its first bytes, or, when they are
    not JSON's, by an end record found as ``zipfile`` finds it (a self-extractor's prefix).

    The one check for "zip or JSON": :func:`sniff_file` (auto, rule kinds, route) and
    ``convert.export_file`` (which reader) both ask it, so a file sniffed as an export zip
    is read as one.
    """
    fh.seek(0)
    head = fh.read(SNIFF_BYTES)
    if is_zip_head(head):
        return True
    if _json_head(head):
        return False
    from smaskd.zipdir import has_directory

    return has_directory(fh)


def sniff_file(fh: BinaryIO) -> Kind | None:
    """What an open file is: ``annotations`` (JSON, an export zip, a backup), ``masks``
    (a mask zip) or None. A zip is decided by its directory, JSON by its first bytes."""
    if is_zip(fh):
        kind = _zip_kind(fh)
        if kind is None:
            return None
        return "masks" if kind == "masks" else "annotations"
    fh.seek(0)
    return "annotations" if _json_head(fh.read(SNIFF_BYTES)) else None


def annotation_members(names: Iterable[str]) -> list[str]:
    """The ``annotations/*.json`` members of an export zip, in archive order."""
    return [n for n in names if _is_annotation_json(_parts(n))]


def _locate(exc: SmaskdError, zip_label: str, member: str) -> None:
    """``default.json: items[3]...`` → ``export.zip: annotations/default.json: items[3]...``."""
    where = exc.where or ""
    base = posixpath.basename(member)
    if where.startswith(base):
        where = member + where[len(base):]
    elif member not in where:
        where = f"{member}: {where}" if where else member
    exc.where = f"{zip_label}: {where}"


def _join(parts: list[Dataset]) -> Dataset:
    """One dataset of several subset files: items in order, labels joined by name."""
    if len(parts) == 1:
        return parts[0]
    labels = list(parts[0].labels)
    index = {lb.name: i for i, lb in enumerate(labels)}
    items: list[Item] = []
    warnings: list[str] = []
    for ds in parts:
        remap: dict[int, int] = {}
        for i, lb in enumerate(ds.labels):
            if lb.name not in index:
                index[lb.name] = len(labels)
                labels.append(lb)
            elif labels[index[lb.name]].color is None and lb.color is not None:
                labels[index[lb.name]] = lb
            remap[i] = index[lb.name]
        for item in ds.items:
            if any(remap[i] != i for i in remap):
                item.annotations = [
                    Annotation(a.shape, None if a.label is None else remap[a.label], a.z_order,
                               a.group, a.id, a.attributes) for a in item.annotations]
            items.append(item)
        warnings += ds.warnings
    return Dataset(labels, items, parts[0].source_format, warnings)


def _refuse_crowded(doc: object, limit: int, source: str) -> None:
    """An item with more than ``limit`` annotations is refused before any is built, as the
    streamed reader refuses it in a bare JSON (a Datumaro item's count, a COCO image's "more
    than"), so a zip is refused where its JSON is, and as quickly."""
    from collections import Counter

    from smaskd.annotations.coco import coco_image, is_id, subset_from_coco_name
    from smaskd.annotations.jsonload import At
    from smaskd.annotations.streamed import counted_items
    from smaskd.geometry.limits import too_many_instances

    if not isinstance(doc, dict):
        return
    items = doc.get("items")
    if isinstance(items, list):  # Datumaro
        for _ in counted_items(iter(items), limit):
            pass
    anns, images = doc.get("annotations"), doc.get("images")
    if isinstance(anns, list) and isinstance(images, list):  # COCO
        counts = Counter(a.get("image_id") for a in anns  # a bad id is the reader's to name
                         if isinstance(a, dict) and is_id(a.get("image_id")))
        crowded = {k for k, n in counts.items() if n > limit}
        for k, img in enumerate(images):
            if isinstance(img, dict) and is_id(img.get("id")) and img.get("id") in crowded:
                at = At(source).key("images").index(k)
                item = coco_image(img, at, subset_from_coco_name(source))[1]
                raise too_many_instances(f"more than {limit}", limit, item.id)


def read_annotation_zip(path: Path, fmt: str = "auto", *, name: str | None = None,
                        max_bytes: int | None = None,
                        max_instances: int | None = None) -> Dataset:
    """A CVAT export zip or task backup → ``Dataset`` (as its JSON would give).

    ``fmt`` applies to the annotation files inside (``auto``: by content); ``name`` is the
    zip's original name (the daemon renames claimed files), used in messages.
    ``max_instances``: an item (a Datumaro item, a COCO image) with more annotations is
    refused before its annotations are built, as in a bare JSON file.
    """
    from smaskd.annotations.rebuilt import CompactItems
    from smaskd.annotations.detect import read_annotation_doc
    from smaskd.annotations.jsonload import DEFAULT_MAX_BYTES, load_json_bytes
    from smaskd.safezip import SafeZip

    label = name or Path(path).name
    limit = max_bytes or DEFAULT_MAX_BYTES
    with SafeZip(path) as zf:
        names = zf.names
        kind = classify_zip_names(names)
        if kind == "masks":
            raise InputError("this zip is a mask zip (labelmap.txt / SegmentationClass/ ...): "
                             "import it, it holds no annotation files to export", label)
        if kind == "backup":
            return _read_backup(Path(path), label, fmt)
        parts: list[Dataset] = []
        for member in annotation_members(names):
            try:
                doc = load_json_bytes(zf.read(member, limit), posixpath.basename(member))
                if max_instances is not None:
                    _refuse_crowded(doc, max_instances, posixpath.basename(member))
                parts.append(read_annotation_doc(doc, fmt, PurePosixPath(member)))
            except SmaskdError as e:
                _locate(e, label, member)
                raise
    dataset = _join(parts)
    dataset.items = CompactItems(dataset.items)  # type: ignore[assignment]
    return dataset


def _read_backup(path: Path, label: str, fmt: str) -> Dataset:
    if fmt not in ("auto", "cvat"):
        raise InputError(f"format {fmt!r} was requested, but this zip is a CVAT task backup "
                         "(task.json + annotations.json)", label)
    from smaskd.annotations.cvat.backup import read_backup_dataset

    return read_backup_dataset(path, label)
