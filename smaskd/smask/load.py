"""A "Segmentation mask 1.1" zip → ``Dataset``, read in place (FORMAT.md §1.2, §2, §5).

Steps, each as CVAT's importer does them unless the list below says otherwise:

1. Open the zip through :class:`~smaskd.safezip.SafeZip` (nothing is extracted).
2. Find the dataset root: the archive root, or the single top folder (``__MACOSX`` ignored),
   up to 4 levels deep, until ``ImageSets/``, ``SegmentationClass/``, ``SegmentationObject/``
   or ``labelmap.txt`` shows up.
3. Labels: ``--labelmap`` (the caller's) if given, else ``dataset_meta.json``, else
   ``labelmap.txt``, else labelme's ``class_names.txt``, else the Pascal VOC defaults (§2.4).
4. Subsets: ``ImageSets/Segmentation/<subset>.txt``; when there is none, the ``Main`` (class
   lists ``<class>_<subset>.txt`` skipped), ``Layout`` and ``Action`` lists, as CVAT.
5. Items in list order; each decodes its two PNGs and turns them into instances
   (:mod:`smaskd.smask.decode`, :mod:`smaskd.smask.instances`).

Where smaskd deliberately differs from CVAT (each gives a warning, never silence):

* subset lists whose name contains ``_`` (``my_train.txt``) are read; CVAT skips them;
* mask PNGs listed in no subset file are imported into subset ``default`` (CVAT ignores them;
  labelme's VOC exports have no ``ImageSets`` at all); a zip with neither lists nor masks is
  an ``InputError``;
* the VOC void value (index 255 / colour (224, 224, 192)) is void, not a label, unless the
  labelmap declares it; with the VOC default labels (no labelmap) the ``ignored`` label is void
  too, so the VOC border never becomes an ``ignored`` instance;
* a UTF-8 BOM at the start of a list file is dropped (CVAT folds it into the first id);
* labelme's ``class_names.txt`` names the labels when there is no labelmap (VOC colours by
  index; CVAT would use the VOC defaults, which differ in spelling: ``potted plant``);
* majority class, instances on background, class-only and object-only items: see
  :mod:`smaskd.smask.instances`; 16-bit PNGs: see :mod:`smaskd.smask.decode`.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from smaskd.errors import InputError
from smaskd.model import RGB, Dataset, Item, Label
from smaskd.safezip import SafeZip
from smaskd.smask.decode import (
    class_runs,
    decode_class_png,
    decode_object_png,
    object_runs,
    png_size,
)
from smaskd.smask.instances import class_masks, object_instances, object_instances_runs
from smaskd.smask.labelmap import (
    LabelmapEntry,
    categories_from_labelmap,
    parse_labelmap,
    voc_default_labelmap,
)

__all__ = [
    "LabelSpec",
    "LoadedItem",
    "MaskArchive",
    "PngPair",
    "load_mask_zip",
    "load_png_pair",
    "resolve_background",
]

MAX_TEXT_BYTES = 16 << 20  # labelmap, lists, dataset_meta.json
MAX_PNG_BYTES = 256 << 20
MAX_ROOT_DEPTH = 4
_MARKERS = ("ImageSets/", "SegmentationClass/", "SegmentationObject/", "labelmap.txt")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2")
_FALLBACK_TASKS = ("Main", "Layout", "Action")
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """Everything decoding needs to know about the labels."""

    labels: list[Label]
    colors: dict[RGB, int]  # colour → label index, last duplicate wins (as CVAT)
    n_indexed: int  # labelmap lines: the valid raw indices of 1-channel PNGs
    background: int | None
    void: frozenset[int]
    source: str


def resolve_background(labels: Sequence[Label]) -> int | None:
    """§2.3: the first black label, else the label named ``background``, else none."""
    for i, lab in enumerate(labels):
        if lab.color == (0, 0, 0):
            return i
    for i, lab in enumerate(labels):
        if lab.name == "background":
            return i
    return None


def _spec(entries: list[LabelmapEntry], source: str, void_names: tuple[str, ...] = ()) -> LabelSpec:
    labels = categories_from_labelmap(entries)
    colors: dict[RGB, int] = {}
    for i, lab in enumerate(labels[: len(entries)]):
        if lab.color is not None:
            colors[lab.color] = i  # later labels overwrite: the last duplicate wins
    void = frozenset(i for i, e in enumerate(entries) if e.name in void_names)
    return LabelSpec(labels, colors, len(entries), resolve_background(labels), void, source)


# -- archive layout ------------------------------------------------------------------------


def _dataset_root(names: list[str]) -> str:
    """'' or 'top/' (repeatedly) until a dataset marker is found; __MACOSX is not a folder."""
    root = ""
    for _ in range(MAX_ROOT_DEPTH + 1):
        inside = [n[len(root):] for n in names if n.startswith(root)]
        if any(n.startswith(_MARKERS) for n in inside):
            return root
        tops = {n.split("/", 1)[0] for n in inside if "/" in n}
        loose = [n for n in inside if "/" not in n]
        if len(tops) != 1 or loose:
            return root
        root += tops.pop() + "/"
    return root


def _visible(name: str) -> bool:
    parts = name.split("/")
    return parts[0] != "__MACOSX" and not any(p.startswith("._") or p == ".DS_Store" for p in parts)


def _members_under(names: list[str], prefix: str, suffix: str) -> dict[str, str]:
    """``prefix<id><suffix>`` members → {id: member}; suffix compared exactly."""
    out: dict[str, str] = {}
    for n in names:
        if n.startswith(prefix) and n.endswith(suffix) and len(n) > len(prefix) + len(suffix):
            out[n[len(prefix): len(n) - len(suffix)]] = n
    return out


def _images(names: list[str], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in sorted(names):
        if not n.startswith(prefix):
            continue
        stem, ext = posixpath.splitext(n[len(prefix):])
        if ext.lower() in _IMAGE_EXTS and stem and stem not in out:
            out[stem] = n
    return out


# -- text members --------------------------------------------------------------------------


def _text(zf: SafeZip, name: str) -> str:
    data = zf.read(name, MAX_TEXT_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", name) from None
    return text[1:] if text.startswith("\ufeff") else text


def _read_list(zf: SafeZip, name: str) -> list[str]:
    """§5.1: stripped lines; blank and ``#`` lines skipped; duplicates keep the first."""
    seen: dict[str, None] = {}
    for line in _text(zf, name).splitlines():
        item_id = line.strip()
        if item_id and not item_id.startswith("#"):
            seen.setdefault(item_id, None)
    return list(seen)


