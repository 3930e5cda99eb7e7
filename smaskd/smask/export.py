"""Dataset → CVAT "Segmentation mask 1.1" zip, pixel-identical to CVAT (FORMAT.md §1-§4).

``export_dataset`` streams: it plans the export from the annotations alone (cheap: no
pixels), then rasterises one item at a time, encodes its two PNGs and writes them into the
zip before touching the next item, so memory is bounded by one frame.

Two modes. ``compat="cvat"`` reproduces CVAT byte for byte, including the ways CVAT loses
data (FORMAT.md §7). The default refuses those with a :class:`DataLossError` that names
the item and label and says how to proceed — or, where a lossless archive exists, writes it
and adds a warning:

==========================================  ==============================================
CVAT loses data when …                      default (lossless) mode
==========================================  ==============================================
an image has > 255 visible instances        DataLossError (ids wrap in the 8-bit PNG)
a non-background label is black             DataLossError if it has mask shapes
two labels share a colour                   DataLossError if the label that loses on
                                            re-import has mask shapes
> 255 labels (class index wraps)            paints every label's true colour + warning
an id in two subsets, different content     DataLossError (one PNG pair serves both)
no item is listed (no list file)            lists every item + warning (stays importable)
a mask shape without a label               skipped + warning (CVAT erases with it)
labelmap colour missing for a used label    gives it a free VOC colour + warning
label name with ':', '#', line break        DataLossError (labelmap.txt unreadable)
item id the list file alters                DataLossError (spaces at the ends, '#', EOL)
==========================================  ==============================================

Always errors (both modes): a shape's label missing from ``--labelmap``, polygons with < 3
points, item ids or subsets that are not safe relative paths, an item id twice in one
subset, mask shapes on an item without a frame size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from smaskd.errors import DataLossError, InputError
from smaskd.model import Annotation, BitmapMask, Dataset, Item, RleMask
from smaskd.pngio import MAX_IMAGE_PIXELS, encode_rgb_png
from smaskd.rle import counts_from_string
from smaskd.smask.colormap import VOC_COLORMAP
from smaskd.smask.compose import Composition, compose_item, is_segment
from smaskd.smask.labelmap import LabelmapEntry, format_labelmap
from smaskd.smask.labelset import BACKGROUND, OutputLabels, check_label_names, resolve_labels
from smaskd.smask.zipwriter import ZipStreamWriter, check_member_name

__all__ = ["ExportStats", "export_dataset"]

COMPAT_MODES = (None, "cvat")
MAX_INSTANCE_ID = 255  # the VOC instance palette has 256 colours, 0 = none


@dataclass(slots=True)
class ExportStats:
    """What an export wrote; ``warnings`` are for the job log, never printed by the core."""

    items: int = 0
    instances: int = 0
    labels: int = 0
    listed: int = 0
    png_pairs: int = 0
    warnings: list[str] = field(default_factory=list)


# -- planning ------------------------------------------------------------------------------

MASKS, EMPTY, NONMASK = "masks", "empty", "nonmask"


def item_kind(item: Item) -> str:
    """§4.8: ≥1 mask → PNGs and listed; no annotations → listed only; else not listed."""
    if not item.annotations:
        return EMPTY
    return MASKS if any(is_segment(a) for a in item.annotations) else NONMASK


@dataclass(slots=True)
class _Plan:
    subsets: dict[str, list[Item]]  # export order: subsets by first appearance
    writer_of: dict[str, int]  # item id → id() of the occurrence whose PNGs are written
    duplicated: set[str]  # ids in more than one subset


def _subset_name(item: Item) -> str:
    return item.subset or "default"  # Datumaro's DEFAULT_SUBSET_NAME


def _without_unlabelled(item: Item) -> tuple[Item, int]:
    """Drop mask shapes that have no label: they carry no class to paint.

    CVAT paints them as background (they erase what lies below and take an instance id);
    a user who left a shape unlabelled did not mean "erase", so lossless mode skips them.
    """
    kept = [a for a in item.annotations if a.label is not None or not is_segment(a)]
    dropped = len(item.annotations) - len(kept)
    if not dropped:
        return item, 0
    return dataclasses.replace(item, annotations=kept), dropped


def _plan(dataset: Dataset, lossless: bool, warnings: list[str]) -> _Plan:
    subsets: dict[str, list[Item]] = {}
    seen: set[tuple[str, str]] = set()
    unlabelled = 0
    for item in dataset.items:
        if lossless:
            item, dropped = _without_unlabelled(item)
            unlabelled += dropped
        subset = _subset_name(item)
        if "/" in subset:
            raise InputError(f"subset name {subset!r} contains '/'", item.id)
        check_member_name(f"ImageSets/Segmentation/{subset}.txt", f"subset {subset!r}")
        check_member_name(f"SegmentationClass/{item.id}.png", item.id)
        if (item.id, subset) in seen:
            raise InputError(f"item id appears twice in subset {subset!r}", item.id)
        seen.add((item.id, subset))
        if lossless:
            _check_list_id(item.id)
        if item_kind(item) == MASKS:
            _check_frame(item)
        subsets.setdefault(subset, []).append(item)
    if unlabelled:
        warnings.append(
            f"{unlabelled} mask shape(s) without a label were skipped (CVAT would paint them as "
            "background, erasing what lies below; use --compat cvat for that)"
        )
    underscored = [s for s in subsets if "_" in s]
    if underscored:
        warnings.append(
            f"subset(s) {', '.join(map(repr, underscored))} contain '_': CVAT's importer ignores "
            "list files with '_' in the name, so these items are skipped when re-imported to CVAT"
        )
    writer_of: dict[str, int] = {}
    count: dict[str, int] = {}
    for items in subsets.values():
        for item in items:
            count[item.id] = count.get(item.id, 0) + 1
            if item_kind(item) == MASKS:
                writer_of[item.id] = id(item)  # the later subset overwrites (§4.8)
    return _Plan(subsets, writer_of, {i for i, n in count.items() if n > 1})


def _check_frame(item: Item) -> None:
    h, w = item.height, item.width
    ints = (int, np.integer)
    if not (isinstance(h, ints) and isinstance(w, ints) and h > 0 and w > 0):
        raise InputError("item has mask shapes but no frame size (height/width)", item.id)
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(
            f"frame {w}x{h} exceeds the limit of {MAX_IMAGE_PIXELS} pixels per image", item.id
        )


def _check_list_id(item_id: str) -> None:
    problem = None
    if item_id != item_id.strip():
        problem = "starts or ends with white space (stripped when the list file is read)"
    elif "\n" in item_id or "\r" in item_id:
        problem = "contains a line break"
    elif item_id.startswith("#"):
        problem = "starts with '#' (read as a comment in the list file)"
    if problem:
        raise DataLossError(
            f"item id {item_id!r} {problem}; rename the item, or use --compat cvat to write it "
            "as CVAT does",
            item_id,
        )


# -- labels --------------------------------------------------------------------------------


def _class_mapper(dataset: Dataset, out: OutputLabels, lossless: bool,
                  used: dict[int, str]) -> Callable[[Annotation, str], int]:
    """Annotation → output class index, by label *name*, remembering the first use."""
    names = [lb.name for lb in dataset.labels]

    def class_of(ann: Annotation, where: str) -> int:
        if ann.label is None:
            if lossless:
                raise DataLossError(
                    "mask shape has no label; CVAT paints it as background (it erases what lies "
                    "below and vanishes). Give it a label, or use --compat cvat",
                    where,
                )
            return out.background
        if not 0 <= ann.label < len(names):
            raise InputError(f"label index {ann.label} out of range (0..{len(names) - 1})", where)
        name = names[ann.label]
        idx = out.index_of.get(name)
        if idx is None:
            raise InputError(f"label {name!r} is not in the labelmap", where)
        used.setdefault(idx, where)
        return idx

    return class_of


def _paints_nothing(ann: Annotation) -> bool:
    """An empty bitmap (an importer's placeholder for an unused instance id) loses no data.

    It still takes its instance id when composed, which is why importers emit it; but its
    label can never lose pixels, so the label checks must not refuse it.
    """
    shape = ann.shape
    if isinstance(shape, BitmapMask):
        return not np.any(shape.bitmap)
    if isinstance(shape, RleMask):
        counts = shape.counts
        if isinstance(counts, str):
            if len(counts) > 16:  # an empty mask's string is a run or two: skip decoding
                return False
            try:
                counts = counts_from_string(counts)
            except ValueError:
                return False  # the rasteriser reports it, with its place
        return not any(counts[1::2])
    return False


def _check_used_labels(out: OutputLabels, used: dict[int, str], warnings: list[str]) -> None:
    """The CVAT label-map losses that depend on which labels have shapes (§2.3, §7.4-5)."""
    for idx, where in sorted(used.items()):
        e = out.entries[idx]
        if idx == out.background and e.name != BACKGROUND:
            raise DataLossError(
                f"label {e.name!r} is coloured {e.color} and sorts first among black labels, so "
                f"CVAT takes it as the background: its shapes erase what lies below them and "
                f"vanish. Give label {e.name!r} a distinct colour in --labelmap, or use "
                "--compat cvat to accept CVAT's behaviour",
                where,
            )
        winner = out.decode_winner(idx)
        if idx != out.background and winner != idx:
            other = out.entries[winner].name
            raise DataLossError(
                f"labels {e.name!r} and {other!r} share colour {e.color}: re-importing turns "
                f"every {e.name!r} pixel into {other!r}. Give label {e.name!r} a distinct "
                "colour in --labelmap, or use --compat cvat to accept CVAT's behaviour",
                where,
            )
    by_color: dict[tuple, list[str]] = {}
    for e in out.entries:
        if e.color is not None:
            by_color.setdefault(tuple(e.color), []).append(e.name)
    shared = [names for names in by_color.values() if len(names) > 1]
    if shared:
        warnings.append(
            "labels share a colour (re-import gives their pixels to the last one, which no mask "
            "shape here loses to): " + "; ".join(" = ".join(map(repr, n)) for n in shared)
        )
    wrapped = sorted(i for i in used if i > 255)
    if wrapped:
        warnings.append(
            f"{len(out.entries)} labels: class indices above 255 (e.g. "
            f"{out.entries[wrapped[0]].name!r}) are painted with their own colour; CVAT would "
            "wrap them to the colour of index % 256 (use --compat cvat for that)"
        )


# -- painting ------------------------------------------------------------------------------


def _paint(comp: Composition, out: OutputLabels, lossless: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images by one table gather each (position → colour), as RGB views.

    The gathers write BGR buffers and return their channel-reversed views: ``pngio`` flips
    RGB to BGR for OpenCV, and the flip of such a view is the contiguous buffer itself, so
    no per-pixel copy is made on the way to ``cv2.imencode``.
    """
    positions = np.arange(len(comp.classes))
    if lossless:  # true colours; visible instance ids are <= 255 (checked by the caller)
        class_lut = out.colors[comp.classes]
    else:  # CVAT: .astype(np.uint8) before the palette lookup wraps both at 256
        palette = np.zeros((256, 3), dtype=np.uint8)
        n = min(256, len(out.colors))
        palette[:n] = out.colors[:n]
        class_lut = palette[comp.classes & 255]
    inst_lut = VOC_COLORMAP[positions & 255]
    class_bgr = np.take(np.ascontiguousarray(class_lut[:, ::-1]), comp.index, axis=0)
    inst_bgr = np.take(np.ascontiguousarray(inst_lut[:, ::-1]), comp.index, axis=0)
    return class_bgr[:, :, ::-1], inst_bgr[:, :, ::-1]


# -- the export ----------------------------------------------------------------------------


def export_dataset(
    dataset: Dataset,
    out: BinaryIO,
    labelmap: list[LabelmapEntry] | None = None,
    compat: str | None = None,
) -> ExportStats:
    """Write ``dataset`` as a Segmentation Mask zip to the binary file ``out``.

    ``labelmap`` (``--labelmap``) fixes the label set and colours; shapes map to it by name.
    Without it the dataset's own labels are used. ``compat="cvat"`` accepts CVAT's data
    loss; the default raises :class:`DataLossError` instead (see the module docstring).
    """
    if compat not in COMPAT_MODES:
        raise InputError(f"unknown compat mode {compat!r}; expected 'cvat' or nothing", "compat")
    lossless = compat is None
    stats = ExportStats()
    labels = resolve_labels(dataset.labels, labelmap, compat)
    stats.warnings += labels.warnings
    stats.labels = len(labels.entries)
    if lossless:
        check_label_names(labels)
    plan = _plan(dataset, lossless, stats.warnings)

    used: dict[int, str] = {}
    class_of = _class_mapper(dataset, labels, lossless, used)
    for items in plan.subsets.values():  # label checks first: fail before any pixel work
        for item in items:
            for ann in item.annotations:
                if is_segment(ann) and not _paints_nothing(ann):
                    class_of(ann, f"{item.id}: annotation {ann.id}")
    if lossless:
        _check_used_labels(labels, used, stats.warnings)

    lists: dict[str, list[str]] = {}
    content_of: dict[str, tuple[bytes | None, str]] = {}  # duplicated id → (key, subset)
    mixed = 0
    mixed_example = ""
    with ZipStreamWriter(out) as zw:
        zw.write("labelmap.txt", format_labelmap(labels.entries).encode("utf-8"))
        for subset, items in plan.subsets.items():
            for item in items:
                stats.items += 1
                kind = item_kind(item)
                if kind == NONMASK:
                    continue
                lists.setdefault(subset, []).append(item.id)
                key: bytes | None = None
                if kind == MASKS:
                    comp = compose_item(item, class_of, labels.background)
                    if comp.mixed_groups:
                        mixed += len(comp.mixed_groups)
                        if not mixed_example:
                            gid, labs = comp.mixed_groups[0]
                            mixed_example = (f"{item.id!r} group {gid}: "
                                             + ", ".join(labels.entries[i].name for i in labs))
                    top = int(comp.index.max()) if comp.index.size else 0
                    if lossless and top > MAX_INSTANCE_ID:
                        raise DataLossError(
                            f"{comp.instances} instances, instance id {top} is visible: ids above "
                            f"{MAX_INSTANCE_ID} wrap in the 8-bit SegmentationObject PNG (CVAT "
                            "paints 256 black and merges 257.. with 1..). Group shapes of one "
                            "object, split the image, or use --compat cvat to accept CVAT's "
                            "behaviour",
                            item.id,
                        )
                    stats.instances += comp.instances
                    class_rgb, inst_rgb = _paint(comp, labels, lossless)
                    del comp
                    if item.id in plan.duplicated and lossless:
                        key = _content_key(class_rgb, inst_rgb)
                    if plan.writer_of.get(item.id) == id(item):
                        zw.write(f"SegmentationClass/{item.id}.png", encode_rgb_png(class_rgb))
                        zw.write(f"SegmentationObject/{item.id}.png", encode_rgb_png(inst_rgb))
                        stats.png_pairs += 1
                    del class_rgb, inst_rgb
                if lossless and item.id in plan.duplicated:
                    _check_same_content(item, subset, key, content_of)
        if not lists and lossless:
            lists = _list_everything(plan, stats.warnings)
        for subset, ids in lists.items():
            zw.write(f"ImageSets/Segmentation/{subset}.txt",
                     "".join(f"{i}\n" for i in ids).encode("utf-8"))
            stats.listed += len(ids)
    if mixed:
        stats.warnings.append(
            f"{mixed} group(s) mixed labels and became one instance with the label of their "
            f"largest shape, as in CVAT (first: {mixed_example})"
        )
    return stats


def _content_key(class_rgb: np.ndarray, inst_rgb: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(repr(class_rgb.shape).encode())
    h.update(class_rgb.tobytes())
    h.update(inst_rgb.tobytes())
    return h.digest()


def _check_same_content(item: Item, subset: str, key: bytes | None,
                        content_of: dict[str, tuple[bytes | None, str]]) -> None:
    """An id listed in two subsets gets one PNG pair: only lossless if both are the same."""
    if item.id not in content_of:
        content_of[item.id] = (key, subset)
        return
    first_key, first_subset = content_of[item.id]
    if first_key != key:
        raise DataLossError(
            f"item id is in subsets {first_subset!r} and {subset!r} with different masks; the "
            "archive has one PNG pair per id, so a re-import gives both the masks of the last "
            "subset. Rename one of the items, or use --compat cvat to accept CVAT's behaviour",
            item.id,
        )


def _list_everything(plan: _Plan, warnings: list[str]) -> dict[str, list[str]]:
    """No item has masks: list every item (empty) so the archive can still be imported."""
    lists = {s: [i.id for i in items] for s, items in plan.subsets.items()}
    if not lists:
        lists = {"default": []}
    warnings.append(
        "no item has mask shapes (only tags, polylines or points, or no items); CVAT would "
        "write no list file and could not re-import the archive, so every item is listed "
        "without masks (use --compat cvat for CVAT's output)"
    )
    return lists
