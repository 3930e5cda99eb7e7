"""The COCO, Datumaro and LabelMe readers on small hand-written files, shape by shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smaskd.annotations.detect import decide_format, read_annotation_doc, read_annotation_file
from smaskd.errors import InputError, SmaskdError
from smaskd.geometry.rle import encode_rle
from smaskd.model import BitmapMask, Box, Ellipse, Label, NonMask, Polygon, RleMask


def write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- Datumaro


def dm_doc(annotations, labels=("cat", "dog"), **item) -> dict:
    return {
        "dm_format_version": "1.0",
        "infos": {},
        "categories": {
            "label": {"labels": [{"name": n, "parent": "", "attributes": []} for n in labels]},
            "mask": {"colormap": [{"label_id": 0, "r": 1, "g": 2, "b": 3}]},
        },
        "items": [
            {
                "id": "img/1",
                "annotations": annotations,
                "image": {"path": "img/1.jpg", "size": [4, 6]},
                **item,
            }
        ],
    }


def test_datumaro_every_shape_type_in_order(tmp_path):
    rle = encode_rle(np.ones((4, 6), np.uint8))
    anns = [
        {"id": 1, "type": "label", "label_id": 1, "group": 0, "attributes": {}},
        {
            "id": 2,
            "type": "polygon",
            "label_id": 0,
            "group": 3,
            "z_order": -1,
            "points": [0.1, 0.2, 3, 0, 3.333, 2.5],
            "attributes": {"occluded": False},
        },
        {
            "id": 3,
            "type": "bbox",
            "label_id": 1,
            "group": 3,
            "z_order": 2,
            "bbox": [1, 1.5, 0.30000000000000004, 2],
            "attributes": {"rotation": 30.5, "occluded": True},
        },
        {
            "id": 4,
            "type": "ellipse",
            "label_id": None,
            "points": [1, 1, 3.25, 2.75],
            "attributes": {"rotation": 10},
        },
        {"id": 5, "type": "mask", "label_id": 0, "rle": rle, "z_order": 1},
        {"id": 6, "type": "mask", "label_id": 0, "rle": {"counts": [0, 24], "size": [4, 6]}},
        {"id": 7, "type": "polyline", "label_id": 1, "points": [0, 0, 1, 1]},
        {"id": 8, "type": "points", "label_id": 1, "points": [2, 2], "visibility": [2]},
        {"id": 9, "type": "caption", "caption": "hi"},
        {"id": 10, "type": "skeleton", "label_id": 0, "elements": []},
    ]
    ds = read_annotation_file(write(tmp_path, "a.json", dm_doc(anns)))
    assert ds.source_format == "datumaro"
    assert ds.labels == [Label("cat", (1, 2, 3)), Label("dog", None)]
    (item,) = ds.items
    assert (item.id, item.subset, item.height, item.width, item.image_path) == (
        "img/1",
        "default",
        4,
        6,
        "img/1.jpg",
    )
    a = item.annotations
    assert [x.id for x in a] == list(range(1, 11))
    assert a[0].shape == NonMask("tag") and a[0].label == 1
    assert a[1].shape == Polygon((0.1, 0.2, 3, 0, 3.333, 2.5))
    assert (a[1].label, a[1].group, a[1].z_order, a[1].attributes) == (
        0,
        3,
        -1,
        {"occluded": False},
    )
    assert a[2].shape == Box(1, 1.5, 0.30000000000000004, 2, 30.5)
    assert a[2].attributes == {"occluded": True} and a[2].z_order == 2
    assert a[3].shape == Ellipse(1, 1, 3.25, 2.75, 10) and a[3].label is None
    assert a[4].shape == RleMask(rle["counts"], 4, 6) and a[4].z_order == 1
    assert a[5].shape == RleMask((0, 24), 4, 6)
    assert a[6].shape == NonMask("polyline", (0, 0, 1, 1))
    assert a[7].shape == NonMask("points", (2, 2))
    assert a[8].shape == NonMask("caption") and a[8].label is None
    assert a[9].shape == NonMask("skeleton")
    assert isinstance(a[1].shape.points[2], int)  # raw numbers, not rounded or converted


def test_datumaro_subsets(tmp_path):
    doc = dm_doc([])
    doc["items"].append({"id": "2", "subset": "val", "annotations": []})
    ds = read_annotation_file(write(tmp_path, "annotations/train.json", doc))
    assert [(i.id, i.subset) for i in ds.items] == [("img/1", "train"), ("2", "val")]
    ds = read_annotation_file(write(tmp_path, "elsewhere/train.json", doc))
    assert [i.subset for i in ds.items] == ["default", "val"]
    assert ds.items[1].height is None


def test_datumaro_out_of_range_label_names_item_and_annotation(tmp_path):
    p = write(
        tmp_path,
        "a.json",
        dm_doc([{"id": 42, "type": "bbox", "label_id": 2, "bbox": [0, 0, 1, 1]}]),
    )
    with pytest.raises(InputError) as e:
        read_annotation_file(p)
    assert (
        e.value.where == "a.json: items[0].annotations[0].label_id (item 'img/1', annotation id 42)"
    )
    assert "out of range" in e.value.message


def test_datumaro_rle_size_mismatch_is_a_warning(tmp_path):
    ds = read_annotation_file(
        write(
            tmp_path,
            "a.json",
            dm_doc(
                [{"id": 5, "type": "mask", "label_id": 0, "rle": {"counts": "06", "size": [2, 3]}}]
            ),
        )
    )
    assert ds.items[0].annotations[0].shape == RleMask("06", 2, 3)
    assert "2x3 differs from the image size 4x6" in ds.warnings[0]


@pytest.mark.parametrize(
    "ann, path, message",
    [
        ({"type": "polygon", "points": [0, 0, 1, 1]}, "annotations[0].points", "at least 6"),
        ({"type": "polygon", "points": [0, 0, 1, 1, 2]}, "annotations[0].points", "multiple of 2"),
        (
            {"type": "polygon", "points": [0, 0, 1, "1", 2, 2]},
            "annotations[0].points[3]",
            "expected a number",
        ),
        ({"type": "bbox", "bbox": [0, 0, 1]}, "annotations[0].bbox", "expected 4 numbers"),
        (
            {"type": "bbox", "bbox": [0, 0, 1, 1], "attributes": {"rotation": "9"}},
            "annotations[0].attributes.rotation",
            "expected a number",
        ),
        ({"type": "ellipse", "points": None}, "annotations[0].points", "expected a list, got null"),
        (
            {"type": "mask", "rle": {"counts": "06", "size": [2, 4]}},
            "annotations[0].rle.counts",
            "sum to 6",
        ),
        (
            {"type": "mask", "rle": {"counts": "0\x7f", "size": [2, 3]}},
            "annotations[0].rle.counts",
            "outside",
        ),
        (
            {"type": "mask", "rle": {"counts": "0", "size": [1, 0]}},
            "annotations[0].rle.size[1]",
            ">= 1",
        ),
        (
            {"type": "mask", "rle": {"counts": [1, -1, 6], "size": [2, 3]}},
            "annotations[0].rle.counts",
            "negative",
        ),
        (
            {"type": "mask", "rle": {"counts": "06", "size": [2]}},
            "annotations[0].rle.size",
            "height, width",
        ),
        (
            {"type": "mask", "rle": {"counts": "06", "size": [100000, 100000]}},
            "annotations[0].rle.size",
            "limit",
        ),
        (
            {"type": "mask", "rle": {"counts": "1P", "size": [1, 1]}},
            "annotations[0].rle.counts",
            "truncated",
        ),
        ({"type": "rotated_bbox"}, "annotations[0].type", "unsupported annotation type"),
        ({"type": 3}, "annotations[0].type", "expected a string"),
        ({"type": "label", "label_id": -1}, "annotations[0].label_id", ">= 0"),
        ({"type": "label", "label_id": True}, "annotations[0].label_id", "boolean"),
        ({"type": "label", "group": "1"}, "annotations[0].group", "integer"),
        ({"type": "label", "attributes": [1]}, "annotations[0].attributes", "expected an object"),
        ("nope", "annotations[0]", "expected an object"),
    ],
)
def test_datumaro_errors_name_the_json_path(tmp_path, ann, path, message):
    p = write(tmp_path, "a.json", dm_doc([ann]))
    with pytest.raises(InputError) as e:
        read_annotation_file(p)
    assert e.value.where.startswith(f"a.json: items[0].{path}")
    assert message in e.value.message


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d.update(items={}), "a.json"),  # not recognisable as Datumaro any more
        (lambda d: d["items"].append(5), "a.json: items[1]"),
        (lambda d: d["items"][0].update(image={"size": [0, 3]}), "a.json: items[0].image.size[0]"),
        (lambda d: d["items"][0].update(id=None), "a.json: items[0].id"),
        (lambda d: d["items"].append({"id": "img/1", "annotations": []}), "a.json: items[1].id"),
        (
            lambda d: d["categories"]["label"]["labels"].append({"name": "cat"}),
            "a.json: categories.label.labels[2].name",
        ),
        (
            lambda d: d["categories"]["mask"]["colormap"].append(
                {"label_id": 7, "r": 0, "g": 0, "b": 0}
            ),
            "a.json: categories.mask.colormap[1].label_id",
        ),
        (
            lambda d: d["categories"]["mask"]["colormap"].append(
                {"label_id": 1, "r": 256, "g": 0, "b": 0}
            ),
            "a.json: categories.mask.colormap[1].r",
        ),
        (lambda d: d.update(categories=[1]), "a.json: categories"),
    ],
)
def test_datumaro_structure_errors(tmp_path, mutate, where):
    doc = dm_doc([])
    mutate(doc)
    with pytest.raises(InputError) as e:
        read_annotation_file(write(tmp_path, "a.json", doc))
    assert e.value.where.startswith(where)


def test_datumaro_integer_item_id_is_accepted(tmp_path):
    doc = dm_doc([])
    doc["items"][0]["id"] = 7
    assert read_annotation_file(write(tmp_path, "a.json", doc)).items[0].id == "7"


# --------------------------------------------------------------------------- COCO


def coco_doc(annotations, **extra) -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "sub/dir/a.b.jpg", "width": 6, "height": 4},
            {"id": 0, "file_name": "empty.png", "width": 3, "height": 3},
        ],
        "categories": [
            {"id": 4, "name": "c", "color": "#0a0B0c"},
            {"id": 1, "name": "a", "color": [1, 2, 3]},
            {"id": 2, "name": "b"},
        ],
        "annotations": annotations,
        **extra,
    }


def test_coco_shapes_groups_and_labels(tmp_path):
    rle = encode_rle(np.eye(4, 6, dtype=np.uint8))
    anns = [
        {
            "id": 0,
            "image_id": 10,
            "category_id": 4,
            "iscrowd": 0,
            "bbox": [0, 0, 3, 3],
            "segmentation": [[0, 0, 3, 0, 3, 3], [4, 0, 5, 0, 5, 2, 4, 2]],
        },
        {"id": 7, "image_id": 10, "category_id": 2, "iscrowd": 1, "segmentation": rle},
        {
            "id": 8,
            "image_id": 10,
            "category_id": 1,
            "segmentation": {"counts": [0, 24], "size": [4, 6]},
        },
        {
            "id": 9,
            "image_id": 10,
            "category_id": 1,
            "segmentation": [],
            "bbox": [1, 1, 2.5, 1],
            "attributes": {"occluded": False, "rotation": 45.0},
        },
        {"id": 11, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1]},
    ]
    ds = read_annotation_file(write(tmp_path, "annotations/instances_val.json", coco_doc(anns)))
    assert ds.source_format == "coco"
    assert ds.labels == [Label("a", (1, 2, 3)), Label("b"), Label("c", (10, 11, 12))]
    assert [(i.id, i.subset, i.height, i.width) for i in ds.items] == [
        ("sub/dir/a.b", "val", 4, 6),
        ("empty", "val", 3, 3),
    ]
    a = ds.items[0].annotations
    assert [(x.id, x.label, x.group) for x in a] == [
        (0, 2, 1),
        (0, 2, 1),
        (7, 1, 2),
        (8, 0, 3),
        (9, 0, 4),
        (11, 1, 5),
    ]
    assert a[0].shape == Polygon((0, 0, 3, 0, 3, 3)) and a[1].shape == Polygon(
        (4, 0, 5, 0, 5, 2, 4, 2)
    )
    assert a[2].shape == RleMask(rle["counts"], 4, 6) and a[2].attributes == {"is_crowd": True}
    assert a[3].shape == RleMask((0, 24), 4, 6)
    assert a[4].shape == Box(1, 1, 2.5, 1, 45.0) and a[4].attributes == {"occluded": False}
    assert a[5].shape == Box(0, 0, 1, 1)
    assert ds.items[1].annotations == []


def test_coco_subset_is_default_without_instances_name(tmp_path):
    ds = read_annotation_file(write(tmp_path, "export.json", coco_doc([])))
    assert {i.subset for i in ds.items} == {"default"}


@pytest.mark.parametrize(
    "ann, where, message",
    [
        (
            {"id": 1, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]},
            "annotations[0].image_id",
            "no image",
        ),
        (
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [0, 0, 1, 1]},
            "annotations[0].category_id",
            "no category",
        ),
        (
            {"id": 1, "image_id": 10, "category_id": 1, "segmentation": []},
            "annotations[0]",
            "neither",
        ),
        (
            {"id": 1, "image_id": 10, "category_id": 1, "segmentation": [0, 0, 1, 0, 1, 1]},
            "annotations[0].segmentation",
            "list of polygons",
        ),
        (
            {"id": 1, "image_id": 10, "category_id": 1, "segmentation": [[0, 0, 1, 0]]},
            "annotations[0].segmentation[0]",
            "at least 6",
        ),
        (
            {
                "id": 1,
                "image_id": 10,
                "category_id": 1,
                "segmentation": {"counts": [6], "size": [2, 3]},
            },
            "annotations[0].segmentation.size",
            "differs from the image size",
        ),
        (
            {
                "id": 1,
                "image_id": 10,
                "category_id": 1,
                "segmentation": {"counts": [6, "x"], "size": [2, 3]},
            },
            "annotations[0].segmentation.counts[1]",
            "integer",
        ),
        (
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 2, "bbox": [0, 0, 1, 1]},
            "annotations[0].iscrowd",
            "<= 1",
        ),
        (
            {"id": "x", "image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]},
            "annotations[0].id",
            "integer",
        ),
    ],
)
def test_coco_annotation_errors(tmp_path, ann, where, message):
    with pytest.raises(InputError) as e:
        read_annotation_file(write(tmp_path, "c.json", coco_doc([ann])))
    assert e.value.where.startswith(f"c.json: {where}")
    assert message in e.value.message


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d["images"].append({"id": 10, "file_name": "z.jpg"}), "c.json: images[2].id"),
        (
            lambda d: d["images"].append({"id": 11, "file_name": "empty.jpg"}),
            "c.json: images[2].file_name",
        ),
        (
            lambda d: d["images"].append({"id": 11, "file_name": "q.jpg", "width": 3}),
            "c.json: images[2]",
        ),
        (lambda d: d["images"].append({"id": [1], "file_name": "q.jpg"}), "c.json: images[2].id"),
        (lambda d: d["categories"].append({"id": 1, "name": "z"}), "c.json: categories"),
        (lambda d: d["categories"].append({"id": 9, "name": "a"}), "c.json: categories"),
        (
            lambda d: d["categories"].append({"id": 9, "name": "z", "color": "red"}),
            "c.json: categories[3].color",
        ),
        (lambda d: d.update(annotations={"a": 1}), "c.json: annotations"),
    ],
)
def test_coco_structure_errors(tmp_path, mutate, where):
    doc = coco_doc([])
    mutate(doc)
    with pytest.raises(InputError) as e:
        read_annotation_file(write(tmp_path, "c.json", doc))
    assert e.value.where.startswith(where)


def test_coco_results_list_is_read_by_image_and_category_id(tmp_path):
    rle = encode_rle(np.ones((2, 3), np.uint8))
    doc = [
        {"image_id": 42, "category_id": 18, "segmentation": rle, "score": 0.5},
        {"image_id": 7, "category_id": 2, "segmentation": rle, "score": 0.25},
        {"image_id": 42, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.125},
    ]
    ds = read_annotation_file(write(tmp_path, "results.json", doc))
    assert ds.source_format == "coco-results"
    assert ds.labels == [Label("2"), Label("18")]
    assert [(i.id, i.height, i.width, len(i.annotations)) for i in ds.items] == [
        ("42", 2, 3, 2),
        ("7", 2, 3, 1),
    ]
    assert ds.items[0].annotations[0].attributes == {"score": 0.5}
    assert "category_id" in ds.warnings[0]


def test_coco_results_without_any_size_is_refused(tmp_path):
    doc = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    with pytest.raises(InputError, match="frame sizes only through RLE"):
        read_annotation_file(write(tmp_path, "r.json", doc))


# --------------------------------------------------------------------------- LabelMe


def png_b64(mask: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8))
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def lm_doc(shapes, **extra) -> dict:
    return {
        "version": "5.7.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": "..\\imgs\\pic.v2.jpg",
        "imageData": None,
        "imageHeight": 20,
        "imageWidth": 30,
        **extra,
    }


def shape(label, kind, points, group_id=None, **extra) -> dict:
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "shape_type": kind,
        "flags": {},
        **extra,
    }


def test_labelme_every_shape_type(tmp_path):
    bitmap = np.zeros((3, 4), np.uint8)
    bitmap[1, 1:3] = 1
    shapes = [
        shape("b", "rectangle", [[5, 6], [1.5, 2]]),
        shape("a", "circle", [[10, 10], [13, 14]]),
        shape("b", "polygon", [[0, 0], [4, 0], [4, 4]], group_id=0),
        shape("b", "polygon", [[8, 0], [9, 0], [9, 1]], group_id=0),
        shape("a", "polygon", [[8, 0], [9, 0], [9, 1]], group_id=0),
        shape("m", "mask", [[-1.7, 2.9], [2.3, 4.9]], mask=png_b64(bitmap), description="x"),
        shape("l", "line", [[0, 0], [1, 1]]),
        shape("l", "linestrip", [[0, 0], [1, 1], [2, 0.5]]),
        shape("p", "point", [[3, 3]]),
        shape("p", "points", [[3, 3], [4, 4]]),
        {"label": "old", "points": [[0, 0], [1, 0], [1, 1]]},  # labelme 3: no shape_type
    ]
    ds = read_annotation_file(write(tmp_path, "pic.json", lm_doc(shapes)))
    assert ds.source_format == "labelme"
    assert [lab.name for lab in ds.labels] == ["b", "a", "m", "l", "p", "old"]
    (item,) = ds.items
    assert (item.id, item.subset, item.height, item.width) == ("pic.v2", "default", 20, 30)
    a = item.annotations
    assert a[0].shape == Box(1.5, 2, 3.5, 4)
    assert a[1].shape == Ellipse(5.0, 5.0, 15.0, 15.0)
    assert a[2].shape == Polygon((0, 0, 4, 0, 4, 4))
    assert [x.group for x in a] == [1, 2, 3, 3, 4, 5, 0, 0, 0, 0, 6]  # (label, group_id) = instance
    assert isinstance(a[5].shape, BitmapMask)
    assert (a[5].shape.left, a[5].shape.top) == (-1, 2)  # labelme's astype(int) truncation
    assert a[5].shape.bitmap.tolist() == bitmap.astype(bool).tolist()
    assert a[5].attributes == {"description": "x"}
    assert a[6].shape == NonMask("polyline", (0, 0, 1, 1))
    assert a[7].shape == NonMask("polyline", (0, 0, 1, 1, 2, 0.5))
    assert a[8].shape == NonMask("points", (3, 3))
    assert a[9].shape == NonMask("points", (3, 3, 4, 4))
    assert [x.label for x in a] == [0, 1, 0, 0, 1, 2, 3, 3, 4, 4, 5]
    assert [x.id for x in a] == list(range(1, 12))


def test_labelme_item_id_falls_back_to_file_name(tmp_path):
    ds = read_annotation_file(write(tmp_path, "frame7.json", lm_doc([], imagePath=None)))
    assert ds.items[0].id == "frame7"
    ds = read_annotation_file(write(tmp_path, "x.json", lm_doc([])), name="claimed__orig.json")
    assert ds.items[0].id == "pic.v2"


@pytest.mark.parametrize(
    "bad, where, message",
    [
        (shape("a", "rectangle", [[0, 0], [1, 1], [2, 2]]), "shapes[0].points", "needs 2 points"),
        (shape("a", "polygon", [[0, 0], [1, 1]]), "shapes[0].points", "at least 3"),
        (shape("a", "polygon", [[0, 0, 1], [1, 1], [2, 2]]), "shapes[0].points[0]", "[x, y]"),
        (
            shape("a", "polygon", [[0, "0"], [1, 1], [2, 2]]),
            "shapes[0].points[0][1]",
            "expected a number",
        ),
        (shape("a", "rotation", [[0, 0], [1, 1]]), "shapes[0].shape_type", "unsupported"),
        (shape(None, "point", [[0, 0]]), "shapes[0].label", "expected a string"),
        (shape("a", "point", [[0, 0]], group_id="g"), "shapes[0].group_id", "integer"),
        (shape("a", "mask", [[0, 0], [1, 1]], mask="***"), "shapes[0].mask", "base64"),
        (
            shape("a", "mask", [[0, 0], [1, 1]], mask=base64.b64encode(b"GIF89a").decode()),
            "shapes[0].mask",
            "not a PNG",
        ),
        (shape("a", "mask", [[0, 0], [1, 1]]), "shapes[0].mask", "expected a string"),
        ([1], "shapes[0]", "expected an object"),
    ],
)
def test_labelme_errors(tmp_path, bad, where, message):
    with pytest.raises(InputError) as e:
        read_annotation_file(write(tmp_path, "pic.json", lm_doc([bad])))
    assert e.value.where.startswith(f"pic.json: {where}")
    assert message in e.value.message


def test_labelme_size_must_come_in_pairs(tmp_path):
    with pytest.raises(InputError, match="imageWidth"):
        read_annotation_file(write(tmp_path, "p.json", lm_doc([], imageWidth=None)))


def test_labelme_ignore_label_is_kept_with_a_warning(tmp_path):
    ds = read_annotation_file(
        write(tmp_path, "p.json", lm_doc([shape("__ignore__", "point", [[0, 0]])]))
    )
    assert ds.labels == [Label("__ignore__")]
    assert "__ignore__" in ds.warnings[0]


# --------------------------------------------------------------------------- detection


def test_detect_by_content_not_name():
    assert decide_format(dm_doc([]), "auto", "x.json") == "datumaro"
    assert decide_format(coco_doc([]), "auto", "x.json") == "coco"
    assert decide_format([{"image_id": 1, "segmentation": {}}], "auto", "x.json") == "coco"
    assert decide_format(lm_doc([]), "auto", "x.json") == "labelme"


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"version": 0, "tags": [], "shapes": [], "tracks": []}, "CVAT's REST API annotations"),
        (
            {"task": {"1": {"version": 0, "tags": [], "shapes": [], "tracks": []}}, "job": {}},
            "CVAT's REST API",
        ),
        ({"count": 1, "next": None, "previous": None, "results": []}, "REST API listing"),
        ([], "empty list"),
        ([1, 2], "unrecognised"),
        ({"hello": 1}, "unrecognised"),
        ("text", "not an object but str"),
    ],
)
def test_detect_refuses_with_a_clear_message(doc, message):
    with pytest.raises(InputError, match=message):
        decide_format(doc, "auto", "x.json")
    with pytest.raises(InputError, match=message):
        read_annotation_doc(doc, "auto", "x.json")


def test_forced_format_that_contradicts_content_is_refused():
    with pytest.raises(InputError, match="'labelme' was requested, but the content is coco"):
        read_annotation_doc(coco_doc([]), "labelme", "x.json")
    assert read_annotation_doc(coco_doc([]), "coco", "x.json").source_format == "coco"
    with pytest.raises(InputError, match="unknown annotation format"):
        read_annotation_doc(coco_doc([]), "voc", "x.json")


def test_forced_format_reads_what_detection_does_not_recognise():
    with pytest.raises(InputError) as e:
        read_annotation_doc({"hello": 1}, "datumaro", "x.json")
    assert e.value.where == "x.json: items"


# --------------------------------------------------------------------------- fuzz

_KEYS = [
    "items",
    "annotations",
    "categories",
    "label",
    "labels",
    "mask",
    "colormap",
    "name",
    "id",
    "type",
    "points",
    "bbox",
    "rle",
    "counts",
    "size",
    "label_id",
    "group",
    "z_order",
    "attributes",
    "rotation",
    "image",
    "subset",
    "images",
    "file_name",
    "width",
    "height",
    "image_id",
    "category_id",
    "segmentation",
    "iscrowd",
    "color",
    "shapes",
    "shape_type",
    "group_id",
    "imagePath",
    "imageHeight",
    "imageWidth",
    "tracks",
    "r",
    "g",
    "b",
]
_WORDS = [
    "polygon",
    "bbox",
    "ellipse",
    "mask",
    "label",
    "points",
    "polyline",
    "rectangle",
    "circle",
    "line",
    "point",
    "06",
    "#ffffff",
    "a.jpg",
]
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.floats(allow_nan=False)
    | st.sampled_from(_WORDS)
    | st.text(max_size=3)
)
fuzz_values = st.recursive(
    _leaves,
    lambda kids: (
        st.lists(kids, max_size=6) | st.dictionaries(st.sampled_from(_KEYS), kids, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_values, st.sampled_from(["auto", "coco", "datumaro", "labelme"]))
def test_fuzz_readers_raise_only_smaskd_errors(doc, fmt):
    try:
        read_annotation_doc(doc, fmt, "annotations/fuzz.json")
    except SmaskdError:
        pass


def _paths(value, prefix=()):
    """Every (path) into a JSON value, containers included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _valid_docs() -> list:
    rle = encode_rle(np.eye(4, 6, dtype=np.uint8))
    dm = dm_doc(
        [
            {"id": 1, "type": "polygon", "label_id": 0, "points": [0, 0, 3, 0, 3, 2]},
            {
                "id": 2,
                "type": "bbox",
                "label_id": 1,
                "bbox": [0, 0, 2, 2],
                "attributes": {"rotation": 5},
            },
            {"id": 3, "type": "ellipse", "label_id": 1, "points": [0, 0, 2, 2]},
            {"id": 4, "type": "mask", "label_id": 0, "rle": rle},
            {"id": 5, "type": "points", "label_id": 0, "points": [1, 1]},
        ]
    )
    coco = coco_doc(
        [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 1,
                "segmentation": [[0, 0, 3, 0, 3, 3]],
                "bbox": [0, 0, 3, 3],
            },
            {"id": 2, "image_id": 10, "category_id": 2, "iscrowd": 1, "segmentation": rle},
            {"id": 3, "image_id": 0, "category_id": 4, "segmentation": [], "bbox": [0, 0, 1, 1]},
        ]
    )
    results = [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.5}]
    bitmap = png_b64(np.ones((2, 2), np.uint8))
    lm = lm_doc(
        [
            shape("a", "polygon", [[0, 0], [4, 0], [4, 4]], 1),
            shape("b", "circle", [[5, 5], [6, 6]]),
            shape("c", "mask", [[1, 1], [2, 2]], mask=bitmap),
            shape("d", "linestrip", [[0, 0], [1, 1]]),
        ]
    )
    return [dm, coco, results, lm]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_documents(data):
    """Replace one subtree of a valid document: the readers get deep before they fail."""
    doc = json.loads(json.dumps(data.draw(st.sampled_from(_valid_docs()))))
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(fuzz_values)
    try:
        read_annotation_doc(
            doc,
            data.draw(st.sampled_from(["auto", "coco", "datumaro", "labelme"])),
            "annotations/fuzz.json",
        )
    except SmaskdError:
        pass
