"""Properties of the export on random scenes (Hypothesis), checked on the decoded PNGs."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np

from smaskd.smask.colormap import VOC_COLORMAP
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco

from smaskd.errors import DataLossError, InputError
from smaskd.model import Annotation, Box, Dataset, Ellipse, Item, Label, NonMask, Polygon
from smaskd.smask.colormap import VOC_INVERSE
from smaskd.smask.export import export_dataset
from smaskd.smask.labelmap import LabelmapEntry, parse_labelmap

LABELS = [Label("car", (0, 255, 0)), Label("Person", (255, 0, 0)), Label("tree", (10, 20, 30))]

_coord = st.floats(-3, 15, allow_nan=False).map(lambda v: round(v, 1))
_polygon = st.lists(st.tuples(_coord, _coord), min_size=3, max_size=6).map(
    lambda pts: Polygon(tuple(v for p in pts for v in p)))
_box = st.tuples(_coord, _coord, st.floats(0, 10).map(lambda v: round(v, 2)),
                 st.floats(0, 10).map(lambda v: round(v, 2))).map(lambda t: Box(*t))
_ann = st.builds(
    lambda shape, label, z: (shape, label, z),
    st.one_of(_polygon, _box), st.integers(0, len(LABELS) - 1), st.integers(-1, 2),
)


def reference_mask(shape, h, w) -> np.ndarray:
    """Independent reference: pycocotools on Datumaro's rounded polygon."""
    if isinstance(shape, Box):
        x0, y0, x1, y1 = np.around([shape.x, shape.y, shape.x + shape.w, shape.y + shape.h], 2)
        pts = [x0, y0, x0 + (x1 - x0), y0, x0 + (x1 - x0), y0 + (y1 - y0), x0, y0 + (y1 - y0)]
    else:
        pts = np.around(shape.points, 2).tolist()
    return coco.decode(coco.frPyObjects([[float(v) for v in pts]], h, w)[0]).astype(bool)


def run(dataset: Dataset, **kw) -> tuple[dict[str, bytes], object]:
    buf = io.BytesIO()
    stats = export_dataset(dataset, buf, **kw)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return {n: z.read(n) for n in z.namelist()}, stats


def rgb(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    return img[:, :, ::-1]


@settings(max_examples=120, deadline=None)
@given(st.lists(_ann, min_size=1, max_size=12), st.integers(1, 12), st.integers(1, 12),
       st.sampled_from([None, "cvat"]))
def test_exclusive_pixels_carry_their_shape(anns, h, w, compat):
    items = [Item("f", "default", h, w,
                  [Annotation(s, lab, z, 0, i) for i, (s, lab, z) in enumerate(anns)])]
    members, stats = run(Dataset(LABELS, items), compat=compat)
    cls, obj = rgb(members["SegmentationClass/f.png"]), rgb(members["SegmentationObject/f.png"])
    masks = [reference_mask(s, h, w) for s, _, _ in anns]
    cover = np.sum(masks, axis=0)
    seen_instances: dict[tuple[int, int, int], int] = {}
    for k, ((_, label, _), m) in enumerate(zip(anns, masks)):
        only = m & (cover == 1)
        if not only.any():
            continue
        assert (cls[only] == LABELS[label].color).all()
        colours = {tuple(c) for c in obj[only]}
        assert len(colours) == 1
        (colour,) = colours
        assert colour != (0, 0, 0) and VOC_INVERSE[colour] >= 1
        assert seen_instances.setdefault(colour, k) == k  # unique per shape
    free = cover == 0
    assert (cls[free] == 0).all() and (obj[free] == 0).all()
    assert members["ImageSets/Segmentation/default.txt"] == b"f\n"
    assert stats.instances == len(anns)


@settings(max_examples=40, deadline=None)
@given(st.lists(_ann, min_size=0, max_size=6), st.integers(1, 8), st.integers(1, 8))
def test_default_equals_cvat_when_nothing_is_lost(anns, h, w):
    items = [Item("a", "default", h, w, [Annotation(s, lab, z) for s, lab, z in anns]),
             Item("b", "default", h, w, [])]
    lossless, _ = run(Dataset(LABELS, items))
    cvat, _ = run(Dataset(LABELS, items), compat="cvat")
    # same members and pixels; PNG bytes differ (compat keeps CVAT's encoder, the default a
    # faster one): the format promises pixels
    assert lossless.keys() == cvat.keys()
    for name, data in lossless.items():
        if name.endswith(".png"):
            assert np.array_equal(rgb(data), rgb(cvat[name])), name
        else:
            assert data == cvat[name], name


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text("abcXYZ_ -", min_size=1, max_size=6).map(str.strip).filter(bool),
                          st.tuples(*[st.integers(0, 255)] * 3)),
                min_size=1, max_size=8, unique_by=lambda t: t[0]))
