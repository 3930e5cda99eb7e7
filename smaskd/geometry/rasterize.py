"""Shapes → pixels, exactly as CVAT's export pipeline draws them (FORMAT.md §4.1-§4.4).

Every fill goes through the same library call CVAT makes — pycocotools ``frPyObjects`` for
polygons and boxes, ``cv2.ellipse`` for ellipses — with Datumaro's float arithmetic
reproduced literally (2-decimal ``np.around`` of points, ``x + w`` for box corners), because
the pycocotools fill truncates ``5·x + 0.5`` and one ulp decides a pixel column.

What we do differently is *where* the pixels live: the result of each shape is a
:class:`Region`, a boolean crop of the frame holding every pixel the shape covers, so the
compositor paints ``O(bbox)`` instead of ``O(frame)`` per shape. The crop is taken *after*
an exact full-frame computation, never by shifting coordinates (the pycocotools fill is not
translation-invariant: truncation toward zero for negative coordinates, ulps of ``x + k``):
polygons and boxes get pycocotools' full-frame RLE, whose runs we paint straight into their
own bounding box (no full-frame decode); ellipses are drawn by ``cv2.ellipse`` on a
full-frame canvas and cropped to a provably conservative box around the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as _coco

from smaskd.errors import InputError
from smaskd.geometry.rle import counts_array
from smaskd.model import BitmapMask, Box, Ellipse, Polygon, RleMask, Shape
from smaskd.pngio import opencv
from smaskd.geometry.limits import check_outline

__all__ = [
    "MAX_COORDINATE",
    "Region",
    "box_polygon",
    "rasterize",
    "rotated_box_polygon",
    "round_points",
]

#: pycocotools allocates the dense 5x-resolution boundary of every edge; a coordinate of
#: 1e9 would ask for gigabytes. No frame is near this size, so larger values are an error.
MAX_COORDINATE = 1_000_000.0

_ROUNDING_DIGITS = 2  # Datumaro's COORDINATE_ROUNDING_DIGITS


@dataclass(frozen=True, slots=True, eq=False)
class Region:
    """Pixels of one shape: ``mask[r, c]`` is frame pixel ``(top + r, left + c)``.

    The crop lies inside the frame. An empty region (zero area) has a ``(0, 0)`` mask; it
    still counts as an instance, as it does in CVAT.
    """

    top: int
    left: int
    mask: np.ndarray  # 2-D bool

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @classmethod
    def empty(cls) -> "Region":
        return cls(0, 0, np.zeros((0, 0), dtype=bool))

    @classmethod
    def from_frame(cls, frame: np.ndarray) -> "Region":
        """Crop a full-frame mask to the tight box of its non-zero pixels."""
        rows = np.flatnonzero(frame.any(axis=1))
        if rows.size == 0:
            return cls.empty()
        cols = np.flatnonzero(frame.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return cls(r0, c0, frame[r0:r1, c0:c1] != 0)


def round_points(points, where: str) -> list[float]:
    """Datumaro's ``np.around(points, 2).tolist()``, after refusing non-finite/huge values."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size and (not np.all(np.isfinite(arr)) or np.abs(arr).max() > MAX_COORDINATE):
        raise InputError(
            f"coordinates must be finite and within ±{MAX_COORDINATE:g} pixels", where
        )
    return np.around(arr, _ROUNDING_DIGITS).tolist()


def box_polygon(box: Box, where: str) -> list[float]:
    """An axis-aligned box as the polygon Datumaro's ``Bbox.as_polygon`` returns (§4.3)."""
    x0, y0, x1, y1 = round_points([box.x, box.y, box.x + box.w, box.y + box.h], where)
    x, y, w, h = x0, y0, x1 - x0, y1 - y0  # Bbox.get_bbox
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def rotated_box_polygon(box: Box, where: str) -> list[float]:
    """CVAT's ``RotatedBoxesToPolygons`` corner arithmetic on the rounded box (§4.2)."""
    x0, y0, x1, y1 = round_points([box.x, box.y, box.x + box.w, box.y + box.h], where)
    angle = math.radians(box.rotation)
    cx, cy = x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    out: list[float] = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        out.append(cx + cos * (x - cx) - sin * (y - cy))
        out.append(cy + sin * (x - cx) + cos * (y - cy))
    return round_points(out, where)  # dm.Polygon rounds again


