"""One item's shapes → the index mask behind both PNGs (FORMAT.md §4.2, §4.5, §4.6).

The order of operations is CVAT's, because every step changes who wins an overlap:

1. shapes stably sorted by ``z_order`` (CVAT's extractor hands them over that way);
2. rotated boxes removed and appended at the end as polygons (``RotatedBoxesToPolygons``);
3. non-mask shapes (tags, polylines, points) set aside;
4. segments stably sorted by ``group``: group 0 stays one instance per shape, a non-zero
   group of two or more becomes the union of its masks with the label and z-order of the
   *first largest* member (``merge_instance_segments``);
5. instances stably sorted by ``z_order`` and painted in that order, position ``k`` (1-based)
   painting value ``k`` — or 0 when its label is the background, which erases and still
   uses up the number (``CompiledMask.from_instance_masks``).

The result is an index mask plus a lookup ``position → class``; ``position`` *is* the
instance id, so one gather per PNG produces both images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from smaskd.geometry.rasterize import Region, rasterize
from smaskd.model import Annotation, Box, Item, NonMask

__all__ = ["Composition", "Segment", "compose_item", "item_segments", "merge_groups"]


@dataclass(slots=True)
class Segment:
    """A shape's pixels with what decides its place: class index, z-order, group."""

    region: Region
    label: int  # output class index
    z_order: int
    group: int
    where: str


@dataclass(slots=True)
class Composition:
    """``index[y, x]`` = instance position (0 = none); ``classes[k]`` = class of position k."""

    index: np.ndarray
    classes: np.ndarray  # int64, classes[0] == background
    instances: int  # positions that are real instances (non-background)
    mixed_groups: list[tuple[int, list[int]]] = field(default_factory=list)


def is_segment(ann: Annotation) -> bool:
    return not isinstance(ann.shape, NonMask)


def is_rotated_box(ann: Annotation) -> bool:
    return isinstance(ann.shape, Box) and bool(ann.shape.rotation)


def item_segments(
    item: Item, class_of: Callable[[Annotation, str], int]
) -> list[Segment]:
    """Steps 1-3: rasterised segments in Datumaro's list order."""
    h, w = item.height, item.width
    assert h is not None and w is not None  # checked by the caller
    ordered = sorted(item.annotations, key=lambda a: a.z_order)  # stable
    plain = [a for a in ordered if not is_rotated_box(a)]
    rotated = [a for a in ordered if is_rotated_box(a)]
    segments: list[Segment] = []
    for ann in plain + rotated:
        if not is_segment(ann):
            continue
        where = f"{item.id}: annotation {ann.id}"
        segments.append(
            Segment(rasterize(ann.shape, h, w, where), class_of(ann, where),
                    int(ann.z_order), int(ann.group), where)
        )
    return segments


def _union(regions: list[Region]) -> Region:
    boxes = [r for r in regions if r.mask.size]
    if not boxes:
        return Region.empty()
    top = min(r.top for r in boxes)
    left = min(r.left for r in boxes)
    bottom = max(r.top + r.mask.shape[0] for r in boxes)
    right = max(r.left + r.mask.shape[1] for r in boxes)
    out = np.zeros((bottom - top, right - left), dtype=bool)
    for r in boxes:
        y, x = r.top - top, r.left - left
        out[y:y + r.mask.shape[0], x:x + r.mask.shape[1]] |= r.mask
    return Region(top, left, out)


def merge_groups(segments: list[Segment]) -> tuple[list[Segment], list[tuple[int, list[int]]]]:
    """Step 4: one instance per group; returns instances and the groups that mixed labels."""
    instances: list[Segment] = []
    mixed: list[tuple[int, list[int]]] = []
    for gid, members_it in groupby(sorted(segments, key=lambda s: s.group), key=lambda s: s.group):
        members = list(members_it)
        if not gid or len(members) == 1:
            instances.extend(members)
            continue
        areas = [m.region.area for m in members]
        leader = members[areas.index(max(areas))]  # first largest, as max() picks
        labels = sorted({m.label for m in members})
        if len(labels) > 1:
            mixed.append((gid, labels))
        instances.append(
            Segment(_union([m.region for m in members]), leader.label, leader.z_order, gid,
                    leader.where)
        )
    return instances, mixed


def compose_item(
    item: Item, class_of: Callable[[Annotation, str], int], background: int
) -> Composition:
    """Steps 1-5 for one item with at least one mask shape."""
    segments = item_segments(item, class_of)
    instances, mixed = merge_groups(segments)
    order = sorted(instances, key=lambda s: s.z_order)  # stable: later wins ties
    n = len(order)
    dtype = np.uint8 if n < 256 else np.uint16 if n < 65535 else np.uint32
    index = np.zeros((item.height, item.width), dtype=dtype)
    classes = np.empty(n + 1, dtype=np.int64)
    classes[0] = background
    real = 0
    for pos, seg in enumerate(order, start=1):
        classes[pos] = seg.label
        value = 0 if seg.label == background else pos
        real += value != 0
        r = seg.region
        if r.mask.size:
            view = index[r.top:r.top + r.mask.shape[0], r.left:r.left + r.mask.shape[1]]
            view[r.mask] = value
    return Composition(index, classes, real, mixed)
