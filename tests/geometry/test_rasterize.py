"""Shape → pixels: each fill equals the full-frame call CVAT makes, and the crop is exact."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco

from smaskd.errors import InputError
from smaskd.geometry.rasterize import (
    Region,
    box_polygon,
    rasterize,
    rotated_box_polygon,
    round_points,
    runs_region,
)
from smaskd.geometry.rle import counts_array
from smaskd.model import Annotation, BitmapMask, Box, Ellipse, Item, NonMask, Polygon, RleMask
from smaskd.smask.compose import Segment, compose_item, merge_groups


def full(region: Region, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), dtype=bool)
    if region.mask.size:
        out[region.top:region.top + region.mask.shape[0],
            region.left:region.left + region.mask.shape[1]] = region.mask
    return out


def coco_fill(points, h, w) -> np.ndarray:
    return coco.decode(coco.frPyObjects([list(points)], h, w)[0]).astype(bool)


def test_box_covers_integer_span():
    # FORMAT.md §4.3: the CVAT box (1,1)-(4,3) covers columns 1..3 and rows 1..2
    r = rasterize(Box(1, 1, 3, 2), 5, 6)
    expected = np.zeros((5, 6), bool)
    expected[1:3, 1:4] = True
    assert np.array_equal(full(r, 5, 6), expected)
    assert (r.top, r.left, r.mask.shape) == (1, 1, (2, 3))


def test_half_pixel_box_same_pixels():
    a = full(rasterize(Box(0.5, 0.5, 3.0, 2.0), 5, 6), 5, 6)
    b = full(rasterize(Box(1, 1, 3, 2), 5, 6), 5, 6)
    assert np.array_equal(a, b)


def test_box_float_arithmetic_is_datumaros():
    box = Box(0.1, 0.7, 2.2, 0.6)
    p = np.around([0.1, 0.7, 0.1 + 2.2, 0.7 + 0.6], 2).tolist()
    x, y, w, h = p[0], p[1], p[2] - p[0], p[3] - p[1]
    assert box_polygon(box, "t") == [x, y, x + w, y, x + w, y + h, x, y + h]


def test_points_rounded_to_two_decimals():
    pts = [1.005, 2.675, 3.14159]
    assert round_points(pts, "t") == np.around(pts, 2).tolist()


@pytest.mark.parametrize("bad", [[math.nan, 0, 1, 1, 2, 0], [0, 0, 1e9, 0, 1, 1]])
def test_nonfinite_or_huge_coordinates_refused(bad):
    with pytest.raises(InputError):
        rasterize(Polygon(tuple(bad)), 10, 10, "img: annotation 3")


def test_polygon_needs_three_points():
    with pytest.raises(InputError, match="at least 3 points") as e:
        rasterize(Polygon((0, 0, 1, 1)), 4, 4, "img: annotation 7")
    assert e.value.where == "img: annotation 7"


def test_polygons_match_pycocotools_full_frame():
    rng = np.random.default_rng(7)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        pts = rng.uniform(-8, 38, 2 * int(rng.integers(3, 8)))
        pts = np.around(pts, int(rng.integers(0, 4))).tolist()
        got = full(rasterize(Polygon(tuple(pts)), h, w), h, w)
        assert np.array_equal(got, coco_fill(np.around(pts, 2).tolist(), h, w)), (h, w, pts)


def test_rotated_box_is_cvat_corner_rotation():
    box = Box(2.0, 3.0, 6.0, 4.0, rotation=30.0)
    x0, y0, x1, y1 = 2.0, 3.0, 8.0, 7.0
    a = math.radians(30)
    cx, cy = x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2
    expected = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        expected += [cx + math.cos(a) * (x - cx) - math.sin(a) * (y - cy),
                     cy + math.sin(a) * (x - cx) + math.cos(a) * (y - cy)]
    assert rotated_box_polygon(box, "t") == np.around(expected, 2).tolist()
    got = full(rasterize(box, 12, 12), 12, 12)
    assert np.array_equal(got, coco_fill(np.around(expected, 2).tolist(), 12, 12))


@pytest.mark.parametrize("e", [
    Ellipse(2.0, 3.0, 9.0, 8.0), Ellipse(2.5, 3.25, 9.75, 8.5, rotation=33.0),
    Ellipse(-4.0, -3.0, 6.0, 5.0), Ellipse(10.0, 10.0, 30.0, 14.0, rotation=90.0),
    Ellipse(3.0, 3.0, 3.0, 3.0),  # zero axes: cv2 still draws a pixel
])
def test_ellipse_matches_cv2_full_frame(e):
    h, w = 16, 20
    cx, cy = (e.x1 + e.x2) / 2, (e.y1 + e.y2) / 2
    ref = np.zeros((h, w), np.uint8)
    cv2.ellipse(ref, (round(cx), round(cy)), (round(e.x2 - cx), round(cy - e.y1)),
                e.rotation, 0, 360, 255, thickness=-1)
    assert np.array_equal(full(rasterize(e, h, w), h, w), ref != 0)


def test_inverted_ellipse_refused():
    with pytest.raises(InputError, match="inverted"):
        rasterize(Ellipse(5, 5, 1, 1), 10, 10)


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(3)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        rle = coco.encode(np.asfortranarray(m))
        got = full(rasterize(RleMask(rle["counts"].decode(), h, w), h, w), h, w)
        assert np.array_equal(got, m.astype(bool))


def test_rle_counts_list_and_bad_input():
    m = np.zeros((4, 3), np.uint8)
    m[1:3, 1] = 1
    counts = [5, 2, 5]  # column-major
    assert np.array_equal(full(runs_region(np.array(counts), 4, 3), 4, 3), m.astype(bool))
    assert np.array_equal(full(rasterize(RleMask(tuple(counts), 4, 3), 4, 3), 4, 3), m.astype(bool))
    with pytest.raises(InputError):
        rasterize(RleMask((5, 2, 4), 4, 3), 4, 3)  # does not cover the frame
    with pytest.raises(InputError, match="differs from the frame"):
        rasterize(RleMask((12,), 4, 3), 3, 4)
    with pytest.raises(InputError):
        rasterize(RleMask("!!not-rle", 4, 3), 4, 3)


def test_negative_deltas_in_string_counts():
    m = np.zeros((6, 6), np.uint8)
    m[0:5, 0] = 1
    m[4, 4] = 1
    rle = coco.encode(np.asfortranarray(m))
    assert counts_array(rle["counts"].decode("ascii")).tolist() == [0, 5, 23, 1, 7]


def test_bitmap_is_clipped_to_frame():
    bm = np.ones((4, 4), bool)
    r = rasterize(BitmapMask(-2, 3, bm), 5, 5)
    expected = np.zeros((5, 5), bool)
    expected[3:5, 0:2] = True
    assert np.array_equal(full(r, 5, 5), expected)
    assert rasterize(BitmapMask(10, 10, bm), 5, 5).mask.size == 0


def test_nonmask_has_no_pixels():
    with pytest.raises(InputError):
        rasterize(NonMask("polyline", (0, 0, 1, 1)), 4, 4)


def _item(anns, h=4, w=6):
    return Item("img", "default", h, w, anns)


def test_worked_example_from_format_md():
    # FORMAT.md §4.6: labelmap background, car, person; 4x6 frame
    anns = [
        Annotation(Box(1, 1, 3, 2), 1, z_order=0, id=1),  # car (1,1)-(4,3)
        Annotation(Polygon((0, 3, 2, 3, 2, 4)), 2, z_order=0, id=3),  # person triangle
        Annotation(Polygon((2, 0, 5, 0, 5, 3, 2, 3)), 2, z_order=1, id=2),  # person
    ]
    comp = compose_item(_item(anns), lambda a, where: a.label, 0)
    assert comp.index.tolist() == [
        [0, 0, 3, 3, 3, 0],
        [0, 1, 3, 3, 3, 0],
        [0, 1, 3, 3, 3, 0],
        [0, 2, 0, 0, 0, 0],
    ]
    assert comp.classes[comp.index].tolist()[3] == [0, 2, 0, 0, 0, 0]


def test_background_class_erases_and_consumes_an_id():
    anns = [Annotation(Box(0, 0, 4, 4), 1, id=1), Annotation(Box(1, 1, 2, 2), 0, id=2),
            Annotation(Box(3, 0, 2, 2), 1, id=3)]
    comp = compose_item(_item(anns, 4, 6), lambda a, where: a.label, 0)
    assert comp.index[1, 1] == 0 and comp.index[0, 0] == 1 and comp.index[0, 4] == 3
    assert comp.instances == 2


def test_rotated_boxes_move_to_the_end():
    # same z: the rotated box (listed first) is painted last, so it wins the overlap
    anns = [Annotation(Box(0, 0, 4, 4, rotation=90.0), 1, id=1),
            Annotation(Box(0, 0, 4, 4), 2, id=2)]
    comp = compose_item(_item(anns, 4, 4), lambda a, where: a.label, 0)
    assert comp.classes[comp.index[1, 1]] == 1 and comp.index[1, 1] == 2


def test_group_takes_first_largest_member():
    def seg(label, size, group):
        return Segment(Region(0, 0, np.ones((size, size), bool)), label, 0, group, "w")

    inst, mixed = merge_groups([seg(1, 2, 5), seg(2, 3, 5), seg(3, 3, 5), seg(4, 1, 0)])
    assert [(s.label, s.group) for s in inst] == [(4, 0), (2, 5)]
    assert mixed == [(5, [1, 2, 3])]
    assert inst[1].region.area == 9
