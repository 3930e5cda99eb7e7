"""CVAT's job merge: a task's annotations rebuilt from its jobs, exactly as CVAT's server does it.

CVAT stores annotations per job. Whenever it needs the task's annotations (the REST GET, every
export) it starts from nothing and merges the jobs one by one, in job order
(``TaskAnnotation.init_from_db`` → ``AnnotationManager.merge`` in
``cvat/apps/dataset_manager/annotation.py``). A task backup holds the per-job annotations, so
reading one means replaying that merge; the result is what a task restored from the backup
exports. Nothing here is an improvement on CVAT: its quirks decide pixels and paint order.

For each job, with ``start`` its first frame and ``overlap`` the task's::

    new  = objects with frame >= start + overlap     appended at once, before anything else
    int_ = objects with frame <  start + overlap     candidates for matching
    old  = merged objects "on" the frames >= start   (tracks: all still visible, or ending
                                                      at or after start, grouped as frame 0)

If either side is empty, every old track still visible gets an outside keyframe at
``start + overlap`` (so with overlap 0 a track still visible at a job's end is ended at the
next job's first frame) and every ``int_`` object is appended. Otherwise, per frame, a cost
matrix ``1 - similarity`` is solved with the Hungarian algorithm (scipy's
``linear_sum_assignment``, what CVAT calls); a pair is united when its cost is within the
threshold (tags and shapes 0.25, tracks 0.5), unmatched candidates are appended and unmatched
old tracks get the outside keyframe. Similarity: tags by label; shapes by IoU of their
polygons (shapely; boxes ignore rotation; any other type is 0, so it is never united and
both copies stay); tracks by the mean over the overlap frames of the shape similarity of
their interpolated shapes (an outside/visible mismatch or a frame only one has costs 1).

CVAT's side effects are kept where they change what comes out: uniting two tracks keeps the
one that starts first *if* it is the old one; if the candidate starts first, CVAT unites
into the candidate, which it then drops, so the old track stays as it was. Expanding a track
for the similarity marks its keyframes (``keyframe: true``) and copies attribute values
forward from the previous keyframe, as CVAT's ``get_interpolated_shapes`` does to the
objects it is given.

A track CVAT cannot interpolate up to the end of an overlap (a mask track with a later
keyframe, two keyframe types) makes CVAT's merge, and so every read of the task, fail; here
that is a :class:`~smaskd.annotations.cvat.tracks.TrackError` naming the track (by its
``_origin`` in a backup, see :mod:`.restore`) and the frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np

from smaskd.annotations.cvat.tracks import Key, Timeline, Track, interpolate_points

__all__ = ["merge_job", "merge_jobs"]

Obj = dict[str, Any]


def merge_jobs(jobs: Iterable[tuple[int, dict]], overlap: int) -> dict:
    """Per-job annotations ``(start_frame, {version, tags, shapes, tracks})`` → the task's.

    ``jobs`` in job order (ground-truth jobs already left out). The inputs are not changed.
    """
    task: dict = {"version": 0, "tags": [], "shapes": [], "tracks": []}
    for start, job in jobs:
        merge_job(task, deepcopy(job), start, overlap)
    return task


def merge_job(task: dict, job: dict, start: int, overlap: int) -> None:
    """Merge one job's annotations into ``task`` in place (``AnnotationManager.merge``)."""
    task["version"] = max(task.get("version", 0), job.get("version", 0) or 0)
    _merge(task["tags"], job["tags"], start, overlap, _TAGS)
    _merge(task["shapes"], job["shapes"], start, overlap, _SHAPES)
    _merge(task["tracks"], job["tracks"], start, overlap, _TRACKS)


class _Kind:
    """What differs between tags, shapes and tracks in ``ObjectManager.merge``."""

    def __init__(self, threshold: float,
                 similarity: Callable[[Obj, Obj, int, int], float],
                 unite: Callable[[Obj, Obj], Obj],
                 by_frame: Callable[[Sequence[Obj], int], dict[int, list[Obj]]],
                 end_unmatched: Callable[[Obj, int], None]) -> None:
        self.threshold = threshold
        self.similarity = similarity
        self.unite = unite
        self.by_frame = by_frame
        self.end_unmatched = end_unmatched


