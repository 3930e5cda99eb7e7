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
subset, mask shapes on an item without a frame size, an item over the size limits
(:mod:`smaskd.geometry.limits`: mask shapes per item, points per polygon).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from smaskd.errors import DataLossError, InputError, SmaskdError
from smaskd.geometry.rle import counts_from_string
from smaskd.model import Annotation, BitmapMask, Dataset, Item, RleMask
from smaskd.pngio import MAX_IMAGE_PIXELS
from smaskd.smask.compose import is_segment
from smaskd.smask.labelmap import LabelmapEntry, format_labelmap
from smaskd.smask.labelset import BACKGROUND, OutputLabels, check_label_names, resolve_labels
from smaskd.geometry.limits import InputLimits, check_item_size
from smaskd.smask.parallel import PoolPolicy, PoolStats, ordered_map
from smaskd.smask.render import RenderContext, RenderTask, render_item
from smaskd.smask.zipwriter import ZipStreamWriter, check_item_id, check_member_name

__all__ = ["ExportStats", "export_dataset"]

COMPAT_MODES = (None, "cvat")


@dataclass(slots=True)
class ExportStats:
    """What an export wrote; ``warnings`` are for the job log, never printed by the core."""

    items: int = 0
    instances: int = 0
    labels: int = 0
    listed: int = 0
    png_pairs: int = 0
    warnings: list[str] = field(default_factory=list)
    parallel: PoolStats = field(default_factory=PoolStats)


# -- planning ------------------------------------------------------------------------------

MASKS, EMPTY, NONMASK = "masks", "empty", "nonmask"


def item_kind(item: Item) -> str:
    """§4.8: ≥1 mask → PNGs and listed; no annotations → listed only; else not listed."""
    if not item.annotations:
        return EMPTY
    return MASKS if any(is_segment(a) for a in item.annotations) else NONMASK


@dataclass(slots=True)
class _Entry:
    """One item as the plan keeps it: where to fetch it again and what it needs.

    The plan holds these, not the items: ``dataset.items`` may rebuild an item per access
    (:mod:`smaskd.annotations.streamed` reads it back from the file), so memory stays
    bounded by one item however many there are.
    """

    index: int  # position in dataset.items
    id: str
    kind: str
    pixels: int  # frame pixels when it has masks


@dataclass(slots=True)
class _Plan:
    subsets: dict[str, list[_Entry]]  # export order: subsets by first appearance
    writer_of: dict[str, int]  # item id → index of the occurrence whose PNGs are written
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


def _fetch(dataset: Dataset, index: int, lossless: bool) -> Item:
    item = dataset.items[index]
    return _without_unlabelled(item)[0] if lossless else item


def _reporting(visit: Callable[[str, Item], None], total: int,
               on_progress: Callable[[int, int, str], None]) -> Callable[[str, Item], None]:
    """``visit`` that also reports each checked item to ``on_progress``."""
    done = itertools.count(1)

    def reporting_visit(subset: str, item: Item) -> None:
        visit(subset, item)
        on_progress(next(done), total, "checking")

    return reporting_visit


def _plan(dataset: Dataset, lossless: bool, warnings: list[str],
          visit: Callable[[str, Item], None], limits: InputLimits) -> _Plan:
    """Check every item's size, names and frame; ``visit(subset, item)`` sees each item once."""
    subsets: dict[str, list[_Entry]] = {}
    seen: set[tuple[str, str]] = set()
    unlabelled = 0
    for index, item in enumerate(dataset.items):
        check_item_size(item, limits)  # counts only: before any other work on the item
        if lossless:
            item, dropped = _without_unlabelled(item)
            unlabelled += dropped
        subset = _subset_name(item)
        if "/" in subset:
            raise InputError(f"subset name {subset!r} contains '/'", item.id)
        check_member_name(f"ImageSets/Segmentation/{subset}.txt", f"subset {subset!r}")
        check_item_id(item.id, item.id)
        if (item.id, subset) in seen:
            raise InputError(f"item id appears twice in subset {subset!r}", item.id)
        seen.add((item.id, subset))
        if lossless:
            _check_list_id(item.id)
        kind = item_kind(item)
        if kind == MASKS:
            _check_frame(item)
        pixels = item.height * item.width if kind == MASKS else 0  # type: ignore[operator]
        subsets.setdefault(subset, []).append(_Entry(index, item.id, kind, pixels))
        visit(subset, item)
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
    for entries in subsets.values():
        for e in entries:
            count[e.id] = count.get(e.id, 0) + 1
            if e.kind == MASKS:
                writer_of[e.id] = e.index  # the later subset overwrites (§4.8)
    return _Plan(subsets, writer_of, {i for i, n in count.items() if n > 1})


