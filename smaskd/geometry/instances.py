"""Decoded class + object masks → one annotation per instance (FORMAT.md §5.4).

Each instance id of SegmentationObject becomes ``Annotation(BitmapMask(left, top, crop),
label, group=instance_id)``: the bitmap is cropped to the instance's box so an item costs
memory in proportion to its objects, not to (frame × objects). Ordered by instance id, so a
re-export numbers the instances exactly as the archive did.

Where smaskd departs from CVAT, and why:

* **Several classes under one instance** → the *majority* class among its non-background,
  non-void pixels (ties: the larger index, as CVAT), with a warning. CVAT takes the largest
  class index, however few pixels carry it.
* **An instance only on background pixels** is dropped with a warning. CVAT makes it
  a ``background`` annotation that a CVAT task then refuses to import. One on background and
  *undeclared* void pixels only (no ``ignored`` label; CVAT refuses such archives) is dropped
  too, and reported with the void.
* **Class-only items** give one mask per class present, never one for the background (CVAT's
  issue #6269) nor for void.
* **Object-only items** are an ``InputError`` (CVAT crashes with a ``TypeError``).
* Class pixels outside every instance are dropped, as in CVAT (they have no instance).
* **Reserved instance ids.** CVAT numbers instances by painting order and a shape that ends
  up with no visible pixel (zero area, hidden, background-labelled) still uses up its number,
  so ids can have gaps, and an item can have a PNG pair with no instance at all. Each missing
  id below the largest kept one (and, for an item without instances, id 1) becomes a
  *placeholder*: an empty ``BitmapMask`` labelled with the background. It paints nothing, but a re-export numbers the
  real instances exactly as the archive did and writes the PNG pair again, so export → import
  → export reproduces the zip. Writers that cannot carry it (COCO) skip it; see
  :func:`is_placeholder`.

All of it is vectorised: one sort of the instance pixels gives each instance's box, area and
class histogram; only the per-instance crop comparison is a Python loop (one per instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smaskd.model import Annotation, BitmapMask
from smaskd.pngio import RowRuns

__all__ = [
    "InstanceResult",
    "class_masks",
    "is_placeholder",
    "object_instances",
    "object_instances_runs",
    "placeholder",
]


@dataclass(slots=True)
class InstanceResult:
    annotations: list[Annotation] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)  # "id 3: car 40 px, bus 2 px → car"
    dropped: list[int] = field(default_factory=list)  # instance ids on background only
    dropped_void: list[int] = field(default_factory=list)  # ... on background and void only


def placeholder(instance_id: int, background: int) -> Annotation:
    """An empty mask that only reserves ``instance_id`` (see the module docstring)."""
    return Annotation(BitmapMask(0, 0, np.zeros((0, 0), dtype=bool)), background, 0, instance_id)


def is_placeholder(ann: Annotation) -> bool:
    """True for an annotation with no pixels (a reserved instance id)."""
    shape = ann.shape
    return isinstance(shape, BitmapMask) and not np.any(shape.bitmap)


def _reserve_gaps(result: "InstanceResult", background: int | None) -> None:
    if background is None:
        return
    present = {a.group for a in result.annotations}
    top = max(present, default=0) or 1  # ids past the last kept instance need no reserving
    holes = [placeholder(i, background) for i in range(1, top + 1) if i not in present]
    if holes:
        result.annotations = sorted(result.annotations + holes, key=lambda a: a.group)


def _boxes(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Per distinct non-zero value of ``values`` (HxW ints): ids, y0, y1, x0, x1, area."""
    flat = values.reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, empty, empty
    vals = flat[nz]
    if vals.max() < (1 << 16) and vals.min() >= 0:
        vals = vals.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    order = np.argsort(vals, kind="stable")
    vals = vals[order]
    pos = nz[order]
    starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
    ys = pos // width
    xs = pos - ys * width
    ids = vals[starts].astype(np.int64)
    # pos is ascending within each run (stable sort of a row-major scan), so ys is too
    ends = np.r_[starts[1:], len(vals)]
    y0 = ys[starts]
    y1 = ys[ends - 1]
    x0 = np.minimum.reduceat(xs, starts)
    x1 = np.maximum.reduceat(xs, starts)
    area = ends - starts
    return ids, y0, y1, x0, x1, area


def _crop(values: np.ndarray, value: int, y0: int, y1: int, x0: int, x1: int) -> BitmapMask:
    return BitmapMask(int(x0), int(y0), values[y0:y1 + 1, x0:x1 + 1] == value)


