"""How big an export's input may be, checked by counting before any pixel is drawn.

Valid JSON can ask for unbounded work: one polygon of 500,000 points makes pycocotools
allocate the dense outline of every edge (tens of GB; under a worker's memory limit its
unchecked ``malloc`` then segfaults), and one image with 10⁶ shapes rasterises for minutes
before anything could refuse it. So the export plan counts, per item, the mask shapes and
the points of each polygon, and refuses an item over :class:`InputLimits` with an
``InputError`` that names the item, the shape and the limit. The limits are the caller's
(CLI ``--max-polygon-points``/``--max-instances``, the daemon's config keys of the same
names); the defaults are far above what annotation tools produce (CVAT's own polygons of a
16384² frame have thousands of points; COCO's most crowded image has under 1,000 objects).

One bound is not a setting: :data:`MAX_POLYGON_OUTLINE`, the length of the outline
pycocotools draws at 5x resolution, which is what its memory follows (a few points can zigzag
across a large frame). It is computed exactly as pycocotools does, just before the fill.

:func:`frame_memory` is what a worker needs to convert the largest frame it will meet, for
the daemon's configuration check: measured as the smallest ``RLIMIT_AS`` under which the CLI
exports one full polygon on a 16384² frame (1.75 GiB, default and ``--compat cvat``) and
imports its mask zip, or a VOC-style paletted 16384² mask zip (2.25 GiB passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smaskd.errors import InputError

if TYPE_CHECKING:
    from smaskd.model import Item

# numpy and the model are imported where they are used: the CLI and the daemon's config
# read the defaults here, and neither should load numpy for that.

__all__ = [
    "DEFAULT_MAX_INSTANCES",
    "DEFAULT_MAX_POLYGON_POINTS",
    "MAX_POLYGON_OUTLINE",
    "InputLimits",
    "LimitError",
    "check_item_size",
    "check_outline",
    "frame_memory",
    "shown",
    "too_many_instances",
]

DEFAULT_MAX_POLYGON_POINTS = 100_000
DEFAULT_MAX_INSTANCES = 10_000
#: pycocotools ``rleFrPoly`` keeps ~24 bytes per outline point at 5x scale: 2^24 points are
#: ~400 MB, a polygon outline of 3.3 million pixels (50 times round a 16384² frame).
MAX_POLYGON_OUTLINE = 1 << 24
_SCALE = 5  # pycocotools' upsampling of polygon outlines

#: Address space of an export process before its first item (Python, numpy, OpenCV,
#: pycocotools, isal mapped: ~460 MB measured), with room for the JSON's items.
BASE_MEMORY = 768 << 20
#: Bytes per frame pixel at an item's peak: the instance index (1), a shape's crop (1) and
#: one filtered PNG image (3) by default; --compat cvat paints a BGR image (3) instead. One
#: full polygon on a 16384² frame exported under RLIMIT_AS 1.75 GiB (both modes), with
#: 460 MB of it the interpreter: ~5 bytes a pixel; 6 leaves room for a few shapes' crops.
BYTES_PER_PIXEL = 6


class LimitError(InputError):
    """An input over a size limit: refused as it stands, never re-read another way."""


def too_many_instances(count: int | str, limit: int, item_id: str) -> LimitError:
    """The refusal of an item with more mask shapes than ``limit`` (``count``: "> N" when
    a reader stopped counting there)."""
    return LimitError(
        f"item has {count} mask shapes; the limit is {limit} per item (max_instances): "
        "split the image, or raise the limit",
        shown(item_id),
    )


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Per-item bounds of an export; every check is a count, made before rasterising."""

    max_polygon_points: int = DEFAULT_MAX_POLYGON_POINTS
    max_instances: int = DEFAULT_MAX_INSTANCES


def shown(text: str, limit: int = 120) -> str:
    """``text`` cut for a message: a 70,000-character item id must not fill a log line."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}…{text[-half:]} ({len(text)} characters)"


def check_item_size(item: Item, limits: InputLimits) -> None:
    """Refuse an item with more mask shapes, or a polygon with more points, than allowed."""
    from smaskd.model import NonMask, Polygon

    segments = 0
    for ann in item.annotations:
        shape = ann.shape
        if isinstance(shape, NonMask):
            continue
        segments += 1
        if isinstance(shape, Polygon) and len(shape.points) > 2 * limits.max_polygon_points:
            raise LimitError(
                f"polygon has {len(shape.points) // 2} points, more than the limit of "
                f"{limits.max_polygon_points} (max_polygon_points); simplify it, or raise the "
                "limit",
                f"{shown(item.id)}: annotation {ann.id}",
            )
    if segments > limits.max_instances:
        raise too_many_instances(segments, limits.max_instances, item.id)


def check_outline(points: list[float], where: str) -> None:
    """Refuse a polygon whose 5x outline (pycocotools' allocation) is over the bound.

    The count is pycocotools' own: ``Σ max(|Δx|, |Δy|) + 1`` over the closed polygon's
    edges of ``(int)(5·v + 0.5)`` coordinates. Most polygons are cleared by a cheaper bound
    first (points x the 5x span of their box), which costs a few µs instead of numpy's ~50.
    """
    xs, ys = points[0::2], points[1::2]
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    if len(xs) * (_SCALE * span + 2) <= MAX_POLYGON_OUTLINE:
        return
    import numpy as np

    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    scaled = (_SCALE * xy + 0.5).astype(np.int64)  # C's (int) cast truncates toward zero
    steps = np.abs(scaled - np.roll(scaled, -1, axis=0)).max(axis=1)
    outline = int(steps.sum()) + len(steps)
    if outline > MAX_POLYGON_OUTLINE:
        raise LimitError(
            f"polygon outline is {outline // _SCALE} pixels long, more than the limit of "
            f"{MAX_POLYGON_OUTLINE // _SCALE} (its {len(steps)} points zigzag across the "
            "frame); filling it would need gigabytes",
            where,
        )


def frame_memory(pixels: int) -> int:
    """Address space (bytes) a worker needs to export or import a frame of ``pixels`` pixels
    (2.25 GiB for 16384²): a ``worker_memory`` below it fails such frames with a memory error."""
    return BASE_MEMORY + BYTES_PER_PIXEL * int(pixels)