def _list_files(names: list[str], root: str, task: str, skip_underscore: bool) -> dict[str, str]:
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


def _meta_entries(zf: SafeZip, name: str) -> list[LabelmapEntry]:
    """``dataset_meta.json`` (§2.3): ``label_map`` {"i": name} or ``labels``, colours aligned."""
    try:
        meta = json.loads(_text(zf, name), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise InputError(f"invalid JSON ({e})", name) from None
    if not isinstance(meta, dict):
        raise InputError("expected a JSON object", name)
    if isinstance(meta.get("label_map"), dict):
        try:
            pairs = sorted((int(k), v) for k, v in meta["label_map"].items())
        except (TypeError, ValueError):
            raise InputError("label_map keys must be integers", f"{name}: label_map") from None
        names = [v for _, v in pairs]
    elif isinstance(meta.get("labels"), list):
        names = meta["labels"]
    else:
        raise InputError("expected 'label_map' (object) or 'labels' (list)", name)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError("label names must be distinct strings", f"{name}: labels")
    colors = meta.get("segmentation_colors") or []
    if not isinstance(colors, list):
        raise InputError("expected a list of [r, g, b]", f"{name}: segmentation_colors")
    entries = []
    for i, n in enumerate(names):
        color = None
        if i < len(colors) and colors[i] is not None:
            c = colors[i]
            if not (isinstance(c, list) and len(c) == 3
                    and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
                raise InputError(f"expected [r, g, b] in 0..255, got {c!r}",
                                 f"{name}: segmentation_colors[{i}]")
            color = (c[0], c[1], c[2])
        entries.append(LabelmapEntry(n, color, _meta_parts(meta, n, name)))
    return entries


def _meta_parts(meta: dict, label: str, name: str) -> tuple[str, ...]:
    """``parts`` {label: [part, ...]}; anything else would turn into nonsense label names."""
    parts = meta.get("parts") or {}
    if not isinstance(parts, dict):
        raise InputError("expected an object {label: [part names]}", f"{name}: parts")
    value = parts.get(label) or []
    if not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
        raise InputError(f"expected a list of part names, got {value!r}"[:200],
                         f"{name}: parts.{label}")
    return tuple(value)


def _no_constant(value: str) -> None:
    raise ValueError(f"{value} is not valid JSON")


def _labels(zf: SafeZip, names: list[str], root: str,
            user: list[LabelmapEntry] | None, warnings: list[str]) -> LabelSpec:
    meta, lmap, classes = (f"{root}dataset_meta.json", f"{root}labelmap.txt",
                           f"{root}class_names.txt")
    if user is not None:
        if lmap in zf or meta in zf:
            warnings.append("labels come from the given labelmap; the archive's own is ignored")
        return _spec(user, "--labelmap")
    if meta in zf:
        return _spec(_meta_entries(zf, meta), meta)
    if lmap in zf:
        return _spec(parse_labelmap(_text(zf, lmap), source=lmap), lmap)
    if classes in zf:
        entries = [LabelmapEntry(line.strip()) for line in _text(zf, classes).splitlines()
                   if line.strip()]
        warnings.append(f"no labelmap.txt: labels taken from labelme's {classes} "
                        f"({len(entries)} names, VOC colours by index)")
        return _spec(entries, classes)
    return _spec(voc_default_labelmap(), "Pascal VOC defaults", void_names=("ignored",))


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


@dataclass(slots=True)
class _Layout:
    cls: dict[str, str]
    obj: dict[str, str]
    images: dict[str, str]
    root: str


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


def _read_member(zf: SafeZip, name: str) -> bytes | InputError:
    try:
        return zf.read(name, MAX_PNG_BYTES)
    except InputError as e:
        return e


def _read_item(zf: SafeZip, item_id: str, subset: str, lay: _Layout) -> Item | PngPair:
    """An item without masks (complete), or its PNG pair to decode."""
    cls_name, obj_name = lay.cls.get(item_id), lay.obj.get(item_id)
    image = lay.images.get(item_id)
    image_path = image[len(lay.root):] if image else None
    item = Item(item_id, subset, None, None, [], image_path)
    if cls_name is None and obj_name is None:
        if image is not None:
            size = _image_size(zf.read_head(image, 256 << 10))
            if size is not None:
                item.height, item.width = size
        return item
    if cls_name is None:
        raise InputError(
            f"SegmentationClass is missing: there is no SegmentationClass/{item_id}.png beside "
            "this instance mask, and instance labels come only from the class mask (CVAT "
            "crashes on such archives)",
            obj_name,
        )
    return PngPair(item, cls_name, _read_member(zf, cls_name), obj_name,
                   None if obj_name is None else _read_member(zf, obj_name))


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
    else:
        shape = (cls_runs.height, cls_runs.width)
    item.height, item.width = shape
    if pair.obj_name is None:
        if cls_runs is not None:
            cls = cls_runs.expand(cls_runs.values)
        item.annotations = class_masks(cls, spec.background)
        return LoadedItem(item, [], [], True)
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
    return LoadedItem(item, [f"{item.id!r} {m}" for m in res.mixed],
                      [f"{item.id!r} instance {i}" for i in res.dropped], False)


def _summary(what: str, examples: list[str]) -> str:
    shown = "; ".join(examples[:_EXAMPLES])
    more = f" (and {len(examples) - _EXAMPLES} more)" if len(examples) > _EXAMPLES else ""
    return f"{what}: {shown}{more}"


class MaskArchive:
    """An open mask zip: its labels, and its items in list order, read one at a time.

    ``load_mask_zip`` reads every item with it; the import job hands the PNG pairs it reads
    to :func:`load_png_pair` in helper processes.
    """

    def __init__(self, path: str | Path | BinaryIO,
                 labelmap: list[LabelmapEntry] | None = None) -> None:
        self.warnings: list[str] = []
        self._notes: dict[str, list[str]] = {"mixed": [], "dropped": [], "class_only": []}
        self._zf = SafeZip(path)
        try:
            self._open(path, labelmap)
        except BaseException:
            self._zf.close()
            raise

    def _open(self, path: str | Path | BinaryIO, labelmap: list[LabelmapEntry] | None) -> None:
        zf, warnings = self._zf, self.warnings
        names = [n for n in zf.names if _visible(n)]
        root = _dataset_root(names)
        self.spec = _labels(zf, names, root, labelmap, warnings)
        lists = _list_files(names, root, "Segmentation", skip_underscore=False)
        if not lists:
            for task in _FALLBACK_TASKS:
                found = _list_files(names, root, task, skip_underscore=(task == "Main"))
                if found:
                    warnings.append(f"no ImageSets/Segmentation/*.txt: subsets taken from "
                                    f"ImageSets/{task}/ ({', '.join(sorted(found))})")
                    lists = found
                    break
        underscored = sorted(s for s in lists if "_" in s)
        if underscored:
            warnings.append(f"subset list(s) {underscored} read; CVAT skips list files whose name "
                            "contains '_'")
        self._lay = lay = _Layout(
            _members_under(names, f"{root}SegmentationClass/", ".png"),
            _members_under(names, f"{root}SegmentationObject/", ".png"),
            _images(names, f"{root}JPEGImages/"),
            root,
        )
        subsets: dict[str, list[str]] = {s: _read_list(zf, m) for s, m in sorted(lists.items())}
        listed = {i for ids in subsets.values() for i in ids}
        unlisted = sorted((set(lay.cls) | set(lay.obj)) - listed)
        if not lists and not unlisted:
            raise InputError(
                "not a Segmentation mask dataset: no ImageSets/Segmentation/*.txt list and no "
                "SegmentationClass/ or SegmentationObject/ PNGs",
                (str(path) if isinstance(path, (str, Path)) else "zip")
                + (f" (dataset folder {root!r})" if root else ""),
            )
        if unlisted:
            subsets.setdefault("default", []).extend(unlisted)
            warnings.append(_summary(
                f"{len(unlisted)} mask PNG(s) listed in no ImageSets/Segmentation/*.txt were "
                "imported into subset 'default'", unlisted))
        self.entries: list[tuple[str, str]] = [
            (item_id, subset) for subset, ids in subsets.items() for item_id in ids]

    def has_masks(self, item_id: str) -> bool:
        return item_id in self._lay.cls or item_id in self._lay.obj

    def read(self, item_id: str, subset: str) -> Item | PngPair:
        """An item without masks (complete), or its PNG pair for :func:`load_png_pair`."""
        return _read_item(self._zf, item_id, subset, self._lay)

    def head_of(self, item_id: str, n: int) -> bytes:
        """The first ``n`` bytes of an item's class PNG (or object PNG): sizes before decoding."""
        name = self._lay.cls.get(item_id) or self._lay.obj[item_id]
        try:
            return self._zf.read_head(name, n)
        except InputError:
            return b""  # reported in the item's turn

    def note(self, loaded: LoadedItem) -> Item:
        """Record a decoded item's warnings; returns its ``Item``."""
        self.note_parts(loaded.item.id, loaded.mixed, loaded.dropped, loaded.class_only)
        return loaded.item

    def note_parts(self, item_id: str, mixed: list[str], dropped: list[str],
                   class_only: bool) -> None:
        self._notes["mixed"] += mixed
        self._notes["dropped"] += dropped
        if class_only:
            self._notes["class_only"].append(item_id)

    def all_warnings(self) -> list[str]:
        """The archive's warnings and the summaries of the items' notes (call at the end)."""
        notes, warnings = self._notes, list(self.warnings)
        if notes["mixed"]:
            warnings.append(_summary(
                f"{len(notes['mixed'])} instance(s) cover several classes and took the majority "
                "class (CVAT takes the largest class index)", notes["mixed"]))
        if notes["dropped"]:
            warnings.append(_summary(
                f"{len(notes['dropped'])} instance(s) lie only on background or void pixels and "
                "were dropped (CVAT imports them as 'background')", notes["dropped"]))
        if notes["class_only"]:
            warnings.append(_summary(
                f"{len(notes['class_only'])} item(s) have no SegmentationObject PNG: one mask per "
                "class present (no instances, no background mask)", notes["class_only"]))
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
        for item_id, subset in archive.entries:
            got = archive.read(item_id, subset)
            if isinstance(got, PngPair):
                got = archive.note(load_png_pair(archive.spec, got))
            items.append(got)
        return Dataset(archive.spec.labels, items, "segmentation_mask", archive.all_warnings())
