"""CVAT's job merge (smaskd.annotations.cvat.merge) against CVAT's own results.

Every corpus case with ``expected/jobs.json`` holds the per-job annotations as CVAT stored
them; CVAT merged them into the bundle's ``annotations`` (and ``expected/merged.json``).
The merge must give exactly that: order, outside keyframes added at job boundaries,
keyframe marks, tracks united across an overlap.
"""

from __future__ import annotations

import json

import pytest

from smaskd.annotations.cvat.merge import merge_jobs
from smaskd.annotations.cvat.tracks import TrackError
from tests.annotations.cvat.corpus import TRACKS, needs_tracks

JOB_CASES = sorted(p.parent.parent.name for p in TRACKS.glob("*/expected/jobs.json"))


def _jobs(case: str) -> list[dict]:
    doc = json.loads((TRACKS / case / "expected" / "jobs.json").read_text())
    return doc.get("jobs") or doc["jobs_from_generator"]


@needs_tracks
@pytest.mark.parametrize("case", JOB_CASES)
def test_merge_gives_cvats_task_annotations(case: str) -> None:
    scene = json.loads((TRACKS / case / "input" / "scene.json").read_text())
    jobs = [(j["start_frame"], j["annotations"]) for j in _jobs(case)
            if j.get("type", "annotation") == "annotation"]
    merged = merge_jobs(jobs, scene["task"]["overlap"])
    assert merged == scene["annotations"]
    merged_json = TRACKS / case / "expected" / "merged.json"
    if merged_json.is_file():
        assert merged == json.loads(merged_json.read_text())


def test_merge_leaves_its_input_alone() -> None:
    job = {"version": 0, "tags": [], "shapes": [], "tracks": [_track(1, 0, [_box(0, 0)])]}
    before = json.dumps(job, sort_keys=True)
    merge_jobs([(0, job), (5, {"version": 0, "tags": [], "shapes": [], "tracks": []})], 0)
    assert json.dumps(job, sort_keys=True) == before


def test_overlap_zero_ends_a_visible_track_at_the_next_jobs_first_frame() -> None:
    first = {"version": 0, "tags": [], "shapes": [],
             "tracks": [_track(1, 1, [_box(1, 0)]), _track(2, 0, [_box(0, 0), _box(2, 0, True)])]}
    second = {"version": 0, "tags": [], "shapes": [], "tracks": []}
    merged = merge_jobs([(0, first), (5, second)], 0)
    visible, ended = merged["tracks"]
    assert [(s["frame"], s["outside"]) for s in visible["shapes"]] == [(1, False), (5, True)]
    assert [(s["frame"], s["outside"]) for s in ended["shapes"]] == [(0, False), (2, True)]


def test_overlap_unites_matching_boxes_and_reorders() -> None:
    """Overlap 2: a job's objects from frame start+2 on are appended before the ones that
    could match (track 2 ahead of track 1), and the job-2 twin of track 1 is united into it
    while the unmatched job-2 track is appended."""
    first = {"version": 0, "tags": [], "shapes": [],
             "tracks": [_track(1, 0, [_box(0, 0), _box(5, 0)]), _track(2, 3, [_box(3, 30)])]}
    second = {"version": 0, "tags": [], "shapes": [],
              "tracks": [_track(1, 4, [_box(4, 0), _box(9, 0)]), _track(3, 4, [_box(4, 60)])]}
    merged = merge_jobs([(0, first), (4, second)], 2)
    assert [t["label_id"] for t in merged["tracks"]] == [2, 1, 3]
    assert [s["frame"] for s in merged["tracks"][1]["shapes"]] == [0, 4, 5, 9]
    # track 2 matched nothing in frames 4-5: ended where the second job's own frames begin
    assert [(s["frame"], s["outside"]) for s in merged["tracks"][0]["shapes"]] == [
        (3, False), (6, True)]


def test_a_mask_track_interpolated_in_the_overlap_names_the_track() -> None:
    mask = {"type": "mask", "frame": 0, "points": [0, 0, 0, 1, 1], "outside": False,
            "rotation": 0.0, "z_order": 0, "occluded": False, "attributes": []}
    later = dict(mask, frame=3)
    first = {"version": 0, "tags": [], "shapes": [], "tracks": [_track(1, 0, [mask, later])]}
    second = {"version": 0, "tags": [], "shapes": [],
              "tracks": [_track(1, 4, [dict(mask, frame=4)])]}
    with pytest.raises(TrackError, match=r"frame 0 followed by a keyframe at frame 3"):
        merge_jobs([(0, first), (4, second)], 2)


def _box(frame: int, x: float, outside: bool = False) -> dict:
    return {"type": "rectangle", "frame": frame, "points": [x, 0.0, x + 10.0, 10.0],
            "outside": outside, "occluded": False, "rotation": 0.0, "z_order": 0,
            "attributes": []}


def _track(label_id: int, frame: int, shapes: list[dict]) -> dict:
    return {"id": label_id * 100 + frame, "label_id": label_id, "frame": frame, "group": 0,
            "source": "manual", "attributes": [], "shapes": shapes, "elements": []}


def test_a_union_into_an_earlier_candidate_is_dropped_as_cvat_drops_it() -> None:
    """CVAT unites into the track that starts first; when that is the new job's track, the
    union is kept in a local list only: the old track stays as it was, the new one is gone."""
    first = {"version": 0, "tags": [], "shapes": [], "tracks": [_track(1, 5, [_box(5, 0)])]}
    second = {"version": 0, "tags": [], "shapes": [],
              "tracks": [_track(1, 4, [_box(4, 0), _box(5, 0), _box(9, 0)])]}
    merged = merge_jobs([(0, first), (4, second)], 2)
    (track,) = merged["tracks"]
    assert track["frame"] == 5
    assert [s["frame"] for s in track["shapes"]] == [5]
