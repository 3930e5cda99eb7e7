"""The in-memory model every reader produces and every writer consumes.

Readers parse at the boundary: nothing past them sees a raw JSON dict. Shapes keep the
numbers exactly as the input gave them (CVAT-compatible rounding happens at export, in one
place), and masks stay compressed (RLE or a bitmap cropped to its box) until they are painted,
so a dataset costs little memory before its items are rasterised one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

__all__ = [
    "RGB",
    "Annotation",
    "BitmapMask",
    "Box",
    "Dataset",
    "Ellipse",
    "Item",
    "Label",
    "NonMask",
    "Polygon",
    "RleMask",
    "Shape",
    "resolve_background",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Label:
    """A label category; ``color`` is the SegmentationClass colour, or None when unknown."""

    name: str
    color: RGB | None = None


@dataclass(frozen=True, slots=True)
class Polygon:
    """Flat ``x1, y1, x2, y2, ...`` exactly as the input wrote them (not yet rounded)."""

    points: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Box:
    """An ``x, y, w, h`` box; ``rotation`` in degrees (CVAT's sense) makes it a rotated box.

    Kept as x/y/w/h rather than corners because CVAT computes ``x + w`` in floating point and
    the pycocotools fill is sensitive to the last bit of that sum.
    """

    x: float
    y: float
    w: float
    h: float
    rotation: float = 0.0


@dataclass(frozen=True, slots=True)
class Ellipse:
    """An ellipse given by its bounding box ``x1, y1, x2, y2`` and a rotation in degrees.

    ``center``: CVAT's own ellipses are a centre plus the right/top points; when the centre
    is known it is used as is, because recomputing it as ``(x1 + x2) / 2`` can move its
    rounding by a pixel (readers of CVAT's task data set it, file formats do not).
    """

    x1: float
    y1: float
    x2: float
    y2: float
    rotation: float = 0.0
    center: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class RleMask:
    """A COCO RLE over the whole frame (column-major), compressed string or counts list."""

    counts: str | tuple[int, ...]
    height: int
    width: int


@dataclass(frozen=True, slots=True, eq=False)
class BitmapMask:
    """A binary mask cropped to its box: pixel (r, c) of ``bitmap`` is frame (top+r, left+c).

    ``left``/``top`` may be negative or the bitmap may run past the frame; painting clips.
    """

    left: int
    top: int
    bitmap: np.ndarray  # 2-D bool or uint8 (non-zero = inside)


@dataclass(frozen=True, slots=True)
class NonMask:
    """Shapes the format keeps out of the PNGs: ``tag``, ``polyline``, ``points``, ``skeleton``.

    They still matter: an item whose annotations are all of this kind is not listed (§4.8).
    """

    kind: str
    points: tuple[float, ...] = ()


Shape = Union[Polygon, Box, Ellipse, RleMask, BitmapMask, NonMask]


@dataclass(slots=True)
class Annotation:
    """One shape with its label index (into ``Dataset.labels``), z-order and group."""

    shape: Shape
    label: int | None
    z_order: int = 0
    group: int = 0
    id: int = 0
    attributes: dict = field(default_factory=dict)


@dataclass(slots=True)
class Item:
    """One frame. ``height``/``width`` may be None only for items without any mask shapes."""

    id: str
    subset: str = "default"
    height: int | None = None
    width: int | None = None
    annotations: list[Annotation] = field(default_factory=list)
    image_path: str | None = None


@dataclass(slots=True)
class Dataset:
    """Labels plus items in their meaningful order (frame order = list-file order)."""

    labels: list[Label]
    items: list[Item]
    source_format: str = ""
    warnings: list[str] = field(default_factory=list)


def resolve_background(labels: Sequence[Label]) -> int | None:
    """§2.3: the first black label, else the label named ``background``, else none.

    Here, beside :class:`Label`, because every format reads and writes the background the
    same way (the mask zip, COCO and Datumaro JSON), and formats never import each other.
    """
    for i, lab in enumerate(labels):
        if lab.color == (0, 0, 0):
            return i
    for i, lab in enumerate(labels):
        if lab.name == "background":
            return i
    return None
