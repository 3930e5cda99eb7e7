"""CVAT's track expansion, frame by frame, with CVAT's arithmetic in CVAT's order.

CVAT's server turns a track into per-frame shapes in ``TrackManager.get_interpolated_shapes``
(``cvat/apps/dataset_manager/annotation.py``) when it exports a task. That function walks
the whole track and returns every frame's shape at once; here the same rules answer for one
frame at a time (:meth:`Timeline.at`), because an interpolated shape depends only on the two
keyframes around its frame. An export then holds the keyframes, never the expanded track,
so memory does not grow with the number of frames.

The rules, as CVAT applies them (``end`` = the task's frame count):

* keyframes are taken in frame order (a stable sort); keyframes on deleted frames are
  ignored (CVAT since 2025, PRs #8834/#9059);
* between a visible keyframe and the next keyframe, shapes are interpolated from the left
  keyframe (its z_order, outside flag and every other property); after an outside keyframe
  the track is absent until the next keyframe;
* the last keyframe, when visible, is copied to every later frame up to the task's end;
* a keyframe at or past ``end`` stops the walk (frames before ``end`` are still
  interpolated towards it, even from an outside keyframe: those copies are outside);
* only frames ``track.frame <= f < end`` count, and outside shapes are never exported;
* boxes, ellipses, cuboids and skeletons interpolate linearly (``simple_interpolation``):
  ``points0 + (points1 - points0) * offset`` in numpy float64 and rotation the short way
  round through CVAT's ``find_angle_diff`` (a difference of exactly 180° becomes +1°);
  ``points`` linearly when both keyframes hold one point, else copied; polygons and
  polylines by CVAT's point matching and reduction (:mod:`.polyshape`).

CVAT's export fails where ``interpolate`` raises: two keyframes of different types, or a
keyframe of a type it cannot interpolate (a **mask**) followed by another keyframe while
visible. :class:`TrackError` says which track, which frames and why; CVAT's own traceback
(``NotImplementedError``) names neither.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from smaskd.annotations.cvat.polyshape import interpolate_position
from smaskd.errors import InputError

__all__ = ["INTERPOLATED", "Key", "Timeline", "Track", "TrackError", "interpolate_points"]

#: Types CVAT's ``interpolate`` knows; anything else (``mask``) raises NotImplementedError.
INTERPOLATED = frozenset(
    {"rectangle", "ellipse", "cuboid", "skeleton", "points", "polygon", "polyline"}
)
_SIMPLE = frozenset({"rectangle", "ellipse", "cuboid", "skeleton"})


class TrackError(InputError):
    """A track CVAT's export cannot expand (its export of the task fails)."""


@dataclass(frozen=True, slots=True)
class Key:
    """One keyframe: what CVAT keeps of a track shape (``raw`` for mask RLE and elements)."""

    frame: int
    type: str
    points: tuple[float, ...]
    rotation: float
    outside: bool
    z_order: int
    id: int = 0


@dataclass(slots=True)
class Track:
    """A track as the bundle gives it: keyframes in the bundle's order, maybe elements."""

    index: int  # position in the task's track list (CVAT's track_id on export)
    id: int
    label_id: int
    group: int
    frame: int
    keys: list[Key]
    elements: list["Track"] = field(default_factory=list)

    def describe(self) -> str:
        return f"track id {self.id} (#{self.index + 1} in the task, label id {self.label_id})"


def find_angle_diff(right_angle: float, left_angle: float) -> float:
    """CVAT's ``find_angle_diff``, quirks included (a 180° difference becomes ``1``)."""
    angle_diff = right_angle - left_angle
    angle_diff = ((angle_diff + 180) % 360) - 180
    if abs(angle_diff) >= 180:
        # CVAT's expression: parsed as 360 - (abs(d) * -1) if d > 0 else 1
        angle_diff = 360 - abs(angle_diff) * -1 if angle_diff > 0 else 1
    return angle_diff


