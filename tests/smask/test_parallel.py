"""Items of one job over several processes: same bytes, same errors, same order as one process.

Helpers are real child interpreters. ``PoolPolicy(main_works=False)`` makes the calling
process hand out every item, so these tests know the helpers did the work (they assert the
count) instead of hoping the scheduler sent them some.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
import zipfile

import numpy as np
import pytest

from smaskd.annotations.write import write_annotations
from smaskd.errors import InputError, InternalError
from smaskd.geometry.rle import encode_rle
from smaskd.importjob import import_masks
from smaskd.model import Annotation, Box, Dataset, Ellipse, Item, Label, Polygon, RleMask
from smaskd.pngio import decode_png
from smaskd.smask.export import export_dataset
from smaskd.smask.load import load_mask_zip
from smaskd.smask.parallel import PoolPolicy, PoolStats, ordered_map
from tests.conftest import GOLDEN, golden_cases

HELPERS_ONLY = PoolPolicy(min_items=0, min_pixels=0, main_works=False)
SHARED = PoolPolicy(min_items=0, min_pixels=0, main_works=True)
LABELS = [Label("background", (0, 0, 0)), Label("car", (0, 255, 0)), Label("person", (255, 0, 0)),
          Label("tree", (10, 20, 30))]


def scene(n: int = 12, h: int = 40, w: int = 56, seed: int = 3) -> Dataset:
    """Polygons, boxes (one rotated), ellipses, brush masks, groups and z-orders, seeded."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        anns = []
        for j in range(int(rng.integers(1, 9))):
            kind = j % 4
            label = int(rng.integers(1, len(LABELS)))
            x, y = float(rng.uniform(-5, w)), float(rng.uniform(-5, h))
            if kind == 0:
                pts = rng.uniform(-4, [w + 4, h + 4], size=(int(rng.integers(3, 8)), 2))
                shape = Polygon(tuple(np.round(pts, 2).ravel().tolist()))
            elif kind == 1:
                shape = Box(x, y, float(rng.uniform(1, 20)), float(rng.uniform(1, 20)),
                            30.0 if j == 5 else 0.0)
            elif kind == 2:
                shape = Ellipse(x, y, x + float(rng.uniform(1, 15)), y + float(rng.uniform(1, 15)))
            else:
                m = np.zeros((h, w), np.uint8)
                m[int(rng.integers(0, h)):, int(rng.integers(0, w)):int(rng.integers(0, w)) + 5] = 1
                rle = encode_rle(m)
                shape = RleMask(rle["counts"], h, w)
            anns.append(Annotation(shape, label, int(rng.integers(-1, 3)), j // 3, j + 1))
        items.append(Item(f"img{k:03d}", "train" if k % 3 else "val", h, w, anns))
    items.append(Item("empty", "train", h, w, []))
    return Dataset(LABELS, items)


def export_bytes(dataset: Dataset, **kw) -> tuple[bytes, object]:
    buf = io.BytesIO()
    stats = export_dataset(dataset, buf, **kw)
    return buf.getvalue(), stats


def masked(dataset: Dataset) -> int:
    return sum(1 for it in dataset.items if it.annotations)


def assert_same_zip(one: bytes, two: bytes) -> None:
    """Same members in the same order, same bytes, PNGs pixel-equal (the format's promise).

    PNG bytes come from ISA-L's deflate and are equal too in every run seen; the test holds
    them to pixels so that a deflate build choosing another code path cannot fail it.
    """
    with zipfile.ZipFile(io.BytesIO(one)) as a, zipfile.ZipFile(io.BytesIO(two)) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            x, y = a.read(name), b.read(name)
            if name.endswith(".png"):
                assert np.array_equal(decode_png(x), decode_png(y)), name
            else:
                assert x == y, name


@pytest.mark.parametrize("compat", [None, "cvat"])
def test_export_over_helpers_is_the_same_zip(compat):
    ds = scene()
    one, s1 = export_bytes(ds, compat=compat)
    two, s2 = export_bytes(ds, compat=compat, jobs=2, policy=HELPERS_ONLY)
    assert s1.parallel.helper_items == 0
    assert s2.parallel.helpers == 2 and s2.parallel.helper_items == masked(ds)
    assert_same_zip(one, two)
    assert (s1.items, s1.instances, s1.png_pairs, s1.warnings) == \
        (s2.items, s2.instances, s2.png_pairs, s2.warnings)
    with zipfile.ZipFile(io.BytesIO(two)) as z:
        assert z.namelist()[0] == "labelmap.txt"
        assert sum(n.startswith("SegmentationClass/") for n in z.namelist()) == masked(ds)


def test_export_shared_with_the_caller_is_the_same_zip():
    ds = scene(n=30)
    one, _ = export_bytes(ds)
    two, stats = export_bytes(ds, jobs=2, policy=SHARED)
    assert_same_zip(one, two)
    assert stats.parallel.helper_items + stats.parallel.local_items == masked(ds)


def test_small_exports_stay_in_one_process():
    _, stats = export_bytes(scene(n=3), jobs=4)  # default policy: not worth a helper
    assert stats.parallel.helpers == 0 and stats.parallel.local_items == 3


def test_error_in_a_helper_is_the_single_process_error():
    ds = scene(n=8)
    bad = ds.items[5]
    bad.annotations.append(Annotation(Ellipse(30, 10, 20, 20), 1, 0, 0, 99))  # x2 < x1
    with pytest.raises(InputError) as one:
        export_bytes(ds)
    with pytest.raises(InputError) as two:
        export_bytes(ds, jobs=2, policy=HELPERS_ONLY)
    assert type(one.value) is type(two.value)
    assert str(one.value) == str(two.value)
    assert "img005: annotation 99" in str(two.value) and "inverted" in str(two.value)


def test_first_error_in_input_order_wins():
    ds = scene(n=10)
    for k in (7, 2):  # two bad items; item 2 must be reported, whoever renders it first
        ds.items[k].annotations.append(Annotation(Ellipse(30, 10, 20, 20), 1, 0, 0, 90 + k))
    with pytest.raises(InputError, match="img002: annotation 92"):
        export_bytes(ds, jobs=3, policy=HELPERS_ONLY)


# -- import --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_zip() -> bytes:
    data, _ = export_bytes(scene(n=16))
    return data


@pytest.mark.parametrize("fmt,polygons", [("coco", False), ("datumaro", False), ("coco", True)])
def test_import_over_helpers_is_the_same_json(scene_zip, fmt, polygons):
    expected = io.BytesIO()
    write_annotations(load_mask_zip(io.BytesIO(scene_zip)), expected, fmt, polygons)
    got = io.BytesIO()
    stats = import_masks(io.BytesIO(scene_zip), got, fmt=fmt, polygons=polygons, jobs=2,
                         policy=HELPERS_ONLY)
    assert stats.parallel.helper_items == 16
    assert got.getvalue() == expected.getvalue()


def test_import_error_in_a_helper_names_the_member(scene_zip):
    src = zipfile.ZipFile(io.BytesIO(scene_zip))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            if n == "SegmentationClass/img009.png":  # a colour no label has
                import cv2
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                img[3, 4] = (1, 2, 3)
                data = cv2.imencode(".png", img)[1].tobytes()
            z.writestr(n, data)
    with pytest.raises(InputError) as one:
        import_masks(io.BytesIO(out.getvalue()), io.BytesIO())
    with pytest.raises(InputError) as two:
        import_masks(io.BytesIO(out.getvalue()), io.BytesIO(), jobs=2, policy=HELPERS_ONLY)
    assert str(one.value) == str(two.value)
    assert str(two.value).startswith("SegmentationClass/img009.png: undeclared colour (3, 2, 1)")
    assert "first at (x=4, y=3)" in str(two.value)


@pytest.mark.parametrize("case", golden_cases("s")[:6] + golden_cases("imp"))
def test_streaming_import_equals_load_then_write(case):
    """The import job (one process) writes what load_mask_zip + write_annotations write."""
    d = GOLDEN / case
    archive = next((d / "input").glob("*.zip")) if case.startswith("imp") else \
        d / "expected" / "export.zip"
    try:
        dataset = load_mask_zip(archive)
    except InputError as e:
        with pytest.raises(InputError) as exc:
            import_masks(archive, io.BytesIO())
        assert str(exc.value) == str(e)
        return
    expected = io.BytesIO()
    write_annotations(dataset, expected)
    got = io.BytesIO()
    stats = import_masks(archive, got)
    assert got.getvalue() == expected.getvalue()
    assert stats.warnings == dataset.warnings


# -- the pool itself -----------------------------------------------------------------------


def square(context: int, task: int) -> tuple[int, int]:
    """A helper task: fails on request, or takes the helper down."""
    if task == context:
        raise InputError(f"task {task} refused", f"item {task}")
    if task == -1:
        os._exit(3)
    return task, task * task


def test_results_come_back_in_input_order_with_errors_in_turn():
    stats = PoolStats()
    out = list(ordered_map(square, 1000, range(40), 2, HELPERS_ONLY, stats))
    assert out == [(i, i * i) for i in range(40)]
    assert stats.helpers == 2 and stats.helper_items == 40
    results = ordered_map(square, 25, range(40), 2, HELPERS_ONLY)
    got = []
    with pytest.raises(InputError, match="item 25: task 25 refused"):
        for r in results:
            got.append(r)
    assert got == [(i, i * i) for i in range(25)]


def test_a_helper_that_dies_is_an_internal_error_naming_the_task():
    with pytest.raises(InternalError, match=r"helper process \d+ ended unexpectedly .* task -1"):
        list(ordered_map(square, 1000, [1, 2, -1, 4], 1, HELPERS_ONLY,
                         describe=lambda t: f"task {t}"))


def _in_daemonic_process(queue) -> None:  # pragma: no cover - runs in the child
    stats = PoolStats()
    out = list(ordered_map(square, 1000, range(6), 1, HELPERS_ONLY, stats))
    queue.put((out, stats.helper_items))


def test_helpers_work_inside_a_daemonic_worker_process():
    """The daemon's workers are daemon=True (no multiprocessing children): helpers still run."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_daemonic_process, args=(queue,), daemon=True)
    proc.start()
    out, helper_items = queue.get(timeout=60)
    proc.join(60)
    assert out == [(i, i * i) for i in range(6)] and helper_items == 6
    assert proc.exitcode == 0


def slow_in_helpers(parent_pid: int, task: int) -> int:
    # a starved helper: 15x slower than the caller
    time.sleep(0.3 if os.getpid() != parent_pid else 0.02)
    return task * 2


def test_the_caller_takes_back_work_from_a_slow_helper():
    stats = PoolStats()
    out = list(ordered_map(slow_in_helpers, os.getpid(), range(30), 1, SHARED, stats))
    assert out == [t * 2 for t in range(30)]  # order kept whoever did what
    assert stats.local_items + stats.helper_items == 30
    assert stats.local_items > stats.helper_items  # the caller did not sit waiting


# -- the knobs -----------------------------------------------------------------------------


def test_rule_options_take_jobs_and_refuse_nonsense():
    from smaskd.convert import ConvertOptions

    assert ConvertOptions().jobs == 1  # the library and the daemon: one process per job
    assert ConvertOptions.from_mapping({"jobs": 2}).jobs == 2
    for bad in (0, -1, True, "2", 1.5, 10_000):
        with pytest.raises(InputError, match=r"rules\[0\]\.options\.jobs: expected an integer"):
            ConvertOptions.from_mapping({"jobs": bad}, "rules[0].options")


def test_cli_jobs_flag(tmp_path):
    from tests.conftest import run_cli

    src = tmp_path / "in.json"
    src.write_text(json.dumps({
        "categories": {"label": {"labels": [{"name": "car"}]}},
        "items": [{"id": "a", "image": {"size": [4, 5]}, "annotations": [
            {"id": 1, "type": "bbox", "label_id": 0, "bbox": [1, 1, 2, 2]}]}],
    }))
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}.zip"
        res = run_cli("export", "-j", jobs, src, "-o", out)
        assert res.returncode == 0, res.stderr
        res = run_cli("import", "--jobs", jobs, out, "-o", tmp_path / f"back{jobs}.json")
        assert res.returncode == 0, res.stderr
        outs.append((tmp_path / f"back{jobs}.json").read_bytes())
    assert outs[0] == outs[1]
    res = run_cli("export", "-j", "0", src, "-o", tmp_path / "x.zip")
    assert res.returncode == 2 and "expected an integer 1..256" in res.stderr
