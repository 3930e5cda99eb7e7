"""Every JSON file of the shared corpus reads into a Dataset or fails with InputError, and the
facts each CASE.md states (items, instances, labels, pixel counts) come out of the readers."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from smaskd.annotations.detect import read_annotation_file
from smaskd.errors import InputError
from smaskd.geometry.rle import decode_rle
from smaskd.model import BitmapMask, Box, Dataset, Ellipse, Label, NonMask, Polygon, RleMask
from tests.conftest import CORPUS, GOLDEN, corpus_available, needs_corpus

pytestmark = [
    needs_corpus,
    # pycocotools 2.0.x under numpy 2 (its decode, not our code)
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def corpus_json_files() -> list[str]:
    if not corpus_available():
        return []
    files = [p for p in CORPUS.rglob("*.json") if GOLDEN not in p.parents]
    files += GOLDEN.glob("s*/input/annotations.json")
    return sorted(str(p.relative_to(CORPUS)) for p in files)


def read(rel: str) -> Dataset:
    return read_annotation_file(CORPUS / rel)


def instances(item, exclude_label: int | None = None) -> int:
    """Instances = distinct groups of area shapes (every reader numbers ungrouped ones apart)."""
    return len(
        {
            a.group
            for a in item.annotations
            if not isinstance(a.shape, NonMask) and a.label != exclude_label
        }
    )


@pytest.mark.parametrize("rel", corpus_json_files())
def test_every_corpus_json_reads_or_fails_with_input_error(rel):
    try:
        ds = read(rel)
    except InputError as e:
        assert e.where and str(e)
        return
    assert isinstance(ds, Dataset)
    for item in ds.items:
        for a in item.annotations:
            assert a.label is None or 0 <= a.label < len(ds.labels)


def test_datumaro_coco_instances():
    train = read("datumaro-coco-instances/coco_instances/annotations/instances_train.json")
    assert [lab.name for lab in train.labels] == ["a", "b", "c"]
    (item,) = train.items
    assert (item.id, item.subset, item.width, item.height) == ("a", "train", 10, 5)
    (ann,) = item.annotations
    assert ann.shape == Box(2, 2, 3, 1) and train.labels[ann.label].name == "b"

    val = read("datumaro-coco-instances/coco_instances/annotations/instances_val.json")
    (item,) = val.items
    assert (item.id, item.subset, item.width, item.height) == ("b", "val", 5, 10)
    poly, mask = item.annotations
    assert poly.shape == Polygon((0.0, 0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 2.0))
    assert val.labels[poly.label].name == "a" and poly.attributes == {
        "x": 1,
        "y": "hello",
        "is_crowd": False,
    }
    assert mask.shape == RleMask((0, 20, 30), 10, 5) and val.labels[mask.label].name == "b"
    assert mask.attributes["is_crowd"] is True
    pixels = decode_rle(mask.shape.counts, 10, 5)
    assert pixels.tolist() == [[1, 1, 0, 0, 0]] * 10


def test_labelme_instance_coco():
    ds = read("labelme-instance-coco/data_dataset_coco/annotations.json")
    names = [lab.name for lab in ds.labels]
    assert len(names) == 21 and names[0] == "_background_"
    assert "potted plant" in names and "tv/monitor" in names and "__ignore__" not in names
    assert [(i.id, i.width, i.height) for i in ds.items] == [
        ("JPEGImages/2011_000003", 500, 338),
        ("JPEGImages/2011_000025", 500, 375),
        ("JPEGImages/2011_000006", 500, 375),
    ]
    assert [instances(i) for i in ds.items] == [3, 3, 6]
    assert [len(i.annotations) for i in ds.items] == [4, 3, 9]  # 2-ring person, 4-ring sofa
    rings = Counter((i.id, a.group) for i in ds.items for a in i.annotations)
    assert sorted(rings.values()) == [1] * 10 + [2, 4]
    sofa = [a for a in ds.items[2].annotations if names[a.label] == "sofa"]
    assert len(sofa) == 4 and len({a.group for a in sofa}) == 1 and sofa[0].group != 0


def test_cvat_datumaro_diverse():
    root = "cvat-datumaro-json-diverse/diverse/annotations/"
    with pytest.raises(InputError) as e:
        read(root + "train.json")
    assert "item '21'" in e.value.where and "annotation id 42" in e.value.where
    assert "label_id 5 is out of range" in e.value.message

    default = read(root + "default.json")
    assert [lab.name for lab in default.labels] == [f"cat{i}" for i in range(5)]
    assert [lab.color for lab in default.labels] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
    ]
    assert [(i.id, i.subset, i.height, i.width, i.image_path) for i in default.items] == [
        ("42", "default", None, None, None),
        ("43", "default", 2, 4, "43.qq"),
    ]

    test = read(root + "test.json")
    assert [(i.id, i.subset) for i in test.items] == [("1", "test"), ("42", "test")]
    assert test.items[0].annotations[0].shape == NonMask("cuboid_3d")
    assert test.items[1].annotations == []

    val = read(root + "val.json")
    (item,) = val.items
    assert item.subset == "val"
    assert [type(a.shape).__name__ for a in item.annotations] == ["NonMask", "Polygon"]
    assert item.annotations[0].shape.kind == "polyline"
    assert [a.label for a in item.annotations] == [None, None]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("labelme-instance-json", {"2011_000003": 3, "2011_000006": 6, "2011_000025": 3}),
        ("labelme-semantic-json", {"2011_000003": 4, "2011_000006": 9, "2011_000025": 3}),
    ],
)
def test_labelme_instances(case, expected):
    for stem, count in expected.items():
        ds = read(f"{case}/data_annotated/{stem}.json")
        (item,) = ds.items
        names = [lab.name for lab in ds.labels]
        ignore = names.index("__ignore__") if "__ignore__" in names else None
        assert item.id == stem
        assert instances(item, exclude_label=ignore) == count
    ds = read(f"{case}/data_annotated/2011_000003.json")
    assert (ds.items[0].width, ds.items[0].height) == (500, 338)
    assert {lab.name for lab in ds.labels} == {"person", "bottle", "__ignore__"}


def test_labelme_video():
    for frame in range(100, 105):
        ds = read(f"labelme-video-json/data_annotated/{frame:08d}.json")
        (item,) = ds.items
        assert (item.id, item.width, item.height) == (f"{frame:08d}", 1000, 563)
        assert [lab.name for lab in ds.labels] == ["track", "car"]
        assert [len(a.shape.points) // 2 for a in item.annotations][0] == 14
        assert [len(a.shape.points) // 2 for a in item.annotations][1:] == [8, 8]
        assert instances(item) == 3


def test_labelme_tutorial_embedded():
    ds = read("labelme-tutorial-embedded-json/apc2016_obj3.json")
    (item,) = ds.items
    assert (item.id, item.width, item.height) == ("apc2016_obj3", 1210, 907)
    assert [lab.name for lab in ds.labels] == [
        "shelf",
        "highland_6539_self_stick_notes",
        "mead_index_cards",
        "kong_air_dog_squeakair_tennis_ball",
    ]
    assert [len(a.shape.points) // 2 for a in item.annotations] == [4, 10, 9, 28]


def test_labelme_primitives():
    ds = read("labelme-primitives-json/primitives/primitives.json")
    (item,) = ds.items
    assert (item.id, item.width, item.height) == ("primitives", 560, 450)
    assert [lab.name for lab in ds.labels] == [
        "rectangle",
        "circle",
        "polygon",
        "line",
        "point",
        "line_strip",
        "octagon",
    ]
    a = [x.shape for x in item.annotations]
    assert a[0] == Box(32.0, 35.0, 100.0, 100.0)
    r = math.sqrt(30**2 + 41**2)
    assert a[1] == Ellipse(195 - r, 84 - r, 195 + r, 84 + r)
    assert a[2] == Box(391.0, 33.0, 151.0, 102.0)
    assert isinstance(a[3], Polygon) and len(a[3].points) == 8
    assert [s.kind for s in a[4:7]] == ["polyline", "points", "polyline"]
    assert isinstance(a[7], BitmapMask)
    assert (a[7].left, a[7].top, a[7].bitmap.shape) == (417, 305, (100, 100))
    assert int(np.count_nonzero(a[7].bitmap)) == 7275


def test_cocoapi_fake_results():
    ds = read("cocoapi-fakesegm-results/results/instances_val2014_fakesegm100_results.json")
    assert ds.source_format == "coco-results"
    anns = [(i, a) for i in ds.items for a in i.annotations]
    assert len(anns) == 734 and len(ds.items) == 99 and len(ds.labels) == 75
    assert Counter(ds.labels[a.label].name for _, a in anns)["1"] == 201
    assert len({(i.height, i.width) for i in ds.items}) == 50
    first = ds.items[0]
    assert (first.id, first.height, first.width) == ("42", 478, 640)
    assert ds.labels[first.annotations[0].label] == Label("18")
    sizes = [int(decode_rle(a.shape.counts, a.shape.height, a.shape.width).sum()) for _, a in anns]
    assert (
        sizes[0] == 53487 and sum(sizes) == 7_766_804 and min(sizes) == 17 and max(sizes) == 270_901
    )


def test_cvat_rest_files_are_refused_by_name():
    with pytest.raises(InputError, match="CVAT's REST API annotations JSON"):
        read("cvat-rest-api-annotations/assets/annotations.json")
    for name in ("labels", "tasks", "jobs"):
        with pytest.raises(InputError, match="REST API listing"):
            read(f"cvat-rest-api-annotations/assets/{name}.json")


def _golden_scenes() -> list[dict]:
    if not corpus_available():
        return []
    return json.loads((GOLDEN / "manifest.json").read_text())["scenes"]


@pytest.mark.parametrize("scene", _golden_scenes(), ids=lambda s: s["id"])
def test_golden_scene_is_read_exactly(scene):
    path = GOLDEN / scene["id"] / "input" / "annotations.json"
    raw = json.loads(path.read_text())
    ds = read_annotation_file(path)
    assert len(ds.items) == scene["items"]
    assert len(ds.labels) == scene["labels"]
    assert sum(len(i.annotations) for i in ds.items) == scene["shapes"]
    cmap = {c["label_id"]: (c["r"], c["g"], c["b"]) for c in raw["categories"]["mask"]["colormap"]}
    assert ds.labels == [
        Label(lab["name"], cmap.get(i))
        for i, lab in enumerate(raw["categories"]["label"]["labels"])
    ]
    for item, raw_item in zip(ds.items, raw["items"], strict=True):
        assert (item.id, item.subset) == (raw_item["id"], raw_item["subset"])
        assert [item.height, item.width] == raw_item["image"]["size"]
        for a, r in zip(item.annotations, raw_item["annotations"], strict=True):
            assert (a.id, a.label, a.group, a.z_order) == (
                r["id"],
                r["label_id"],
                r["group"],
                r.get("z_order", 0),
            )
            s = a.shape
            if r["type"] == "polygon":
                assert s == Polygon(tuple(r["points"]))
            elif r["type"] == "bbox":
                assert s == Box(*r["bbox"], r["attributes"].get("rotation", 0.0))
            elif r["type"] == "ellipse":
                assert s == Ellipse(*r["points"], r["attributes"].get("rotation", 0.0))
            elif r["type"] == "mask":
                assert s == RleMask(r["rle"]["counts"], *r["rle"]["size"])
            else:
                assert isinstance(s, NonMask)
                assert s.kind == {"label": "tag"}.get(r["type"], r["type"])
