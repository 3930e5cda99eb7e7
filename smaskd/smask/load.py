"""A "Segmentation mask 1.1" zip → ``Dataset``, read in place (FORMAT.md §1.2, §2, §5).

Steps, each as CVAT's importer does them unless the list below says otherwise:

1. Open the zip through :class:`~smaskd.safezip.SafeZip` (nothing is extracted).
2. Find the dataset root: the archive root, or the single top folder (``__MACOSX`` ignored),
   up to 4 levels deep, until ``ImageSets/``, ``SegmentationClass/``, ``SegmentationObject/``
   or ``labelmap.txt`` shows up.
3. Labels: ``--labelmap`` (the caller's) if given, else ``dataset_meta.json``, else
   ``labelmap.txt``, else labelme's ``class_names.txt``, else the Pascal VOC defaults (§2.4);
   see :mod:`smaskd.smask.labelspec`.
4. Subsets: ``ImageSets/Segmentation/<subset>.txt``; when there is none, the ``Main`` (class
   lists ``<class>_<subset>.txt`` skipped), ``Layout`` and ``Action`` lists, as CVAT.
5. Items in list order; each decodes its two PNGs and turns them into instances
   (:mod:`smaskd.smask.decode`, :mod:`smaskd.geometry.instances`).

Where smaskd deliberately differs from CVAT (each gives a warning, never silence):

* subset lists whose name contains ``_`` (``my_train.txt``) are read; CVAT skips them;
* mask PNGs listed in no subset file are imported into subset ``default`` (CVAT ignores them;
  labelme's VOC exports have no ``ImageSets`` at all); a zip with neither lists nor masks is
  an ``InputError``;
* the VOC void value (index 255 / colour (224, 224, 192)) is the ``ignored`` label whenever
  the label set has one, as CVAT reads it with its VOC defaults (its border instance, id 255,
  stays an ``ignored`` instance); an index-255 PNG too, where CVAT fails. Without an
  ``ignored`` label (a labelmap that does not declare it, where CVAT refuses the archive) void
  pixels and instances lying only on them are dropped, with a warning;
* a UTF-8 BOM at the start of a list file is dropped (CVAT folds it into the first id);
* labelme's ``class_names.txt`` names the labels when there is no labelmap (VOC colours by
  index; CVAT would use the VOC defaults, which differ in spelling: ``potted plant``);
* majority class, instances on background, class-only and object-only items: see
  :mod:`smaskd.geometry.instances`; 16-bit PNGs: see :mod:`smaskd.smask.decode`.
"""

from __future__ import annotations

import posixpath
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from smaskd.errors import InputError
from smaskd.geometry.instances import class_masks, object_instances, object_instances_runs
from smaskd.model import Dataset, Item
from smaskd.safezip import SafeZip
from smaskd.smask.decode import (
    VOID,
    class_runs,
    decode_class_png,
    decode_object_png,
    object_runs,
    png_size,
)
from smaskd.smask.labelmap import LabelmapEntry
from smaskd.smask.labelspec import LabelSpec, archive_labels, read_text, resolve_background
from smaskd.smask.zipwriter import check_item_id

__all__ = [
    "ArchiveItem",
    "LabelSpec",
    "LoadedItem",
    "MaskArchive",
    "PngPair",
    "load_mask_zip",
    "load_png_pair",
    "resolve_background",
]

MAX_PNG_BYTES = 256 << 20
MAX_ROOT_DEPTH = 4
_MARKERS = ("ImageSets/", "SegmentationClass/", "SegmentationObject/", "labelmap.txt")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2")
_FALLBACK_TASKS = ("Main", "Layout", "Action")
_EXAMPLES = 5


# -- archive layout ------------------------------------------------------------------------


def _dataset_root(names: Callable[[], Iterable[str]]) -> str:
    """'' or 'top/' (repeatedly) until a dataset marker is found; __MACOSX is not a folder.

    ``names()`` lists the visible names again for each level (the zip directory is read from
    the file, not kept).
    """
    root = ""
    for _ in range(MAX_ROOT_DEPTH + 1):
        tops: set[str] = set()  # two are as good as many
        loose = False
        for n in names():
            if not n.startswith(root):
                continue
            rel = n[len(root):]
            if rel.startswith(_MARKERS):
                return root
            if "/" in rel:
                if len(tops) < 2:
                    tops.add(rel.split("/", 1)[0])
            else:
                loose = True
        if len(tops) != 1 or loose:
            return root
        root += tops.pop() + "/"
    return root


