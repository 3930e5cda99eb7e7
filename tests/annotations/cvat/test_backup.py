"""CVAT task backups (smaskd.annotations.cvat.backup) → the bundle of the restored task.

The oracle is the corpus: each backup's task is also given as a REST bundle
(``input/scene.json``), whose ``annotations`` CVAT merged from the same per-job
annotations. A restored task differs from the live one only where the overlap does (a
single-job video task restores with overlap 0): there the reference is CVAT's merge of the
stored jobs (``expected/jobs.json``) with overlap 0.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from smaskd.annotations.cvat.backup import read_backup
from smaskd.annotations.cvat.merge import merge_jobs
from smaskd.errors import InputError, UnsafeArchiveError
from tests.annotations.cvat.corpus import TRACKS, needs_tracks
from tests.conftest import run_cli

BACKUP_CASES = sorted(p.parent.parent.name for p in TRACKS.glob("*/input/backup.zip"))


def _by_names(annotations: dict, labels: list[dict]) -> dict:
    """Annotations with label ids replaced by (parent, name) and database ids dropped."""
    names: dict[int, tuple[str, str]] = {}

    def walk(entries: list[dict], parent: str = "") -> None:
        for label in entries:
            names[label["id"]] = (parent, label["name"])
            walk(label.get("sublabels", []), label["name"])

    walk(labels)

    def fix(value):
        if isinstance(value, dict):
            return {k: names[v] if k == "label_id" else fix(v)
                    for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(annotations)


def _scene(case: str) -> dict:
    scene = json.loads((TRACKS / case / "input" / "scene.json").read_text())
    labels = scene["labels"]
    scene["labels"] = labels["results"] if isinstance(labels, dict) else labels
    return scene


@needs_tracks
@pytest.mark.parametrize("case", BACKUP_CASES)
def test_backup_restores_the_tasks_bundle(case: str) -> None:
    bundle = read_backup(TRACKS / case / "input" / "backup.zip")
    scene = _scene(case)
    for key in ("size", "start_frame", "stop_frame", "deleted_frames"):
        assert bundle["meta"][key] == scene["meta"][key], key
    assert (bundle["meta"]["frame_filter"] or "") == (scene["meta"]["frame_filter"] or "")
    assert [(f["name"], f["width"], f["height"]) for f in bundle["meta"]["frames"]] == [
        (f["name"], f["width"], f["height"]) for f in scene["meta"]["frames"]]
    for key in ("name", "mode", "subset", "segment_size"):
        assert bundle["task"][key] == scene["task"][key], key

    def label_tree(labels: list[dict]) -> list:
        return [(x["name"], x["color"], x["type"], label_tree(x.get("sublabels", [])))
                for x in labels]

    assert label_tree(bundle["labels"]) == label_tree(scene["labels"])
    ids = [x["id"] for x in bundle["labels"]]
    assert ids == sorted(ids)  # colours go by id order: task.json's order

    got = _by_names(bundle["annotations"], bundle["labels"])
    jobs = json.loads((TRACKS / case / "expected" / "jobs.json").read_text())["jobs"] if (
        TRACKS / case / "expected" / "jobs.json").is_file() else None
    if (TRACKS / case / "expected_backup").is_dir():
        # the live task had another overlap; a restore derives 0 from its single job
        assert bundle["task"]["overlap"] == 0 != scene["task"]["overlap"]
        assert jobs is not None and len(jobs) == 1
        restored = merge_jobs([(0, jobs[0]["annotations"])], 0)
        for track in restored["tracks"]:  # a restore reads keyframes back in frame order
            track["shapes"].sort(key=lambda s: s["frame"])
        want = _by_names(restored, scene["labels"])
        assert got == want
        assert got != _by_names(scene["annotations"], scene["labels"])
    else:
        assert bundle["task"]["overlap"] == scene["task"]["overlap"]
        assert got == _by_names(scene["annotations"], scene["labels"])


# -- synthetic backups: one rule each ------------------------------------------------------

def _zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _members(case: str) -> dict[str, bytes]:
    with zipfile.ZipFile(TRACKS / case / "input" / "backup.zip") as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _image_backup(jobs: list[dict], annotations: list[dict], labels: list[dict]) -> dict:
    task = {"name": "t", "subset": "", "version": "1.0", "labels": labels,
            "data": {"start_frame": 0, "stop_frame": 3, "chunk_type": "imageset",
                     "deleted_frames": []},
            "jobs": jobs}
    manifest = "\n".join(json.dumps(x) for x in (
        {"version": "1.1"}, {"type": "images"},
        *({"name": f"img/{i}", "extension": ".png", "width": 8, "height": 6} for i in range(4))))
    return {"task.json": json.dumps(task), "annotations.json": json.dumps(annotations),
            "data/manifest.jsonl": manifest}


def _label(name: str, sublabels: tuple[str, ...] = ()) -> dict:
    return {"name": name, "color": "#102030", "attributes": [],
            "type": "skeleton" if sublabels else "any", "svg": "",
            "sublabels": [{"name": s, "color": "#405060", "attributes": [], "type": "points"}
                          for s in sublabels]}


def _job(start: int, stop: int, kind: str = "annotation") -> dict:
    return {"start_frame": start, "stop_frame": stop, "status": "annotation", "type": kind}


def _rect(label: str, frame: int) -> dict:
    return {"type": "rectangle", "occluded": False, "outside": False, "z_order": 0,
            "rotation": 0.0, "points": [1.0, 1.0, 4.0, 4.0], "frame": frame, "label": label,
            "group": 0, "source": "manual", "attributes": [], "elements": []}


def _annotations(shapes: list[dict] = (), tracks: list[dict] = ()) -> dict:
    return {"version": 0, "tags": [], "shapes": list(shapes), "tracks": list(tracks)}


@needs_tracks
def test_ground_truth_jobs_are_left_out(tmp_path: Path) -> None:
    case = "random_s101_08_vid_2jobs-ov0"
    members = _members(case)
    task = json.loads(members["task.json"])
    annotations = json.loads(members["annotations.json"])
    task["jobs"].append({"start_frame": 0, "stop_frame": 9, "frames": [1, 3],
                         "status": "annotation", "type": "ground_truth"})
    annotations.append(_annotations([_rect(task["labels"][0]["name"], 1)]))
    members.update({"task.json": json.dumps(task), "annotations.json": json.dumps(annotations)})
    with_gt = read_backup(_zip(tmp_path / "gt.zip", members))
    plain = read_backup(TRACKS / case / "input" / "backup.zip")
    assert with_gt == plain


@needs_tracks
def test_media_in_the_backup_are_never_read(tmp_path: Path) -> None:
    case = "random_s101_11_ima"
    members = _members(case)
    members["data/cam_a/0027.jpg"] = b"\xff\xd8 not really a JPEG"
    assert read_backup(_zip(tmp_path / "b.zip", members)) == read_backup(
        TRACKS / case / "input" / "backup.zip")


@needs_tracks
def test_a_video_backup_without_manifest_exits_65_saying_why(tmp_path: Path) -> None:
    members = _members("random_s101_03_vid_2jobs-ov3")
    del members["data/manifest.jsonl"]
    members["data/street_65.mp4"] = b"\x00\x00\x00\x18ftypmp42"
    backup = _zip(tmp_path / "v.zip", members)
    with pytest.raises(InputError, match=r"no data/manifest.jsonl.*frame size of a video"):
        read_backup(backup)
    result = run_cli("export", backup, "-o", tmp_path / "out.zip")
    assert result.returncode == 65, result.stderr
    assert "v.zip" in result.stderr and "data/manifest.jsonl" in result.stderr
    assert not (tmp_path / "out.zip").exists()


def test_sublabels_are_found_by_parent_and_name(tmp_path: Path) -> None:
    """Two skeletons with a sublabel of the same name: each element gets its own parent's."""
    skeleton = {"type": "skeleton", "occluded": False, "outside": False, "z_order": 0,
                "rotation": 0.0, "points": [], "group": 0, "source": "manual",
                "attributes": []}

    def element(name: str, frame: int) -> dict:
        return {**skeleton, "type": "points", "points": [2.0, 2.0], "label": name,
                "frame": frame, "elements": []}

    shapes = [{**skeleton, "label": "hand", "frame": 0, "elements": [element("tip", 0)]},
              {**skeleton, "label": "foot", "frame": 1, "elements": [element("tip", 1)]}]
    labels = [_label("hand", ("tip",)), _label("foot", ("tip",))]
    members = _image_backup([_job(0, 3)], [_annotations(shapes)], labels)
    bundle = read_backup(_zip(tmp_path / "s.zip", members))
    hand, foot = bundle["labels"]
    assert [e["label_id"] for s in bundle["annotations"]["shapes"] for e in s["elements"]] == [
        hand["sublabels"][0]["id"], foot["sublabels"][0]["id"]]
    assert [x["id"] for x in (hand, *hand["sublabels"], foot, *foot["sublabels"])] == [1, 2, 3, 4]