def test_exported_labelmap_reads_back(pairs):
    lm = [LabelmapEntry(n, c) for n, c in pairs]
    members, _ = run(Dataset([], []), labelmap=lm, compat="cvat")
    back = parse_labelmap(members["labelmap.txt"].decode())
    names = [e.name for e in back]
    assert names == sorted(names)
    expected = {n: c for n, c in pairs}
    expected.setdefault("background", (0, 0, 0))
    assert {e.name: e.color for e in back} == expected


# -- the documented default-mode behaviours ------------------------------------------------


def boxes(n: int, label: int = 0) -> list[Annotation]:
    return [Annotation(Box(i % 30, i // 30, 1, 1), label, id=i) for i in range(n)]


def test_over_255_instances():
    ds = Dataset(LABELS, [Item("many", "default", 20, 30, boxes(300))])
    with pytest.raises(DataLossError, match="--compat cvat") as e:
        run(ds)
    assert e.value.where == "many"
    members, _ = run(ds, compat="cvat")
    obj = rgb(members["SegmentationObject/many.png"])
    assert (obj[8, 15] == 0).all()  # id 256 painted black, as CVAT does
    ok = Dataset(LABELS, [Item("ok", "default", 20, 30, boxes(255))])
    run(ok)


def test_black_label_with_shapes():
    labels = [Label("asphalt", (0, 0, 0)), Label("car", (0, 255, 0))]
    ds = Dataset(labels, [Item("x", "default", 4, 4, boxes(1, label=0))])
    with pytest.raises(DataLossError, match="give label 'asphalt' a distinct colour|Give label"):
        run(ds)
    unused = Dataset(labels, [Item("x", "default", 4, 4, boxes(1, label=1))])
    run(unused)  # no shape of the black label: nothing is lost


def test_shared_colour():
    labels = [Label("a", (1, 2, 3)), Label("b", (1, 2, 3))]
    with pytest.raises(DataLossError, match="share colour"):
        run(Dataset(labels, [Item("x", "default", 4, 4, boxes(1, label=0))]))
    run(Dataset(labels, [Item("x", "default", 4, 4, boxes(1, label=1))]))  # 'b' wins decoding


def test_over_255_labels_paint_true_colours():
    labels = [Label(f"l{i:03d}", (i % 256, i // 256, 7)) for i in range(300)]
    ds = Dataset(labels, [Item("x", "default", 2, 2, [Annotation(Box(0, 0, 1, 1), 290)])])
    members, stats = run(ds)
    assert tuple(rgb(members["SegmentationClass/x.png"])[0, 0]) == (290 % 256, 1, 7)
    assert any("above 255" in w for w in stats.warnings)
    cvat, _ = run(ds, compat="cvat")
    # class index 291 (background first) wraps to 35: the colour of label l034
    assert tuple(rgb(cvat["SegmentationClass/x.png"])[0, 0]) == (34, 0, 7)


def test_same_id_in_two_subsets():
    same = [Item("t1", "train", 3, 3, boxes(1)), Item("t1", "val", 3, 3, boxes(1))]
    members, _ = run(Dataset(LABELS, same))
    assert members["ImageSets/Segmentation/train.txt"] == b"t1\n"
    assert members["ImageSets/Segmentation/val.txt"] == b"t1\n"
    differ = [Item("t1", "train", 3, 3, boxes(1)), Item("t1", "val", 3, 3, boxes(1, label=1))]
    with pytest.raises(DataLossError, match="'train' and 'val'"):
        run(Dataset(LABELS, differ))
    members, _ = run(Dataset(LABELS, differ), compat="cvat")
    assert tuple(rgb(members["SegmentationClass/t1.png"])[0, 0]) == LABELS[1].color  # later wins


def test_nothing_listed():
    items = [Item("p", "default", 3, 3, [Annotation(NonMask("polyline", (0, 0, 1, 1)), 0)])]
    members, stats = run(Dataset(LABELS, items))
    assert members["ImageSets/Segmentation/default.txt"] == b"p\n"
    assert stats.warnings
    cvat, _ = run(Dataset(LABELS, items), compat="cvat")
    assert sorted(cvat) == ["labelmap.txt"]


def test_listing_rules():
    items = [Item("m", "s", 3, 3, boxes(1)), Item("e", "s", 3, 3, []),
             Item("n", "s", 3, 3, [Annotation(NonMask("tag"), 0)]),
             Item("o", "other", None, None, [])]
    members, _ = run(Dataset(LABELS, items))
    assert members["ImageSets/Segmentation/s.txt"] == b"m\ne\n"
    assert members["ImageSets/Segmentation/other.txt"] == b"o\n"
    assert "SegmentationClass/e.png" not in members


def test_label_not_in_labelmap_and_unsafe_ids():
    ds = Dataset(LABELS, [Item("x", "default", 3, 3, boxes(1, label=2))])
    with pytest.raises(InputError, match="'tree' is not in the labelmap") as e:
        run(ds, labelmap=[LabelmapEntry("car", (0, 255, 0))], compat="cvat")
    assert e.value.where.startswith("x:")
    for bad in ("../evil", "/abs", "a//b", "a\\b"):
        with pytest.raises(InputError):
            run(Dataset(LABELS, [Item(bad, "default", 3, 3, boxes(1))]), compat="cvat")
    with pytest.raises(DataLossError):
        run(Dataset(LABELS, [Item("#x", "default", 3, 3, boxes(1))]))
    with pytest.raises(InputError, match="twice"):
        run(Dataset(LABELS, [Item("x", "default", 3, 3, []), Item("x", "default", 3, 3, [])]))


def test_unlabelled_shape_is_skipped_and_bad_label_names():
    labelled = Annotation(Box(0, 0, 2, 2), 0)
    unlabelled = Annotation(Box(1, 1, 2, 2), None, z_order=1)
    ds = Dataset(LABELS, [Item("x", "default", 3, 3, [labelled, unlabelled])])
    members, stats = run(ds)
    assert any("without a label were skipped" in w for w in stats.warnings)
    assert stats.instances == 1
    inst = rgb(members["SegmentationObject/x.png"])
    assert (inst[:2, :2] == VOC_COLORMAP[1]).all()  # not erased by the unlabelled box
    cvat_members, cvat_stats = run(ds, compat="cvat")
    cvat_inst = rgb(cvat_members["SegmentationObject/x.png"])
    assert (cvat_inst[1, 1] == 0).all()  # CVAT: the unlabelled box erases as background
    with pytest.raises(DataLossError, match="':'"):
        run(Dataset([Label("a:b", (1, 1, 1))], []))


def test_colourless_labels_get_free_voc_colours():
    labels = [Label("cat"), Label("thing"), Label("other", (128, 0, 0))]
    members, stats = run(Dataset(labels, []))
    text = members["labelmap.txt"].decode()
    assert "cat:64,0,0::" in text  # the Pascal VOC colour of 'cat'
    colours = [e.color for e in parse_labelmap(text)]
    assert len(set(colours)) == len(colours)
    assert stats.warnings


# -- a naive full-frame reference of FORMAT.md §4, for the optimised paths ----------------


def naive_export(labels: list[Label], item: Item) -> tuple[np.ndarray, np.ndarray]:
    """FORMAT.md §4.2-§4.7 written the slow, obvious way: full-frame masks, np.where."""
    import math

    h, w = item.height, item.width
    names = {lb.name: lb.color for lb in labels}
    names.setdefault("background", (0, 0, 0))
    order = sorted(names)
    bg = next((i for i, n in enumerate(order) if names[n] == (0, 0, 0)), order.index("background"))
    anns = sorted(item.annotations, key=lambda a: a.z_order)
    rot = [a for a in anns if isinstance(a.shape, Box) and a.shape.rotation]
    anns = [a for a in anns if a not in rot] + rot
    segs = []
    for a in anns:
        s = a.shape
        if isinstance(s, NonMask):
            continue
        if isinstance(s, Box):
            x0, y0, x1, y1 = np.around([s.x, s.y, s.x + s.w, s.y + s.h], 2).tolist()
            if s.rotation:
                t = math.radians(s.rotation)
                cx, cy = x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2
                pts = []
                for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
                    pts += [cx + math.cos(t) * (x - cx) - math.sin(t) * (y - cy),
                            cy + math.sin(t) * (x - cx) + math.cos(t) * (y - cy)]
                pts = np.around(pts, 2).tolist()
            else:
                pts = [x0, y0, x0 + (x1 - x0), y0, x0 + (x1 - x0), y0 + (y1 - y0), x0,
                       y0 + (y1 - y0)]
            m = coco.decode(coco.frPyObjects([pts], h, w)[0]).astype(bool)
        elif isinstance(s, Polygon):
            m = coco.decode(coco.frPyObjects([np.around(s.points, 2).tolist()], h, w)[0]) > 0
        else:  # Ellipse
            cx, cy = (s.x1 + s.x2) / 2, (s.y1 + s.y2) / 2
            c = np.zeros((h, w), np.uint8)
            cv2.ellipse(c, (round(cx), round(cy)), (round(s.x2 - cx), round(cy - s.y1)),
                        s.rotation, 0, 360, 255, thickness=-1)
            m = c > 0
        segs.append((m, order.index(labels[a.label].name), a.z_order, a.group))
    segs.sort(key=lambda t: t[3])
    inst = []
    for g in sorted({t[3] for t in segs}):
        members = [t for t in segs if t[3] == g]
        if g == 0 or len(members) == 1:
            inst += members
        else:
            lead = max(members, key=lambda t: t[0].sum())
            inst.append((np.logical_or.reduce([t[0] for t in members]), lead[1], lead[2], g))
    inst.sort(key=lambda t: t[2])
    index = np.zeros((h, w), np.int64)
    cls_map = [bg]
    for pos, (m, c, _, _) in enumerate(inst, start=1):
        index = np.where(m, 0 if c == bg else pos, index)
        cls_map.append(c)
    pal = np.zeros((256, 3), np.uint8)
    for i, n in enumerate(order[:256]):
        pal[i] = names[n]
    cls = np.array(cls_map)[index]
    from smaskd.smask.colormap import VOC_COLORMAP
    return pal[cls.astype(np.uint8)], VOC_COLORMAP[index.astype(np.uint8)]


_ellipse = st.tuples(st.integers(-4, 14), st.integers(-4, 14), st.integers(0, 8),
                     st.integers(0, 8), st.sampled_from([0.0, 20.0, 45.0])).map(
    lambda t: Ellipse(t[0] / 2, t[1] / 2, t[0] / 2 + t[2], t[1] / 2 + t[3], t[4]))
_rot_box = st.tuples(_coord, _coord, st.floats(0, 8).map(lambda v: round(v, 1)),
                     st.floats(0, 8).map(lambda v: round(v, 1)),
                     st.sampled_from([15.0, 30.0, 90.0, 200.0])).map(lambda t: Box(*t))
REF_LABELS = LABELS + [Label("background", (9, 9, 9)), Label("Asphalt", (0, 0, 0))]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(_polygon, _box, _rot_box, _ellipse),
                          st.integers(0, len(REF_LABELS) - 1), st.integers(-1, 2),
                          st.sampled_from([0, 0, 1, 2])),
                min_size=1, max_size=14),
       st.integers(1, 14), st.integers(1, 14))
def test_matches_naive_reference_in_cvat_mode(anns, h, w):
    item = Item("f", "default", h, w,
                [Annotation(s, lab, z, g, i) for i, (s, lab, z, g) in enumerate(anns)])
    members, _ = run(Dataset(REF_LABELS, [item]), compat="cvat")
    cls, obj = naive_export(REF_LABELS, item)
    assert np.array_equal(rgb(members["SegmentationClass/f.png"]), cls)
    assert np.array_equal(rgb(members["SegmentationObject/f.png"]), obj)
