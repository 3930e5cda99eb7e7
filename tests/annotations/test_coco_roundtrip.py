"""smaskd's own COCO reads back with nothing lost: subsets, instance ids, the background.

Each case reads the same file whole (``read_annotation_file``) and streamed
(``read_annotations_compact``, the export's reader) and requires the same result; third-party
COCO without these fields reads as before (tests/annotations/test_readers.py).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from smaskd.annotations.detect import read_annotations_compact
from smaskd.annotations.detect import read_annotation_file
from smaskd.convert import ConvertOptions, export_file, import_file
from smaskd.errors import InputError
from smaskd.model import RleMask
from smaskd.smask.colormap import voc_color
from tests.annotations.test_compact import check_same
from tests.conftest import GOLDEN, needs_corpus, run_cli
from tests.smask.test_decode import rgb_png, zip_bytes


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": list(mask.shape)}


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _write(tmp_path: Path, doc: dict, name: str = "annotations.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _read_both(path: Path):
    check_same(path, streamed=True)
    dataset = read_annotations_compact(path)
    return dataset, list(dataset.items)


def _export(path: Path, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / "back.zip"
    export_file(path, out, ConvertOptions(compat="cvat"))
    with zipfile.ZipFile(out) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _objects(data: bytes) -> np.ndarray:
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    ids = {voc_color(i): i for i in range(256)}
    return np.array([[ids[tuple(p)] for p in row] for row in rgb.tolist()])


CATS = [{"id": 1, "name": "car", "color": [255, 0, 0]}]


def test_subsets_are_read_back_and_one_id_may_be_in_two_subsets(tmp_path: Path) -> None:
    m = _box(4, 5, 1, 3, 1, 3)
    doc = {
        "categories": CATS,
        "images": [{"id": 1, "file_name": "a.png", "width": 5, "height": 4, "subset": "train"},
                   {"id": 2, "file_name": "a.png", "width": 5, "height": 4, "subset": "val"},
                   {"id": 3, "file_name": "b.png", "width": 5, "height": 4}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": _rle(m),
                         "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0} for i in (1, 2, 3)],
    }
    path = _write(tmp_path, doc, "instances_test.json")
    _, items = _read_both(path)
    assert [(i.subset, i.id) for i in items] == [("train", "a"), ("val", "a"), ("test", "b")]
    files = _export(path, tmp_path)
    lists = {n: files[n] for n in files if n.startswith("ImageSets/")}
    assert lists == {"ImageSets/Segmentation/train.txt": b"a\n",
                     "ImageSets/Segmentation/val.txt": b"a\n",
                     "ImageSets/Segmentation/test.txt": b"b\n"}

    doc["images"][1]["subset"] = "train"
    with pytest.raises(InputError, match="same item id 'a' in subset 'train'"):
        read_annotation_file(_write(tmp_path, doc))
    doc["images"][1]["subset"] = 7
    with pytest.raises(InputError, match=r"images\[1\]\.subset"):
        read_annotation_file(_write(tmp_path, doc))


@pytest.mark.parametrize("name,subset", [
    ("instances_val2017.json", "val2017"),
    ("person_keypoints_train.json", "train"),
    ("stuff_val.json", "val"),
    ("captions_val.json", "default"),
    ("annotations.json", "default"),
])
def test_common_coco_file_names_name_the_subset(tmp_path: Path, name: str, subset: str) -> None:
    doc = {"categories": CATS, "images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []}
    _, items = _read_both(_write(tmp_path, doc, name))
    assert items[0].subset == subset


def test_instance_ids_are_honoured_and_unused_ids_reserved(tmp_path: Path) -> None:
    """Ids 2 and 5 stay 2 and 5; the annotation without an id follows max_instance_id (6)."""
    h, w = 4, 8
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(_box(h, w, 0, 2, 0, 2)),
         "attributes": {"instance_id": 5}},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": _rle(_box(h, w, 0, 2, 3, 5)),
         "attributes": {"instance_id": 2, "occluded": False}},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[6, 0, 8, 0, 8, 2, 6, 2]]},
    ]
    doc = {"info": {"background_label": {"name": "background", "color": [0, 0, 0]}},
           "categories": CATS,
           "images": [{"id": 1, "file_name": "a.png", "width": w, "height": h,
                       "max_instance_id": 6}],
           "annotations": anns}
    path = _write(tmp_path, doc)
    dataset, items = _read_both(path)
    groups = sorted((a.group, dataset.labels[a.label].name, isinstance(a.shape, RleMask)
                     and a.shape.counts == (h * w,)) for a in items[0].annotations)
    assert groups == [(1, "background", True), (2, "car", False), (3, "background", True),
                      (4, "background", True), (5, "car", False), (6, "background", True),
                      (7, "car", False)]
    assert "instance_id" not in items[0].annotations[1].attributes
    obj = _objects(_export(path, tmp_path)["SegmentationObject/a.png"])
    assert obj[0, 0] == 5 and obj[0, 3] == 2 and obj[0, 6] == 7

    # a file without ids (or without a background) numbers instances in file order, as before
    for ann in anns:
        ann.pop("attributes", None)
    del doc["images"][0]["max_instance_id"]
    _, items = _read_both(_write(tmp_path, doc))
    assert [a.group for a in items[0].annotations] == [1, 2, 3]

    # ids past the VOC palette's 255 cannot be reproduced: nothing is reserved beyond them
    doc["images"][0]["max_instance_id"] = 65535
    _, items = _read_both(_write(tmp_path, doc))
    assert len(items[0].annotations) == 3 + 255
    assert [a.group for a in items[0].annotations[:3]] == [65536, 65537, 65538]
    del doc["images"][0]["max_instance_id"]

    anns[0]["attributes"] = {"instance_id": -1}
    with pytest.raises(InputError, match=r"annotations\[0\]\.attributes\.instance_id"):
        read_annotation_file(_write(tmp_path, doc))


def test_the_background_colour_travels_in_info(tmp_path: Path) -> None:
    """A zip whose background is red comes back red (before: black, unless --labelmap)."""
    labelmap = "background:255,0,0::\ncar:0,0,255::\n"
    cls = rgb_png(np.array([[(255, 0, 0), (0, 0, 255)]], np.uint8))
    obj = rgb_png(np.array([[(0, 0, 0), voc_color(1)]], np.uint8))
    src = tmp_path / "red.zip"
    src.write_bytes(zip_bytes({"labelmap.txt": labelmap, "ImageSets/Segmentation/d.txt": "a\n",
                               "SegmentationClass/a.png": cls,
                               "SegmentationObject/a.png": obj}).getvalue())
    js, back = tmp_path / "red.json", tmp_path / "back.zip"
    assert run_cli("import", src, "-o", js).returncode == 0
    doc = json.loads(js.read_text())
    assert doc["info"]["background_label"] == {"name": "background", "color": [255, 0, 0]}
    assert [c["name"] for c in doc["categories"]] == ["car"]  # still no background category
    assert run_cli("export", js, "-o", back, "--compat", "cvat").returncode == 0
    with zipfile.ZipFile(back) as zf:
        png = zf.read("SegmentationClass/a.png")
        assert b"background:255,0,0::" in zf.read("labelmap.txt")
    rgb = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert rgb.tolist() == [[[255, 0, 0], [0, 0, 255]]]


@needs_corpus
def test_pycocotools_loads_every_annotation(tmp_path: Path) -> None:
    """Third-party readers see plain COCO: the extra fields trip nothing."""
    src = GOLDEN / "s07a_masks" / "expected" / "export.zip"
    for polygons in (False, True):
        out = tmp_path / f"s07a-{polygons}.json"
        import_file(src, out, ConvertOptions(polygons=polygons))
        coco = COCO(str(out))
        anns = coco.loadAnns(coco.getAnnIds())
        assert anns and all(coco.annToMask(a).sum() > 0 for a in anns)
        assert all(a["category_id"] in coco.cats for a in anns)
        assert all(a["attributes"]["instance_id"] > 0 for a in anns)
        res = coco.loadRes(anns)
        assert len(res.getAnnIds()) == len(anns)


# README "Where smaskd differs from CVAT": the two cases it names besides the table.


def test_category_id_0_is_an_ordinary_category(tmp_path: Path) -> None:
    """labelme's ``_background_`` (id 0): painted in its own colour; CVAT gives it no label."""
    m = _box(3, 4, 0, 2, 0, 2)
    doc = {"categories": [{"id": 0, "name": "_background_"}, {"id": 1, "name": "car",
                                                              "color": [255, 0, 0]}],
           "images": [{"id": 0, "file_name": "a.jpg", "width": 4, "height": 3}],
           "annotations": [{"id": 1, "image_id": 0, "category_id": 0, "segmentation": _rle(m)}]}
    path = _write(tmp_path, doc)
    out = tmp_path / "out.zip"
    result = export_file(path, out, ConvertOptions())
    assert any("_background_" in w and "no colour" in w for w in result.warnings)
    with zipfile.ZipFile(out) as zf:
        lines = dict(ln.split(":", 2)[:2] for ln in zf.read("labelmap.txt").decode().splitlines()
                     if not ln.startswith("#"))
        png = zf.read("SegmentationClass/a.png")
    color = [int(v) for v in lines["_background_"].split(",")]
    assert color != [0, 0, 0]
    rgb = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert rgb[0, 0].tolist() == color and rgb[2, 3].tolist() == [0, 0, 0]