class _LabelChecks:
    """The label checks of every mask shape, met item by item, raised in export order.

    The export checks labels subset by subset (its painting order) after the whole plan;
    the items arrive in file order, once. So each subset keeps its own first error and
    first use of each label, and :meth:`finish` replays them in subset order.
    """

    def __init__(self, dataset: Dataset, labels: OutputLabels, lossless: bool) -> None:
        self._dataset, self._labels, self._lossless = dataset, labels, lossless
        self._by_subset: dict[str, tuple[dict[int, str], list[SmaskdError], Callable]] = {}

    def visit(self, subset: str, item: Item) -> None:
        if subset not in self._by_subset:
            used: dict[int, str] = {}
            mapper = _class_mapper(self._dataset, self._labels, self._lossless, used)
            self._by_subset[subset] = (used, [], mapper)
        used, errors, class_of = self._by_subset[subset]
        if errors:
            return
        for ann in item.annotations:
            if is_segment(ann) and not _paints_nothing(ann):
                try:
                    class_of(ann, f"{item.id}: annotation {ann.id}")
                except SmaskdError as e:
                    errors.append(e)
                    return

    def finish(self, order: list[str]) -> dict[int, str]:
        """The first error in export order, or every used label with its first use."""
        used: dict[int, str] = {}
        for subset in order:
            sub_used, errors, _ = self._by_subset.get(subset, ({}, [], None))
            if errors:
                raise errors[0]
            for idx, where in sub_used.items():
                used.setdefault(idx, where)
        return used


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


# -- the export ----------------------------------------------------------------------------


def _render_task(item: Item, class_of: Callable[[Annotation, str], int],
                 encode: bool) -> RenderTask:
    """The item with every segment's class resolved here (the label map lives here).

    A class lookup that fails keeps its error, raised where the single-process export raised
    it: when the annotation is rasterised.
    """
    classes: list[int | SmaskdError | None] = []
    for ann in item.annotations:
        if not is_segment(ann):
            classes.append(None)
            continue
        try:
            classes.append(class_of(ann, f"{item.id}: annotation {ann.id}"))
        except SmaskdError as e:
            classes.append(e)
    return RenderTask(item, classes, encode)