def object_instances(
    obj: np.ndarray,
    cls: np.ndarray,
    background: int | None,
    names: list[str],
) -> InstanceResult:
    """Instances of one item: ``obj`` instance ids, ``cls`` label indices (-1 = void).

    Annotations come ordered by instance id, placeholders included.
    """
    h, w = obj.shape
    result = InstanceResult()
    ids, y0, y1, x0, x1, _area = _boxes(obj, h, w)
    if ids.size == 0:
        _reserve_gaps(result, background)
        return result
    # class histogram per instance: one unique over (instance, class+1) pairs
    inside = obj.reshape(-1) > 0
    inst = obj.reshape(-1)[inside].astype(np.int64)
    klass = cls.reshape(-1)[inside].astype(np.int64) + 1  # void -1 → 0
    span = int(klass.max()) + 1
    keys = inst * span + klass
    size = (int(ids[-1]) + 1) * span
    if size <= (1 << 22):  # small key space: a histogram instead of a sort
        counts_all = np.bincount(keys, minlength=size)
        pairs = np.flatnonzero(counts_all)
        counts = counts_all[pairs]
    else:
        pairs, counts = np.unique(keys, return_counts=True)
    _assemble(result, obj, ids, (y0, y1, x0, x1), pairs, counts, span, background, names)
    return result


def object_instances_runs(
    obj: RowRuns,
    cls: RowRuns,
    background: int | None,
    names: list[str],
) -> InstanceResult:
    """:func:`object_instances` from the runs of both PNGs: the same result, less work.

    Every row start is a run start in both, so the merged breakpoints cut the frame into
    row segments of one (instance, class) each: boxes and class histograms come from a
    few thousand segments instead of every pixel.
    """
    h, w = obj.height, obj.width
    result = InstanceResult()
    cuts = np.concatenate((obj.starts, cls.starts))
    cuts.sort(kind="stable")  # two ascending arrays: a merge
    new = np.empty(cuts.size, dtype=bool)
    new[0] = True
    np.not_equal(cuts[1:], cuts[:-1], out=new[1:])
    cuts = cuts[new]
    inst = obj.values[np.searchsorted(obj.starts, cuts, "right") - 1]
    keep = inst > 0
    if not keep.any():
        _reserve_gaps(result, background)
        return result
    klass = cls.values[np.searchsorted(cls.starts, cuts, "right") - 1]
    length = np.diff(cuts, append=h * w)[keep]
    cuts, inst = cuts[keep], inst[keep].astype(np.int64)
    klass = klass[keep].astype(np.int64) + 1  # void -1 → 0
    span = int(klass.max()) + 1
    keys = inst * span + klass
    size = (int(inst.max()) + 1) * span
    if size <= len(keys) * 64:  # few ids: a histogram instead of a sort
        by_key = np.bincount(keys, weights=length, minlength=size)
        pairs = np.flatnonzero(by_key)
        counts = by_key[pairs].astype(np.int64)  # exact below 2**53
    else:
        pairs, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, weights=length).astype(np.int64)
    y = cuts // w
    xa = cuts - y * w
    order = np.argsort(inst.astype(np.uint16) if size < (1 << 16) else inst, kind="stable")
    grouped = inst[order]
    first = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ids = grouped[first]
    boxes = (np.minimum.reduceat(y[order], first), np.maximum.reduceat(y[order], first),
             np.minimum.reduceat(xa[order], first),
             np.maximum.reduceat((xa + length - 1)[order], first))
    image = obj.expand(obj.values.astype(np.uint8 if int(ids[-1]) < 256 else np.int32))
    _assemble(result, image, ids, boxes, pairs, counts, span, background, names)
    return result


def _assemble(result: InstanceResult, obj: np.ndarray, ids: np.ndarray, boxes: tuple,
              pairs: np.ndarray, counts: np.ndarray, span: int, background: int | None,
              names: list[str]) -> None:
    """Label, crop and warnings of every instance, from its (instance, class) pixel counts."""
    y0, y1, x0, x1 = boxes
    pair_inst = pairs // span
    pair_cls = pairs % span - 1
    hist: dict[int, list[tuple[int, int]]] = {}
    for i, c, n in zip(pair_inst.tolist(), pair_cls.tolist(), counts.tolist()):
        hist.setdefault(i, []).append((c, n))
    for k, inst_id in enumerate(ids.tolist()):
        classes = [(c, n) for c, n in hist[inst_id] if c >= 0 and c != background]
        if not classes:
            void = any(c < 0 for c, _ in hist[inst_id])
            (result.dropped_void if void else result.dropped).append(inst_id)
            continue
        best = max(classes, key=lambda cn: (cn[1], cn[0]))[0]
        if len(classes) > 1:
            parts = ", ".join(f"{names[c]} {n} px" for c, n in sorted(classes, key=lambda cn: -cn[1]))
            result.mixed.append(f"instance {inst_id}: {parts} → {names[best]}")
        result.annotations.append(
            Annotation(_crop(obj, inst_id, y0[k], y1[k], x0[k], x1[k]), best, 0, inst_id)
        )
    _reserve_gaps(result, background)


def class_masks(cls: np.ndarray, background: int | None) -> list[Annotation]:
    """Class-only item: one mask per class present (not background, not void), group 0."""
    h, w = cls.shape
    shifted = cls.astype(np.int64) + 1  # void → 0, label c → c + 1
    if background is not None:
        shifted[cls == background] = 0
    ids, y0, y1, x0, x1, _area = _boxes(shifted, h, w)
    out: list[Annotation] = []
    for k, v in enumerate(ids.tolist()):
        out.append(Annotation(_crop(shifted, v, y0[k], y1[k], x0[k], x1[k]), v - 1, 0, 0))
    return out
