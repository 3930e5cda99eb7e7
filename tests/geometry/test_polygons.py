"""Mask → polygons: point for point CVAT's method (FORMAT.md §5.5), on crops as on frames."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco

from smaskd.geometry.polygons import bitmap_to_polygons, mask_to_polygons
from smaskd.model import BitmapMask


def reference(mask: np.ndarray) -> list[list[int]]:
    """FORMAT.md §5.5's port of Datumaro's ``mask_to_polygons``, on the full frame."""
    cs, hier = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_TC89_KCOS)
    if not cs:
        return []
    hier, outer = hier[0], {}

    def is_outer(i):
        if i not in outer:
            p = hier[i][3]
            outer[i] = True if p == -1 else not is_outer(p)
        return outer[i]

    groups = {i: [] for i in range(len(cs)) if is_outer(i)}
    for i in range(len(cs)):
        if not is_outer(i):
            groups[hier[i][3]].append(i)

    def cw(c):
        c = c.astype(np.int64)
        n = np.roll(c, -1, 0)
        return ((n[:, 0] - c[:, 0]) * (n[:, 1] + c[:, 1])).sum() < 0

    out = []
    for pi, kids in groups.items():
        c = cs[pi].reshape(-1, 2)
        if len(c) <= 2:
            continue
        for ki in kids:
            ch = cs[ki].reshape(-1, 2)
            if len(ch) <= 2:
                continue
            if not cw(c):
                c = c[::-1]
            if cw(ch):
                ch = ch[::-1]
            d = ((c[:, None, :].astype(np.int64) - ch[None]) ** 2).sum(-1)
            i, j = np.unravel_index(np.argmin(d), d.shape)
            c = np.concatenate((c[:i + 1], ch[j:], ch[:j + 1], c[i:]))
        if not np.array_equal(c[0], c[-1]):
            c = np.vstack((c, c[0]))
        flat = c.flatten().clip(0)
        h, w = mask.shape
        area = coco.area(coco.frPyObjects([flat.astype(float).tolist()], h, w))[0]
        if area >= 1:
            out.append([int(v) for v in flat])
    return out


def crop(mask: np.ndarray) -> BitmapMask:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    return BitmapMask(int(x0), int(y0), mask[y0:y1 + 1, x0:x1 + 1].astype(bool))


def test_box_comes_back_on_pixel_centres() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[8:14, 8:18] = 1
    assert mask_to_polygons(mask, 20, 30).polygons == [[8, 8, 8, 13, 17, 13, 17, 8, 8, 8]]
    assert bitmap_to_polygons(crop(mask), 20, 30).polygons == [[8, 8, 8, 13, 17, 13, 17, 8, 8, 8]]


def test_thin_structures_are_counted_as_lost() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[5:7, 3:6] = 1  # 2x3 bar: contour of 2 points
    mask[0, 9] = 1  # single pixel
    result = mask_to_polygons(mask, 10, 10)
    assert result.polygons == [] and result.lost == 2


def test_hole_is_bridged() -> None:
    mask = np.zeros((12, 12), np.uint8)
    mask[1:11, 1:11] = 1
    mask[4:8, 4:8] = 0
    got = bitmap_to_polygons(crop(mask), 12, 12).polygons
    assert got == reference(mask) and len(got) == 1
    filled = coco.decode(coco.frPyObjects([[float(v) for v in got[0]]], 12, 12))[:, :, 0]
    assert filled[5, 5] == 0 and filled[2, 2] == 1


def test_mask_touching_the_frame_edges() -> None:
    mask = np.ones((6, 7), np.uint8)
    mask[2, 3] = 0
    assert bitmap_to_polygons(crop(mask), 6, 7).polygons == reference(mask)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 24), st.integers(3, 24), st.floats(0.2, 0.8))
def test_random_masks_match_the_reference(seed: int, h: int, w: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    mask = (rng.random((h, w)) < density).astype(np.uint8)
    if rng.random() < 0.5:  # blobs with holes as well as noise
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    want = reference(mask)
    if not mask.any():
        assert mask_to_polygons(mask, h, w).polygons == want == []
        return
    assert mask_to_polygons(mask, h, w).polygons == want
    assert bitmap_to_polygons(crop(mask), h, w).polygons == want


def test_deeply_nested_rings() -> None:
    n = 41
    mask = np.zeros((n, n), np.uint8)
    for k in range(0, n // 2, 2):
        mask[k:n - k, k:n - k] = 1
        mask[k + 1:n - k - 1, k + 1:n - k - 1] = 0
    assert bitmap_to_polygons(crop(mask), n, n).polygons == reference(mask)