def _merge(old: list[Obj], objects: list[Obj], start: int, overlap: int, kind: _Kind) -> None:
    """``ObjectManager.merge``: the same steps in the same order."""
    end = start + overlap
    new_objects = [o for o in objects if o["frame"] >= end]
    int_objects = [o for o in objects if o["frame"] < end]
    int_by_frame = kind.by_frame(int_objects, start)
    old_by_frame = kind.by_frame(old, start)
    old.extend(new_objects)

    if not old_by_frame or not int_by_frame:
        for frame_objects in old_by_frame.values():
            for obj in frame_objects:
                kind.end_unmatched(obj, end)
        old.extend(int_objects)
        return

    from scipy.optimize import linear_sum_assignment  # here: only overlaps need it (~0.2 s)

    for frame, candidates in int_by_frame.items():
        olds = old_by_frame.get(frame)
        if olds is None:
            old.extend(candidates)
            continue
        cost = np.empty((len(candidates), len(olds)), dtype=float)
        for i, cand in enumerate(candidates):
            for j, prev in enumerate(olds):
                cost[i][j] = 1 - kind.similarity(cand, prev, start, overlap)
        rows, cols = linear_sum_assignment(cost)
        cand_left = list(range(len(candidates)))
        old_left = list(range(len(olds)))
        for i, j in zip(rows, cols):
            if cost[i][j] <= kind.threshold:
                # CVAT rebinds only this local list: a union into the candidate is dropped
                olds[j] = kind.unite(candidates[i], olds[j])
                cand_left[i] = -1
                old_left[j] = -1
        old.extend(candidates[i] for i in cand_left if i != -1)
        for j in old_left:
            if j != -1:
                kind.end_unmatched(olds[j], end)


def _objects_by_frame(objects: Sequence[Obj], start: int) -> dict[int, list[Obj]]:
    by_frame: dict[int, list[Obj]] = {}
    for obj in objects:
        if obj["frame"] >= start:
            by_frame.setdefault(obj["frame"], []).append(obj)
    return by_frame


def _first_of_frame(obj0: Obj, obj1: Obj) -> Obj:
    """Tags and shapes: ``obj0 if obj0.frame < obj1.frame else obj1`` (same frame: the old)."""
    return obj0 if obj0["frame"] < obj1["frame"] else obj1


def _nothing(obj: Obj, end: int) -> None:
    return None


def _tag_similarity(obj0: Obj, obj1: Obj, start: int, overlap: int) -> float:
    return 1 if obj0["label_id"] == obj1["label_id"] else 0


def _pairwise(points: Sequence[float]) -> list[tuple[float, float]]:
    it = iter(points)
    return list(zip(it, it))


def _polygons_similarity(p0: Any, p1: Any) -> float:
    if p0.is_valid and p1.is_valid:
        overlap_area = p0.intersection(p1).area
        if p0.area == 0 or p1.area == 0:
            return 0
        return overlap_area / (p0.area + p1.area - overlap_area)
    return 0


def shape_similarity(obj0: Obj, obj1: Obj, start: int = 0, overlap: int = 0) -> float:
    """``ShapeManager._calc_objects_similarity`` for 2D tasks (IoU of boxes and polygons)."""
    if obj0["type"] != obj1["type"] or obj0.get("label_id") != obj1.get("label_id"):
        return 0
    from shapely import geometry

    if obj0["type"] == "rectangle":
        return _polygons_similarity(geometry.box(*obj0["points"]), geometry.box(*obj1["points"]))
    if obj0["type"] == "polygon":
        return _polygons_similarity(geometry.Polygon(_pairwise(obj0["points"])),
                                    geometry.Polygon(_pairwise(obj1["points"])))
    return 0


def _tracks_by_frame(objects: Sequence[Obj], start: int) -> dict[int, list[Obj]]:
    """Tracks still visible at their last keyframe, or ending at/after ``start``: frame 0."""
    group = [obj for obj in objects
             if obj["shapes"] and (obj["shapes"][-1]["frame"] >= start
                                   or not obj["shapes"][-1]["outside"])]
    return {0: group} if group else {}


def _track_similarity(obj0: Obj, obj1: Obj, start: int, overlap: int) -> float:
    if obj0["label_id"] != obj1["label_id"]:
        return 0
    end = start + overlap
    shapes0 = _expanded(obj0, start, end)
    shapes1 = _expanded(obj1, start, end)
    if not shapes0 or not shapes1:
        return 0
    count, error = 0, 0.0
    for frame in range(start, end):
        shape0, shape1 = shapes0.get(frame), shapes1.get(frame)
        if shape0 and shape1:
            if shape0["outside"] != shape1["outside"]:
                error += 1
            else:
                error += 1 - shape_similarity(shape0, shape1)
            count += 1
        elif shape0 or shape1:
            error += 1
            count += 1
    return 1 - error / (count or 1)


