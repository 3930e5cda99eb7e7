"""README's "Where smaskd differs from CVAT on export": the rows and refusals no other test
pins down (the rest: test_export_properties.py, test_export_golden.py, test_void.py,
tests/annotations/test_coco_roundtrip.py, test_roundtrip_corpus.py)."""

from __future__ import annotations

import pytest

from smaskd.errors import DataLossError, InputError
from smaskd.model import Annotation, Dataset, Item, Label, Polygon
from smaskd.smask.labelmap import LabelmapEntry, parse_labelmap
from tests.smask.test_export_properties import LABELS, boxes, rgb, run


@pytest.mark.parametrize("name", ["a:b", "#tag", "two\nlines", " lead"])
def test_label_names_labelmap_txt_cannot_carry_are_refused_by_default(name: str) -> None:
    ds = Dataset([Label(name, (1, 2, 3))], [Item("x", "default", 3, 3, boxes(1))])
    with pytest.raises(DataLossError, match="cannot be read back"):
        run(ds)
    run(ds, compat="cvat")  # CVAT writes it, unreadable


@pytest.mark.parametrize("item_id", [" x", "x ", "#x", "a\nb"])
def test_item_ids_the_list_file_would_alter_are_refused_by_default(item_id: str) -> None:
    ds = Dataset(LABELS, [Item(item_id, "default", 3, 3, boxes(1))])
    with pytest.raises((DataLossError, InputError)):
        run(ds)


def test_a_used_label_without_colour_in_labelmap_gets_a_free_voc_colour() -> None:
    ds = Dataset(LABELS, [Item("x", "default", 3, 3, boxes(1, label=0))])
    labelmap = [LabelmapEntry("background", (0, 0, 0)), LabelmapEntry("car"),
                LabelmapEntry("Person", (255, 0, 0))]
    members, stats = run(ds, labelmap=labelmap)
    car = next(e.color for e in parse_labelmap(members["labelmap.txt"].decode()) if e.name == "car")
    assert car not in (None, (0, 0, 0), (255, 0, 0))
    assert tuple(rgb(members["SegmentationClass/x.png"])[0, 0]) == car
    assert any("no colour" in w for w in stats.warnings)


@pytest.mark.parametrize("compat", [None, "cvat"])
def test_both_modes_refuse_masks_without_a_frame_and_short_polygons(compat) -> None:
    unsized = Dataset(LABELS, [Item("x", "default", None, None, boxes(1))])
    with pytest.raises(InputError, match="no frame size"):
        run(unsized, compat=compat)
    short = Dataset(LABELS, [Item("x", "default", 3, 3,
                                  [Annotation(Polygon((0, 0, 1, 1)), 0)])])
    with pytest.raises(InputError, match="at least 3 points"):
        run(short, compat=compat)
