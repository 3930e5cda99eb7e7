"""Mask → polygons exactly as CVAT's "convert masks to polygons" (FORMAT.md §5.5).

CVAT runs Datumaro's ``mask_to_polygons``: ``cv2.findContours(RETR_TREE,
CHAIN_APPROX_TC89_KCOS)``, each outer contour one polygon, each direct hole spliced into its
parent by a bridge at the closest vertex pair, contours with ≤ 2 points dropped, polygons kept
when their pycocotools fill has ≥ 1 pixel. We reproduce that output point for point, because
users compare our polygons with CVAT's.

What CVAT loses is not lost silently: a component whose contour collapses to ≤ 2 points
(1-2 px wide bars, single pixels) or fills no pixel is counted in ``MaskPolygons.lost`` for
a warning. Points are integer pixel centres, as CVAT's.

The contours are traced on the instance's cropped bitmap padded by one empty pixel, so the
cost follows the instance's box, not the frame; the padding keeps OpenCV's border handling
identical to a full-frame trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as _coco

from smaskd.model import BitmapMask
from smaskd.pngio import opencv

__all__ = ["MaskPolygons", "bitmap_to_polygons", "mask_to_polygons"]


@dataclass(slots=True)
class MaskPolygons:
    """Flat ``[x1, y1, ..., x1, y1]`` int polygons (closed), and the components lost."""

    polygons: list[list[int]] = field(default_factory=list)
    lost: int = 0


def _clockwise(c: np.ndarray) -> bool:
    n = np.roll(c, -1, 0)
    return int(((n[:, 0] - c[:, 0]) * (n[:, 1] + c[:, 1])).sum()) < 0


def _depths(hier: np.ndarray) -> list[int]:
    """Tree depth of every contour (0 = outer), iteratively: mask trees can be deep."""
    depth = [-1] * len(hier)
    for start in range(len(hier)):
        path = []
        i = start
        while depth[i] < 0:
            parent = int(hier[i][3])
            if parent == -1:
                depth[i] = 0
                break
            path.append(i)
            i = parent
        base = depth[i]
        for j in reversed(path):
            base += 1
            depth[j] = base
    return depth


_CHUNK = 1 << 22  # distance-matrix cells per step: bounds memory on huge contours


def _closest_pair(c: np.ndarray, ch: np.ndarray) -> tuple[int, int]:
    """First (row-major) argmin of the squared distance matrix, computed in chunks."""
    rows = max(1, _CHUNK // max(len(ch), 1))
    best, bi, bj = None, 0, 0
    for r0 in range(0, len(c), rows):
        d = ((c[r0:r0 + rows, None, :] - ch[None]) ** 2).sum(-1)
        k = int(np.argmin(d))
        v = int(d.flat[k])
        if best is None or v < best:
            best, bi, bj = v, r0 + k // d.shape[1], k % d.shape[1]
    return bi, bj


def _fill_area(flat: list[int], height: int, width: int) -> int:
    rles = _coco.frPyObjects([[float(v) for v in flat]], height, width)
    return int(_coco.area(rles)[0])


def mask_to_polygons(
    mask: np.ndarray, height: int, width: int, offset: tuple[int, int] = (0, 0),
    area_threshold: int = 1,
) -> MaskPolygons:
    """Polygons of a binary ``mask`` whose (0, 0) is frame pixel ``offset`` = (x, y).

    ``height``/``width`` are the frame's: the area test fills on the full frame, as CVAT.
    """
    out = MaskPolygons()
    if mask.size == 0 or not mask.any():
        return out
    padded = np.pad(mask.astype(np.uint8), 1)
    cv2 = opencv()  # loaded here, not at import: only ``--polygons`` needs it
    contours, hier = cv2.findContours(padded, cv2.RETR_TREE, cv2.CHAIN_APPROX_TC89_KCOS)
    if not contours:
        return out
    hier = hier[0]
    depth = _depths(hier)
    is_outer = [d % 2 == 0 for d in depth]
    groups: dict[int, list[int]] = {i: [] for i in range(len(contours)) if is_outer[i]}
    for i in range(len(contours)):
        if not is_outer[i]:
            groups[int(hier[i][3])].append(i)
    shift = np.array([offset[0] - 1, offset[1] - 1], dtype=np.int64)
    for pi, kids in groups.items():  # ascending contour index, as Datumaro's dict
        c = contours[pi].reshape(-1, 2).astype(np.int64) + shift
        if len(c) <= 2:
            out.lost += 1
            continue
        for ki in kids:
            ch = contours[ki].reshape(-1, 2).astype(np.int64) + shift
            if len(ch) <= 2:
                continue
            if not _clockwise(c):
                c = c[::-1]
            if _clockwise(ch):
                ch = ch[::-1]
            i, j = _closest_pair(c, ch)
            c = np.concatenate((c[: i + 1], ch[j:], ch[: j + 1], c[i:]))
        if not np.array_equal(c[0], c[-1]):
            c = np.vstack((c, c[:1]))
        flat = c.reshape(-1).clip(0).tolist()
        if _fill_area(flat, height, width) >= area_threshold:
            out.polygons.append(flat)
        else:
            out.lost += 1
    return out


def bitmap_to_polygons(mask: BitmapMask, height: int, width: int) -> MaskPolygons:
    """Polygons of a cropped ``BitmapMask`` on a ``height x width`` frame."""
    bm = np.asarray(mask.bitmap, dtype=bool)
    return mask_to_polygons(bm, height, width, (mask.left, mask.top))