def test_an_unknown_label_names_its_place(tmp_path: Path) -> None:
    members = _image_backup([_job(0, 3)], [_annotations([_rect("dog", 0)])], [_label("cat")])
    with pytest.raises(InputError, match=r"annotations\.json\[0\]\.shapes\[0\]\.label: label "
                                         r"'dog' is not one of the task's labels"):
        read_backup(_zip(tmp_path / "u.zip", members))


def test_job_ranges_cvat_would_not_restore_are_refused(tmp_path: Path) -> None:
    gap = _image_backup([_job(0, 1), _job(3, 3)],
                        [_annotations(), _annotations([_rect("cat", 3)])], [_label("cat")])
    with pytest.raises(InputError, match=r"jobs\[1\]: job 2 starts at frame 3 but job 1 ends "
                                         r"at frame 1: frames 2\.\.2 belong to no job"):
        read_backup(_zip(tmp_path / "gap.zip", gap))
    uneven = _image_backup([_job(0, 1), _job(2, 2), _job(3, 3)],
                           [_annotations()] * 3, [_label("cat")])
    with pytest.raises(InputError, match=r"jobs\[1\]: job frames 2\.\.2 are not where CVAT "
                                         r"puts job 2 .* segment size 2 and overlap 0"):
        read_backup(_zip(tmp_path / "uneven.zip", uneven))