def export_dataset(
    dataset: Dataset,
    out: BinaryIO,
    labelmap: list[LabelmapEntry] | None = None,
    compat: str | None = None,
    jobs: int = 1,
    policy: PoolPolicy = PoolPolicy(),
    limits: InputLimits = InputLimits(),
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ExportStats:
    """Write ``dataset`` as a Segmentation Mask zip to the binary file ``out``.

    ``labelmap`` (``--labelmap``) fixes the label set and colours; shapes map to it by name.
    Without it the dataset's own labels are used. ``compat="cvat"`` accepts CVAT's data
    loss; the default raises :class:`DataLossError` instead (see the module docstring).
    ``jobs`` > 1 renders the items of a large export in that many processes (``policy``
    says when it is large enough); the archive is the same byte for byte. ``limits`` bound
    each item's mask shapes and polygon points (:mod:`smaskd.geometry.limits`), checked for
    every item before the first is rasterised. ``on_progress(done, total, stage)`` follows
    the two passes over the items: ``"checking"`` after each item is checked, ``"writing"``
    before each item is written and once at the end (a progress line; pure callers pass None).
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
    checks = _LabelChecks(dataset, labels, lossless)
    visit = checks.visit
    if on_progress:  # the checking pass reads every item: a third of a large job's time
        visit = _reporting(checks.visit, len(dataset.items), on_progress)
    plan = _plan(dataset, lossless, stats.warnings, visit, limits)
    used = checks.finish(list(plan.subsets))  # label checks first: fail before any pixel work
    if lossless:
        _check_used_labels(labels, used, stats.warnings)
    class_of = _class_mapper(dataset, labels, lossless, used)

    to_render = [e for entries in plan.subsets.values() for e in entries if e.kind == MASKS]
    ctx = RenderContext(labels.background, labels.colors, lossless, cvat_bytes=not lossless)
    tasks = (
        _render_task(_fetch(dataset, e.index, lossless), class_of,
                     plan.writer_of.get(e.id) == e.index or (lossless and e.id in plan.duplicated))
        for e in to_render
    )
    helpers = policy.helpers_for(jobs, len(to_render), sum(e.pixels for e in to_render))
    rendered = ordered_map(render_item, ctx, tasks, helpers, policy, stats.parallel,
                           describe=lambda task: f"item {task.item.id!r}")

    lists: dict[str, list[str]] = {}
    content_of: dict[str, tuple[bytes | None, str]] = {}  # duplicated id → (key, subset)
    mixed = 0
    mixed_example = ""
    # closing(): a failed write (disk full) must stop the helpers too, not leave them to
    # the traceback's lifetime.
    total = sum(len(entries) for entries in plan.subsets.values())
    with ZipStreamWriter(out) as zw, contextlib.closing(rendered):
        zw.write("labelmap.txt", format_labelmap(labels.entries).encode("utf-8"))
        for subset, entries in plan.subsets.items():
            for e in entries:
                if on_progress:
                    on_progress(stats.items, total, "writing")
                stats.items += 1
                if e.kind == NONMASK:
                    continue
                lists.setdefault(subset, []).append(e.id)
                key: bytes | None = None
                if e.kind == MASKS:
                    r = next(rendered)
                    if r.mixed_groups:
                        mixed += len(r.mixed_groups)
                        if not mixed_example:
                            gid, labs = r.mixed_groups[0]
                            mixed_example = (f"{e.id!r} group {gid}: "
                                             + ", ".join(labels.entries[i].name for i in labs))
                    stats.instances += r.instances
                    if e.id in plan.duplicated and lossless:
                        key = hashlib.sha256(r.class_png + r.object_png).digest()
                    if plan.writer_of.get(e.id) == e.index:
                        zw.write(f"SegmentationClass/{e.id}.png", r.class_png)
                        zw.write(f"SegmentationObject/{e.id}.png", r.object_png)
                        stats.png_pairs += 1
                    del r
                if lossless and e.id in plan.duplicated:
                    _check_same_content(e.id, subset, key, content_of)
        rendered.close()
        if on_progress:
            on_progress(stats.items, total, "writing")
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


def _check_same_content(item_id: str, subset: str, key: bytes | None,
                        content_of: dict[str, tuple[bytes | None, str]]) -> None:
    """An id listed in two subsets gets one PNG pair: only lossless if both are the same."""
    if item_id not in content_of:
        content_of[item_id] = (key, subset)
        return
    first_key, first_subset = content_of[item_id]
    if first_key != key:
        raise DataLossError(
            f"item id is in subsets {first_subset!r} and {subset!r} with different masks; the "
            "archive has one PNG pair per id, so a re-import gives both the masks of the last "
            "subset. Rename one of the items, or use --compat cvat to accept CVAT's behaviour",
            item_id,
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
