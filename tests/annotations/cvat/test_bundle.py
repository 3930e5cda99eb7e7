"""The bundle reader's own rules, on small hand-made bundles (the corpus covers the rest)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

from smaskd.annotations.cvat import bundle_to_dataset
from smaskd.annotations.cvat.tracks import TrackError, find_angle_diff
from smaskd.annotations.detect import read_annotation_doc
from smaskd.errors import InputError
from smaskd.model import BitmapMask, Box, Ellipse, NonMask
from smaskd.smask.export import export_dataset


def bundle(shapes=(), tracks=(), *, mode="annotation", size=3, deleted=(), labels=None,
           frame_filter="", start_frame=0) -> dict:
    frames = ([{"name": "clip.mp4", "width": 20, "height": 10}] if mode == "interpolation" else
              [{"name": f"dir/img_{i}.jpg", "width": 20, "height": 10} for i in range(size)])
    return {
        "task": {"mode": mode, "name": "t", "subset": "Train", "overlap": 0},
        "meta": {"size": size, "start_frame": start_frame, "stop_frame": 99,
                 "frame_filter": frame_filter, "deleted_frames": list(deleted),
                 "frames": frames},
        "labels": labels if labels is not None else [
            {"id": 7, "name": "car", "color": "#ff0000", "type": "any", "attributes": [],
             "sublabels": []}],
        "annotations": {"version": 0, "tags": [], "shapes": list(shapes),
                        "tracks": list(tracks)},
    }


def shape(kind, frame, points, **kw):
    return {"type": kind, "frame": frame, "points": points, "outside": False, "occluded": False,
            "rotation": 0.0, "z_order": 0, "attributes": [], "label_id": 7, "group": 0, **kw}


def track(shapes, tid=1, label_id=7, frame=None):
    return {"id": tid, "label_id": label_id, "frame": shapes[0]["frame"] if frame is None
            else frame, "group": 0, "source": "manual", "attributes": [], "shapes": shapes}


def test_item_names_images_keep_folders_video_counts_data_frames():
    ds = bundle_to_dataset(bundle(), "b.json")
    assert [i.id for i in ds.items] == ["dir/img_0", "dir/img_1", "dir/img_2"]
    assert {i.subset for i in ds.items} == {"default"}  # CVAT's task export has no subset
    ds = bundle_to_dataset(bundle(mode="interpolation", size=4, start_frame=10,
                                  frame_filter="step=3", deleted=[1]), "b.json")
    assert [i.id for i in ds.items] == ["frame_000010", "frame_000016", "frame_000019"]
    assert all((i.height, i.width) == (10, 20) for i in ds.items)


def test_labels_in_id_order_with_sublabels_and_the_paginated_page():
    labels = {"count": 2, "next": None, "previous": None, "results": [
        {"id": 9, "name": "hand", "color": "#010203", "type": "skeleton",
         "sublabels": [{"id": 10, "name": "thumb", "color": "#040506", "type": "points"}]},
        {"id": 3, "name": "cup", "color": "#0a0b0c", "type": "any", "sublabels": []}]}
    ds = bundle_to_dataset(bundle(labels=labels), "b.json")
    assert [(lb.name, lb.color) for lb in ds.labels] == [
        ("cup", (10, 11, 12)), ("hand", (1, 2, 3)), ("thumb", (4, 5, 6))]
    labels["next"] = "https://cvat/api/labels?page=2"
    with pytest.raises(InputError, match="not the last one"):
        bundle_to_dataset(bundle(labels=labels), "b.json")


def test_shapes_become_cvat_geometry():
    ds = bundle_to_dataset(bundle([
        shape("rectangle", 0, [1.5, 2.0, 4.0, 6.0], rotation=30.0),
        shape("ellipse", 0, [10.0, 5.0, 13.0, 3.0]),
        shape("polyline", 1, [1.0, 1.0, 2.0, 2.0]),
        shape("cuboid", 2, [0.0] * 16),
    ]), "b.json")
    items = list(ds.items)
    box, ellipse = (a.shape for a in items[0].annotations)
    assert box == Box(1.5, 2.0, 2.5, 4.0, 30.0)
    assert isinstance(ellipse, Ellipse) and ellipse.center == (10.0, 5.0)
    assert (ellipse.x2, ellipse.y1) == (13.0, 3.0)
    assert [a.shape for a in items[1].annotations] == [NonMask("polyline")]
    assert items[2].annotations == []  # a 2-D cuboid: CVAT's converter drops it


def test_mask_rle_runs_over_the_inclusive_box():
    # box left=2, top=1, right=4 (3 wide): runs 1 bg, 2 fg, 3 bg, 3 fg
    ds = bundle_to_dataset(bundle([shape("mask", 0, [1, 2, 3, 3, 2.0, 1.0, 4.0, 3.0])]), "b")
    m = ds.items[0].annotations[0].shape
    assert isinstance(m, BitmapMask) and (m.left, m.top) == (2, 1)
    assert np.asarray(m.bitmap).astype(int).tolist() == [[0, 1, 1], [0, 0, 0], [1, 1, 1]]


def test_mask_box_past_the_frame_is_clipped_with_a_warning():
    # 5 wide from x=18 on a 20-wide frame: CVAT's export crashes (IndexError)
    ds = bundle_to_dataset(bundle([shape("mask", 1, [0, 10, 18.0, 8.0, 22.0, 9.0], id=41)]), "b")
    assert len(ds.warnings) == 1
    assert "shape id 41, frame 1" in ds.warnings[0] and "clipped" in ds.warnings[0]
    out = io.BytesIO()
    stats = export_dataset(ds, out, compat="cvat")
    assert stats.instances == 1


def test_keyframes_on_deleted_frames_are_ignored():
    t = track([shape("rectangle", 0, [0.0, 0.0, 4.0, 4.0]),
               shape("rectangle", 1, [9.0, 9.0, 9.0, 9.0]),
               shape("rectangle", 2, [2.0, 2.0, 6.0, 6.0])])
    ds = bundle_to_dataset(bundle(tracks=[t], deleted=[1]), "b")
    assert len(ds.items) == 2
    assert ds.items[1].annotations[0].shape == Box(2.0, 2.0, 4.0, 4.0)


def test_mask_track_with_two_keyframes_fails_as_cvat_naming_track_and_frames():
    t = track([shape("mask", 0, [0, 4, 0.0, 0.0, 1.0, 1.0]),
               shape("mask", 2, [0, 4, 1.0, 1.0, 2.0, 2.0], outside=True)], tid=55)
    with pytest.raises(TrackError) as info:
        bundle_to_dataset(bundle(tracks=[t]), "b.json")
    message = str(info.value)
    assert "track id 55" in message and "frame 0" in message and "frame 2" in message
    assert "b.json" in message
    # one visible keyframe is copied to the task's end, as CVAT does
    t["shapes"] = t["shapes"][:1]
    ds = bundle_to_dataset(bundle(tracks=[t]), "b.json")
    assert all(isinstance(i.annotations[0].shape, BitmapMask) for i in ds.items)


def test_track_changing_shape_type_fails_as_cvat():
    t = track([shape("rectangle", 0, [0.0, 0.0, 4.0, 4.0]),
               shape("polygon", 2, [0.0, 0.0, 4.0, 0.0, 4.0, 4.0])], tid=8)
    with pytest.raises(TrackError, match=r"track id 8.*rectangle.*frame 2.*polygon"):
        bundle_to_dataset(bundle(tracks=[t]), "b")


def test_two_keyframes_on_one_frame_is_an_error():
    t = track([shape("rectangle", 1, [0.0, 0.0, 4.0, 4.0]),
               shape("rectangle", 1, [1.0, 0.0, 4.0, 4.0])], tid=3)
    with pytest.raises(TrackError, match="track id 3.*two keyframes on frame 1"):
        bundle_to_dataset(bundle(tracks=[t]), "b")


def test_rotation_goes_the_short_way_and_keeps_cvats_180_quirk():
    assert find_angle_diff(20.0, 350.0) == 30.0
    assert find_angle_diff(350.0, 20.0) == -30.0
    assert find_angle_diff(190.0, 10.0) == 1  # exactly 180 apart: CVAT turns it into +1


def test_unknown_label_id_names_the_shape():
    with pytest.raises(InputError, match=r"shapes\[0\]\.label_id.*label id 99"):
        bundle_to_dataset(bundle([{**shape("polygon", 0, [0, 0, 1, 0, 1, 1]),
                                   "label_id": 99}]), "b")


def test_detected_by_content_and_forced_with_from_cvat():
    b = bundle([{**shape("polygon", 0, [0, 0, 1, 0, 1, 1]), "label_id": 7}])
    assert read_annotation_doc(copy.deepcopy(b)).source_format == "cvat"
    assert read_annotation_doc(copy.deepcopy(b), "cvat").source_format == "cvat"
    with pytest.raises(InputError, match="content is datumaro"):
        read_annotation_doc({"items": [], "categories": {}}, "cvat")
    with pytest.raises(InputError, match="task bundle"):  # REST annotations alone
        read_annotation_doc(b["annotations"])
    broken = copy.deepcopy(b)
    broken["task"]["mode"] = "video"
    with pytest.raises(InputError, match=r"task\.mode.*decides how items are named"):
        read_annotation_doc(broken)