def _visible(name: str) -> bool:
    if "._" not in name and ".DS_Store" not in name and not name.startswith("__MACOSX"):
        return True  # most names: asked ~4 times per item, this is 5x faster than the split
    parts = name.split("/")
    return parts[0] != "__MACOSX" and not any(p.startswith("._") or p == ".DS_Store" for p in parts)


def _mask_ids(names: Iterable[str], root: str) -> Iterator[str]:
    """Ids of the ``SegmentationClass/<id>.png`` and ``SegmentationObject/<id>.png`` members."""
    prefixes = (f"{root}SegmentationClass/", f"{root}SegmentationObject/")
    for n in names:
        if n.endswith(".png"):
            for prefix in prefixes:
                if n.startswith(prefix) and len(n) > len(prefix) + 4:
                    yield n[len(prefix):-4]


def _locate(zf: SafeZip, name: str) -> int | None:
    """Where the archive has ``name`` as a visible file (:meth:`SafeZip.locate`)."""
    return zf.locate(name) if _visible(name) else None


def _image_of(zf: SafeZip, prefix: str, item_id: str) -> str | None:
    """``<prefix><id>.<image ext>``, the extension in any case; the first in name order."""
    best = None
    for ext in _IMAGE_EXTS:
        found = zf.find_folded(prefix + item_id + ext)
        if found is None or not found.startswith(prefix) or not _visible(found):
            continue
        stem, real_ext = posixpath.splitext(found[len(prefix):])
        if stem == item_id and real_ext.lower() in _IMAGE_EXTS and (best is None or found < best):
            best = found
    return best


# -- list files ----------------------------------------------------------------------------


def _read_list(zf: SafeZip, name: str) -> list[str]:
    """§5.1: stripped lines; blank and ``#`` lines skipped; duplicates keep the first."""
    seen: dict[str, None] = {}
    for number, line in enumerate(read_text(zf, name).splitlines(), start=1):
        item_id = line.strip()
        if item_id and not item_id.startswith("#") and item_id not in seen:
            check_item_id(item_id, f"{name}: line {number}")  # as an export would refuse it
            seen[item_id] = None
    return list(seen)


def _list_files(names: Iterable[str], root: str, task: str,
                skip_underscore: bool) -> dict[str, str]:
    prefix = f"{root}ImageSets/{task}/"
    out: dict[str, str] = {}
    for n in sorted(names):
        base = n[len(prefix):]
        if not n.startswith(prefix) or "/" in base or not base.endswith(".txt"):
            continue
        if base.startswith(".") or (skip_underscore and "_" in base):
            continue
        out[base[: -len(".txt")]] = n
    return out