def test_a_missing_annotations_entry_is_refused(tmp_path: Path) -> None:
    members = _image_backup([_job(0, 1), _job(2, 3)], [_annotations()], [_label("cat")])
    with pytest.raises(InputError, match=r"1 entries but task.json lists 2 jobs"):
        read_backup(_zip(tmp_path / "m.zip", members))


def test_the_zip_is_vetted_like_a_mask_zip(tmp_path: Path) -> None:
    members = _image_backup([_job(0, 3)], [_annotations()], [_label("cat")])
    members["../escape.png"] = b"x"
    with pytest.raises(UnsafeArchiveError, match=r"\.\./escape\.png"):
        read_backup(_zip(tmp_path / "z.zip", members))


def test_overlap_zero_cuts_a_track_at_the_job_boundary(tmp_path: Path) -> None:
    track = {"frame": 1, "label": "cat", "group": 0, "source": "manual", "attributes": [],
             "elements": [], "shapes": [{k: v for k, v in _rect("cat", 1).items()
                                         if k not in ("label", "group", "source", "elements")}]}
    members = _image_backup([_job(0, 1), _job(2, 3)],
                            [_annotations(tracks=[track]), _annotations()], [_label("cat")])
    bundle = read_backup(_zip(tmp_path / "o.zip", members))
    assert bundle["task"]["overlap"] == 0
    (restored,) = bundle["annotations"]["tracks"]
    assert [(s["frame"], s["outside"]) for s in restored["shapes"]] == [(1, False), (2, True)]


def test_not_a_zip_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "backup.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(InputError):
        read_backup(path)




def _track(label: str, frame: int, shapes: list[dict], attributes: list[dict] = ()) -> dict:
    keep = ("type", "occluded", "outside", "z_order", "rotation", "points", "frame", "attributes")
    return {"frame": frame, "label": label, "group": 0, "source": "manual",
            "attributes": list(attributes), "elements": [],
            "shapes": [{k: v for k, v in s.items() if k in keep} for s in shapes]}


def test_a_track_starting_before_its_first_keyframe_gets_an_outside_one(tmp_path: Path) -> None:
    """CVAT stores a track's frame and its first keyframe's as one: the gap becomes an
    outside copy of that keyframe (kept in frame order when read back)."""
    members = _image_backup([_job(0, 3)],
                            [_annotations(tracks=[_track("cat", 0, [_rect("cat", 2)])])],
                            [_label("cat")])
    (track,) = read_backup(_zip(tmp_path / "t.zip", members))["annotations"]["tracks"]
    assert track["frame"] == 0
    assert [(s["frame"], s["outside"], s["points"]) for s in track["shapes"]] == [
        (0, True, [1.0, 1.0, 4.0, 4.0]), (2, False, [1.0, 1.0, 4.0, 4.0])]


def test_attributes_are_found_by_name_and_defaults_filled_in(tmp_path: Path) -> None:
    label = _label("cat")
    label["attributes"] = [
        {"name": "pose", "mutable": True, "input_type": "select", "default_value": "sitting",
         "values": ["sitting", "running"]},
        {"name": "breed", "mutable": False, "input_type": "text", "default_value": "unknown",
         "values": []}]
    first = dict(_rect("cat", 0), attributes=[{"name": "pose", "value": "running"}])
    track = _track("cat", 0, [first, _rect("cat", 2)], [{"name": "breed", "value": "tabby"}])
    shape = dict(_rect("cat", 1), attributes=[{"name": "breed", "value": "siamese"}])
    members = _image_backup([_job(0, 3)], [_annotations([shape], [track])], [label])
    bundle = read_backup(_zip(tmp_path / "a.zip", members))
    pose, breed = (a["id"] for a in bundle["labels"][0]["attributes"])
    (restored,) = bundle["annotations"]["tracks"]
    assert restored["attributes"] == [{"spec_id": breed, "value": "tabby"}]
    assert [s["attributes"] for s in restored["shapes"]] == [
        [{"spec_id": pose, "value": "running"}], [{"spec_id": pose, "value": "running"}]]
    (plain,) = bundle["annotations"]["shapes"]
    assert plain["attributes"] == [{"spec_id": breed, "value": "siamese"},
                                   {"spec_id": pose, "value": "sitting"}]
    bad = _annotations([dict(_rect("cat", 1), attributes=[{"name": "size", "value": "xl"}])])
    with pytest.raises(InputError, match=r"shapes\[0\]\.attributes\[0\]\.name: attribute 'size'"):
        read_backup(_zip(tmp_path / "b.zip", _image_backup([_job(0, 3)], [bad], [label])))
