"""The VOC void value on import: kept as the ``ignored`` label whenever the label set has one
(as CVAT keeps it with its VOC defaults), dropped with a warning that says so otherwise."""

from __future__ import annotations

import numpy as np

from smaskd.geometry.instances import is_placeholder
from smaskd.smask.colormap import voc_color
from smaskd.smask.load import load_mask_zip
from tests.smask.test_decode import png, rgb_png, zip_bytes

VOID_RGB = (224, 224, 192)
LIST = {"ImageSets/Segmentation/train.txt": "a\n"}


def _rgb(rows: list[list[tuple[int, int, int]]]) -> bytes:
    return rgb_png(np.array(rows, np.uint8))


def _real(ds) -> dict[int, str]:
    item = ds.items[0]
    return {a.group: ds.labels[a.label].name for a in item.annotations if not is_placeholder(a)}


def _void_warnings(ds) -> list[str]:
    return [w for w in ds.warnings if "void" in w]


def test_voc_defaults_keep_the_rgb_border_as_an_ignored_instance() -> None:
    """No labelmap: CVAT's VOC defaults; the border (void in both masks) is instance 255."""
    car = voc_color(7)
    cls = _rgb([[car, VOID_RGB, (0, 0, 0)]])
    obj = _rgb([[voc_color(1), voc_color(255), (0, 0, 0)]])
    ds = load_mask_zip(zip_bytes({**LIST, "SegmentationClass/a.png": cls,
                                  "SegmentationObject/a.png": obj}))
    assert _real(ds) == {1: "car", 255: "ignored"}
    assert not _void_warnings(ds)


def test_index_and_paletted_void_take_the_ignored_label() -> None:
    """Index 255 in a 1-channel PNG (CVAT: 'Undeclared label') and palette entry 255 of the
    VOC palette (CVAT: by colour) both become ``ignored``, class-only items included."""
    gray = png(np.array([[7, 255, 0]], np.uint8), 0)
    plte = [voc_color(i) for i in range(256)]
    paletted = png(np.array([[7, 255, 0]], np.uint8), 3, plte=plte)
    for cls in (gray, paletted):
        ds = load_mask_zip(zip_bytes({**LIST, "SegmentationClass/a.png": cls}))
        names = {ds.labels[a.label].name for a in ds.items[0].annotations}
        assert names == {"car", "ignored"}, cls[:30]
        assert not _void_warnings(ds)


def test_labelmap_declaring_ignored_keeps_void_whatever_its_colour() -> None:
    labelmap = "background:0,0,0::\ncar:255,0,0::\nignored:1,2,3::\n"
    cls = _rgb([[(255, 0, 0), VOID_RGB]])
    obj = _rgb([[voc_color(1), voc_color(2)]])
    ds = load_mask_zip(zip_bytes({**LIST, "labelmap.txt": labelmap,
                                  "SegmentationClass/a.png": cls,
                                  "SegmentationObject/a.png": obj}))
    assert _real(ds) == {1: "car", 2: "ignored"}


def test_without_ignored_void_is_dropped_with_a_correct_warning() -> None:
    labelmap = "background:0,0,0::\ncar:255,0,0::\n"
    cls = _rgb([[(255, 0, 0), VOID_RGB, VOID_RGB]])
    obj = _rgb([[voc_color(1), voc_color(255), (0, 0, 0)]])
    ds = load_mask_zip(zip_bytes({**LIST, "labelmap.txt": labelmap,
                                  "SegmentationClass/a.png": cls,
                                  "SegmentationObject/a.png": obj}))
    assert _real(ds) == {1: "car"}
    (warning,) = _void_warnings(ds)
    assert "no 'ignored' label" in warning and "'a' (instance(s) 255 dropped)" in warning
    assert "CVAT refuses" in warning and "background" not in warning
    assert not any("only on background" in w for w in ds.warnings)

    # class-only, labelme's class_names.txt (no 'ignored'): the pixels go, the warning says so
    ds = load_mask_zip(zip_bytes({**LIST, "class_names.txt": "_background_\ncar\n",
                                  "SegmentationClass/a.png": png(np.array([[1, 255]], np.uint8), 0)}))
    assert [ds.labels[a.label].name for a in ds.items[0].annotations] == ["car"]
    assert len(_void_warnings(ds)) == 1 and "'a'" in _void_warnings(ds)[0]