def interpolate_points(k0: Key, k1: Key, frame: int) -> tuple[list[float], float]:
    """The points and rotation CVAT gives ``frame`` between keyframes ``k0`` and ``k1``."""
    offset = (frame - k0.frame) / (k1.frame - k0.frame)
    kind = k0.type
    if kind in _SIMPLE or (kind == "points" and len(k0.points) == 2 and len(k1.points) == 2):
        diff = np.subtract(k1.points, k0.points)
        rotation = (k0.rotation + find_angle_diff(k1.rotation, k0.rotation) * offset + 360) % 360
        points = k0.points + diff * offset  # tuple + ndarray: numpy float64, as CVAT's list
        return points.tolist(), rotation
    if kind in ("polygon", "polyline"):
        p0, p1 = list(k0.points), list(k1.points)
        if kind == "polygon":  # CVAT closes polygons for the computation, then drops a point
            p0, p1 = p0 + p0[:2], p1 + p1[:2]
        points = interpolate_position(p0, p1, offset)
        return (points[:-2] if kind == "polygon" else points), k0.rotation
    return list(k0.points), k0.rotation  # points with several points: copied


class Timeline:
    """One track's shapes per frame, as ``get_interpolated_shapes`` + ``group_by_frame`` give.

    ``at(frame)`` is ``None`` (no exported shape) or ``(k0, k1)``: the keyframe itself or the
    propagated copy (``k1 is None``), or an interpolation between ``k0`` and ``k1``.
    ``include_outside`` is CVAT's flag of that name (skeleton elements use it).
    """

    __slots__ = ("end", "frames", "include_outside", "keys", "start", "track")

    def __init__(self, track: Track, end: int, deleted: Callable[[int], bool],
                 include_outside: bool = False) -> None:
        self.track = track
        self.end = end
        self.start = track.frame
        self.include_outside = include_outside
        keys = sorted((k for k in track.keys if not deleted(k.frame)), key=lambda k: k.frame)
        kept: list[Key] = []
        for key in keys:
            prev = kept[-1] if kept else None
            if prev is not None and end <= key.frame:
                _check_pair(track, prev, key)  # CVAT interpolates towards it, then stops
                kept.append(key)
                break
            if prev is not None:
                if key.frame <= prev.frame:
                    raise TrackError(
                        f"{track.describe()} has two keyframes on frame {key.frame}; CVAT's "
                        "export fails on such a track (AssertionError)", "annotations.tracks")
                if not prev.outside or include_outside:
                    _check_pair(track, prev, key)
            kept.append(key)
        self.keys = kept
        self.frames = [k.frame for k in kept]

    def at(self, frame: int) -> tuple[Key, Key | None] | None:
        if not self.start <= frame < self.end:
            return None
        j = bisect_right(self.frames, frame) - 1
        if j < 0:
            return None
        k0 = self.keys[j]
        if k0.outside and not self.include_outside:
            return None
        if k0.frame == frame or j + 1 == len(self.keys):
            return k0, None
        return k0, self.keys[j + 1]


def _check_pair(track: Track, k0: Key, k1: Key) -> None:
    """Raise where CVAT's ``interpolate(k0, k1)`` raises (its export then fails)."""
    if k0.type != k1.type:
        raise TrackError(
            f"{track.describe()}: keyframe at frame {k0.frame} is a {k0.type} but the next "
            f"keyframe, at frame {k1.frame}, is a {k1.type}; CVAT cannot interpolate between "
            "different shape types and its export of this task fails", "annotations.tracks")
    if k0.type not in INTERPOLATED:
        state = "outside" if k0.outside else "visible"
        raise TrackError(
            f"{track.describe()}: {k0.type} track has a {state} keyframe at frame {k0.frame} "
            f"followed by a keyframe at frame {k1.frame}; CVAT cannot interpolate "
            f"{k0.type}s (NotImplementedError), so its export of this task fails. Keep one "
            f"visible keyframe per {k0.type} track or use plain {k0.type} shapes",
            "annotations.tracks")