def test_a_mask_whose_size_differs_from_its_frame_is_refused(tmp_path: Path) -> None:
    """COCO: when read; Datumaro JSON: read with a warning, refused by the export (both modes)."""
    small = _rle(_box(2, 3, 0, 2, 0, 3))
    coco = {"categories": CATS, "images": [{"id": 1, "file_name": "a.png", "width": 6,
                                            "height": 4}],
            "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "segmentation": small}]}
    with pytest.raises(InputError, match=r"annotation id 9.*RLE size 2x3 differs from the image "
                                         r"size 4x6"):
        read_annotation_file(_write(tmp_path, coco))
    dm = {"dm_format_version": "1.0", "categories": {"label": {"labels": [{"name": "car"}]}},
          "items": [{"id": "a", "image": {"size": [4, 6]}, "annotations": [
              {"id": 3, "type": "mask", "label_id": 0, "rle": small}]}]}
    path = _write(tmp_path, dm, "dm.json")
    for compat in (None, "cvat"):
        with pytest.raises(InputError, match=r"annotation 3.*2x3 \(h x w\) differs from the "
                                             r"frame 4x6"):
            export_file(path, tmp_path / "out.zip", ConvertOptions(compat=compat))


def test_an_image_of_another_size_does_not_change_the_masks_frame() -> None:
    from smaskd.smask.load import load_mask_zip

    jpg = cv2.imencode(".jpg", np.zeros((7, 11, 3), np.uint8))[1].tobytes()
    cls = rgb_png(np.array([[(255, 0, 0), (0, 0, 0)]], np.uint8))
    obj = rgb_png(np.array([[voc_color(1), (0, 0, 0)]], np.uint8))
    ds = load_mask_zip(zip_bytes({"labelmap.txt": "background:0,0,0::\ncar:255,0,0::\n",
                                  "ImageSets/Segmentation/d.txt": "a\n", "JPEGImages/a.jpg": jpg,
                                  "SegmentationClass/a.png": cls,
                                  "SegmentationObject/a.png": obj}))
    item = ds.items[0]
    assert (item.height, item.width, item.image_path) == (1, 2, "JPEGImages/a.jpg")


def test_category_id_0_named_background_is_the_background(tmp_path: Path) -> None:
    """The exception README names: the background label's shapes erase, as in CVAT."""
    doc = {"categories": [{"id": 0, "name": "background"}, {"id": 1, "name": "car",
                                                            "color": [255, 0, 0]}],
           "images": [{"id": 0, "file_name": "a.jpg", "width": 4, "height": 3}],
           "annotations": [
               {"id": 1, "image_id": 0, "category_id": 1,
                "segmentation": _rle(_box(3, 4, 0, 3, 0, 4))},
               {"id": 2, "image_id": 0, "category_id": 0,
                "segmentation": _rle(_box(3, 4, 0, 2, 0, 2))}]}
    files = _export(_write(tmp_path, doc), tmp_path)
    rgb = cv2.imdecode(np.frombuffer(files["SegmentationClass/a.png"], np.uint8),
                       cv2.IMREAD_COLOR)[:, :, ::-1]
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[2, 3].tolist() == [255, 0, 0]
    assert _objects(files["SegmentationObject/a.png"])[0, 0] == 0
