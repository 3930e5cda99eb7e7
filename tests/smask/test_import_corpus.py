"""Real third-party VOC zips (shared corpus): the facts each CASE.md states must hold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from smaskd.geometry.instances import is_placeholder
from smaskd.model import Dataset
from smaskd.smask.load import load_mask_zip
from tests.conftest import CORPUS, needs_corpus

pytestmark = needs_corpus


def _zip(case: str) -> Path:
    path = CORPUS / case / f"{case}.zip"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def _summary(ds: Dataset) -> dict[tuple[str, str], list[tuple[str, int, int]]]:
    """(id, subset) → [(label, group, pixels)] for real (non-placeholder) annotations."""
    return {
        (i.id, i.subset): [
            (ds.labels[a.label].name, a.group, int(a.shape.bitmap.sum()))
            for a in i.annotations if not is_placeholder(a)
        ]
        for i in ds.items
    }


def test_datumaro_voc_dataset1() -> None:
    ds = load_mask_zip(_zip("datumaro-voc-dataset1"))
    assert [lab.name for lab in ds.labels[:22]][:3] == ["background", "aeroplane", "bicycle"]
    assert _summary(ds) == {
        ("2007_000001", "train"): [("bicycle", 1, 200)],
        ("2007_000002", "test"): [],
    }
    sizes = {i.id: (i.height, i.width) for i in ds.items}
    assert sizes == {"2007_000001": (10, 20), "2007_000002": (10, 20)}  # 2nd from the JPEG
    assert not ds.warnings  # the Main/Action/Layout lists and XMLs are simply not used


def test_datumaro_voc_2021_gray_object_mask() -> None:
    ds = load_mask_zip(_zip("datumaro-voc-2021-grayobject"))
    assert _summary(ds) == {
        ("2007_000001", "train"): [("bicycle", 1, 50)],
        ("2007_000002", "test"): [],
    }
    sizes = {i.id: (i.height, i.width) for i in ds.items}
    assert sizes == {"2007_000001": (5, 10), "2007_000002": (10, 20)}
    masked = next(i for i in ds.items if i.id == "2007_000001")
    assert masked.image_path is None  # no JPEG: the size comes from the masks


def test_datumaro_voc_dataset2_empty_segmentation_list() -> None:
    ds = load_mask_zip(_zip("datumaro-voc-dataset2-emptyseg"))
    assert ds.items == []
    names = [lab.name for lab in ds.labels]
    assert len(names) == 22 and names[0] == "background" and names[-1] == "ignored"
    assert ds.labels[-1].color == (224, 224, 192)
    assert ds.labels[20].name == "tvmonitor" and ds.labels[20].color == (0, 64, 128)


def test_labelme_instance_voc_paletted() -> None:
    ds = load_mask_zip(_zip("labelme-instance-voc-paletted"))
    names = [lab.name for lab in ds.labels]
    assert names[0] == "_background_" and names[16] == "potted plant" and len(names) == 21
    got = _summary(ds)
    assert got == {
        ("2011_000003", "default"): [("person", 1, 15662), ("person", 2, 17218),
                                     ("bottle", 3, 873)],
        ("2011_000006", "default"): [("person", 1, 14690), ("person", 2, 11672),
                                     ("person", 3, 7463), ("chair", 4, 44403),
                                     ("person", 5, 991), ("sofa", 7, 14002)],
        ("2011_000025", "default"): [("bus", 1, 102450), ("bus", 2, 15781), ("car", 3, 7256)],
    }
    sizes = {i.id: (i.width, i.height) for i in ds.items}
    assert sizes == {"2011_000003": (500, 338), "2011_000006": (500, 375),
                     "2011_000025": (500, 375)}
    assert any("listed in no ImageSets" in w for w in ds.warnings)
    assert any("class_names.txt" in w for w in ds.warnings)
    # id 6 (labelme's erased ignore polygon) is reserved, so a re-export keeps sofa as id 7
    item6 = next(i for i in ds.items if i.id == "2011_000006")
    assert [a.group for a in item6.annotations if is_placeholder(a)] == [6]


def test_labelme_semantic_voc_class_only() -> None:
    ds = load_mask_zip(_zip("labelme-semantic-voc-classonly"))
    got = {k: sorted(v) for k, v in _summary(ds).items()}
    assert got == {
        ("2011_000003", "default"): [("bottle", 0, 873), ("person", 0, 32900)],
        ("2011_000006", "default"): [("chair", 0, 44306), ("person", 0, 34791),
                                     ("sofa", 0, 14002)],
        ("2011_000025", "default"): [("bus", 0, 118222), ("car", 0, 7256)],
    }
    # background (index 0) and void 255 never become annotations
    labels = Counter(lab for anns in got.values() for lab, _, _ in anns)
    assert "_background_" not in labels
