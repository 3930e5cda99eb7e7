"""Round-trip properties over random datasets (issue 3, "How it is checked").

* export → import gives back every instance's visible pixels and its label: what a later
  shape covers is gone (the format keeps one instance per pixel), nothing else is;
* import → export → import is stable: the second import equals the first.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd.geometry.instances import is_placeholder
from smaskd.geometry.rle import full_frame
from smaskd.model import Annotation, BitmapMask, Dataset, Item, Label
from smaskd.smask.export import export_dataset
from smaskd.smask.load import load_mask_zip

LABELS = [Label("background", (0, 0, 0)), Label("car", (250, 50, 83)),
          Label("road", (128, 64, 128)), Label("tree", (0, 200, 0))]


@st.composite
def masks(draw, height: int, width: int) -> Annotation:
    h = draw(st.integers(1, height))
    w = draw(st.integers(1, width))
    top = draw(st.integers(-2, height - 1))
    left = draw(st.integers(-2, width - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    bitmap = np.random.default_rng(seed).random((h, w)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    label = draw(st.integers(1, len(LABELS) - 1))
    return Annotation(shape=BitmapMask(left, top, bitmap), label=label)


@st.composite
def datasets(draw) -> Dataset:
    items = []
    for index in range(draw(st.integers(1, 3))):
        height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        anns = draw(st.lists(masks(height, width), max_size=6))
        anns = [Annotation(a.shape, a.label, id=i + 1) for i, a in enumerate(anns)]
        subset = draw(st.sampled_from(["default", "train", "val"]))
        items.append(Item(f"img{index}", subset, height, width, anns))
    return Dataset(labels=list(LABELS), items=items)


def _export(ds: Dataset) -> bytes:
    out = io.BytesIO()
    export_dataset(ds, out)
    return out.getvalue()


def _import(data: bytes) -> Dataset:
    return load_mask_zip(io.BytesIO(data))


def _visible(item: Item) -> set[tuple[str, bytes]]:
    """Each annotation's pixels that no later annotation covers (equal z: later on top)."""
    top = np.full((item.height, item.width), -1)
    for i, ann in enumerate(item.annotations):
        top[full_frame(ann.shape, item.height, item.width) > 0] = i
    out = set()
    for i, ann in enumerate(item.annotations):
        mask = (top == i).astype(np.uint8)
        if mask.any():
            out.add((LABELS[ann.label].name, mask.tobytes()))
    return out


def _instances(ds: Dataset) -> dict[tuple[str, str], set[tuple[str, bytes]]]:
    names = [lab.name for lab in ds.labels]
    return {(item.id, item.subset): {
        (names[a.label], full_frame(a.shape, item.height, item.width).astype(bool)
         .astype(np.uint8).tobytes())
        for a in item.annotations if not is_placeholder(a)} for item in ds.items}


@settings(max_examples=120, deadline=None)
@given(datasets())
def test_export_then_import_gives_back_every_visible_instance(ds: Dataset) -> None:
    back = _import(_export(ds))
    got = _instances(back)
    for item in ds.items:
        key = (item.id, item.subset)
        assert got.get(key, set()) == _visible(item), key


@settings(max_examples=120, deadline=None)
@given(datasets())
def test_import_export_import_is_stable(ds: Dataset) -> None:
    first = _import(_export(ds))
    second = _import(_export(first))
    assert _instances(second) == _instances(first)
    assert [lab.name for lab in second.labels] == [lab.name for lab in first.labels]