def _expanded(track: Obj, start: int, end: int) -> dict[int, Obj]:
    """``get_interpolated_shapes(track, start, end)`` by frame, side effects on ``track`` too.

    CVAT returns every frame ``track.frame <= f < end`` where the track is visible, plus its
    outside keyframes there; only ``start <= f`` is ever looked at. The shapes come from
    :mod:`.tracks` (the export's own expansion, one frame at a time); what CVAT's function
    does to its argument is redone here by :func:`_mark_keyframes`.
    """
    timeline = Timeline(_as_track(track), end, lambda frame: False)
    _mark_keyframes(track, end)
    shapes: dict[int, Obj] = {}
    for frame in range(max(track["frame"], start), end):
        at = timeline.at(frame)
        if at is None:
            continue
        k0, k1 = at
        if k1 is None:
            points: list[float] = list(k0.points)
        else:
            points = interpolate_points(k0, k1, frame)[0]
        shapes[frame] = {"type": k0.type, "points": points, "outside": False}
    for key in timeline.keys:
        if key.outside and max(track["frame"], start) <= key.frame < end:
            shapes[key.frame] = {"type": key.type, "points": list(key.points), "outside": True}
    return shapes


class _MergedTrack(Track):
    """A track inside the merge: its errors say where the backup holds it, if known."""

    origin: str | None = None

    def describe(self) -> str:
        if self.origin:
            return f"the track at {self.origin}"
        return f"track id {self.id} (label id {self.label_id})"


def _as_track(track: Obj) -> Track:
    keys = [Key(int(s["frame"]), s["type"], tuple(s["points"]), float(s.get("rotation", 0.0)),
                bool(s["outside"]), int(s.get("z_order", 0)), int(s.get("id") or 0))
            for s in track["shapes"]]
    merged = _MergedTrack(0, int(track.get("id") or 0), track["label_id"],
                          track.get("group") or 0, int(track["frame"]), keys)
    merged.origin = track.get("_origin")
    return merged


def _mark_keyframes(track: Obj, end: int) -> None:
    """What ``get_interpolated_shapes`` writes into the track's own shapes.

    Walking the keyframes in frame order it sets ``keyframe: true`` on each and appends to
    each the attribute values of the previous one that it lacks. The keyframe that stops the
    walk (the first at or past ``end`` after another) gets no attributes, and its mark lands
    on the first shape at or past ``end`` of the interpolation towards it: a copy, unless no
    copy lies there (it is at ``end``, or right after the previous keyframe).
    """
    prev = None
    for shape in sorted(track["shapes"], key=lambda s: s["frame"]):
        if prev is not None and end <= shape["frame"]:
            if shape["frame"] in (end, prev["frame"] + 1):
                shape["keyframe"] = True
            return
        if prev is not None:
            have = {a["spec_id"] for a in shape["attributes"]}
            shape["attributes"].extend(deepcopy(a) for a in prev["attributes"]
                                       if a["spec_id"] not in have)
        shape["keyframe"] = True
        prev = shape


def _unite_tracks(obj0: Obj, obj1: Obj) -> Obj:
    """``TrackManager._unite_objects``: keyframes of both by frame, the old one's on a tie."""
    track = obj0 if obj0["frame"] < obj1["frame"] else obj1
    shapes = {shape["frame"]: shape for shape in obj0["shapes"]}
    for shape in obj1["shapes"]:
        frame = shape["frame"]
        shapes[frame] = _first_of_frame(shapes[frame], shape) if frame in shapes else shape
    track["frame"] = min(obj0["frame"], obj1["frame"])
    track["shapes"] = sorted(shapes.values(), key=lambda shape: shape["frame"])
    return track


def _end_track(track: Obj, end: int) -> None:
    """``TrackManager._modify_unmatched_object``: an outside copy of a visible last keyframe."""
    last = track["shapes"][-1]
    if not last["outside"]:
        ended = deepcopy(last)
        ended["frame"] = end
        ended["outside"] = True
        track["shapes"].append(ended)
        for element in track.get("elements", []):
            _end_track(element, end)


_TAGS = _Kind(0.25, _tag_similarity, _first_of_frame, _objects_by_frame, _nothing)
_SHAPES = _Kind(0.25, shape_similarity, _first_of_frame, _objects_by_frame, _nothing)
_TRACKS = _Kind(0.5, _track_similarity, _unite_tracks, _tracks_by_frame, _end_track)