# -- image sizes ---------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _image_size(head: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG IHDR or a JPEG SOF marker; None when not found."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return (h, w) if h and w else None
    if not head.startswith(b"\xff\xd8"):
        return None
    p = 2
    while p + 9 < len(head):
        if head[p] != 0xFF:
            return None
        marker = head[p + 1]
        if marker == 0xFF:
            p += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            p += 2
            continue
        seg = struct.unpack(">H", head[p + 2:p + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", head[p + 5:p + 9])
            return (h, w) if h and w else None
        p += 2 + seg
    return None


# -- items ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where an item's members are: names are made from the id and looked up in the zip."""

    root: str
    has_images: bool  # anything under JPEGImages/ (else no image lookups)

    def class_png(self, item_id: str) -> str:
        return f"{self.root}SegmentationClass/{item_id}.png"

    def object_png(self, item_id: str) -> str:
        return f"{self.root}SegmentationObject/{item_id}.png"

    def image(self, zf: SafeZip, item_id: str) -> str | None:
        return _image_of(zf, f"{self.root}JPEGImages/", item_id) if self.has_images else None


class ArchiveItem(NamedTuple):
    """An item of the archive's lists, and where its mask PNGs are in the zip."""

    id: str
    subset: str
    class_png: int | None  # SafeZip.locate of SegmentationClass/<id>.png
    object_png: int | None  # ... and of SegmentationObject/<id>.png

    @property
    def has_masks(self) -> bool:
        return self.class_png is not None or self.object_png is not None


@dataclass(slots=True)
class PngPair:
    """One item's mask PNGs as read from the zip, or the error reading one raised.

    The reading happens in the process that holds the zip; the decoding
    (:func:`load_png_pair`) may happen in a helper, and raises the read errors in the order
    a single process meets them.
    """

    item: Item  # id, subset, image path; size and annotations still empty
    cls_name: str
    cls_data: bytes | InputError
    obj_name: str | None
    obj_data: bytes | InputError | None


@dataclass(slots=True)
class LoadedItem:
    item: Item
    mixed: list[str]
    dropped: list[str]
    class_only: bool
    void: list[str] = field(default_factory=list)  # undeclared void: the item, what it lost


def _read_member(zf: SafeZip, where: int) -> bytes | InputError:
    try:
        return zf.read_located(where, MAX_PNG_BYTES)
    except InputError as e:
        return e


def _read_item(zf: SafeZip, entry: ArchiveItem, lay: _Layout) -> Item | PngPair:
    """An item without masks (complete), or its PNG pair to decode."""
    item_id = entry.id
    image = lay.image(zf, item_id)
    image_path = image[len(lay.root):] if image else None
    item = Item(item_id, entry.subset, None, None, [], image_path)
    if not entry.has_masks:
        if image is not None:
            size = _image_size(zf.read_head(image, 256 << 10))
            if size is not None:
                item.height, item.width = size
        return item
    obj_name = lay.object_png(item_id)
    if entry.class_png is None:
        raise InputError(
            f"SegmentationClass is missing: there is no SegmentationClass/{item_id}.png beside "
            "this instance mask, and instance labels come only from the class mask (CVAT "
            "crashes on such archives)",
            obj_name,
        )
    cls_name, cls_data = lay.class_png(item_id), _read_member(zf, entry.class_png)
    if entry.object_png is None:
        return PngPair(item, cls_name, cls_data, None, None)
    return PngPair(item, cls_name, cls_data, obj_name, _read_member(zf, entry.object_png))


def load_png_pair(spec: LabelSpec, pair: PngPair) -> LoadedItem:
    """Decode one item's PNGs into its instances (runs in a helper process for large zips)."""
    item = pair.item
    if isinstance(pair.cls_data, InputError):
        raise pair.cls_data
    names = [lab.name for lab in spec.labels]
    cls_runs = class_runs(pair.cls_data, pair.cls_name, spec.colors, spec.n_indexed, spec.void)
    if cls_runs is None:
        cls = decode_class_png(pair.cls_data, pair.cls_name, spec.colors, spec.n_indexed,
                               spec.void)
        shape = cls.shape
        void = spec.void is None and bool(np.any(cls == VOID))
    else:
        shape = (cls_runs.height, cls_runs.width)
        void = spec.void is None and bool(np.any(cls_runs.values == VOID))
    item.height, item.width = shape
    void_note = [repr(item.id)] if void else []
    if pair.obj_name is None:
        if cls_runs is not None:
            cls = cls_runs.expand(cls_runs.values)
        item.annotations = class_masks(cls, spec.background)
        return LoadedItem(item, [], [], True, void_note)
    if isinstance(pair.obj_data, InputError):
        raise pair.obj_data
    obj_data, obj_name = pair.obj_data, pair.obj_name
    assert obj_data is not None
    if png_size(obj_data, obj_name) != shape:
        oh, ow = png_size(obj_data, obj_name)
        raise InputError(
            f"mask sizes differ: {pair.cls_name} is {shape[1]}x{shape[0]}, this one is "
            f"{ow}x{oh} (w x h)",
            obj_name,
        )
    obj_runs = object_runs(obj_data, obj_name) if cls_runs is not None else None
    if obj_runs is not None:
        res = object_instances_runs(obj_runs, cls_runs, spec.background, names)
    else:
        if cls_runs is not None:
            cls = cls_runs.expand(cls_runs.values)
        obj = decode_object_png(obj_data, obj_name)
        res = object_instances(obj, cls, spec.background, names)
    item.annotations = res.annotations
    if res.dropped_void:
        ids = ", ".join(map(str, res.dropped_void))
        void_note = [f"{item.id!r} (instance(s) {ids} dropped)"]
    return LoadedItem(item, [f"{item.id!r} {m}" for m in res.mixed],
                      [f"{item.id!r} instance {i}" for i in res.dropped], False, void_note)


def _summary(what: str, count: int, examples: list[str]) -> str:
    shown = "; ".join(examples[:_EXAMPLES])
    more = f" (and {count - _EXAMPLES} more)" if count > _EXAMPLES else ""
    return f"{what}: {shown}{more}"


@dataclass(slots=True)
class _Tally:
    """How many, and the first few: all a summary warning shows, whatever the item count."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, values: Iterable[str]) -> None:
        for v in values:
            self.count += 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append(v)


def _scan(names: Iterable[str], root: str) -> tuple[list[str], bool]:
    """The names under ``ImageSets/`` (a handful of lists) and whether ``JPEGImages/`` has any."""
    sets, images = f"{root}ImageSets/", f"{root}JPEGImages/"
    found: list[str] = []
    has_images = False
    for n in names:
        if n.startswith(sets):
            found.append(n)
        elif n.startswith(images):
            has_images = True
    return found, has_images


def _split_lines(text: str) -> Iterator[str]:
    """``text.split("\\n")`` one piece at a time (no list of them all); nothing for ''."""
    start = 0
    while text:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


class _Items:
    """The items in list order, compactly: per subset its ids as one string, and per item
    where its two mask PNGs are.

    A list of ``(id, subset)`` tuples costs ~130 bytes an item; this costs the id, a newline
    and 16 bytes. (Ids never hold a newline: they are lines of a list file or zip names,
    which refuse control characters.) The PNGs are looked up here, where knowing which items
    have masks needs the lookup anyway, so reading an item does not look them up again.
    """

    def __init__(self) -> None:
        self._subsets: list[tuple[str, str]] = []
        self._where = (array("q"), array("q"))  # class PNG, object PNG; -1: none

    def add(self, subset: str, ids: list[str],
            members: Iterable[tuple[int | None, int | None]]) -> None:
        self._subsets.append((subset, "\n".join(ids)))
        cls, obj = self._where
        for c, o in members:
            cls.append(-1 if c is None else c)
            obj.append(-1 if o is None else o)

    def __len__(self) -> int:
        return len(self._where[0])

    def __iter__(self) -> Iterator[ArchiveItem]:
        cls, obj = self._where
        i = 0
        for subset, ids in self._subsets:
            for item_id in _split_lines(ids):
                yield ArchiveItem(item_id, subset, None if cls[i] < 0 else cls[i],
                                  None if obj[i] < 0 else obj[i])
                i += 1


#: The items' notes, summed up at the end in this order.
_NOTES = {
    "mixed": "instance(s) cover several classes and took the majority class (CVAT takes the "
             "largest class index)",
    "dropped": "instance(s) lie only on background pixels and were dropped (CVAT imports "
               "them as 'background')",
    "void": "item(s) have VOC void pixels (index 255 / colour (224, 224, 192)) and the label "
            "set has no 'ignored' label: those pixels, and instances lying only on them, were "
            "dropped (CVAT refuses such an archive: undeclared label index or colour; declare "
            "'ignored' in the labelmap to keep them)",
    "class_only": "item(s) have no SegmentationObject PNG: one mask per class present (no "
                  "instances, no background mask)",
}


class MaskArchive:
    """An open mask zip: its labels, and its items in list order, read one at a time.

    ``load_mask_zip`` reads every item with it; the import job hands the PNG pairs it reads
    to :func:`load_png_pair` in helper processes. What stays in memory grows by ~50 bytes an
    item: its id and where its PNGs are (:class:`_Items`), and 16 bytes per zip entry
    (:class:`SafeZip` reads the directory from the file); the items' warnings are kept as
    counts and the first few examples.
    """

    def __init__(self, path: str | Path | BinaryIO,
                 labelmap: list[LabelmapEntry] | None = None) -> None:
        self.warnings: list[str] = []
        self._notes = {key: _Tally() for key in _NOTES}
        self._zf = SafeZip(path)
        try:
            self._open(path, labelmap)
        except BaseException:
            self._zf.close()
            raise

    def _open(self, path: str | Path | BinaryIO, labelmap: list[LabelmapEntry] | None) -> None:
        zf, warnings = self._zf, self.warnings

        def names() -> Iterator[str]:
            return (n for n in zf.iter_names() if _visible(n))

        root = _dataset_root(names)
        self.spec = archive_labels(zf, root, labelmap, warnings)
        image_sets, has_images = _scan(names(), root)
        lists = _list_files(image_sets, root, "Segmentation", skip_underscore=False)
        if not lists:
            for task in _FALLBACK_TASKS:
                found = _list_files(image_sets, root, task, skip_underscore=(task == "Main"))
                if found:
                    warnings.append(f"no ImageSets/Segmentation/*.txt: subsets taken from "
                                    f"ImageSets/{task}/ ({', '.join(sorted(found))})")
                    lists = found
                    break
        underscored = sorted(s for s in lists if "_" in s)
        if underscored:
            warnings.append(f"subset list(s) {underscored} read; CVAT skips list files whose name "
                            "contains '_'")
        self._lay = _Layout(root, has_images)
        subsets: dict[str, list[str]] = {s: _read_list(zf, m) for s, m in sorted(lists.items())}
        listed = {i for ids in subsets.values() for i in ids}
        unlisted = sorted({i for i in _mask_ids(names(), root) if i not in listed})
        del listed
        if not lists and not unlisted:
            raise InputError(
                "not a Segmentation mask dataset: no ImageSets/Segmentation/*.txt list and no "
                "SegmentationClass/ or SegmentationObject/ PNGs",
                f"dataset folder {root!r}" if root else None,  # the caller names the file
            )
        if unlisted:
            subsets.setdefault("default", []).extend(unlisted)
            warnings.append(_summary(
                f"{len(unlisted)} mask PNG(s) listed in no ImageSets/Segmentation/*.txt were "
                "imported into subset 'default'", len(unlisted), unlisted))
        self._items = _Items()
        for subset, ids in subsets.items():
            self._items.add(subset, ids, (self._members(i) for i in ids))

    def _members(self, item_id: str) -> tuple[int | None, int | None]:
        zf, lay = self._zf, self._lay
        return _locate(zf, lay.class_png(item_id)), _locate(zf, lay.object_png(item_id))

    def items(self) -> Iterator[ArchiveItem]:
        """The items in list order."""
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def read(self, entry: ArchiveItem) -> Item | PngPair:
        """An item without masks (complete), or its PNG pair for :func:`load_png_pair`."""
        return _read_item(self._zf, entry, self._lay)

    def head_of(self, entry: ArchiveItem, n: int) -> bytes:
        """The first ``n`` bytes of an item's class PNG (or object PNG): sizes before decoding."""
        if not entry.has_masks:
            return b""
        name = (self._lay.class_png(entry.id) if entry.class_png is not None
                else self._lay.object_png(entry.id))
        try:
            return self._zf.read_head(name, n)
        except InputError:
            return b""  # reported in the item's turn

    def note(self, loaded: LoadedItem) -> Item:
        """Record a decoded item's warnings; returns its ``Item``."""
        self.note_parts(loaded.item.id, loaded.mixed, loaded.dropped, loaded.class_only,
                        loaded.void)
        return loaded.item

    def note_parts(self, item_id: str, mixed: list[str], dropped: list[str],
                   class_only: bool, void: Iterable[str] = ()) -> None:
        self._notes["mixed"].add(mixed)
        self._notes["dropped"].add(dropped)
        self._notes["void"].add(void)
        if class_only:
            self._notes["class_only"].add((item_id,))

    def all_warnings(self) -> list[str]:
        """The archive's warnings and the summaries of the items' notes (call at the end)."""
        warnings = list(self.warnings)
        for key, what in _NOTES.items():
            tally = self._notes[key]
            if tally.count:
                warnings.append(_summary(f"{tally.count} {what}", tally.count, tally.examples))
        return warnings

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> "MaskArchive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_mask_zip(
    path: str | Path | BinaryIO, labelmap: list[LabelmapEntry] | None = None
) -> Dataset:
    """Read a Segmentation mask zip (CVAT's "Segmentation mask 1.1" / VOC segmentation)."""
    with MaskArchive(path, labelmap) as archive:
        items = []
        for entry in archive.items():
            got = archive.read(entry)
            if isinstance(got, PngPair):
                got = archive.note(load_png_pair(archive.spec, got))
            items.append(got)
        return Dataset(archive.spec.labels, items, "segmentation_mask", archive.all_warnings())
