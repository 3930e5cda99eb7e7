"""CVAT's export zips ("Datumaro 1.0", "COCO 1.0") export exactly as the JSON they hold.

The zips are built here the way CVAT lays them out (``annotations/<subset>.json`` or
``annotations/instances_<subset>.json`` beside an ``images/`` folder, which is never read),
from the corpus's golden scenes and COCO files, and exported next to the bare JSON.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from smaskd.containers import classify_zip_names, read_annotation_zip, sniff_file
from smaskd.convert import ConvertOptions, convert_file, export_file, resolve_action
from smaskd.errors import InputError, SmaskdError, UnsafeArchiveError
from smaskd.geometry.limits import InputLimits, LimitError
from tests.conftest import CORPUS, GOLDEN, golden_cases, needs_corpus
from tests.smask.test_export_golden import zip_members

COCO_FILES = [
    "labelme-instance-coco/data_dataset_coco/annotations.json",
    "datumaro-coco-instances/coco_instances/annotations/instances_train.json",
    "datumaro-coco-instances/coco_instances/annotations/instances_val.json",
    "cocoapi-fakesegm-results/results/instances_val2014_fakesegm100_results.json",
]


def cvat_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip laid out as CVAT writes its exports (images included, as 'save images' does)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr("images/default/frame_000001.jpg", b"\xff\xd8 not really a jpeg")
    return path


def export_or_error(src: Path, dst: Path, **kw):
    try:
        export_file(src, dst, ConvertOptions(**kw))
    except SmaskdError as e:
        return type(e), e.message
    return zip_members(dst.read_bytes())


@needs_corpus
@pytest.mark.parametrize("scene", golden_cases("s"))
def test_datumaro_export_zip_exports_as_its_json(scene, tmp_path):
    src = GOLDEN / scene / "input" / "annotations.json"
    labelmap = GOLDEN / scene / "input" / "labelmap.txt"
    packed = cvat_zip(tmp_path / "task_datumaro.zip", {"annotations/default.json": src.read_bytes()})
    assert resolve_action(packed, "auto") == "export"
    want = export_or_error(src, tmp_path / "json.zip", labelmap=labelmap, compat="cvat")
    got = export_or_error(packed, tmp_path / "zip.zip", labelmap=labelmap, compat="cvat")
    assert got == want
    assert isinstance(got, dict)  # the golden scenes all export


@needs_corpus
@pytest.mark.parametrize("rel", COCO_FILES)
def test_coco_export_zip_exports_as_its_json(rel, tmp_path):
    src = CORPUS / rel
    stem = Path(rel).stem
    member = stem if stem.startswith("instances_") else "instances_default"
    packed = cvat_zip(tmp_path / "task_coco.zip", {f"annotations/{member}.json": src.read_bytes()})
    want = export_or_error(src, tmp_path / "json.zip", compat="cvat")
    got = export_or_error(packed, tmp_path / "zip.zip", compat="cvat")
    assert got == want


@needs_corpus
def test_subsets_come_from_the_member_names(tmp_path):
    base = CORPUS / "datumaro-coco-instances/coco_instances/annotations"
    packed = cvat_zip(tmp_path / "coco.zip", {
        f"annotations/{n}": (base / n).read_bytes()
        for n in ("instances_train.json", "instances_val.json")})
    ds = read_annotation_zip(packed)
    assert sorted({i.subset for i in ds.items}) == ["train", "val"]
    export_file(packed, tmp_path / "out.zip", ConvertOptions(compat="cvat"))
    names = zip_members((tmp_path / "out.zip").read_bytes())
    assert {"ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"} <= set(names)


def test_kind_comes_from_the_zip_directory(tmp_path):
    assert classify_zip_names(["annotations/default.json", "images/default/a.jpg"]) == "export"
    assert classify_zip_names(["x/annotations/instances_val.json"]) == "export"
    assert classify_zip_names(["task.json", "annotations.json", "data/manifest.jsonl"]) == "backup"
    assert classify_zip_names(["labelmap.txt", "SegmentationClass/a.png"]) == "masks"
    assert classify_zip_names(["ds/SegmentationObject/a.png"]) == "masks"
    assert classify_zip_names(["readme.txt"]) == "masks"  # the mask reader explains
    export = cvat_zip(tmp_path / "e.zip", {"annotations/default.json": b'{"items": []}'})
    masks = tmp_path / "m.zip"
    with zipfile.ZipFile(masks, "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\n")
    with open(export, "rb") as fh:
        assert sniff_file(fh) == "annotations"
    with open(masks, "rb") as fh:
        assert sniff_file(fh) == "masks"
    assert resolve_action(export, "auto") == "export"
    assert resolve_action(masks, "auto") == "import"
    truncated = tmp_path / "t.zip"
    truncated.write_bytes(export.read_bytes()[:-30])  # the directory is not all there yet
    with open(truncated, "rb") as fh:
        assert sniff_file(fh) is None
    with pytest.raises(InputError):
        resolve_action(truncated, "auto")


def test_errors_name_the_zip_and_the_member(tmp_path):
    packed = cvat_zip(tmp_path / "bad.zip", {
        "annotations/default.json": b'{"items": [{"id": 5, "annotations": [{"type": "x"}]}]}'})
    with pytest.raises(InputError) as info:
        convert_file(packed, tmp_path / "o.zip")
    assert "bad.zip: annotations/default.json: items[0]" in str(info.value)
    assert "unsupported annotation type 'x'" in str(info.value)


def test_export_zips_are_vetted_like_mask_zips(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("annotations/default.json", b'{"items": []}')
        z.writestr("../escape.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        read_annotation_zip(evil)


def _tiny_docs() -> dict[str, tuple[str, dict]]:
    """A Datumaro item and a COCO image, each with 3 annotations (the Datumaro item's: 2
    points, which are no mask shapes, and a polygon)."""
    datumaro = {"categories": {"label": {"labels": [{"name": "cat"}]}}, "items": [
        {"id": "a", "image": {"size": [6, 8]}, "annotations": [
            *({"type": "points", "points": [1, 1], "label_id": 0, "id": i} for i in range(2)),
            {"type": "polygon", "points": [1, 1, 6, 1, 6, 4], "label_id": 0, "id": 9}]}]}
    coco = {"images": [{"id": 1, "file_name": "img1.png", "width": 8, "height": 6}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "area": 2.0, "bbox": [1, 1, 2, 2],
                             "segmentation": [[1, 1, 3, 1, 3, 3]]} for i in range(1, 4)]}
    return {"datumaro": ("annotations/default.json", datumaro),
            "coco": ("annotations/instances_default.json", coco)}


@pytest.mark.parametrize("fmt", ["datumaro", "coco"])
def test_a_self_extracting_export_zip_is_exported_as_a_zip(fmt, tmp_path):
    """Sniffing takes a zip behind a self-extractor's prefix for what its directory says (an
    export zip); export_file decided "zip" by the first 4 bytes and read it as JSON."""
    member, doc = _tiny_docs()[fmt]
    packed = cvat_zip(tmp_path / "task.zip", {member: json.dumps(doc).encode()})
    sfx = tmp_path / "task.exe"
    sfx.write_bytes(b"MZ\x90\x00" + bytes(200) + packed.read_bytes())
    with open(sfx, "rb") as fh:
        assert sniff_file(fh) == "annotations"
    assert resolve_action(sfx, "auto") == "export"
    got = export_or_error(sfx, tmp_path / "sfx.zip")
    assert isinstance(got, dict), got
    assert got == export_or_error(packed, tmp_path / "plain.zip")


@pytest.mark.parametrize("fmt", ["datumaro", "coco"])
def test_max_instances_refuses_an_export_zip_as_it_refuses_its_json(fmt, tmp_path):
    """``max_instances`` reached the JSON reader only: the zip was read whole and refused (if
    at all) at plan time, counting mask shapes only (the Datumaro item's points passed)."""
    member, doc = _tiny_docs()[fmt]
    bare = tmp_path / "doc.json"
    bare.write_text(json.dumps(doc))
    packed = cvat_zip(tmp_path / "task.zip", {member: bare.read_bytes()})
    limits = InputLimits(max_instances=2)
    want = export_or_error(bare, tmp_path / "json.zip", limits=limits)
    assert want[0] is LimitError and "the limit is 2 per item (max_instances)" in want[1]
    assert export_or_error(packed, tmp_path / "zip.zip", limits=limits) == want
    assert isinstance(export_or_error(packed, tmp_path / "ok.zip"), dict)  # default limit


@pytest.mark.parametrize("bad_id", [[1], {"id": 1}])
def test_an_unhashable_coco_id_in_an_export_zip_is_an_input_error(bad_id, tmp_path):
    """Counting a zip's annotations per image (max_instances) hashed every ``image_id``: a list
    or an object there was a TypeError (an internal error) where the same JSON is refused
    naming the key."""
    member, doc = _tiny_docs()["coco"]
    doc["annotations"][0]["image_id"] = bad_id
    bare = tmp_path / "doc.json"
    bare.write_text(json.dumps(doc))
    packed = cvat_zip(tmp_path / "task.zip", {member: bare.read_bytes()})
    want = export_or_error(bare, tmp_path / "json.zip")
    assert isinstance(want, tuple) and issubclass(want[0], SmaskdError), want
    assert export_or_error(packed, tmp_path / "zip.zip") == want