def runs_region(counts: np.ndarray, height: int, width: int) -> Region:
    """Paint a column-major run-length list into a crop of its own bounding box.

    Only the pixels of the box are touched (never the whole frame): each run of ones is
    split into per-column pieces, marked as +1/-1 edges and closed by a cumulative sum.

    The edges are int8 and summed in place, one byte a pixel in all: runs of an RLE never
    overlap, so every sum is 0 or 1 and the bytes *are* the boolean mask. (An int32 edge
    array summed the default way, into int64, cost 12 bytes a pixel: 3 GiB for one full
    polygon on a 16384² frame, over a worker's default memory limit.)
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts.min() < 0 or counts.sum() != height * width):
        raise ValueError(f"RLE counts do not cover the {height}x{width} frame")
    ends = np.cumsum(counts)
    s, e = (ends - counts)[1::2], ends[1::2] - 1  # runs of ones, inclusive
    keep = e >= s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return Region.empty()
    cs, rs = np.divmod(s, height)
    ce, re_ = np.divmod(e, height)
    ncol = ce - cs + 1
    run = np.repeat(np.arange(s.size), ncol)
    offset = np.arange(run.size) - np.repeat(np.cumsum(ncol) - ncol, ncol)
    col = cs[run] + offset
    r0 = np.where(offset == 0, rs[run], 0)
    r1 = np.where(col == ce[run], re_[run], height - 1)
    x0, x1, y0, y1 = int(cs.min()), int(ce.max()), int(r0.min()), int(r1.max())
    hc, wc = y1 - y0 + 1, x1 - x0 + 1
    edges = np.zeros((wc, hc + 1), dtype=np.int8)
    np.add.at(edges, (col - x0, r0 - y0), 1)
    np.add.at(edges, (col - x0, r1 - y0 + 1), -1)
    np.cumsum(edges, axis=1, dtype=np.int8, out=edges)
    return Region(y0, x0, edges[:, :hc].view(bool).T)


def _coco_region(rle: dict, height: int, width: int) -> Region:
    """A pycocotools RLE (compressed counts) as a crop, without a full-frame decode."""
    return runs_region(counts_array(rle["counts"].decode("ascii")), height, width)


def polygon_region(points: list[float], height: int, width: int) -> Region:
    """pycocotools ``rleFrPoly`` fill of already-rounded points (CVAT polygons and boxes)."""
    rle = _coco.frPyObjects([points], height, width)[0]
    return _coco_region(rle, height, width)


def ellipse_region(e: Ellipse, height: int, width: int, where: str) -> Region:
    """CVAT's ``EllipsesToMasks.convert_ellipse``: ``cv2.ellipse`` with Python ``round``."""
    vals = [e.x1, e.y1, e.x2, e.y2, e.rotation]
    if not all(math.isfinite(v) for v in vals) or max(abs(v) for v in vals[:4]) > MAX_COORDINATE:
        raise InputError(
            f"ellipse coordinates must be finite and within ±{MAX_COORDINATE:g}", where
        )
    cx, cy = e.center if e.center is not None else ((e.x1 + e.x2) / 2, (e.y1 + e.y2) / 2)
    center = (round(cx), round(cy))  # Python round: half to even, as CVAT
    axes = (round(e.x2 - cx), round(cy - e.y1))
    if axes[0] < 0 or axes[1] < 0:
        raise InputError(f"ellipse box {vals[:4]} is inverted (x2 < x1 or y2 < y1)", where)
    # Drawn on a full-frame canvas exactly as CVAT does (np.zeros is lazily zeroed memory,
    # so this costs only the touched rows); the crop box is conservative: every polygon
    # vertex is within max(axes) of the centre, plus at most one pixel of rounding.
    canvas = np.zeros((height, width), dtype=np.uint8)
    opencv().ellipse(canvas, center, axes, e.rotation, 0, 360, 255, thickness=-1)
    r = max(axes) + 2
    r0, r1 = max(center[1] - r, 0), min(center[1] + r + 1, height)
    c0, c1 = max(center[0] - r, 0), min(center[0] + r + 1, width)
    if r0 >= r1 or c0 >= c1:
        return Region.empty()
    crop = Region.from_frame(canvas[r0:r1, c0:c1])
    if crop.mask.size == 0:
        return crop
    return Region(r0 + crop.top, c0 + crop.left, crop.mask)


def rle_region(m: RleMask, height: int, width: int, where: str) -> Region:
    """A full-frame COCO RLE (brush mask, converted ellipse, COCO segmentation)."""
    if (m.height, m.width) != (height, width):
        raise InputError(
            f"mask RLE size {m.height}x{m.width} (h x w) differs from the frame {height}x{width}",
            where,
        )
    try:
        if isinstance(m.counts, str):
            counts = counts_array(m.counts)
        else:
            counts = np.asarray(m.counts, dtype=np.int64)
        return runs_region(counts, height, width)
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError) as e:
        raise InputError(f"invalid mask RLE: {e}", where) from None


def bitmap_region(m: BitmapMask, height: int, width: int) -> Region:
    """A cropped bitmap placed at ``left/top``, clipped to the frame (CVAT crashes instead)."""
    bm = np.asarray(m.bitmap)
    if bm.ndim != 2:
        raise InputError(f"mask bitmap must be 2-D, got shape {bm.shape}")
    r0, c0 = max(m.top, 0), max(m.left, 0)
    r1, c1 = min(m.top + bm.shape[0], height), min(m.left + bm.shape[1], width)
    if r0 >= r1 or c0 >= c1:
        return Region.empty()
    crop = Region.from_frame(bm[r0 - m.top:r1 - m.top, c0 - m.left:c1 - m.left])
    if crop.mask.size == 0:
        return crop
    return Region(r0 + crop.top, c0 + crop.left, crop.mask)


def rasterize(shape: Shape, height: int, width: int, where: str = "shape") -> Region:
    """The pixels CVAT's export gives ``shape`` on a ``height x width`` frame.

    Rotated boxes are rasterised as their rotated polygon; *moving* them to the end of the
    item's list (§4.2) is the compositor's job, since it changes tie-breaking, not pixels.
    """
    if isinstance(shape, Polygon):
        if len(shape.points) % 2 or len(shape.points) < 6:
            raise InputError(
                f"polygon needs at least 3 points (x, y pairs), got {len(shape.points)} numbers",
                where,
            )
        points = round_points(shape.points, where)
        check_outline(points, where)  # before pycocotools allocates it
        return polygon_region(points, height, width)
    if isinstance(shape, Box):
        if not math.isfinite(shape.rotation):
            raise InputError("box rotation must be finite", where)
        points = rotated_box_polygon(shape, where) if shape.rotation else box_polygon(shape, where)
        return polygon_region(points, height, width)
    if isinstance(shape, Ellipse):
        return ellipse_region(shape, height, width, where)
    if isinstance(shape, RleMask):
        return rle_region(shape, height, width, where)
    if isinstance(shape, BitmapMask):
        return bitmap_region(shape, height, width)
    raise InputError(f"{type(shape).__name__} has no pixels in a segmentation mask", where)
